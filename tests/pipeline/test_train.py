from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import TrainParams
from pipeline.train import (
    Split,
    feature_matrix,
    load_booster,
    negative_sample,
    predict,
    time_split,
    train,
)
from tests.pipeline.conftest import make_frame

PARAMS = TrainParams()


@pytest.fixture(scope="module")
def split() -> Split:
    return time_split(make_frame(rows=20_000, seed=21), PARAMS)


@pytest.fixture(scope="module")
def trained(split: Split):  # type: ignore[no-untyped-def]
    return train(split, PARAMS)


def test_time_split_holds_out_the_most_recent_rows(split: Split) -> None:
    assert (len(split.train), len(split.validation), len(split.test)) == (12_000, 4_000, 4_000)
    assert split.train["timestamp"].max() <= split.validation["timestamp"].min()
    assert split.validation["timestamp"].max() <= split.test["timestamp"].min()


def test_time_split_ignores_input_order() -> None:
    frame = make_frame(rows=5_000, seed=3)
    shuffled = frame.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(time_split(shuffled, PARAMS).test, time_split(frame, PARAMS).test)


def test_time_split_window_without_fraud_is_an_error() -> None:
    frame = make_frame(rows=2_000, seed=3)
    frame.loc[frame.index[-400:], "label"] = 0
    with pytest.raises(ValueError, match="test window"):
        time_split(frame, PARAMS)


def test_train_same_data_gives_bit_identical_model(split: Split, trained) -> None:  # type: ignore[no-untyped-def]
    again = train(split, PARAMS)
    assert again.model_bytes == trained.model_bytes


def test_train_model_bytes_are_ubjson_that_reload_to_the_same_scores(split: Split, trained) -> None:  # type: ignore[no-untyped-def]
    reloaded = load_booster(trained.model_bytes)
    assert trained.model_bytes[:1] == b"{"  # UBJSON object marker: XGBoost's own format, no pickle
    np.testing.assert_array_equal(predict(reloaded, split.test), predict(trained.booster, split.test))


def test_train_probabilities_are_calibrated_despite_class_weights(split: Split, trained) -> None:  # type: ignore[no-untyped-def]
    assert trained.scale_pos_weight > 10
    scores = predict(trained.booster, split.test)
    assert scores.mean() == pytest.approx(split.test["label"].mean(), rel=0.35)


def test_train_stops_early_and_keeps_only_the_best_trees(trained) -> None:  # type: ignore[no-untyped-def]
    assert trained.booster.num_boosted_rounds() == trained.best_iteration + 1 <= PARAMS.n_estimators


def test_model_direction_riskier_transaction_never_scores_lower(trained) -> None:  # type: ignore[no-untyped-def]
    ordinary = pd.DataFrame(
        {
            "amount": [40.0],
            "hour": [14],
            "merchant_category": [1],
            "distance_from_home": [3.0],
            "num_transactions_last_24h": [2],
        }
    )
    risky = pd.DataFrame(
        {
            "amount": [4_000.0],
            "hour": [3],
            "merchant_category": [8],
            "distance_from_home": [800.0],
            "num_transactions_last_24h": [2],
        }
    )
    assert predict(trained.booster, risky)[0] > predict(trained.booster, ordinary)[0]


def test_model_invariance_identical_inputs_identical_scores(split: Split, trained) -> None:  # type: ignore[no-untyped-def]
    rows = pd.concat([split.test.iloc[:50]] * 2, ignore_index=True)
    scores = predict(trained.booster, rows)
    np.testing.assert_array_equal(scores[:50], scores[50:])


def test_feature_matrix_is_float32_in_contract_order() -> None:
    frame = make_frame(rows=10)[
        ["num_transactions_last_24h", "amount", "hour", "distance_from_home", "merchant_category"]
    ]
    matrix = feature_matrix(frame)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[:, 0], frame["amount"].to_numpy(np.float32))


def test_feature_matrix_takes_only_the_rows_asked_for() -> None:
    frame = make_frame(rows=100)
    rows = np.array([3, 7, 50, 99])
    np.testing.assert_array_equal(feature_matrix(frame, rows), feature_matrix(frame)[rows])


def test_negative_sample_keeps_every_fraud_row_and_the_ratio_of_legitimate_ones() -> None:
    labels = np.zeros(10_100, dtype=np.int8)
    labels[::101] = 1  # 100 fraud rows
    params = TrainParams(negatives_per_positive=10, min_negatives=500)
    rows, factor = negative_sample(labels, params)
    assert rows is not None
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(rows[labels[rows] == 1], np.flatnonzero(labels == 1))
    assert int((labels[rows] == 0).sum()) == 1_000
    assert factor == pytest.approx(10_000 / 1_000)
    again, _ = negative_sample(labels, params)
    assert again is not None and np.array_equal(rows, again)


def test_negative_sample_keeps_every_row_up_to_the_floor_or_when_disabled() -> None:
    labels = np.zeros(20_000, dtype=np.int8)
    labels[::50] = 1
    assert negative_sample(labels, TrainParams()) == (None, 1.0)  # 19,600 legitimate < 50,000
    assert negative_sample(labels, TrainParams(negatives_per_positive=None, min_negatives=1)) == (None, 1.0)


def test_train_params_recorded_before_sampling_keep_their_meaning() -> None:
    recorded = {
        name: value
        for name, value in TrainParams().model_dump().items()
        if name not in ("eval_metric", "negatives_per_positive", "min_negatives")
    }
    legacy = TrainParams(**recorded)
    assert (legacy.eval_metric, legacy.negatives_per_positive) == ("aucpr", None)
    assert TrainParams(max_depth=5).eval_metric == "logloss"


def test_train_on_sampled_negatives_is_deterministic_and_keeps_quality(split: Split, trained) -> None:  # type: ignore[no-untyped-def]
    from sklearn.metrics import roc_auc_score

    params = TrainParams(negatives_per_positive=20, min_negatives=2_000)
    sampled = train(split, params)
    assert sampled.params["train_rows"] < sampled.params["train_rows_in_window"] == len(split.train)
    assert train(split, params).model_bytes == sampled.model_bytes
    y = split.test["label"].to_numpy()
    full_auc = roc_auc_score(y, predict(trained.booster, split.test))
    sampled_scores = predict(sampled.booster, split.test)
    assert roc_auc_score(y, sampled_scores) > full_auc - 0.02
    assert sampled_scores.mean() == pytest.approx(split.test["label"].mean(), rel=0.35)
