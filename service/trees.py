"""Exact evaluation of an XGBoost ``binary:logistic`` tree ensemble with numpy, no XGBoost needed.

XGBoost's CPU predictor goes left at a node when ``x < split_condition``, comparing float32 values.
Both evaluators here compare the same float32 values the same way, so they reach exactly the leaves
XGBoost reaches; only the final sum and sigmoid differ, by float rounding (well under 1e-6).

- ``bitvector`` (the QuickScorer algorithm): a node whose test is false (``x >= threshold``) rules out
  every leaf of its left subtree, and the exit leaf is the leftmost leaf nobody ruled out. Sorting
  each feature's nodes by threshold turns "which nodes are false for x" into a prefix of that list,
  so per-feature prefix-AND tables of leaf bitmasks answer a row with five binary searches, five
  table rows, an AND and a count of trailing zeros. Used when every tree has at most 64 leaves and the
  tables stay small.
- ``traversal``: walks all trees a level at a time, vectorised over rows and trees; the fallback.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Strategy = Literal["bitvector", "traversal"]
Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]

MAX_TABLE_BYTES = 64 * 1024 * 1024
"""Above this the bitvector tables cost more memory than they save time: use the traversal."""
ROWS_PER_CHUNK_BYTES = 128 * 1024
"""Masks of one chunk of rows in the bitvector path: small enough to stay in L2 (measured best)."""


class BoosterFormatError(ValueError):
    """The booster is not a model this evaluator reproduces exactly."""


class Tree:
    """One regression tree in XGBoost's array layout, checked for shape and reachability.

    ``cover`` is each node's ``sum_hessian``: the explainer weighs a split's branches by it
    (``service.explain``), as XGBoost's TreeSHAP does.
    """

    def __init__(self, index: int, raw: Mapping[str, Any], num_features: int) -> None:
        try:
            left = np.asarray(raw["left_children"], dtype=np.int64)
            right = np.asarray(raw["right_children"], dtype=np.int64)
            feature = np.asarray(raw["split_indices"], dtype=np.int64)
            condition = np.asarray(raw["split_conditions"], dtype=np.float32)
            cover = np.asarray(raw["sum_hessian"], dtype=np.float64)
            split_type = raw.get("split_type")
            leaf_size = int(raw.get("tree_param", {}).get("size_leaf_vector", "1"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BoosterFormatError(f"tree {index} is malformed: {exc}") from exc
        n = len(left)
        if n == 0 or not all(len(a) == n for a in (right, feature, condition, cover)):
            raise BoosterFormatError(f"tree {index} has arrays of different lengths")
        if leaf_size > 1:
            raise BoosterFormatError(f"tree {index} has vector leaves (multi-target models are not served)")
        if split_type is not None and len(split_type) and np.any(np.asarray(split_type) != 0):
            raise BoosterFormatError(
                f"tree {index} has categorical splits, which this service does not evaluate"
            )
        self.left, self.right, self.feature, self.condition = left, right, feature, condition
        self.cover = cover
        self.is_leaf = left == -1
        self._walk(index, num_features)

    def _walk(self, index: int, num_features: int) -> None:
        """Check the structure; number the leaves left to right; give each node its leaf range and depth."""
        left, right, feature = self.left.tolist(), self.right.tolist(), self.feature.tolist()
        n = len(left)
        first = [-1] * n
        last = [-1] * n
        depth = [0] * n
        seen = [False] * n
        leaves: list[int] = []
        stack: list[int] = [0]
        # Nodes are pushed as ``~node`` once their children are done, to fill in their leaf range.
        while stack:
            node = stack.pop()
            if node < 0:
                node = ~node
                first[node] = first[left[node]]
                last[node] = last[right[node]]
                continue
            if seen[node]:
                raise BoosterFormatError(f"tree {index} reaches node {node} twice")
            seen[node] = True
            lo, hi = left[node], right[node]
            if lo == -1 and hi == -1:
                first[node] = last[node] = len(leaves)
                leaves.append(node)
                continue
            if not (0 < lo < n and 0 < hi < n):
                raise BoosterFormatError(f"tree {index} node {node} has a child index out of range")
            if not 0 <= feature[node] < num_features:
                raise BoosterFormatError(
                    f"tree {index} splits on a feature index outside 0..{num_features - 1}"
                )
            depth[lo] = depth[hi] = depth[node] + 1
            stack.extend((~node, hi, lo))
        if not all(seen):
            raise BoosterFormatError(f"tree {index} has {seen.count(False)} unreachable nodes")
        if not np.isfinite(self.condition).all():
            raise BoosterFormatError(f"tree {index} has a non-finite split condition or leaf value")
        self.leaves = np.asarray(leaves, dtype=np.int64)
        self.first_leaf = np.asarray(first, dtype=np.int64)
        self.last_leaf = np.asarray(last, dtype=np.int64)
        self.depth = max(depth)


class TreeEnsemble:
    """A binary:logistic gbtree model as flat arrays: ``probability(x)`` matches XGBoost's predict."""

    def __init__(
        self, trees: Sequence[Tree], base_margin: float, num_features: int, strategy: Strategy | None = None
    ) -> None:
        if not trees:
            raise BoosterFormatError("the booster has no trees")
        self.num_trees = len(trees)
        self.num_features = num_features
        self.base_margin = base_margin
        self.max_depth = max(t.depth for t in trees)
        max_leaves = max(len(t.leaves) for t in trees)
        internal_nodes = sum(int((~t.is_leaf).sum()) for t in trees)
        mask_bytes = 1 if max_leaves <= 8 else 2 if max_leaves <= 16 else 4 if max_leaves <= 32 else 8
        table_bytes = (internal_nodes + num_features) * self.num_trees * mask_bytes
        fits = max_leaves <= 64 and table_bytes <= MAX_TABLE_BYTES
        if strategy is None:
            strategy = "bitvector" if fits else "traversal"
        elif strategy == "bitvector" and not fits:
            raise BoosterFormatError("this booster's trees are too large for the bitvector evaluator")
        self.strategy: Strategy = strategy
        largest = max(float(np.max(np.abs(t.condition[t.leaves]))) for t in trees)
        # Leaf values become integers in units of 2**-scale_bits, so a margin is an exact integer
        # sum: the same in any order, hence identical for a row alone or in any batch. The unit is
        # chosen so that any sum stays below 2**52 (exact in float64); rounding each leaf to it moves
        # a margin by at most num_trees * 2**-(scale_bits + 1), about 1e-11 for this service's models.
        self._scale_bits = 52 - math.ceil(math.log2(max(largest, 2.0**-60) * self.num_trees + 1))
        self._unit = 2.0**-self._scale_bits
        if strategy == "bitvector":
            self._build_bitvector(trees, max_leaves, np.dtype(f"u{mask_bytes}"))
        else:
            self._build_traversal(trees)

    # -- bitvector -------------------------------------------------------------------------------------

    def _build_bitvector(self, trees: Sequence[Tree], max_leaves: int, mask_dtype: np.dtype[Any]) -> None:
        bits = mask_dtype.itemsize * 8
        full = (1 << bits) - 1
        leaf_values = np.zeros((self.num_trees, max_leaves), dtype=np.int64)
        thresholds: list[list[float]] = [[] for _ in range(self.num_features)]
        tree_of: list[list[int]] = [[] for _ in range(self.num_features)]
        mask_of: list[list[int]] = [[] for _ in range(self.num_features)]
        for t, tree in enumerate(trees):
            leaf_values[t, : len(tree.leaves)] = self._fixed(tree.condition[tree.leaves])
            for node in np.flatnonzero(~tree.is_leaf):
                left = tree.left[node]
                lo, hi = int(tree.first_leaf[left]), int(tree.last_leaf[left])
                # A false test (x >= threshold) rules out the leaves of the left subtree.
                ruled_out = ((1 << (hi - lo + 1)) - 1) << lo
                f = int(tree.feature[node])
                thresholds[f].append(float(tree.condition[node]))
                tree_of[f].append(t)
                mask_of[f].append(full & ~ruled_out)
        tables: list[npt.NDArray[Any]] = []
        self._sorted_thresholds: list[list[float]] = []
        self._sorted_arrays: list[Float32Array] = []
        offsets: list[int] = []
        offset = 0
        for f in range(self.num_features):
            order = np.argsort(np.asarray(thresholds[f], dtype=np.float32), kind="stable")
            table = np.full((len(order) + 1, self.num_trees), full, dtype=mask_dtype)
            table[np.arange(1, len(order) + 1), np.asarray(tree_of[f], dtype=np.int64)[order]] = np.asarray(
                mask_of[f], dtype=np.uint64
            )[order].astype(mask_dtype)
            # Row k holds the AND of the masks of the k lowest thresholds: the nodes false when
            # exactly k thresholds are <= x.
            np.bitwise_and.accumulate(table, axis=0, out=table)
            tables.append(table)
            ordered = np.asarray(thresholds[f], dtype=np.float32)[order]
            self._sorted_arrays.append(ordered)
            # float32 values held as Python floats compare exactly like the float32 values.
            self._sorted_thresholds.append([float(v) for v in ordered])
            offsets.append(offset)
            offset += len(order) + 1
        self._tables = np.concatenate(tables)
        self._offsets = offsets
        # The same tables as Python integers (one bit field per tree): a single row then needs five
        # bisections and five big-integer ANDs, not five numpy gathers.
        self._mask_dtype = mask_dtype
        self._mask_row_bytes = self.num_trees * mask_dtype.itemsize
        self._prefix_ints = [
            [int.from_bytes(row.astype(mask_dtype.newbyteorder("<")).tobytes(), "little") for row in table]
            for table in tables
        ]
        self._ctz_table = _ctz16() if mask_dtype.itemsize <= 2 else None
        self._offset_array = np.asarray(offsets, dtype=np.intp)
        self._leaf_values = leaf_values.ravel()
        self._leaf_base = np.arange(self.num_trees, dtype=np.intp) * max_leaves
        self._chunk_rows = max(1, ROWS_PER_CHUNK_BYTES // (self.num_trees * mask_dtype.itemsize))

    def _fixed(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        scaled: npt.NDArray[np.int64] = np.rint(values.astype(np.float64) * 2.0**self._scale_bits).astype(
            np.int64
        )
        return scaled

    def _bitvector_margin(self, x: Float32Array) -> npt.NDArray[np.int64]:
        n = x.shape[0]
        rows = np.empty((n, self.num_features), dtype=np.intp)
        for f in range(self.num_features):
            rows[:, f] = np.searchsorted(self._sorted_arrays[f], x[:, f], side="right")
        rows += self._offset_array
        out = np.empty(n, dtype=np.int64)
        for start in range(0, n, self._chunk_rows):
            chunk = rows[start : start + self._chunk_rows]
            masks = self._tables.take(chunk[:, 0], axis=0)
            for f in range(1, self.num_features):
                masks &= self._tables.take(chunk[:, f], axis=0)
            leaves = self._trailing_zeros(masks).astype(np.intp)
            leaves += self._leaf_base
            out[start : start + len(chunk)] = self._leaf_values.take(leaves).sum(axis=1)
        return out

    def _bitvector_margin_one(self, row: Sequence[float]) -> int:
        combined = -1
        for prefixes, thresholds, value in zip(self._prefix_ints, self._sorted_thresholds, row, strict=True):
            combined &= prefixes[bisect_right(thresholds, value)]
        masks = np.frombuffer(combined.to_bytes(self._mask_row_bytes, "little"), dtype=self._mask_dtype)
        leaves = self._leaf_base + self._trailing_zeros(masks)
        return int(self._leaf_values.take(leaves).sum())

    def _trailing_zeros(self, masks: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self._ctz_table is not None:
            counts: npt.NDArray[np.int8] = self._ctz_table.take(masks)
            return counts
        return _trailing_zeros(masks)

    # -- traversal -------------------------------------------------------------------------------------

    def _build_traversal(self, trees: Sequence[Tree]) -> None:
        sizes = [len(t.left) for t in trees]
        bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        feature, threshold, left, right, value = [], [], [], [], []
        for tree, base in zip(trees, bases, strict=True):
            own = np.arange(len(tree.left), dtype=np.int64) + base
            # A leaf points at itself and always "goes left", so every row can take max_depth steps.
            left.append(np.where(tree.is_leaf, own, tree.left + base))
            right.append(np.where(tree.is_leaf, own, tree.right + base))
            feature.append(np.where(tree.is_leaf, 0, tree.feature))
            threshold.append(np.where(tree.is_leaf, np.float32(np.inf), tree.condition).astype(np.float32))
            value.append(np.where(tree.is_leaf, self._fixed(tree.condition), 0))
        self._node_feature = np.concatenate(feature).astype(np.intp)
        self._node_threshold = np.concatenate(threshold)
        self._node_left = np.concatenate(left).astype(np.intp)
        self._node_right = np.concatenate(right).astype(np.intp)
        self._node_value = np.concatenate(value)
        self._roots = bases.astype(np.intp)

    def _traversal_margin(self, x: Float32Array) -> npt.NDArray[np.int64]:
        n = x.shape[0]
        flat = np.ascontiguousarray(x).ravel()
        row_offset = (np.arange(n, dtype=np.intp) * self.num_features)[:, None]
        node = np.broadcast_to(self._roots, (n, self.num_trees)).copy()
        for _ in range(self.max_depth):
            values = flat[row_offset + self._node_feature[node]]
            go_left = values < self._node_threshold[node]
            node = np.where(go_left, self._node_left[node], self._node_right[node])
        result: npt.NDArray[np.int64] = self._node_value[node].sum(axis=1)
        return result

    # -- public ----------------------------------------------------------------------------------------

    def margin(self, x: Float32Array) -> Float64Array:
        """Raw scores (log-odds) of the rows of ``x``, a float32 array of shape (n, num_features)."""
        if x.ndim != 2 or x.shape[1] != self.num_features or x.dtype != np.float32:
            raise ValueError(
                f"expected a float32 array of shape (n, {self.num_features}), got {x.dtype} {x.shape}"
            )
        fixed = self._bitvector_margin(x) if self.strategy == "bitvector" else self._traversal_margin(x)
        # int64 -> float64 is exact below 2**52, times a power of two is exact: the same float as
        # margin_one computes for the same row.
        result: Float64Array = fixed.astype(np.float64) * self._unit + self.base_margin
        return result

    def margin_one(self, row: Sequence[float]) -> float:
        """Raw score of one row of Python floats holding float32 values; equals ``margin`` bit for bit."""
        if self.strategy == "bitvector":
            return float(self._bitvector_margin_one(row)) * self._unit + self.base_margin
        return float(self.margin(np.asarray([row], dtype=np.float32))[0])

    def probability(self, x: Float32Array) -> Float64Array:
        """Probabilities of the positive class, as XGBoost's ``Booster.predict`` returns them."""
        return np.asarray([sigmoid(m) for m in self.margin(x).tolist()], dtype=np.float64)

    def probability_one(self, row: Sequence[float]) -> float:
        """``probability`` of one row, without numpy input or output."""
        return sigmoid(self.margin_one(row))


def sigmoid(margin: float) -> float:
    """The logistic function, in scalar float64: the one place a probability is computed, so a row
    gets the same score alone or in a batch. A list comprehension of it costs ~1 ms per 10,000 rows."""
    if margin < -700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-margin))


@lru_cache(maxsize=1)
def _ctz16() -> npt.NDArray[np.int8]:
    """Trailing zeros of every 16-bit value (0 for 0): one 64 KiB gather instead of four ufuncs."""
    values = np.arange(1 << 16, dtype=np.int64)
    lowest = values & -values
    table = np.zeros(1 << 16, dtype=np.int8)
    nonzero = lowest > 0
    table[nonzero] = np.log2(lowest[nonzero]).astype(np.int8)
    return table


def _trailing_zeros(masks: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    # masks are never zero: the exit leaf is never ruled out.
    lowest = masks & (~masks + masks.dtype.type(1))
    counts: npt.NDArray[np.intp] = np.bitwise_count(lowest - masks.dtype.type(1)).astype(np.intp)
    return counts


def parse_base_score(text: str) -> float:
    """``"5E-1"`` or ``"[2E-2]"`` (XGBoost 3 writes a vector) -> the intercept in probability space."""
    parts = [p for p in str(text).strip().strip("[]").split(",") if p.strip()]
    if len(parts) != 1:
        raise BoosterFormatError(f"expected one base_score, found {text!r}")
    try:
        value = float(parts[0])
    except ValueError as exc:
        raise BoosterFormatError(f"base_score {text!r} is not a number") from exc
    if not 0.0 < value < 1.0:
        raise BoosterFormatError(f"base_score {value} of a logistic model must lie strictly between 0 and 1")
    return value


@dataclass(frozen=True, slots=True)
class BoosterTrees:
    """The checked trees of a booster document and its intercept, read once for scoring and explaining."""

    trees: tuple[Tree, ...]
    base_margin: float
    """The intercept in log-odds (``base_score`` through the logit)."""
    num_features: int


def from_booster_document(
    doc: Mapping[str, Any], feature_names: Sequence[str], strategy: Strategy | None = None
) -> TreeEnsemble:
    """Build the evaluator from XGBoost's saved-model document (the UBJ or JSON tree), checking it fits.

    Args:
        doc: the decoded ``Booster.save_model`` document.
        feature_names: the features the service sends, in order.
        strategy: force an evaluator (tests); by default the fastest one that fits.

    Returns:
        The ensemble, ready to score.
    """
    booster = read_booster_document(doc, feature_names)
    return TreeEnsemble(booster.trees, booster.base_margin, booster.num_features, strategy)


def read_booster_document(doc: Mapping[str, Any], feature_names: Sequence[str]) -> BoosterTrees:
    """Read and check the trees of XGBoost's saved-model document (the UBJ or JSON tree).

    Args:
        doc: the decoded ``Booster.save_model`` document.
        feature_names: the features the service sends, in order.

    Returns:
        The trees, each checked for shape and reachability, and the intercept.
    """
    try:
        learner = doc["learner"]
        objective = learner["objective"]["name"]
        booster = learner["gradient_booster"]
        params = learner["learner_model_param"]
        num_features = int(params["num_feature"])
        num_class = int(params.get("num_class", "0"))
        num_target = int(params.get("num_target", "1"))
        base_score = parse_base_score(params["base_score"])
        names = list(learner.get("feature_names", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise BoosterFormatError(f"not an XGBoost model document: {exc!r}") from exc
    if objective != "binary:logistic":
        raise BoosterFormatError(f"objective is {objective!r}; the service serves binary:logistic only")
    if booster.get("name") != "gbtree":
        raise BoosterFormatError(f"booster is {booster.get('name')!r}; the service serves gbtree only")
    if num_class > 1 or num_target != 1:
        raise BoosterFormatError("the booster is multi-class or multi-target")
    if num_features != len(feature_names):
        raise BoosterFormatError(
            f"the booster takes {num_features} features, the contract has {len(feature_names)}"
        )
    if names and names != list(feature_names):
        raise BoosterFormatError(f"the booster's feature names {names} differ from {list(feature_names)}")
    try:
        raw_trees = booster["model"]["trees"]
        num_parallel = int(booster["model"]["gbtree_model_param"].get("num_parallel_tree", "1"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BoosterFormatError(f"the booster has no tree list: {exc!r}") from exc
    if num_parallel < 1:
        raise BoosterFormatError("num_parallel_tree must be at least 1")
    trees = tuple(Tree(i, raw, num_features) for i, raw in enumerate(raw_trees))
    base_margin = math.log(base_score / (1.0 - base_score))
    return BoosterTrees(trees, base_margin, num_features)
