"""Reason codes: exact TreeSHAP of the served trees in numpy, the values of XGBoost's ``pred_contribs``.

XGBoost's ``Booster.predict(..., pred_contribs=True)`` gives each feature the Shapley value of the
path-dependent game of Lundberg et al.: for one tree,

    v(S) = sum over leaves l of value_l * prod over the nodes n on the root -> l path of
           [1 if x goes towards l at n]   when feature(n) is in S,
           cover(child towards l) / cover(n)   otherwise,

with ``cover`` the node's ``sum_hessian``. Shapley values add up over trees and over leaves, so
each leaf is a small game of its own. Group the leaf's path nodes by feature: for each feature j
on the path, ``a_j`` is the product of its nodes' indicators (0 or 1) and ``b_j`` the product of
their cover ratios; the leaf's game is ``value * prod_j (a_j if j in S else b_j)``, and feature i
gets

    phi_i = value * (a_i - b_i) * sum over T in U\\{i} of |T|! (u-1-|T|)! / u!
                                  * prod_{j in T} a_j * prod_{j in U\\{i}\\T} b_j

(``U`` the leaf's u distinct path features), nothing when it is not on the path. Adding features
with ``a = b = 1`` changes no one's value (they are null players), so every leaf is padded to the
same number of slots and all leaves are computed at once. The bias (XGBoost's last column) is the
intercept plus ``v`` of the empty set: the sum of ``value * prod_j b_j`` over all leaves.

Since every ``a_j`` is 0 or 1, a leaf has at most ``2**slots`` patterns of ``a``. The ``table``
strategy computes, at load, every leaf's contributions under every pattern, already added into the
features' places (one row of all features per leaf and pattern, so nothing is scattered per row and
each leaf costs a row one contiguous read); explaining a row then compares it with each split
(float32, left when ``x < split_condition``, as ``service.trees`` and XGBoost do), reads off each
leaf's pattern, gathers those table rows and adds them up. When the table would pass
``MAX_TABLE_BYTES`` (deep trees, many of them), the ``direct`` strategy evaluates the same formula,
through the same ``shapley_values``, for the rows' own patterns and adds each slot into its
feature's column.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.trees import BoosterFormatError, Tree

ExplainStrategy = Literal["table", "direct"]
Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MAX_TABLE_BYTES = 64 * 1024 * 1024
"""Largest pattern table (leaves x 2**slots x features, float64) built at load; above it, ``direct``.
The committed model's is 1.3 MB; 1,000 trees of depth 6 on five features would need 82 MB."""
MAX_SLOTS = 62
"""Most distinct features on one leaf's path: a row's pattern of them is a bit field of an int64."""
CHUNK_BYTES = 4 * 1024 * 1024
"""Temporaries of one chunk of rows (or, at load, of leaves): large enough to amortise numpy's
per-call cost over many rows, small enough that a 10,000-row batch does not allocate gigabytes."""


def shapley_values(values: Float64Array, a: Float64Array, b: Float64Array) -> Float64Array:
    """Shapley values of the games ``g(S) = value * prod_j (a_j if j in S else b_j)``, one per row.

    Player i's value is ``value * (a_i - b_i) * sum over T in U\\{i} of w(|T|) prod_T a_j
    prod_(U\\{i}\\T) b_j`` with ``w(t) = t! (u-1-t)! / u!``. Since ``w(t)`` is the integral of
    ``s**t (1-s)**(u-1-t)`` over [0, 1], that sum is the integral of ``prod_(j != i) (a_j s + b_j (1-s))``,
    a polynomial of degree u-1 in s, which Gauss-Legendre quadrature on ceil(u/2) nodes gives exactly.
    No factor is negative on [0, 1], so nothing cancels: u multiplications per node and player
    instead of 2**(u-1) coalitions.

    Args:
        values: shape (m,), each game's leaf value.
        a: shape (m, u), each player's factor when present (0 or 1 for a tree path).
        b: shape (m, u), each player's factor when absent (the product of its cover ratios).

    Returns:
        Shape (m, u): the value of each player of each game.
    """
    m, u = a.shape
    nodes, weights = _quadrature(u)
    s = nodes[:, None]
    # factors[j]: player j's factor at each node, shape (nodes, m).
    factors = [a[:, j] * s + b[:, j] * (1.0 - s) for j in range(u)]
    # The product over every player but i, as (product of those before i) * (product of those after).
    after: list[Float64Array] = [np.ones((len(nodes), m))] * u
    product = np.ones((len(nodes), m))
    for j in range(u - 1, 0, -1):
        product = product * factors[j]
        after[j - 1] = product
    phi = np.empty((m, u), dtype=np.float64)
    before = np.ones((len(nodes), m))
    for i in range(u):
        phi[:, i] = weights @ (before * after[i])
        before = before * factors[i]
    phi *= values[:, None] * (a - b)
    return phi


