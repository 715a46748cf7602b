"""The numpy tree evaluator against XGBoost itself: exact leaves, probabilities within 1e-6."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from service import ubjson
from service.features import FEATURE_NAMES
from service.trees import BoosterFormatError, from_booster_document, parse_base_score

PARITY_ROWS = 100_000


def _document(booster: xgb.Booster) -> dict[str, Any]:
    document: dict[str, Any] = ubjson.loads(bytes(booster.save_raw("ubj")))
    return document


def _xgboost_probabilities(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(x, feature_names=list(FEATURE_NAMES)))


@pytest.mark.parametrize("strategy", ["bitvector", "traversal"])
@pytest.mark.parametrize("booster_name", ["booster_v1", "booster_v2"])
def test_trees_match_xgboost_on_100k_random_rows(
    request: pytest.FixtureRequest, factories: Any, strategy: str, booster_name: str
) -> None:
    booster: xgb.Booster = request.getfixturevalue(booster_name)
    x = factories.random_valid_rows(PARITY_ROWS, seed=5)
    ensemble = from_booster_document(_document(booster), FEATURE_NAMES, strategy)  # type: ignore[arg-type]
    ours = ensemble.probability(x)
    reference = _xgboost_probabilities(booster, x)
    assert ours.shape == (PARITY_ROWS,)
    assert np.max(np.abs(ours - reference)) < 1e-6
    # The rows really exercise the model: scores span both sides of the threshold.
    assert ours.min() < 0.1 and ours.max() > 0.9


def test_trees_single_row_path_matches_batch_path(booster_v2: xgb.Booster, factories: Any) -> None:
    x = factories.random_valid_rows(500, seed=9)
    ensemble = from_booster_document(_document(booster_v2), FEATURE_NAMES)
    batch = ensemble.probability(x)
    single = np.array([ensemble.probability(x[i : i + 1])[0] for i in range(len(x))])
    np.testing.assert_array_equal(single, batch)


def test_trees_rows_on_split_thresholds_go_where_xgboost_goes(
    booster_v2: xgb.Booster, factories: Any
) -> None:
    document = _document(booster_v2)
    x = factories.threshold_rows(document, 20_000, seed=3)
    for strategy in ("bitvector", "traversal"):
        ensemble = from_booster_document(document, FEATURE_NAMES, strategy)  # type: ignore[arg-type]
        assert np.max(np.abs(ensemble.probability(x) - _xgboost_probabilities(booster_v2, x))) < 1e-6


def test_trees_deep_model_falls_back_to_traversal(factories: Any) -> None:
    booster = factories.train_booster(seed=3, rounds=8, depth=9)
    ensemble = from_booster_document(_document(booster), FEATURE_NAMES)
    assert ensemble.strategy == "traversal"
    x = factories.random_valid_rows(20_000, seed=2)
    assert np.max(np.abs(ensemble.probability(x) - _xgboost_probabilities(booster, x))) < 1e-6
    with pytest.raises(BoosterFormatError, match="too large"):
        from_booster_document(_document(booster), FEATURE_NAMES, "bitvector")


def test_trees_custom_base_score_matches_xgboost(factories: Any) -> None:
    booster = factories.train_booster(seed=4, rounds=10, depth=3, base_score=0.02)
    x = factories.random_valid_rows(20_000, seed=4)
    ensemble = from_booster_document(_document(booster), FEATURE_NAMES)
    assert np.max(np.abs(ensemble.probability(x) - _xgboost_probabilities(booster, x))) < 1e-6


def test_trees_json_document_equals_ubj_document(booster_v1: xgb.Booster, factories: Any) -> None:
    x = factories.random_valid_rows(5_000, seed=8)
    from_json = from_booster_document(json.loads(booster_v1.save_raw("json")), FEATURE_NAMES)
    from_ubj = from_booster_document(_document(booster_v1), FEATURE_NAMES)
    np.testing.assert_array_equal(from_json.probability(x), from_ubj.probability(x))


def test_trees_wrong_objective_is_refused(factories: Any) -> None:
    x, y = factories.synthetic_transactions(500, 1)
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(x, label=y), 2)
    with pytest.raises(BoosterFormatError, match="binary:logistic"):
        from_booster_document(_document(booster), FEATURE_NAMES)


def test_trees_wrong_feature_count_is_refused() -> None:
    rng = np.random.default_rng(0)
    booster = xgb.train(
        {"objective": "binary:logistic"}, xgb.DMatrix(rng.random((200, 4)), label=rng.random(200) < 0.5), 2
    )
    with pytest.raises(BoosterFormatError, match="4 features"):
        from_booster_document(_document(booster), FEATURE_NAMES)


def test_trees_wrong_feature_names_are_refused(factories: Any) -> None:
    x, y = factories.synthetic_transactions(500, 1)
    names = ["a", "b", "c", "d", "e"]
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=y, feature_names=names), 2)
    with pytest.raises(BoosterFormatError, match="feature names"):
        from_booster_document(_document(booster), FEATURE_NAMES)


def test_trees_cyclic_tree_is_refused(booster_v1: xgb.Booster) -> None:
    document = json.loads(booster_v1.save_raw("json"))
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["right_children"][0] = 0  # the root becomes its own child
    with pytest.raises(BoosterFormatError, match="out of range|twice"):
        from_booster_document(document, FEATURE_NAMES)


def test_trees_categorical_split_is_refused(booster_v1: xgb.Booster) -> None:
    document = json.loads(booster_v1.save_raw("json"))
    document["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"][0] = 1
    with pytest.raises(BoosterFormatError, match="categorical"):
        from_booster_document(document, FEATURE_NAMES)


def test_trees_margin_rejects_wrong_shape(booster_v1: xgb.Booster) -> None:
    ensemble = from_booster_document(_document(booster_v1), FEATURE_NAMES)
    with pytest.raises(ValueError, match="shape"):
        ensemble.margin(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        ensemble.margin(np.zeros((3, 5), dtype=np.float64))


@pytest.mark.parametrize(("text", "value"), [("5E-1", 0.5), ("[2E-2]", 0.02), ("[1.5E-1]", 0.15)])
def test_parse_base_score_reads_scalar_and_vector(text: str, value: float) -> None:
    assert parse_base_score(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["[1E-1,2E-1]", "0", "1", "abc", ""])
def test_parse_base_score_refuses_bad_values(text: str) -> None:
    with pytest.raises(BoosterFormatError):
        parse_base_score(text)
