"""The model behind the API: loads and verifies a promoted model directory, scores and explains.

Nothing here imports XGBoost: the booster's trees are read with a small UBJSON decoder, evaluated
with numpy (``service.trees``), which reaches exactly XGBoost's leaves, and explained with an exact
TreeSHAP in numpy (``service.explain``), which gives XGBoost's ``pred_contribs`` values.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service import ubjson
from service.artifacts import BOOSTER, META_FILE, ModelDirError, ModelMeta, parse_meta, read_meta, verify
from service.explain import ExplainStrategy, TreeExplainer
from service.features import FEATURE_NAMES
from service.trees import BoosterFormatError, Strategy, TreeEnsemble, read_booster_document

logger = logging.getLogger(__name__)

Row = Sequence[float]
"""One transaction's features in contract order (``FEATURE_NAMES``)."""
Rows = Sequence[Row] | npt.NDArray[Any]
"""Rows as sequences, or an (n, 5) array."""

_FLOAT32_ROW = struct.Struct(f"<{len(FEATURE_NAMES)}f")
"""Rounds a row to the float32 values XGBoost compares (packing a float to 'f' rounds to nearest)."""

_PLACEHOLDER_VERSION = "v1"
"""Stands in for a missing ``version`` while meta.json is validated; the label comes from MODEL_VERSION."""


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature that pushed a score up, with its contribution in log-odds."""

    feature: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class Scores:
    """Scores of a sequence of rows, in order."""

    probabilities: npt.NDArray[np.float64]
    flagged: npt.NDArray[np.bool_]
    reasons: list[tuple[Reason, ...] | None]


class Scorer:
    """One verified model version: ``score()`` gives probabilities and decisions, ``explain()`` reasons."""

    def __init__(
        self,
        meta: ModelMeta,
        version: str,
        ensemble: TreeEnsemble,
        explainer: TreeExplainer,
        reasons_top_k: int = 3,
    ) -> None:
        self.meta = meta
        self.version = version
        self.threshold = float(meta.threshold)
        self.reasons_top_k = reasons_top_k
        self._ensemble = ensemble
        self._explainer = explainer

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        fallback_version: str = "v1.0",
        reasons_top_k: int = 3,
        strategy: Strategy | None = None,
        explain_strategy: ExplainStrategy | None = None,
    ) -> Scorer:
        """Read ``meta.json``, verify every artifact against it and build the evaluator and explainer.

        Raises ModelDirError with a readable reason when anything is missing, corrupt or mismatched.
        """
        meta, version = _read_meta(model_dir, fallback_version)
        payloads = verify(model_dir, meta)
        booster_bytes = payloads.get(BOOSTER)
        if booster_bytes is None:
            raise ModelDirError(f"meta.json of {version} lists no {BOOSTER!r} artifact")
        try:
            document = _decode_booster(booster_bytes)
            booster = read_booster_document(document, FEATURE_NAMES)
            ensemble = TreeEnsemble(booster.trees, booster.base_margin, booster.num_features, strategy)
            explainer = TreeExplainer(
                booster.trees, booster.base_margin, booster.num_features, explain_strategy
            )
        except (ubjson.UBJSONError, BoosterFormatError, ValueError) as exc:
            raise ModelDirError(f"booster artifact of {version} cannot be served: {exc}") from exc
        attributes = document.get("learner", {}).get("attributes", {})
        if isinstance(attributes, dict) and "best_iteration" in attributes:
            logger.warning(
                "booster of %s records best_iteration=%s; it is served with all %d trees, as "
                "Booster.predict does",
                version,
                attributes["best_iteration"],
                ensemble.num_trees,
            )
        scorer = cls(meta, version, ensemble, explainer, reasons_top_k)
        probe = scorer._probabilities(np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32) + 1)
        if not np.all(np.isfinite(probe)):
            raise ModelDirError(f"booster of {version} gives a non-finite score")
        logger.info(
            "model loaded",
            extra={
                "model_version": version,
                "trees": ensemble.num_trees,
                "evaluator": ensemble.strategy,
                "explainer": explainer.strategy,
            },
        )
        return scorer

    @property
    def evaluator(self) -> str:
        """How the trees are evaluated: "bitvector" or "traversal" (see ``service.trees``)."""
        return self._ensemble.strategy

    @property
    def trees(self) -> int:
        return self._ensemble.num_trees

    # -- public ------------------------------------------------------------------------------------

    def score(self, rows: Rows, *, explain: bool = False) -> Scores:
        """Score rows (features in contract order); flagged rows, or all with ``explain``, get reasons."""
        if len(rows) == 1:
            return self._score_one(rows[0], explain)
        x = self._matrix(rows)
        probabilities = self._probabilities(x)
        flagged = probabilities >= self.threshold
        reasons: list[tuple[Reason, ...] | None] = [None] * len(rows)
        wanted = np.flatnonzero(flagged) if not explain else np.arange(len(rows))
        if len(wanted):
            for index, row_reasons in zip(wanted.tolist(), self._reasons(x[wanted]), strict=True):
                reasons[index] = row_reasons
        return Scores(probabilities=probabilities, flagged=flagged, reasons=reasons)

    def explain(self, rows: Rows) -> npt.NDArray[np.float64]:
        """Exact TreeSHAP contributions in log-odds (XGBoost's ``pred_contribs``); last column is the bias."""
        return self._explainer.contributions(self._matrix(rows))

    # -- private -----------------------------------------------------------------------------------

    def _score_one(self, row: Row, explain: bool) -> Scores:
        # The hot path of POST /predict: no numpy array for the input, one small one for the output.
        if len(row) != len(FEATURE_NAMES):
            raise ValueError(f"expected rows of {len(FEATURE_NAMES)} features, got {len(row)}")
        try:
            values = _FLOAT32_ROW.unpack(_FLOAT32_ROW.pack(*row))
        except (OverflowError, struct.error) as exc:
            raise ValueError(f"features must be finite float32 numbers: {exc}") from exc
        if not all(map(math.isfinite, values)):
            raise ValueError("features must be finite numbers")
        probabilities = np.array([self._ensemble.probability_one(values)])
        flagged = probabilities >= self.threshold
        reasons: list[tuple[Reason, ...] | None] = [None]
        if explain or flagged[0]:
            reasons[0] = self._reasons(np.asarray([values], dtype=np.float32))[0]
        return Scores(probabilities=probabilities, flagged=flagged, reasons=reasons)

    def _matrix(self, rows: Rows) -> npt.NDArray[np.float32]:
        x = np.asarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected rows of {len(FEATURE_NAMES)} features, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite numbers")
        return x

    def _probabilities(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return self._ensemble.probability(x)

    def _reasons(self, x: npt.NDArray[np.float32]) -> list[tuple[Reason, ...]]:
        contributions = self._explainer.contributions(x)[:, : len(FEATURE_NAMES)]
        order = np.argsort(-contributions, axis=1, kind="stable")[:, : self.reasons_top_k]
        result: list[tuple[Reason, ...]] = []
        for row, picks in enumerate(order.tolist()):
            result.append(
                tuple(
                    Reason(
                        feature=FEATURE_NAMES[f],
                        value=float(x[row, f]),
                        contribution=float(contributions[row, f]),
                    )
                    for f in picks
                    if contributions[row, f] > 0
                )
            )
        return result


def _read_meta(model_dir: Path, fallback_version: str) -> tuple[ModelMeta, str]:
    """The metadata and the version label to serve it under."""
    path = model_dir / META_FILE
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = read_meta(model_dir)  # raises the contract's own, readable ModelDirError
        return meta, meta.version
    if isinstance(raw, dict) and "version" not in raw:
        meta = parse_meta(json.dumps({**raw, "version": _PLACEHOLDER_VERSION}), str(path))
        return meta, fallback_version
    meta = parse_meta(json.dumps(raw), str(path))
    return meta, meta.version


def _decode_booster(payload: bytes) -> dict[str, Any]:
    # XGBoost writes UBJSON for .ubj and JSON for .json; both describe the same document.
    document = json.loads(payload) if payload[:2] == b'{"' else ubjson.loads(payload)
    if not isinstance(document, dict):
        raise ubjson.UBJSONError("the booster document is not an object")
    return document
