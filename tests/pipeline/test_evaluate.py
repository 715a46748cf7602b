from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pipeline.config import EvaluateParams
from pipeline.evaluate import (
    Metrics,
    choose_threshold,
    evaluate,
    expected_calibration_error,
    quality_gate,
    ranking_curves,
)

RNG = np.random.default_rng(0)
Y = (RNG.random(5_000) < 0.05).astype(int)
SCORES = np.clip(0.05 + 0.5 * Y + RNG.normal(0, 0.2, 5_000), 0, 1)


def test_choose_threshold_max_f1_matches_brute_force() -> None:
    threshold = choose_threshold(Y, SCORES, EvaluateParams(threshold_rule="max_f1"))

    def f1(t: float) -> float:
        flagged = SCORES >= t
        tp = (flagged & (Y == 1)).sum()
        return 2 * tp / (flagged.sum() + Y.sum())

    best = max(f1(t) for t in np.unique(SCORES))
    assert f1(threshold) == pytest.approx(best)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_choose_threshold_alert_rate_flags_at_most_the_budget(target: float) -> None:
    threshold = choose_threshold(
        Y, SCORES, EvaluateParams(threshold_rule="alert_rate", threshold_target=target)
    )
    share = (SCORES >= threshold).mean()
    assert share <= target
    assert share > target - 0.002  # and uses the budget, not a needlessly high threshold


def test_choose_threshold_min_precision_reaches_the_precision() -> None:
    params = EvaluateParams(threshold_rule="min_precision", threshold_target=0.9)
    threshold = choose_threshold(Y, SCORES, params)
    flagged = SCORES >= threshold
    assert Y[flagged].mean() >= 0.9


def test_evaluate_known_example() -> None:
    y = np.array([0, 0, 1, 1])
    metrics = evaluate(y, np.array([0.1, 0.6, 0.4, 0.9]), 0.5, EvaluateParams())
    assert metrics.roc_auc == pytest.approx(0.75)
    assert (metrics.precision, metrics.recall, metrics.alert_rate) == (0.5, 0.5, 0.5)
    assert metrics.brier == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)


def test_ranking_curves_give_exactly_sklearns_scores() -> None:
    # Rounded scores make many ties, where a curve built differently would integrate differently.
    for scores in (SCORES, np.round(SCORES, 2)):
        scored = ranking_curves(Y, scores)
        assert scored.roc_auc == roc_auc_score(Y, scores)
        assert scored.pr_auc == average_precision_score(Y, scores)
        metrics = evaluate(Y, scores, 0.5, EvaluateParams(), scored)
        assert metrics == evaluate(Y, scores, 0.5, EvaluateParams())


@pytest.mark.parametrize("rule", ["max_f1", "min_precision", "alert_rate"])
def test_choose_threshold_with_precomputed_curves_equals_without(rule: str) -> None:
    params = EvaluateParams(threshold_rule=rule, threshold_target=0.05 if rule == "alert_rate" else 0.9)
    scored = ranking_curves(Y, SCORES)
    assert choose_threshold(Y, SCORES, params, scored) == choose_threshold(Y, SCORES, params)


def test_curves_pr_corners_keep_every_point_where_recall_moves() -> None:
    scores = np.round(SCORES, 2)
    recall, precision = ranking_curves(Y, scores).pr_corners()
    full_precision, full_recall, _ = precision_recall_curve(Y, scores)
    assert len(recall) < len(full_recall)
    assert (recall[0], recall[-1], precision[-1]) == (full_recall[0], full_recall[-1], full_precision[-1])
    # Each distinct recall keeps the precision at both ends of its run of points.
    for value in np.unique(full_recall):
        run = full_precision[full_recall == value]
        kept = precision[recall == value]
        assert run[0] in kept and run[-1] in kept


def test_evaluate_one_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="both classes"):
        evaluate(np.zeros(10), np.zeros(10), 0.5, EvaluateParams())


def test_expected_calibration_error_zero_when_calibrated_and_large_when_not() -> None:
    y = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(y, np.full(10, 0.2), 10) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(10, 0.9), 10) == pytest.approx(0.7)


def metrics(auc: float) -> Metrics:
    return Metrics(auc, 0.5, 0.5, 0.5, 0.5, 0.01, 0.01, 0.01, 0.5, 100, 5)


def test_quality_gate_passes_good_candidate() -> None:
    gate = quality_gate(metrics(0.93), metrics(0.935), EvaluateParams())
    assert gate.passed and gate.reasons == ()


def test_quality_gate_rejects_below_floor() -> None:
    gate = quality_gate(metrics(0.80), None, EvaluateParams())
    assert not gate.passed and "below the floor 0.85" in gate.reasons[0]


def test_quality_gate_rejects_regression_against_champion() -> None:
    gate = quality_gate(metrics(0.90), metrics(0.95), EvaluateParams(max_regression=0.01))
    assert not gate.passed and "champion's 0.9500" in gate.reasons[0]
