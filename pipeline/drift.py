"""The retraining gate: has the data drifted, or has the champion decayed, since it was trained?

``detect_drift`` compares a bounded reference sample of the champion's training data with a fresh
extract, feature by feature, choosing each feature's test by its kind in the feature contract:

- continuous features get the two-sample Kolmogorov-Smirnov test;
- discrete features (counts, codes, hours) get a chi-square test of homogeneity on their category
  counts, sparse cells merged until every expected count reaches ``min_expected``.

The five p-values are Holm-corrected so the family-wise false-alarm rate stays at ``alpha``, and a
feature only drifts when its shift is also material: its population stability index (PSI) reaches
``psi_floor``. With large samples every test finds some difference; the floor keeps a trivial one
from triggering a retrain.

``check_decay`` is the other trigger: the champion's ROC-AUC on fresh labelled data.

scipy and scikit-learn are imported inside the functions that use them: ``scipy.stats`` alone takes
seconds to import, and the CLI imports this module for subcommands that never test anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from pipeline.config import DriftParams
from service.features import FEATURES, LABEL, Feature

TestName = Literal["ks_2samp", "chi2_contingency"]

CORRECTION = "holm"
"""Multiple-testing correction applied across the feature tests."""

PSI_EPSILON = 1e-4
"""Share given to an empty PSI bin, where log(0) is undefined; small enough to leave filled bins alone."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """The drift verdict on one feature.

    ``p_value`` is the raw test result; ``p_value_adjusted`` is Holm-corrected across all features.
    ``bins`` is the number of cells the test (chi-square) or PSI (KS features) used.
    """

    name: str
    kind: Literal["continuous", "discrete"]
    test: TestName
    statistic: float
    p_value: float
    p_value_adjusted: float
    effect_size: float
    significant: bool
    material: bool
    drifted: bool
    reference_rows: int
    current_rows: int
    bins: int

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-ready data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_value_adjusted": self.p_value_adjusted,
            "effect_size": self.effect_size,
            "effect_size_metric": "psi",
            "significant": self.significant,
            "material": self.material,
            "drifted": self.drifted,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "bins": self.bins,
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The drift gate's verdict on a fresh extract against the reference sample.

    ``reference_rows``/``current_rows`` are the frames' row counts; each feature also reports how
    many non-missing values it compared, so dropped nulls are counted, not hidden.
    """

    drift: bool
    features: tuple[FeatureDrift, ...]
    reference_rows: int
    current_rows: int
    alpha: float
    psi_floor: float
    correction: str = CORRECTION

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the features that drifted, in contract order."""
        return tuple(f.name for f in self.features if f.drifted)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data; ``features`` maps each name to its verdict."""
        return {
            "drift": self.drift,
            "drifted_features": list(self.drifted_features),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "alpha": self.alpha,
            "correction": self.correction,
            "psi_floor": self.psi_floor,
            "features": {f.name: f.to_dict() for f in self.features},
        }


@dataclass(frozen=True, slots=True)
class DecayReport:
    """Whether the champion's ROC-AUC on fresh labelled data has decayed.

    ``roc_auc`` and ``drop`` are None when the AUC cannot be computed (only one class present);
    ``decayed`` is then False and ``reason`` says why.
    """

    decayed: bool
    computable: bool
    roc_auc: float | None
    recorded_roc_auc: float
    drop: float | None
    decay_floor: float
    decay_margin: float
    rows: int
    positives: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "decayed": self.decayed,
            "computable": self.computable,
            "roc_auc": self.roc_auc,
            "recorded_roc_auc": self.recorded_roc_auc,
            "drop": self.drop,
            "decay_floor": self.decay_floor,
            "decay_margin": self.decay_margin,
            "rows": self.rows,
            "positives": self.positives,
            "reason": self.reason,
        }


