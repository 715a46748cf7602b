"""Unit tests of the drift gate on small in-memory frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DriftParams
from pipeline.drift import (
    DriftReport,
    FeatureDrift,
    _category_counts,
    auc_standard_error,
    check_decay,
    decay_sample,
    detect_drift,
    holm_adjust,
    population_stability_index,
    reference_sample,
)
from service.features import FEATURE_NAMES, LABEL
from tests.pipeline.conftest import original_like


def make_frame(rows: int, seed: int, amount_scale: float = 1.0, fraud_rate: float = 0.1) -> pd.DataFrame:
    """Legitimate and fraud rows shaped like the original generator's, fraud rows last."""
    frame = original_like(np.random.default_rng(seed), rows, fraud_rate)
    frame["amount"] = frame["amount"] * amount_scale
    return frame


@pytest.fixture
def params() -> DriftParams:
    return DriftParams()


def by_name(report: DriftReport) -> dict[str, FeatureDrift]:
    return {f.name: f for f in report.features}


# --- test choice per kind ---------------------------------------------------------------------------


def test_detect_drift_uses_ks_for_continuous_and_chi2_for_discrete(params: DriftParams) -> None:
    report = detect_drift(make_frame(2_000, 1), make_frame(2_000, 2), params)

    tests = {f.name: f.test for f in report.features}
    assert tests == {
        "amount": "ks_2samp",
        "hour": "chi2_contingency",
        "merchant_category": "chi2_contingency",
        "distance_from_home": "ks_2samp",
        "num_transactions_last_24h": "chi2_contingency",
    }
    assert tuple(f.name for f in report.features) == FEATURE_NAMES


def test_detect_drift_when_same_distribution_reports_no_drift(params: DriftParams) -> None:
    report = detect_drift(make_frame(5_000, 1), make_frame(5_000, 2), params)

    assert report.drift is False
    assert report.drifted_features == ()
    assert all(not f.drifted for f in report.features)


def test_detect_drift_when_amount_scaled_flags_only_amount(params: DriftParams) -> None:
    report = detect_drift(make_frame(5_000, 1), make_frame(5_000, 2, amount_scale=1.5), params)

    assert report.drift is True
    assert report.drifted_features == ("amount",)
    amount = report.features[0]
    assert amount.significant and amount.material and amount.drifted


def test_detect_drift_when_discrete_shifted_flags_it_with_chi2(params: DriftParams) -> None:
    reference = make_frame(3_000, 1)
    current = make_frame(3_000, 2)
    # Move a third of the legitimate rows to the evening: a shape KS would mis-test for integers.
    current.loc[:999, "hour"] = 21
    report = detect_drift(reference, current, params)

    hour = by_name(report)["hour"]
    assert report.drifted_features == ("hour",)
    assert hour.test == "chi2_contingency"


def test_detect_drift_merges_sparse_tail_cells(params: DriftParams) -> None:
    reference = make_frame(1_000, 1)
    current = make_frame(1_000, 2)
    distinct = len(np.union1d(reference["num_transactions_last_24h"], current["num_transactions_last_24h"]))

    counts = by_name(detect_drift(reference, current, params))["num_transactions_last_24h"]

    # Poisson(12) fraud counts leave a sparse tail of single rows; merging folds it into fewer cells.
    assert 2 <= counts.bins < distinct


def test_detect_drift_when_constant_discrete_feature_gives_p_one(params: DriftParams) -> None:
    reference = make_frame(500, 1)
    current = make_frame(500, 2)
    reference["merchant_category"] = 3
    current["merchant_category"] = 3

    merchant = by_name(detect_drift(reference, current, params))["merchant_category"]

    assert merchant.p_value == 1.0
    assert merchant.effect_size == 0.0
    assert merchant.bins == 1


# --- Holm correction --------------------------------------------------------------------------------


def test_holm_adjust_matches_known_values() -> None:
    # Sorted: 0.01*4=0.04, 0.02*3=0.06, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.04, 0.06, 0.06, 0.06.
    adjusted = holm_adjust([0.03, 0.01, 0.04, 0.02])

    assert adjusted == pytest.approx((0.06, 0.04, 0.06, 0.06))


def test_holm_adjust_caps_at_one_and_handles_empty() -> None:
    assert holm_adjust([0.5, 0.9, 0.3]) == pytest.approx((1.0, 1.0, 0.9))
    assert holm_adjust([]) == ()


