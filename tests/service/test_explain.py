"""The numpy TreeSHAP against XGBoost's own ``pred_contribs``: every column within 1e-5, both strategies."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from service import explain
from service.artifacts import BOOSTER, ModelDirError, read_meta
from service.config import PROJECT_ROOT
from service.explain import TreeExplainer, shapley_values
from service.features import FEATURE_NAMES
from service.scorer import Scorer
from service.trees import BoosterFormatError, TreeEnsemble, read_booster_document

TOLERANCE = 1e-5
"""XGBoost computes pred_contribs in float32; its own rounding is about 2e-6 on these models."""
STRATEGIES = ["table", "direct"]


def _xgboost_contributions(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    matrix = xgb.DMatrix(x, feature_names=list(FEATURE_NAMES))
    contributions: np.ndarray = booster.predict(matrix, pred_contribs=True)
    return contributions


def _explainer(document: dict[str, Any], strategy: str | None = None) -> TreeExplainer:
    booster = read_booster_document(document, FEATURE_NAMES)
    return TreeExplainer(booster.trees, booster.base_margin, booster.num_features, strategy)  # type: ignore[arg-type]


def _rows(factories: Any, document: dict[str, Any], seed: int) -> np.ndarray:
    """Random valid rows and rows exactly on (and one float32 step beside) every split."""
    return np.vstack(
        [factories.random_valid_rows(3000, seed=seed), factories.threshold_rows(document, 2000, seed=seed)]
    )


def _assert_matches_xgboost(booster: xgb.Booster, factories: Any, strategy: str, seed: int) -> None:
    document = factories.booster_document(booster)
    explainer = _explainer(document, strategy)
    assert explainer.strategy == strategy
    x = _rows(factories, document, seed)
    ours = explainer.contributions(x)
    reference = _xgboost_contributions(booster, x)
    assert ours.shape == reference.shape == (len(x), len(FEATURE_NAMES) + 1)
    assert np.max(np.abs(ours - reference)) < TOLERANCE
    # The rows exercise every feature: each has contributions of both signs.
    assert ((ours[:, :-1] > 0).any(axis=0) & (ours[:, :-1] < 0).any(axis=0)).any()


def _committed_booster() -> xgb.Booster:
    model_dir = PROJECT_ROOT / "model"
    booster = xgb.Booster()
    booster.load_model(str(model_dir / read_meta(model_dir).artifacts[BOOSTER].path))
    return booster


def _few_feature_booster(depth: int) -> xgb.Booster:
    """Deep trees on data where only two features vary: every path repeats a feature."""
    rng = np.random.default_rng(depth)
    x = np.zeros((3000, len(FEATURE_NAMES)), dtype=np.float32)
    x[:, 0] = rng.lognormal(4.0, 1.5, len(x))
    x[:, 3] = rng.exponential(50.0, len(x))
    x[:, 1], x[:, 2], x[:, 4] = 12, 3, 2
    y = ((x[:, 0] > 300) ^ (x[:, 3] > 80) ^ (rng.random(len(x)) < 0.1)).astype(np.int32)
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "seed": 1, "nthread": 2}
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)), 20)


def _brute_force_shapley(value: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The leaf game's Shapley values by enumerating every coalition."""
    u = len(a)
    phi = np.zeros(u)
    for i in range(u):
        others = [j for j in range(u) if j != i]
        for size in range(u):
            weight = math.factorial(size) * math.factorial(u - 1 - size) / math.factorial(u)
            for coalition in itertools.combinations(others, size):
                present = np.prod([a[j] for j in coalition])
                absent = np.prod([b[j] for j in others if j not in coalition])
                phi[i] += value * weight * (a[i] - b[i]) * present * absent
    return phi


# -- the formula -----------------------------------------------------------------------------------


@pytest.mark.parametrize("players", [1, 2, 3, 4, 5, 6, 7])
def test_shapley_values_match_enumeration_of_coalitions(players: int) -> None:
    rng = np.random.default_rng(players)
    values = rng.normal(size=40)
    # Binary a as on a tree path, and fractional a: the formula holds for any factors.
    a = np.vstack([(rng.random((20, players)) < 0.5), rng.random((20, players))]).astype(np.float64)
    b = rng.random((40, players))
    expected = np.array([_brute_force_shapley(v, ai, bi) for v, ai, bi in zip(values, a, b, strict=True)])
    np.testing.assert_allclose(shapley_values(values, a, b), expected, rtol=0, atol=1e-14)


