"""Statistical targets of the drift gate, measured by simulation with fixed seeds.

Each test repeats the gate on fresh samples of "original-like" data and asserts a rate. The data,
run counts, seeds and the rates observed with the default DriftParams are recorded in docs/drift.md;
change them together.

Within one run both sides share one fraud rate, drawn from 7-12%, so "no drift" means the same
distribution on both sides; a shift multiplies the whole amount column of the current sample.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DriftParams
from pipeline.drift import detect_drift
from tests.pipeline.conftest import original_like

SMALL_ROWS = (900, 1_100)
"""Each side of a small-sample run draws its size from this range ("about 1,000 rows")."""
LARGE_ROWS = 100_000

NO_DRIFT_RUNS, NO_DRIFT_SEED = 1_000, 101
SMALL_SHIFT_RUNS, SMALL_SHIFT_SEED = 500, 202
LARGE_SHIFT_RUNS, LARGE_SHIFT_SEED = 120, 303
TRIVIAL_SHIFT_RUNS, TRIVIAL_SHIFT_SEED = 120, 404


def drift_rate(
    *, runs: int, seed: int, amount_factor: float, rows: int | tuple[int, int], params: DriftParams
) -> float:
    """Share of ``runs`` simulated comparisons in which the gate reports drift.

    Args:
        runs: Number of independent reference/current pairs.
        seed: Seed of the whole simulation.
        amount_factor: What the current sample's amounts are multiplied by (1.0 = no drift).
        rows: Rows per side, or an inclusive range each side's size is drawn from.
        params: The gate's parameters.

    Returns:
        The share of runs flagged as drift.
    """
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(runs):
        fraud_rate = rng.uniform(0.07, 0.12)
        sizes = (rows, rows) if isinstance(rows, int) else rng.integers(rows[0], rows[1] + 1, size=2)
        reference = original_like(rng, int(sizes[0]), fraud_rate)
        current = original_like(rng, int(sizes[1]), fraud_rate)
        current["amount"] *= amount_factor
        flagged += detect_drift(reference, current, params).drift
    return flagged / runs


@pytest.mark.slow
def test_detect_drift_when_no_drift_small_samples_false_alarm_at_most_1_percent() -> None:
    rate = drift_rate(
        runs=NO_DRIFT_RUNS, seed=NO_DRIFT_SEED, amount_factor=1.0, rows=SMALL_ROWS, params=DriftParams()
    )

    assert rate <= 0.01


@pytest.mark.slow
def test_detect_drift_when_amount_x1_5_small_samples_caught_at_least_99_percent() -> None:
    rate = drift_rate(
        runs=SMALL_SHIFT_RUNS, seed=SMALL_SHIFT_SEED, amount_factor=1.5, rows=SMALL_ROWS, params=DriftParams()
    )

    assert rate >= 0.99


@pytest.mark.slow
def test_detect_drift_when_amount_x1_2_large_samples_caught_at_least_99_percent() -> None:
    rate = drift_rate(
        runs=LARGE_SHIFT_RUNS, seed=LARGE_SHIFT_SEED, amount_factor=1.2, rows=LARGE_ROWS, params=DriftParams()
    )

    assert rate >= 0.99


@pytest.mark.slow
def test_detect_drift_when_amount_x1_02_large_samples_flagged_at_most_5_percent() -> None:
    rate = drift_rate(
        runs=TRIVIAL_SHIFT_RUNS,
        seed=TRIVIAL_SHIFT_SEED,
        amount_factor=1.02,
        rows=LARGE_ROWS,
        params=DriftParams(),
    )

    assert rate <= 0.05