def test_detect_drift_reports_raw_and_holm_adjusted_p_values(params: DriftParams) -> None:
    report = detect_drift(make_frame(2_000, 1), make_frame(2_000, 2, amount_scale=1.1), params)

    raw = [f.p_value for f in report.features]
    assert [f.p_value_adjusted for f in report.features] == pytest.approx(list(holm_adjust(raw)))
    assert all(f.p_value_adjusted >= f.p_value for f in report.features)
    assert report.correction == "holm"


# --- PSI --------------------------------------------------------------------------------------------


def test_population_stability_index_when_identical_is_zero() -> None:
    share = np.array([0.1, 0.2, 0.3, 0.4])

    assert population_stability_index(share, share) == 0.0


def test_population_stability_index_when_shifted_matches_formula() -> None:
    ref = np.array([0.5, 0.5])
    cur = np.array([0.8, 0.2])
    expected = 0.3 * np.log(0.8 / 0.5) + (-0.3) * np.log(0.2 / 0.5)

    assert population_stability_index(ref, cur) == pytest.approx(expected)


def test_population_stability_index_when_bin_empty_is_finite() -> None:
    psi = population_stability_index(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2]))

    assert np.isfinite(psi) and psi > 0.2


def test_detect_drift_psi_grows_with_shift(params: DriftParams) -> None:
    reference = make_frame(20_000, 1)
    same = detect_drift(reference, make_frame(20_000, 2), params).features[0].effect_size
    shifted = detect_drift(reference, make_frame(20_000, 2, amount_scale=1.5), params).features[0].effect_size

    assert same < 0.002
    assert shifted > 0.05


# --- significant but immaterial ---------------------------------------------------------------------


def test_detect_drift_when_significant_but_immaterial_not_flagged(params: DriftParams) -> None:
    # 100,000 rows a side make a 3% rescaling highly significant, but its PSI is far below the floor.
    reference = make_frame(100_000, 1)
    current = make_frame(100_000, 2, amount_scale=1.03)

    report = detect_drift(reference, current, params)

    amount = report.features[0]
    assert amount.significant is True
    assert amount.material is False
    assert amount.drifted is False
    assert report.drift is False


def test_detect_drift_when_material_but_not_significant_not_flagged() -> None:
    # 60 rows a side: PSI noise alone exceeds the floor, but no test can be significant.
    report = detect_drift(make_frame(60, 1), make_frame(60, 2), DriftParams())

    assert any(f.material and not f.significant for f in report.features)
    assert report.drift is False


# --- input errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["reference", "current"])
def test_detect_drift_when_column_missing_raises_naming_it(params: DriftParams, which: str) -> None:
    frames = {"reference": make_frame(200, 1), "current": make_frame(200, 2)}
    frames[which] = frames[which].drop(columns="distance_from_home")

    with pytest.raises(ValueError, match=rf"'distance_from_home'.*{which}"):
        detect_drift(frames["reference"], frames["current"], params)


def test_detect_drift_when_column_all_null_raises_naming_it(params: DriftParams) -> None:
    current = make_frame(200, 2)
    current["hour"] = np.nan

    with pytest.raises(ValueError, match=r"'hour' has no values in the current"):
        detect_drift(make_frame(200, 1), current, params)


def test_detect_drift_ignores_label_and_counts_dropped_nulls(params: DriftParams) -> None:
    reference = make_frame(500, 1).drop(columns=LABEL)
    current = make_frame(500, 2)
    current.loc[:9, "amount"] = np.nan

    report = detect_drift(reference, current, params)

    amount = report.features[0]
    assert (report.reference_rows, report.current_rows) == (500, 500)
    assert (amount.reference_rows, amount.current_rows) == (500, 490)
    assert LABEL not in {f.name for f in report.features}


# --- to_dict ----------------------------------------------------------------------------------------