def test_shapley_values_null_player_gets_nothing_and_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    values, a, b = rng.normal(size=30), (rng.random((30, 3)) < 0.5).astype(np.float64), rng.random((30, 3))
    padded = shapley_values(values, np.hstack([a, np.ones((30, 2))]), np.hstack([b, np.ones((30, 2))]))
    np.testing.assert_array_equal(padded[:, 3:], 0.0)
    np.testing.assert_allclose(padded[:, :3], shapley_values(values, a, b), rtol=0, atol=1e-15)


# -- against XGBoost -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explainer_committed_model_matches_xgboost(factories: Any, strategy: str) -> None:
    _assert_matches_xgboost(_committed_booster(), factories, strategy, seed=41)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("depth", [1, 3, 4, 6])
def test_explainer_trained_model_matches_xgboost_at_depth(factories: Any, depth: int, strategy: str) -> None:
    _assert_matches_xgboost(
        factories.train_booster(seed=depth, rounds=40, depth=depth), factories, strategy, 7
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explainer_feature_repeated_on_path_matches_xgboost(factories: Any, strategy: str) -> None:
    booster = _few_feature_booster(depth=6)
    document = factories.booster_document(booster)
    explainer = _explainer(document, strategy)
    # Two features on paths of up to six splits: the leaves really do repeat them.
    assert explainer._absent.shape[1] == 2
    assert max(tree.depth for tree in read_booster_document(document, FEATURE_NAMES).trees) == 6
    x = _rows(factories, document, seed=3)
    assert np.max(np.abs(explainer.contributions(x) - _xgboost_contributions(booster, x))) < TOLERANCE


def test_explainer_single_leaf_trees_give_only_a_bias(factories: Any) -> None:
    x, y = factories.synthetic_transactions(500, seed=2)
    params = {"objective": "binary:logistic", "min_child_weight": 1e9, "nthread": 2}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)), 3)
    document = factories.booster_document(booster)
    assert all(
        len(t["left_children"]) == 1 for t in document["learner"]["gradient_booster"]["model"]["trees"]
    )
    for strategy in STRATEGIES:
        ours = _explainer(document, strategy).contributions(x)
        np.testing.assert_array_equal(ours[:, :-1], 0.0)
        assert np.max(np.abs(ours - _xgboost_contributions(booster, x))) < TOLERANCE


def test_explainer_bias_is_xgboosts_last_column(booster_v2: xgb.Booster, factories: Any) -> None:
    explainer = _explainer(factories.booster_document(booster_v2))
    reference = _xgboost_contributions(booster_v2, factories.random_valid_rows(100, seed=1))[:, -1]
    assert np.ptp(reference) == 0.0
    assert abs(explainer.bias - float(reference[0])) < TOLERANCE


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explainer_contributions_sum_to_numpy_margin(
    booster_v2: xgb.Booster, factories: Any, strategy: str
) -> None:
    document = factories.booster_document(booster_v2)
    booster = read_booster_document(document, FEATURE_NAMES)
    ensemble = TreeEnsemble(booster.trees, booster.base_margin, booster.num_features)
    x = _rows(factories, document, seed=5)
    contributions = _explainer(document, strategy).contributions(x)
    np.testing.assert_allclose(contributions.sum(axis=1), ensemble.margin(x), rtol=0, atol=1e-9)


# -- the two strategies ----------------------------------------------------------------------------


def test_explainer_table_and_direct_agree(booster_v2: xgb.Booster, factories: Any) -> None:
    document = factories.booster_document(booster_v2)
    x = factories.random_valid_rows(2000, seed=6)
    table, direct = (_explainer(document, s).contributions(x) for s in STRATEGIES)
    np.testing.assert_allclose(table, direct, rtol=0, atol=1e-12)


