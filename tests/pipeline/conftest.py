"""Shared factories for pipeline tests: small simulated frames and isolated settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ExtractParams, Settings
from pipeline.extract import simulate
from service.features import FEATURE_NAMES, LABEL


def make_frame(rows: int = 2_000, seed: int = 1, scenario: str = "none", **params: Any) -> pd.DataFrame:
    """A simulated batch: valid, both classes, sorted by timestamp."""
    return simulate(ExtractParams(rows=rows, seed=seed, **params), scenario)


def make_settings(root: Path, **overrides: Any) -> Settings:
    """Settings whose model, data and report folders live under ``root``."""
    return Settings(
        model_dir=root / "model",
        data_dir=root / "data",
        reports_dir=root / "reports",
        **overrides,
    )


def meta_fields(**overrides: Any) -> dict[str, Any]:
    """Every ModelMeta field but version and artifacts, for registry tests that need no training."""
    fields: dict[str, Any] = {
        "trained_at": "2026-01-01T00:00:00Z",
        "features": list(FEATURE_NAMES),
        "label": LABEL,
        "threshold": 0.5,
        "threshold_rule": {"rule": "max_f1"},
        "metrics": {"holdout": {"roc_auc": 0.93, "pr_auc": 0.6}},
        "data": {"rows": 10, "fraud_rate": 0.1, "md5": "0" * 32 + ".dir", "source": "test"},
        "params": {},
        "libraries": {},
    }
    fields.update(overrides)
    return fields


def original_like(rng: np.random.Generator, rows: int, fraud_rate: float) -> pd.DataFrame:
    """Rows like the original generator's: legitimate daytime spending, and rarer night-time fraud.

    Legitimate: amount Exp(mean 60), hour uniform 8..21, merchant uniform 0..4, distance
    Exp(mean 12), count Poisson(3). Fraud: amount Exp(mean 600), hour in {0, 1, 2, 3, 23},
    merchant uniform 6..9, distance Exp(mean 250), count Poisson(12).
    """
    fraud = int(round(rows * fraud_rate))
    legit = rows - fraud
    amount = np.concatenate([rng.exponential(60.0, legit), rng.exponential(600.0, fraud)])
    hour = np.concatenate([rng.integers(8, 22, legit), rng.choice([0, 1, 2, 3, 23], fraud)])
    merchant = np.concatenate([rng.integers(0, 5, legit), rng.integers(6, 10, fraud)])
    distance = np.concatenate([rng.exponential(12.0, legit), rng.exponential(250.0, fraud)])
    count = np.concatenate([rng.poisson(3, legit), rng.poisson(12, fraud)])
    return pd.DataFrame(
        {
            "amount": amount,
            "hour": hour,
            "merchant_category": merchant,
            "distance_from_home": distance,
            "num_transactions_last_24h": count,
            LABEL: np.repeat(np.array([0, 1], dtype=np.int64), [legit, fraud]),
        }
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)