def test_drift_report_to_dict_is_json_ready_with_per_feature_verdicts(params: DriftParams) -> None:
    report = detect_drift(make_frame(1_000, 1), make_frame(1_000, 2, amount_scale=1.5), params)

    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))

    assert data["drift"] is True
    assert data["drifted_features"] == ["amount"]
    assert data["correction"] == "holm"
    assert data["alpha"] == params.alpha
    assert data["psi_floor"] == params.psi_floor
    assert (data["reference_rows"], data["current_rows"]) == (1_000, 1_000)
    assert list(data["features"]) == list(FEATURE_NAMES)
    for feature in data["features"].values():
        assert {
            "test",
            "statistic",
            "p_value",
            "p_value_adjusted",
            "effect_size",
            "material",
            "significant",
            "drifted",
        } <= set(feature)
    assert data["features"]["amount"]["drifted"] is True


# --- decay ------------------------------------------------------------------------------------------


def test_check_decay_when_healthy_not_decayed(params: DriftParams) -> None:
    labels = np.array([0, 0, 1, 1])
    report = check_decay(labels, np.array([0.1, 0.2, 0.8, 0.9]), 0.99, params)

    assert report.roc_auc == 1.0
    assert report.decayed is False
    assert report.computable is True
    assert report.drop == pytest.approx(-0.01)


def test_check_decay_when_below_floor_decayed(params: DriftParams) -> None:
    # AUC 0.75, only 0.01 below its recorded value: the floor alone decides.
    report = check_decay(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.6, 0.4]), 0.76, params)

    assert report.roc_auc == pytest.approx(0.75)
    assert report.decayed is True
    assert "below the floor" in report.reason
    assert "below the recorded" not in report.reason


def test_check_decay_when_beyond_margin_decayed(params: DriftParams) -> None:
    # One positive ranks below four negatives: AUC 24/25 = 0.96, above the floor but 0.04 below 1.0.
    # No noise allowance here: this test is about the margin alone.
    labels = np.repeat([0, 1], 5)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.45, 0.6, 0.7, 0.8, 0.9])

    report = check_decay(labels, scores, 1.0, params.model_copy(update={"decay_z": 0.0}))

    assert report.roc_auc == pytest.approx(0.96)
    assert report.drop == pytest.approx(0.04)
    assert report.decayed is True
    assert "below the recorded" in report.reason
    assert "below the floor" not in report.reason


def test_check_decay_when_within_margin_not_decayed() -> None:
    params = DriftParams(decay_floor=0.5, decay_margin=0.1)
    report = check_decay(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.6, 0.4]), 0.8, params)

    assert report.roc_auc == pytest.approx(0.75)
    assert report.decayed is False


@pytest.mark.parametrize("label", [0, 1])
def test_check_decay_when_one_class_not_computable(params: DriftParams, label: int) -> None:
    report = check_decay(np.full(50, label), np.linspace(0, 1, 50), 0.99, params)

    assert report.decayed is False
    assert report.computable is False
    assert report.roc_auc is None and report.drop is None
    assert "cannot be computed" in report.reason
    assert json.loads(json.dumps(report.to_dict()))["roc_auc"] is None


def test_check_decay_when_lengths_differ_raises(params: DriftParams) -> None:
    with pytest.raises(ValueError, match="3 values but champion_scores has 2"):
        check_decay(np.array([0, 1, 0]), np.array([0.1, 0.2]), 0.9, params)


def test_check_decay_to_dict_has_verdict_and_inputs(params: DriftParams) -> None:
    data = check_decay(np.array([0, 1]), np.array([0.2, 0.7]), 0.95, params).to_dict()

    assert data["decayed"] is False
    assert (data["rows"], data["positives"]) == (2, 1)
    assert data["decay_floor"] == params.decay_floor
    assert data["decay_margin"] == params.decay_margin


# --- reference_sample -------------------------------------------------------------------------------


def test_reference_sample_is_bounded_and_stratified() -> None:
    frame = make_frame(10_000, 1, fraud_rate=0.03)

    sample = reference_sample(frame, rows=1_000, seed=7)

    assert len(sample) == 1_000
    assert int(sample[LABEL].sum()) == 30
    assert list(sample.columns) == [*FEATURE_NAMES, LABEL]
    assert list(sample.index) == list(range(1_000))


def test_reference_sample_is_deterministic_and_seed_dependent() -> None:
    frame = make_frame(5_000, 1)

    first = reference_sample(frame, rows=800, seed=3)
    again = reference_sample(frame, rows=800, seed=3)
    other = reference_sample(frame, rows=800, seed=4)

    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_reference_sample_keeps_dtypes_with_float32_floats() -> None:
    frame = make_frame(3_000, 1)

    sample = reference_sample(frame, rows=500, seed=0)

    assert sample["amount"].dtype == np.float32
    assert sample["distance_from_home"].dtype == np.float32
    for name in ("hour", "merchant_category", "num_transactions_last_24h", LABEL):
        assert sample[name].dtype == frame[name].dtype
    # Sampled values come from the source, only rounded to float32.
    assert np.isin(sample["amount"], frame["amount"].astype(np.float32)).all()