def test_explainer_defaults_to_table_under_the_memory_cap(booster_v2: xgb.Booster, factories: Any) -> None:
    explainer = _explainer(factories.booster_document(booster_v2))
    assert explainer.strategy == "table"
    assert explainer.table_bytes <= explain.MAX_TABLE_BYTES


def test_explainer_falls_back_to_direct_over_the_memory_cap(
    booster_v2: xgb.Booster, factories: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = factories.booster_document(booster_v2)
    needed = _explainer(document).table_bytes
    monkeypatch.setattr(explain, "MAX_TABLE_BYTES", needed - 1)
    assert _explainer(document).strategy == "direct"
    with pytest.raises(BoosterFormatError, match="MAX_TABLE_BYTES"):
        _explainer(document, "table")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explainer_row_alone_equals_row_in_any_batch(
    booster_v2: xgb.Booster, factories: Any, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    document = factories.booster_document(booster_v2)
    x = factories.random_valid_rows(300, seed=10)
    batch = _explainer(document, strategy).contributions(x)
    singles = np.vstack([_explainer(document, strategy).contributions(x[i : i + 1]) for i in range(20)])
    np.testing.assert_array_equal(singles, batch[:20])
    # Small chunks (several of rows, and for direct several blocks of leaves): the same values.
    monkeypatch.setattr(explain, "CHUNK_BYTES", 64 * 1024)
    chunked = _explainer(document, strategy)
    assert (
        chunked._table_rows < len(x)
        if strategy == "table"
        else chunked._leaf_block < len(chunked._leaf_value)
    )
    np.testing.assert_allclose(chunked.contributions(x), batch, rtol=0, atol=1e-12)


def test_explainer_rejects_wrong_shape(booster_v1: xgb.Booster, factories: Any) -> None:
    explainer = _explainer(factories.booster_document(booster_v1))
    with pytest.raises(ValueError, match="shape"):
        explainer.contributions(np.zeros((3, 4), dtype=np.float32))


# -- bad boosters ----------------------------------------------------------------------------------


def _json_document(booster: xgb.Booster) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(booster.save_raw("json"))
    return document


@pytest.mark.parametrize("cover", [0.0, -1.0, float("nan"), float("inf")])
def test_explainer_split_with_non_positive_or_non_finite_cover_is_refused(
    booster_v1: xgb.Booster, cover: float
) -> None:
    document = _json_document(booster_v1)
    tree = document["learner"]["gradient_booster"]["model"]["trees"][3]
    split = next(i for i, left in enumerate(tree["left_children"]) if left != -1 and i > 0)
    tree["sum_hessian"][split] = cover
    with pytest.raises(BoosterFormatError, match=rf"tree 3 node {split} has sum_hessian .*> 0 on a split"):
        _explainer(document)


@pytest.mark.parametrize("cover", [-0.5, float("nan")])
def test_explainer_leaf_with_negative_or_nan_cover_is_refused(booster_v1: xgb.Booster, cover: float) -> None:
    document = _json_document(booster_v1)
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    leaf = tree["left_children"].index(-1)
    tree["sum_hessian"][leaf] = cover
    with pytest.raises(BoosterFormatError, match=rf"tree 0 node {leaf} .*>= 0 on a leaf"):
        _explainer(document)


def test_explainer_missing_covers_are_refused(booster_v1: xgb.Booster) -> None:
    document = _json_document(booster_v1)
    del document["learner"]["gradient_booster"]["model"]["trees"][2]["sum_hessian"]
    with pytest.raises(BoosterFormatError, match="tree 2 is malformed"):
        read_booster_document(document, FEATURE_NAMES)


def test_scorer_load_refuses_booster_with_zero_cover(
    tmp_path: Path, booster_v1: xgb.Booster, factories: Any
) -> None:
    directory = tmp_path / "model"
    factories.write_version(directory, "v1", booster_v1)
    document = _json_document(booster_v1)
    document["learner"]["gradient_booster"]["model"]["trees"][0]["sum_hessian"][0] = 0.0
    factories.replace_booster(directory, "v1", json.dumps(document).encode())
    with pytest.raises(ModelDirError, match="cannot be served: tree 0 node 0 has sum_hessian"):
        Scorer.load(directory)
