"""The model committed in model/ is what a fresh clone serves: it must be complete and verified."""

from __future__ import annotations

from pathlib import Path

from pipeline import registry
from service.artifacts import read_meta, verify
from service.features import FEATURE_NAMES

MODEL_DIR = Path(__file__).resolve().parents[1] / "model"


def test_committed_model_matches_its_hashes_and_the_feature_contract() -> None:
    meta = read_meta(MODEL_DIR)
    payloads = verify(MODEL_DIR, meta)
    assert set(payloads) == {"booster", "reference"}
    assert tuple(meta.features) == FEATURE_NAMES
    assert meta.metrics["holdout"]["roc_auc"] >= 0.85


def test_committed_history_ends_at_the_served_version() -> None:
    entries = registry.history(MODEL_DIR)
    assert entries and entries[-1].version == read_meta(MODEL_DIR).version