@cache
def _quadrature(players: int) -> tuple[Float64Array, Float64Array]:
    """Gauss-Legendre nodes and weights on [0, 1], exact for polynomials of degree players - 1."""
    nodes, weights = np.polynomial.legendre.leggauss(max(1, (players + 1) // 2))
    return (nodes + 1.0) / 2.0, weights / 2.0


class TreeExplainer:
    """Per-feature TreeSHAP contributions of an ensemble, in log-odds, as XGBoost's ``pred_contribs``.

    Args:
        trees: the booster's trees, as ``service.trees.read_booster_document`` checked them.
        base_margin: the intercept in log-odds.
        num_features: features per row.
        strategy: force ``"table"`` or ``"direct"`` (tests); by default the table when it fits.

    Raises:
        BoosterFormatError: a split's ``sum_hessian`` is not finite and > 0 (or a leaf's finite and
            >= 0), a leaf's path does not lead back to the root, or a forced table does not fit.
    """

    def __init__(
        self,
        trees: Sequence[Tree],
        base_margin: float,
        num_features: int,
        strategy: ExplainStrategy | None = None,
    ) -> None:
        if not trees:
            raise BoosterFormatError("the booster has no trees")
        self.num_features = num_features
        self._read_paths(trees)
        leaves, slots = self._absent.shape
        if slots > MAX_SLOTS:
            raise BoosterFormatError(f"a leaf's path splits on {slots} features, more than {MAX_SLOTS}")
        self.table_bytes = leaves * (1 << slots) * num_features * 8
        """Size of the pattern table, built only by the ``table`` strategy."""
        fits = self.table_bytes <= MAX_TABLE_BYTES
        if strategy is None:
            strategy = "table" if fits else "direct"
        elif strategy == "table" and not fits:
            raise BoosterFormatError(
                f"the explainer's table would take {self.table_bytes / 2**20:,.0f} MiB, over "
                f"MAX_TABLE_BYTES ({MAX_TABLE_BYTES / 2**20:,.0f} MiB)"
            )
        self.strategy: ExplainStrategy = strategy
        # XGBoost's last column: the intercept plus v(empty set), every tree's cover-weighted mean leaf.
        self.bias = base_margin + float(np.sum(self._leaf_value * np.prod(self._absent, axis=1)))
        if strategy == "table":
            self._build_table()
        # Rows explained at once, so that each chunk's temporaries stay near CHUNK_BYTES.
        per_leaf = 3 * self._step_split.shape[0] + 8 + 8 * num_features
        self._table_rows = max(1, CHUNK_BYTES // (leaves * per_leaf + len(self._split_feature)))
        self._leaf_block = min(leaves, max(1, CHUNK_BYTES // _shapley_bytes(slots)))
        self._direct_rows = max(1, CHUNK_BYTES // (self._leaf_block * _shapley_bytes(slots)))

    # -- load ------------------------------------------------------------------------------------------

    def _read_paths(self, trees: Sequence[Tree]) -> None:
        """Every leaf's path as padded (depth, leaves) arrays: the split passed and the side taken."""
        # All trees as one forest with node ids offset per tree, so that each step below is one
        # numpy call for every leaf of every tree (per-tree calls cost more than the work itself).
        sizes = np.asarray([len(tree.left) for tree in trees], dtype=np.intp)
        offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        is_leaf = np.concatenate([tree.is_leaf for tree in trees])
        cover = np.concatenate([tree.cover for tree in trees])
        feature = np.concatenate([tree.feature for tree in trees])
        condition = np.concatenate([tree.condition for tree in trees])
        left = np.concatenate([tree.left + base for tree, base in zip(trees, offset, strict=True)])
        right = np.concatenate([tree.right + base for tree, base in zip(trees, offset, strict=True)])
        leaves = np.concatenate([tree.leaves + base for tree, base in zip(trees, offset, strict=True)])
        _check_covers(cover, is_leaf, offset)
        internal = np.flatnonzero(~is_leaf)
        parent = np.full(len(is_leaf), -1, dtype=np.intp)
        parent[left[internal]] = internal
        parent[right[internal]] = internal
        went_left = np.zeros(len(is_leaf), dtype=bool)
        went_left[left[internal]] = True
        # The splits numbered one after the other, each row is tested against each once; one more
        # split, which every row passes to the left, stands in for the padding steps (they carry no
        # slot bit anyway), so that a booster of single-leaf trees still has a split to test.
        split_id = np.full(len(is_leaf), len(internal), dtype=np.intp)
        split_id[internal] = np.arange(len(internal))
        self._split_feature = np.append(feature[internal], 0).astype(np.intp)
        self._split_threshold = np.append(condition[internal], np.inf).astype(np.float32)
        # Walk up from every leaf at once; a leaf's walk stops at its root, the rest is padding.
        depth = max(1, max(tree.depth for tree in trees))
        shape = (depth, len(leaves))
        self._step_split = np.empty(shape, dtype=np.intp)
        self._step_left = np.empty(shape, dtype=bool)
        step_feature = np.empty(shape, dtype=np.intp)
        step_ratio = np.empty(shape, dtype=np.float64)
        current = leaves
        for step in range(depth):
            up = parent[current]
            moving = up >= 0
            above = np.where(moving, up, current)
            self._step_split[step] = np.where(moving, split_id[above], len(internal))
            self._step_left[step] = went_left[current]
            step_feature[step] = np.where(moving, feature[above], -1)
            # The share of the split's cover that goes the leaf's way: XGBoost's zero fraction.
            step_ratio[step] = np.where(moving, cover[current], 1.0) / np.where(moving, cover[above], 1.0)
            current = above
        tree_of_leaf = np.searchsorted(offset, leaves, side="right") - 1
        lost = np.flatnonzero(current != offset[tree_of_leaf])
        if len(lost):
            tree = int(tree_of_leaf[lost[0]])
            leaf = int(leaves[lost[0]] - offset[tree])
            raise BoosterFormatError(f"tree {tree} leaf {leaf} does not lead back to the root")
        self._leaf_value = condition[leaves].astype(np.float64)
        self._assign_slots(step_feature, step_ratio)

    def _assign_slots(self, features: npt.NDArray[np.intp], ratios: Float64Array) -> None:
        """Give each distinct feature on a leaf's path a slot, and multiply its cover ratios into ``b``."""
        depth, leaves = features.shape
        valid = features >= 0
        rows = np.arange(leaves)
        on_path = np.zeros((leaves, self.num_features), dtype=bool)
        for step in range(depth):
            on_path[rows[valid[step]], features[step, valid[step]]] = True
        slot_of_feature = np.cumsum(on_path, axis=1) - 1
        slots = max(1, int(on_path.sum(axis=1).max()))
        # Unused slots are null players (a = b = 1): whatever their feature, they add exact zeros.
        self._slot_feature = np.zeros((leaves, slots), dtype=np.intp)
        with_feature, feature = np.nonzero(on_path)
        self._slot_feature[with_feature, slot_of_feature[with_feature, feature]] = feature
        step_slot = np.where(valid, slot_of_feature[rows, np.maximum(features, 0)], 0)
        self._step_bit = np.where(valid, np.left_shift(1, step_slot), 0).astype(_bit_field(slots))
        self._absent = np.ones((leaves, slots), dtype=np.float64)
        for step in range(depth):
            self._absent[rows, step_slot[step]] *= ratios[step]

    def _build_table(self) -> None:
        """Contributions of every leaf under every pattern of ``a``: one row of all features per pair."""
        leaves, slots = self._absent.shape
        patterns = 1 << slots
        bits = ((np.arange(patterns)[:, None] >> np.arange(slots)) & 1).astype(np.float64)
        table = np.zeros((leaves, patterns, self.num_features), dtype=np.float64)
        chunk = max(1, CHUNK_BYTES // (patterns * _shapley_bytes(slots)))
        for start in range(0, leaves, chunk):
            stop = min(leaves, start + chunk)
            phi = shapley_values(
                np.repeat(self._leaf_value[start:stop], patterns),
                np.tile(bits, (stop - start, 1)),
                np.repeat(self._absent[start:stop], patterns, axis=0),
            ).reshape(stop - start, patterns, slots)
            leaf = np.arange(start, stop)
            for slot in range(slots):
                # One slot at a time: a leaf's used slots hold distinct features, so no cell is hit twice.
                table[leaf, :, self._slot_feature[start:stop, slot]] += phi[:, :, slot]
        # Features last: what a row gathers for one leaf is contiguous (40 bytes for five features),
        # where a column per feature took one scattered read per feature and leaf.
        self._table = table.reshape(leaves * patterns, self.num_features)
        # A row's pattern indexes the table as leaf * patterns + (all bits) - (the bits it misses).
        self._leaf_top = np.arange(leaves, dtype=np.intp) * patterns + (patterns - 1)

    # -- explain ---------------------------------------------------------------------------------------

    def _missing(self, x: Float32Array) -> npt.NDArray[np.integer[Any]]:
        """Per row and leaf, the bits of the slots where the row leaves the leaf's path (a_j = 0)."""
        go_left = x.take(self._split_feature, axis=1) < self._split_threshold
        away = go_left.take(self._step_split, axis=1) != self._step_left  # (rows, depth, leaves)
        missing: npt.NDArray[np.integer[Any]] = np.bitwise_or.reduce(away * self._step_bit, axis=1)
        return missing

    def _table_contributions(self, x: Float32Array) -> Float64Array:
        index = self._leaf_top - self._missing(x)
        # Summed along each row's leaves in one fixed order: a row gets the same values in any batch.
        # einsum's summation loop, not .sum(axis=1), which reduces along a middle axis with an inner
        # loop of num_features (5) elements: 2-3x einsum's time on a 300-tree table, 1 and 17 rows.
        result: Float64Array = np.einsum("nlf->nf", self._table.take(index, axis=0))
        return result

    def _direct_contributions(self, x: Float32Array) -> Float64Array:
        n = x.shape[0]
        leaves, slots = self._absent.shape
        present_bits = ~self._missing(x)
        result = np.zeros((n, self.num_features), dtype=np.float64)
        # Leaves in blocks fixed by the model, not by the batch: a row gets the same values in any batch.
        for start in range(0, leaves, self._leaf_block):
            stop = min(leaves, start + self._leaf_block)
            block = stop - start
            present = (present_bits[:, start:stop].reshape(n * block, 1) >> np.arange(slots)) & 1
            phi = shapley_values(
                np.tile(self._leaf_value[start:stop], n),
                present.astype(np.float64),
                np.tile(self._absent[start:stop], (n, 1)),
            )
            # Each row's slot values into its feature columns, added up in leaf order.
            columns = (
                self._slot_feature[start:stop].reshape(1, -1)
                + (np.arange(n, dtype=np.intp) * self.num_features)[:, None]
            )
            result += np.bincount(
                columns.ravel(), weights=phi.ravel(), minlength=n * self.num_features
            ).reshape(n, self.num_features)
        return result

    def contributions(self, x: Float32Array) -> Float64Array:
        """TreeSHAP contributions of the rows of ``x``, in log-odds; the last column is the bias.

        Args:
            x: finite float32 rows, shape (n, num_features).

        Returns:
            Shape (n, num_features + 1); each row sums to the row's margin (local accuracy).
        """
        if x.ndim != 2 or x.shape[1] != self.num_features or x.dtype != np.float32:
            raise ValueError(
                f"expected a float32 array of shape (n, {self.num_features}), got {x.dtype} {x.shape}"
            )
        if self.strategy == "table":
            explain, chunk = self._table_contributions, self._table_rows
        else:
            explain, chunk = self._direct_contributions, self._direct_rows
        out = np.empty((x.shape[0], self.num_features + 1), dtype=np.float64)
        out[:, -1] = self.bias
        for start in range(0, x.shape[0], chunk):
            out[start : start + chunk, :-1] = explain(x[start : start + chunk])
        return out


def _bit_field(slots: int) -> type[np.integer[Any]]:
    """The smallest integer type holding ``slots`` bits that mixes with intp without going to float."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if slots <= np.iinfo(dtype).bits:
            return dtype
    return np.int64


def _shapley_bytes(slots: int) -> int:
    """Bytes ``shapley_values`` holds per game: inputs, factors and products at each node, output."""
    return 8 * slots * (4 + 3 * len(_quadrature(slots)[0]))


def _check_covers(cover: Float64Array, is_leaf: BoolArray, offset: npt.NDArray[np.intp]) -> None:
    """Every split's cover must be finite and positive (it divides), every leaf's finite and >= 0."""
    finite = np.isfinite(cover)
    bad_split = ~is_leaf & ~(finite & (cover > 0))
    bad_leaf = is_leaf & ~(finite & (cover >= 0))
    for bad, need in ((bad_split, "finite and > 0 on a split"), (bad_leaf, "finite and >= 0 on a leaf")):
        if bad.any():
            node = int(np.flatnonzero(bad)[0])
            tree = int(np.searchsorted(offset, node, side="right") - 1)
            value = float(cover[node])
            raise BoosterFormatError(
                f"tree {tree} node {node - int(offset[tree])} has sum_hessian (cover) {value!r}; "
                f"reason codes need it {need}"
            )