def test_reference_sample_when_frame_small_returns_all_rows_and_drops_extras() -> None:
    frame = make_frame(300, 1).assign(timestamp=pd.Timestamp("2026-01-01"))

    sample = reference_sample(frame, rows=1_000, seed=0)

    assert len(sample) == 300
    assert "timestamp" not in sample.columns


def test_reference_sample_without_label_samples_uniformly() -> None:
    frame = make_frame(2_000, 1).drop(columns=LABEL)

    sample = reference_sample(frame, rows=100, seed=0)

    assert len(sample) == 100
    assert list(sample.columns) == list(FEATURE_NAMES)


def test_reference_sample_when_feature_missing_raises() -> None:
    with pytest.raises(ValueError, match="hour"):
        reference_sample(make_frame(100, 1).drop(columns="hour"), rows=50, seed=0)


def test_reference_sample_round_trips_through_detect_drift(params: DriftParams) -> None:
    frame = make_frame(20_000, 1)

    report = detect_drift(reference_sample(frame, rows=5_000, seed=0), frame, params)

    assert report.drift is False


def test_auc_standard_error_matches_hanley_mcneil_example() -> None:
    # Worked by hand: Q1 = 0.9/1.1, Q2 = 2(0.81)/1.9,
    # var = (0.09 + 49(Q1 - 0.81) + 49(Q2 - 0.81)) / 2500 = 0.0010319, so SE = 0.03212.
    assert auc_standard_error(0.9, 50, 50) == pytest.approx(0.03212, abs=1e-5)
    assert auc_standard_error(0.9, 0, 50) == 0.0


def test_check_decay_drop_within_holdout_noise_is_not_decay() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.02).astype(int)
    scores = labels * 1.9 + rng.normal(size=labels.size)  # ROC-AUC about 0.91
    params = DriftParams(decay_margin=0.03)
    # A champion that scored 0.965 on a holdout with only 80 fraud rows: a 0.055 drop is noise.
    noisy = check_decay(labels, scores, 0.965, params, recorded_positives=80, recorded_negatives=3_920)
    assert noisy.decayed is False
    # The same drop against a precisely measured recorded AUC is real decay.
    precise = check_decay(labels, scores, 0.965, params, recorded_positives=8_000, recorded_negatives=392_000)
    assert precise.decayed is True


def test_decay_sample_when_batch_small_returns_it_unchanged() -> None:
    frame = make_frame(1_000, seed=1)
    assert decay_sample(frame, 5_000, seed=7) is frame


def test_decay_sample_when_batch_large_is_bounded_stratified_and_deterministic() -> None:
    frame = make_frame(20_000, seed=2, fraud_rate=0.05)
    sample = decay_sample(frame, 4_000, seed=7)
    assert len(sample) == 4_000
    assert int(sample[LABEL].sum()) == 200  # 5% of 4,000: the fraud share is kept exactly
    pd.testing.assert_frame_equal(sample, decay_sample(frame, 4_000, seed=7))


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        ([0.0, 1.0, 1.0, 7.0, 3.0], [1.0, 9.0, 9.0, 2.0]),  # whole numbers: counted with bincount
        ([0.5, 1.0, 1.0, 7.25], [1.0, 9.0, 0.5]),  # fractions: counted through np.unique
        ([0.0, 5e6], [1.0, 5e6]),  # whole numbers over too wide a range: np.unique as well
    ],
)
def test_category_counts_give_the_cells_of_np_unique(ref: list[float], cur: list[float]) -> None:
    r, c = np.asarray(ref), np.asarray(cur)
    categories, inverse = np.unique(np.concatenate([r, c]), return_inverse=True)
    ref_counts, cur_counts = _category_counts(r, c)
    np.testing.assert_array_equal(ref_counts, np.bincount(inverse[: r.size], minlength=categories.size))
    np.testing.assert_array_equal(cur_counts, np.bincount(inverse[r.size :], minlength=categories.size))