def reference_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Take the bounded, deterministic sample of training data the drift gate compares against.

    The sample is stratified by label when the label column is present, so the rare fraud class
    keeps its share; rows keep their original order. Float features are stored as float32, which
    halves the Parquet file and is far finer than any shift the gate can detect.

    Args:
        frame: Training data holding every contract feature and, optionally, the label.
        rows: Upper bound on the sample's size; a smaller frame is returned whole.
        seed: Seed of the sampler: the same frame, rows and seed give the same sample.

    Returns:
        A new frame with the feature columns (contract order), then the label if present, and a
        fresh 0..n-1 index.

    Raises:
        ValueError: when ``rows`` < 1 or a feature column is missing.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    missing = [f.name for f in FEATURES if f.name not in frame.columns]
    if missing:
        raise ValueError(f"reference_sample: missing feature column(s): {', '.join(missing)}")
    columns = [f.name for f in FEATURES] + ([LABEL] if LABEL in frame.columns else [])

    if len(frame) <= rows:
        positions = np.arange(len(frame))
    else:
        rng = np.random.default_rng(seed)
        if LABEL in frame.columns:
            # sort=True fixes the strata order, and hence the draws, whatever the row order.
            codes, _ = pd.factorize(frame[LABEL], sort=True, use_na_sentinel=False)
            positions = _stratified_positions(np.asarray(codes), rows, rng)
        else:
            positions = np.sort(rng.choice(len(frame), size=rows, replace=False))

    sample = frame.iloc[positions][columns].reset_index(drop=True)
    for feature in FEATURES:
        if feature.dtype == "float":
            sample[feature.name] = sample[feature.name].astype(np.float32)
    return sample


def decay_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """The labelled rows the decay check scores the champion on: all of them, or a bounded sample.

    The same label-stratified, seeded sampler as ``reference_sample``, so the fraud rate is kept
    exactly and the same batch always gives the same rows. ``check_decay`` sizes its noise allowance
    from the rows it is given, so sampling widens it honestly rather than hiding noise.

    Args:
        frame: The fresh labelled batch.
        rows: Upper bound on the rows scored; a smaller frame is returned whole, unchanged.
        seed: Seed of the sampler.

    Returns:
        ``frame`` itself, or a sample of at most ``rows`` rows (features as float32, as scored).
    """
    if len(frame) <= rows:
        return frame
    return reference_sample(frame, rows, seed)


def _stratified_positions(
    codes: npt.NDArray[np.intp], rows: int, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """Draw ``rows`` positions with each stratum's share kept (largest-remainder rounding)."""
    counts = np.bincount(codes)
    exact = counts * rows / counts.sum()
    quota = np.floor(exact).astype(np.intp)
    # Hand the rows lost to flooring to the strata with the largest remainders; stable sort keeps
    # ties deterministic.
    short = rows - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    chosen = [
        rng.choice(np.flatnonzero(codes == stratum), size=int(take), replace=False)
        for stratum, take in enumerate(quota)
        if take > 0
    ]
    return np.sort(np.concatenate(chosen))


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, params: DriftParams) -> DriftReport:
    """Compare each contract feature of ``current`` with ``reference`` and decide whether to retrain.

    A feature drifts iff its Holm-adjusted p-value is below ``params.alpha`` and its PSI is at least
    ``params.psi_floor``; the report says drift when any feature drifts. The label and any other
    column are ignored. Missing (NaN) values are left out of each feature's comparison and counted
    in its ``reference_rows``/``current_rows``.

    Args:
        reference: The reference sample of the champion's training data.
        current: The fresh extract to check.
        params: Significance level, PSI floor and binning.

    Returns:
        The per-feature verdicts, in contract order, and the overall one.

    Raises:
        ValueError: naming the column, when a contract feature is missing from either frame or has
            no values in it.
    """
    tested: list[tuple[Feature, _TestResult]] = []
    for feature in FEATURES:
        ref = _feature_values(reference, feature, "reference")
        cur = _feature_values(current, feature, "current")
        if feature.kind == "continuous":
            result = _continuous_test(ref, cur, params.psi_bins)
        else:
            result = _discrete_test(ref, cur, params.min_expected)
        tested.append((feature, result))

    adjusted = holm_adjust([result.p_value for _, result in tested])
    verdicts = []
    for (feature, result), p_adjusted in zip(tested, adjusted, strict=True):
        significant = p_adjusted < params.alpha
        material = result.psi >= params.psi_floor
        verdicts.append(
            FeatureDrift(
                name=feature.name,
                kind=feature.kind,
                test=result.test,
                statistic=result.statistic,
                p_value=result.p_value,
                p_value_adjusted=p_adjusted,
                effect_size=result.psi,
                significant=significant,
                material=material,
                drifted=significant and material,
                reference_rows=result.reference_rows,
                current_rows=result.current_rows,
                bins=result.bins,
            )
        )
    return DriftReport(
        drift=any(v.drifted for v in verdicts),
        features=tuple(verdicts),
        reference_rows=len(reference),
        current_rows=len(current),
        alpha=params.alpha,
        psi_floor=params.psi_floor,
    )


