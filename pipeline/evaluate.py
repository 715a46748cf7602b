"""Step 5, evaluate: metrics, the decision threshold and the quality gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import auc, brier_score_loss, precision_recall_curve, roc_curve

from pipeline.config import EvaluateParams


@dataclass(frozen=True)
class Metrics:
    roc_auc: float
    pr_auc: float
    """Average precision: the area under the precision-recall curve."""
    precision: float
    recall: float
    f1: float
    alert_rate: float
    """Share of transactions flagged at the threshold."""
    brier: float
    ece: float
    """Expected calibration error over equal-width probability bins."""
    threshold: float
    rows: int
    positives: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Curves:
    """The ROC and precision-recall curves of one model's scores, from which its metrics are read.

    Each sklearn curve sorts the scores; computing both once per score vector, and reading the
    threshold, ROC-AUC, PR-AUC and the report's plot from them, replaces five sorts with two
    (docs/benchmarks.md, Pipeline scale).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    """``roc_curve`` with its default ``drop_intermediate``: the points ``roc_auc_score`` integrates."""
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    """``precision_recall_curve`` at every distinct score: ``average_precision_score``'s steps."""

    @property
    def roc_auc(self) -> float:
        """Equal to ``roc_auc_score`` on the same data: its own integral of the same curve."""
        return float(auc(self.fpr, self.tpr))

    @property
    def pr_auc(self) -> float:
        """Equal to ``average_precision_score``: sklearn's step integral of the same curve."""
        return float(max(0.0, -np.sum(np.diff(self.recall) * self.precision[:-1])))

    def pr_corners(self) -> tuple[np.ndarray, np.ndarray]:
        """Recall and precision where recall changes: the same picture with far fewer points."""
        keep = np.ones(len(self.recall), dtype=bool)
        if len(keep) > 2:
            moves = np.diff(self.recall) != 0
            keep[1:-1] = moves[:-1] | moves[1:]
        return self.recall[keep], self.precision[keep]


def ranking_curves(y_true: np.ndarray, scores: np.ndarray) -> Curves:
    """Both curves of ``scores`` against 0/1 labels ``y_true``.

    Args:
        y_true: 0/1 labels holding both classes.
        scores: predicted fraud probabilities.

    Returns:
        The curves, ready for ``choose_threshold``, ``evaluate`` and the report's plot.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y_true, scores)
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    return Curves(fpr=fpr, tpr=tpr, precision=precision, recall=recall, thresholds=thresholds)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...]
    candidate_roc_auc: float
    champion_roc_auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_threshold(
    y_true: np.ndarray, scores: np.ndarray, params: EvaluateParams, scored: Curves | None = None
) -> float:
    """Pick the decision threshold on validation data by the configured rule.

    Args:
        y_true: 0/1 labels of the validation window.
        scores: the model's probabilities for it.
        params: ``threshold_rule`` and ``threshold_target``.
        scored: ``ranking_curves(y_true, scores)`` when already computed.

    Returns:
        The threshold t; the service flags ``probability >= t``.
    """
    if params.threshold_rule == "alert_rate":
        # The smallest threshold that flags at most the target share of transactions.
        ordered = np.sort(scores)
        unique = np.unique(ordered)
        flagged_share = 1.0 - np.searchsorted(ordered, unique, side="left") / len(ordered)
        within = unique[flagged_share <= params.threshold_target]
        return float(within[0]) if len(within) else float(np.nextafter(unique[-1], np.inf))
    scored = scored or ranking_curves(y_true, scores)
    precision, recall, thresholds = scored.precision, scored.recall, scored.thresholds
    # precision_recall_curve returns one more precision/recall point than thresholds.
    precision, recall = precision[:-1], recall[:-1]
    if params.threshold_rule == "min_precision":
        meets = np.flatnonzero(precision >= params.threshold_target)
        if len(meets) == 0:
            # No threshold reaches the precision asked for: the most precise one is the closest.
            return float(thresholds[int(np.argmax(precision))])
        return float(thresholds[meets[0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, bins: int) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(float(y_true[mask].mean()) - float(scores[mask].mean()))
    return total


def evaluate(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    params: EvaluateParams,
    scored: Curves | None = None,
) -> Metrics:
    """Score a model's probabilities against labels.

    Args:
        y_true: 0/1 labels.
        scores: predicted fraud probabilities.
        threshold: the decision threshold.
        params: calibration bins.
        scored: ``ranking_curves(y_true, scores)`` when already computed.

    Returns:
        Ranking, decision and calibration metrics.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        raise ValueError("metrics need both classes in the evaluation data")
    flagged = scores >= threshold
    true_positives = int((flagged & (y_true == 1)).sum())
    precision = true_positives / int(flagged.sum()) if flagged.any() else 0.0
    recall = true_positives / int((y_true == 1).sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scored = scored or ranking_curves(y_true, scores)
    return Metrics(
        roc_auc=scored.roc_auc,
        pr_auc=scored.pr_auc,
        precision=precision,
        recall=recall,
        f1=f1,
        alert_rate=float(flagged.mean()),
        brier=float(brier_score_loss(y_true, scores)),
        ece=expected_calibration_error(y_true, scores, params.calibration_bins),
        threshold=threshold,
        rows=len(y_true),
        positives=int(y_true.sum()),
    )


def quality_gate(candidate: Metrics, champion: Metrics | None, params: EvaluateParams) -> GateResult:
    """Decide whether a candidate may replace the champion.

    Args:
        candidate: the candidate's metrics on the holdout.
        champion: the current champion's metrics on the same holdout, or None without one.
        params: the ROC-AUC floor and the allowed regression.

    Returns:
        Passed only if the candidate clears the floor and is not worse than the champion by more
        than the allowed margin; otherwise every reason it failed.
    """
    reasons: list[str] = []
    if candidate.roc_auc < params.min_roc_auc:
        reasons.append(
            f"candidate ROC-AUC {candidate.roc_auc:.4f} is below the floor {params.min_roc_auc:.4f}"
        )
    if champion is not None and candidate.roc_auc < champion.roc_auc - params.max_regression:
        reasons.append(
            f"candidate ROC-AUC {candidate.roc_auc:.4f} is more than {params.max_regression:.4f} below "
            f"the champion's {champion.roc_auc:.4f} on the same holdout"
        )
    return GateResult(
        passed=not reasons,
        reasons=tuple(reasons),
        candidate_roc_auc=candidate.roc_auc,
        champion_roc_auc=None if champion is None else champion.roc_auc,
    )
