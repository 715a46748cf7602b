"""The Scorer: loading and verifying a model directory, scoring, explaining, model behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from service.artifacts import BOOSTER, ModelDirError
from service.features import FEATURE_NAMES
from service.scorer import Scorer


def _row(transaction: dict[str, Any]) -> tuple[float, ...]:
    return tuple(float(transaction[name]) for name in FEATURE_NAMES)


def test_scorer_load_reads_version_threshold_and_evaluator(model_dir: Path) -> None:
    scorer = Scorer.load(model_dir)
    assert scorer.version == "v1"
    assert scorer.threshold == 0.5
    assert scorer.evaluator == "bitvector"
    assert scorer.trees == 30


def test_scorer_scores_like_xgboost(model_dir: Path, booster_v1: xgb.Booster, factories: Any) -> None:
    x = factories.random_valid_rows(2000, seed=12)
    scores = Scorer.load(model_dir).score([tuple(r) for r in x.tolist()])
    reference = booster_v1.predict(xgb.DMatrix(x, feature_names=list(FEATURE_NAMES)))
    assert np.max(np.abs(scores.probabilities - reference)) < 1e-6
    np.testing.assert_array_equal(scores.flagged, scores.probabilities >= 0.5)


def test_scorer_missing_meta_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        Scorer.load(tmp_path)


def test_scorer_invalid_meta_json_raises(model_dir: Path) -> None:
    (model_dir / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelDirError, match="not valid model metadata"):
        Scorer.load(model_dir)


def test_scorer_corrupt_booster_raises(model_dir: Path) -> None:
    path = model_dir / "versions" / "v1" / "booster.ubj"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelDirError, match="sha256"):
        Scorer.load(model_dir)


def test_scorer_feature_mismatch_raises(model_dir: Path, factories: Any) -> None:
    factories.rewrite_meta(model_dir, lambda raw: raw["features"].reverse())
    with pytest.raises(ModelDirError, match="features"):
        Scorer.load(model_dir)


def test_scorer_meta_without_booster_raises(model_dir: Path, factories: Any) -> None:
    factories.rewrite_meta(model_dir, lambda raw: raw["artifacts"].pop("booster"))
    with pytest.raises(ModelDirError, match="booster"):
        Scorer.load(model_dir)


def test_scorer_json_booster_is_accepted(tmp_path: Path, booster_v1: xgb.Booster, factories: Any) -> None:
    directory = tmp_path / "model"
    factories.write_version(directory, "v1", booster_v1)
    factories.replace_booster(directory, "v1", bytes(booster_v1.save_raw("json")))
    assert Scorer.load(directory).meta.artifacts[BOOSTER].path == "versions/v1/booster.json"
    assert Scorer.load(directory).version == "v1"


def test_scorer_refuses_non_finite_rows(model_dir: Path, factories: Any) -> None:
    scorer = Scorer.load(model_dir)
    row = list(_row(factories.valid()))
    row[0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        scorer.score([tuple(row)])


def test_scorer_explain_contributions_sum_to_margin(model_dir: Path, factories: Any) -> None:
    scorer = Scorer.load(model_dir)
    rows = [_row(factories.valid()), _row(factories.fraud())]
    contributions = scorer.explain(rows)
    assert contributions.shape == (2, len(FEATURE_NAMES) + 1)
    probabilities = scorer.score(rows).probabilities
    margins = np.log(probabilities / (1 - probabilities))
    np.testing.assert_allclose(contributions.sum(axis=1), margins, atol=1e-4)


def test_scorer_reasons_are_top_positive_contributions(model_dir: Path, factories: Any) -> None:
    scorer = Scorer.load(model_dir, reasons_top_k=2)
    rows = [_row(factories.fraud())]
    reasons = scorer.score(rows).reasons[0]
    assert reasons is not None and len(reasons) == 2
    contributions = scorer.explain(rows)[0, : len(FEATURE_NAMES)]
    expected = [FEATURE_NAMES[i] for i in np.argsort(-contributions)[:2]]
    assert [reason.feature for reason in reasons] == expected
    assert reasons[0].contribution == pytest.approx(float(contributions.max()))


def test_scorer_explain_matches_xgboost_pred_contribs(
    model_dir: Path, booster_v1: xgb.Booster, factories: Any
) -> None:
    x = factories.random_valid_rows(2000, seed=13)
    reference = booster_v1.predict(xgb.DMatrix(x, feature_names=list(FEATURE_NAMES)), pred_contribs=True)
    for strategy in ("table", "direct"):
        contributions = Scorer.load(model_dir, explain_strategy=strategy).explain(x)  # type: ignore[arg-type]
        assert np.max(np.abs(contributions - reference)) < 1e-5


# -- model behaviour -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_scorer_directional_riskier_transaction_never_scores_lower(
    tmp_path: Path, booster_v1: xgb.Booster, booster_v2: xgb.Booster, factories: Any, version: str
) -> None:
    directory = tmp_path / "model"
    factories.write_version(directory, version, booster_v1 if version == "v1" else booster_v2)
    scorer = Scorer.load(directory)
    base = factories.valid()
    riskier = {
        **base,
        "amount": base["amount"] * 20,
        "hour": 3,
        "merchant_category": 8,
        "distance_from_home": 800.0,
    }
    low, high = scorer.score([_row(base), _row(riskier)]).probabilities
    assert high >= low
    assert high > 0.5 > low


def test_scorer_invariance_identical_inputs_identical_scores(model_dir: Path, factories: Any) -> None:
    scorer = Scorer.load(model_dir)
    x = factories.random_valid_rows(300, seed=21)
    rows = [tuple(r) for r in x.tolist()]
    first = scorer.score(rows).probabilities
    again = scorer.score(list(reversed(rows))).probabilities[::-1]
    singles = np.array([scorer.score([row]).probabilities[0] for row in rows])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, singles)
    reloaded = Scorer.load(model_dir).score(rows).probabilities
    np.testing.assert_array_equal(first, reloaded)


def test_scorer_meta_version_fallback_only_without_version(model_dir: Path, factories: Any) -> None:
    assert Scorer.load(model_dir, fallback_version="v9.9").version == "v1"
    factories.rewrite_meta(model_dir, lambda raw: raw.pop("version"))
    assert Scorer.load(model_dir, fallback_version="v9.9").version == "v9.9"
    assert json.loads((model_dir / "meta.json").read_text())["threshold"] == 0.5


def test_scorer_serves_committed_model_like_xgboost(factories: Any) -> None:
    """The model the pipeline committed in model/ loads, verifies, and scores as XGBoost does."""
    from service.config import PROJECT_ROOT

    model_dir = PROJECT_ROOT / "model"
    scorer = Scorer.load(model_dir)
    booster = xgb.Booster()
    booster.load_model(str(model_dir / scorer.meta.artifacts[BOOSTER].path))
    x = factories.random_valid_rows(100_000, seed=31)
    ours = scorer.score(x).probabilities
    reference = booster.predict(xgb.DMatrix(x, feature_names=booster.feature_names))
    assert np.max(np.abs(ours - reference)) < 1e-6


def test_scorer_single_flagged_row_gets_its_reasons_at_once(model_dir: Path, factories: Any) -> None:
    scorer = Scorer.load(model_dir)
    fraud, benign = _row(factories.fraud()), _row(factories.valid())
    alone = scorer.score([fraud])
    assert bool(alone.flagged[0]) is True and alone.reasons[0]
    # The single-row path explains exactly as the batch path does.
    assert scorer.score([benign, fraud]).reasons[1] == alone.reasons[0]
    assert scorer.score([benign]).reasons == [None]