def holm_adjust(p_values: list[float]) -> tuple[float, ...]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    The i-th smallest p-value (1-based) is multiplied by m - i + 1, then a running maximum keeps the
    adjusted values in the raw values' order; comparing them with alpha is Holm's step-down test.

    Args:
        p_values: Raw p-values of the m tests of one family.

    Returns:
        The adjusted p-values, capped at 1.
    """
    raw = np.asarray(p_values, dtype=np.float64)
    m = raw.size
    if m == 0:
        return ()
    order = np.argsort(raw, kind="stable")
    scaled = np.minimum(1.0, raw[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return tuple(float(p) for p in adjusted)


def population_stability_index(reference_share: FloatArray, current_share: FloatArray) -> float:
    """PSI between two binned distributions: sum of (c - r) * ln(c / r) over bins.

    Args:
        reference_share: Share of reference values in each bin (sums to 1).
        current_share: Share of current values in the same bins.

    Returns:
        The PSI (>= 0; 0 when the shares are equal). Empty bins count as ``PSI_EPSILON``.
    """
    ref = np.maximum(reference_share, PSI_EPSILON)
    cur = np.maximum(current_share, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def check_decay(
    y_true: npt.ArrayLike,
    champion_scores: npt.ArrayLike,
    recorded_roc_auc: float,
    params: DriftParams,
    recorded_positives: int = 0,
    recorded_negatives: int = 0,
) -> DecayReport:
    """Check whether the champion's ranking quality on fresh labelled data has decayed.

    Decayed iff the fresh ROC-AUC is below ``params.decay_floor``, or it is more than
    ``params.decay_margin`` below the ROC-AUC recorded when the champion was promoted by more
    than sampling noise explains: the drop must exceed the margin plus ``params.decay_z`` standard
    errors of the difference (Hanley-McNeil errors of both AUCs). A holdout with a few dozen fraud
    rows measures ROC-AUC to about +-0.02, so without that allowance a lucky holdout would trigger
    retraining on data that has not changed.

    Args:
        y_true: Fresh labels (1 = fraud, 0 = legitimate).
        champion_scores: The champion's fraud scores on the same rows.
        recorded_roc_auc: The champion's ROC-AUC from its ``meta.json``.
        params: The floor, the margin and the noise allowance.
        recorded_positives: Fraud rows in the holdout the recorded ROC-AUC was measured on
            (0 treats the recorded value as exact).
        recorded_negatives: Legitimate rows in that holdout.

    Returns:
        The verdict. With only one class present ROC-AUC is undefined: the report is then not
        decayed, not computable, and says why.

    Raises:
        ValueError: when the inputs differ in length, are empty, or the labels are not 0/1.
    """
    labels = np.asarray(y_true).ravel()
    scores = np.asarray(champion_scores, dtype=np.float64).ravel()
    if labels.size != scores.size:
        raise ValueError(f"y_true has {labels.size} values but champion_scores has {scores.size}")
    if labels.size == 0:
        raise ValueError("check_decay needs at least one labelled row")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y_true must hold only 0 (legitimate) and 1 (fraud)")
    positives = int(np.count_nonzero(labels == 1))
    auc: float | None = None
    drop: float | None = None
    reasons: list[str] = []
    if positives in (0, labels.size):
        only = "fraud" if positives else "legitimate"
        reason = f"ROC-AUC cannot be computed: all {labels.size} labelled rows are {only}"
    else:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(labels, scores))
        drop = float(recorded_roc_auc) - auc
        noise = params.decay_z * float(
            np.hypot(
                auc_standard_error(auc, positives, labels.size - positives),
                auc_standard_error(recorded_roc_auc, recorded_positives, recorded_negatives),
            )
        )
        if auc < params.decay_floor:
            reasons.append(f"ROC-AUC {auc:.4f} is below the floor {params.decay_floor:.4f}")
        if drop > params.decay_margin + noise:
            reasons.append(
                f"ROC-AUC {auc:.4f} is {drop:.4f} below the recorded {recorded_roc_auc:.4f} "
                f"(margin {params.decay_margin:.4f} + noise allowance {noise:.4f})"
            )
        reason = "; ".join(reasons) or (
            f"ROC-AUC {auc:.4f} is within the floor {params.decay_floor:.4f} "
            f"and {params.decay_margin:.4f} + {noise:.4f} (noise) of the recorded {recorded_roc_auc:.4f}"
        )
    return DecayReport(
        decayed=bool(reasons),
        computable=auc is not None,
        roc_auc=auc,
        recorded_roc_auc=float(recorded_roc_auc),
        drop=drop,
        decay_floor=params.decay_floor,
        decay_margin=params.decay_margin,
        rows=int(labels.size),
        positives=positives,
        reason=reason,
    )


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of a ROC-AUC; 0 when the counts are unknown."""
    if positives <= 0 or negatives <= 0:
        return 0.0
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    variance = (
        auc * (1.0 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))


@dataclass(frozen=True, slots=True)
class _TestResult:
    test: TestName
    statistic: float
    p_value: float
    psi: float
    reference_rows: int
    current_rows: int
    bins: int


def _feature_values(frame: pd.DataFrame, feature: Feature, which: str) -> FloatArray:
    """The feature's non-missing values as float64, or a ValueError naming the column."""
    if feature.name not in frame.columns:
        raise ValueError(f"drift: column {feature.name!r} is missing from the {which} frame")
    values = pd.to_numeric(frame[feature.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # Infinite values have no bin and no rank worth comparing; treat them like nulls.
    finite: FloatArray = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"drift: column {feature.name!r} has no values in the {which} frame")
    return finite


def _continuous_test(ref: FloatArray, cur: FloatArray, bins: int) -> _TestResult:
    """KS two-sample test plus PSI on the reference's quantile bins.

    KS rather than Anderson-Darling k-sample: scipy clips the latter's p-value to [0.001, 0.25],
    which would distort the Holm correction, and KS is the cheaper of the two at 100,000 rows.
    """
    from scipy.stats import ks_2samp

    result = ks_2samp(ref, cur)
    # Interior edges only: the outer bins are open so current values beyond the reference's range
    # still count. np.unique drops edges repeated by ties, which would make empty bins.
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = edges.size + 1
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=n_bins) / ref.size
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=n_bins) / cur.size
    return _TestResult(
        test="ks_2samp",
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        psi=population_stability_index(ref_share, cur_share),
        reference_rows=int(ref.size),
        current_rows=int(cur.size),
        bins=n_bins,
    )


def _discrete_test(ref: FloatArray, cur: FloatArray, min_expected: float) -> _TestResult:
    """Chi-square test of homogeneity on category counts, plus PSI on the same cells.

    KS is never used here: with values tied this heavily its p-values are far from uniform under
    no drift. PSI uses the merged cells too, so a handful of rare tail values cannot inflate it.
    """
    from scipy.stats import chi2_contingency

    ref_counts, cur_counts = _category_counts(ref, cur)
    table = _merge_sparse_cells(ref_counts, cur_counts, min_expected)
    if table.shape[1] < 2:
        # One cell left (a constant feature, or too few rows to split): nothing can differ.
        statistic, p_value = 0.0, 1.0
    else:
        result = chi2_contingency(table, correction=False)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    ref_share = table[0] / ref.size
    cur_share = table[1] / cur.size
    return _TestResult(
        test="chi2_contingency",
        statistic=statistic,
        p_value=p_value,
        psi=population_stability_index(ref_share, cur_share),
        reference_rows=int(ref.size),
        current_rows=int(cur.size),
        bins=int(table.shape[1]),
    )


def _category_counts(ref: FloatArray, cur: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Counts of each distinct value in either sample, in value order, for each sample.

    Whole numbers in a modest range (every discrete contract feature) are counted with bincount,
    O(rows); anything else goes through np.unique, which sorts both samples (seconds at 10M rows).
    Both give the same cells.
    """
    low = min(float(ref.min()), float(cur.min()))
    high = max(float(ref.max()), float(cur.max()))
    if high - low <= _BINCOUNT_SPAN and _whole(ref) and _whole(cur):
        span = int(high - low) + 1
        ref_counts = np.bincount((ref - low).astype(np.intp), minlength=span)
        cur_counts = np.bincount((cur - low).astype(np.intp), minlength=span)
        present = (ref_counts + cur_counts) > 0
        return ref_counts[present], cur_counts[present]
    categories, inverse = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    return (
        np.bincount(inverse[: ref.size], minlength=categories.size),
        np.bincount(inverse[ref.size :], minlength=categories.size),
    )


_BINCOUNT_SPAN = 1_000_000
"""Widest value range counted with bincount (8 MB of counters); wider ranges are sorted instead."""


def _whole(values: FloatArray) -> bool:
    return bool(np.all(values == np.floor(values)))


def _merge_sparse_cells(
    ref_counts: npt.NDArray[np.intp], cur_counts: npt.NDArray[np.intp], min_expected: float
) -> npt.NDArray[np.int64]:
    """Merge neighbouring categories (in value order) until each cell's expected count >= min_expected.

    Neighbours in value order are the natural merge for counts (the sparse tail of
    num_transactions_last_24h pools into one "k or more" cell) and harmless for codes. A cell's
    smallest expected count is its pooled total times the smaller frame's share of all rows.
    The loop runs over distinct values, not rows.
    """
    n_ref, n_cur = int(ref_counts.sum()), int(cur_counts.sum())
    smaller_share = min(n_ref, n_cur) / (n_ref + n_cur)
    # The relative tolerance keeps a cell whose expected count is exactly min_expected from being
    # merged because of float rounding.
    needed = min_expected / smaller_share * (1.0 - 1e-12)
    pooled = ref_counts + cur_counts
    cells: list[list[int]] = []
    ref_acc = cur_acc = pooled_acc = 0
    for r, c, p in zip(ref_counts.tolist(), cur_counts.tolist(), pooled.tolist(), strict=True):
        ref_acc, cur_acc, pooled_acc = ref_acc + r, cur_acc + c, pooled_acc + p
        if pooled_acc >= needed:
            cells.append([ref_acc, cur_acc])
            ref_acc = cur_acc = pooled_acc = 0
    if pooled_acc:
        # The short remainder at the top of the range joins the last full cell.
        if cells:
            cells[-1][0] += ref_acc
            cells[-1][1] += cur_acc
        else:
            cells.append([ref_acc, cur_acc])
    return np.array(cells, dtype=np.int64).T
