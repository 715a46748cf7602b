"""Shared factories of the service tests: synthetic boosters, model directories in the contract's
layout, settings and clients."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from fastapi.testclient import TestClient

from service import ubjson
from service.artifacts import BOOSTER, META_FILE, REFERENCE, VERSIONS_DIR, Artifact, DatasetInfo, ModelMeta
from service.config import Settings
from service.features import FEATURE_NAMES, FEATURES, LABEL
from service.main import create_app

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
THRESHOLD = 0.5

VALID_TRANSACTION: dict[str, Any] = {
    "amount": 150.0,
    "hour": 14,
    "merchant_category": 2,
    "distance_from_home": 5.0,
    "num_transactions_last_24h": 3,
}
FRAUD_TRANSACTION: dict[str, Any] = {
    "amount": 4000.0,
    "hour": 3,
    "merchant_category": 8,
    "distance_from_home": 800.0,
    "num_transactions_last_24h": 15,
}


def synthetic_transactions(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Transactions in contract order and labels; fraud is large, at night, high risk, far away."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(rows) < 0.15
    amount = np.where(fraud, rng.lognormal(6.0, 1.0, rows), rng.lognormal(3.8, 1.0, rows))
    hour = np.where(fraud, rng.integers(0, 6, rows), rng.integers(0, 24, rows))
    category = np.where(fraud, rng.integers(5, 10, rows), rng.integers(0, 10, rows))
    distance = np.where(fraud, rng.exponential(300.0, rows), rng.exponential(15.0, rows))
    count = np.where(fraud, rng.poisson(9, rows), rng.poisson(3, rows))
    x = np.column_stack([amount, hour, category, distance, count]).astype(np.float32)
    # Label noise keeps the problem from being perfectly separable.
    labels = np.where(rng.random(rows) < 0.03, ~fraud, fraud).astype(np.int32)
    return x, labels


def random_valid_rows(rows: int, seed: int) -> np.ndarray:
    """Rows spread over the whole contract domain, including its extremes."""
    rng = np.random.default_rng(seed)
    columns = []
    for feature in FEATURES:
        if feature.dtype == "int":
            columns.append(rng.integers(int(feature.minimum), int(feature.maximum) + 1, rows))
        else:
            # Log-uniform over the range reaches both the tiny and the huge values.
            low = max(feature.minimum, 0.01)
            columns.append(np.exp(rng.uniform(np.log(low), np.log(feature.maximum), rows)))
    x = np.column_stack(columns)
    # Mix in the region the model splits on, where most thresholds lie.
    typical, _ = synthetic_transactions(rows, seed + 1)
    take = rng.random(rows) < 0.5
    x[take] = typical[take]
    return x.astype(np.float32)


def train_booster(seed: int, rounds: int, depth: int, base_score: float | None = None) -> xgb.Booster:
    x, y = synthetic_transactions(4000, seed)
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "max_depth": depth,
        "eta": 0.3,
        "seed": seed,
        "nthread": 2,
    }
    if base_score is not None:
        params["base_score"] = base_score
    dtrain = xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES))
    return xgb.train(params, dtrain, num_boost_round=rounds)


def booster_document(booster: xgb.Booster) -> dict[str, Any]:
    """The booster's saved-model document, as the service decodes it from the UBJ file."""
    document: dict[str, Any] = ubjson.loads(bytes(booster.save_raw("ubj")))
    return document


def threshold_rows(document: dict[str, Any], rows: int, seed: int) -> np.ndarray:
    """Rows whose values sit exactly on, or one float32 step either side of, the booster's splits."""
    values: list[list[float]] = [[] for _ in FEATURE_NAMES]
    for tree in document["learner"]["gradient_booster"]["model"]["trees"]:
        for feature, condition, left in zip(
            tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True
        ):
            if left != -1:
                c = np.float32(condition)
                values[int(feature)].extend(
                    [c, np.nextafter(c, np.float32(-np.inf)), np.nextafter(c, np.float32(np.inf))]
                )
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.choice(np.asarray(v or [1.0], dtype=np.float32), rows) for v in values])
    return np.abs(x).astype(np.float32)


def _artifact(model_dir: Path, path: Path) -> Artifact:
    payload = path.read_bytes()
    return Artifact(
        path=path.relative_to(model_dir).as_posix(),
        sha256=hashlib.sha256(payload).hexdigest(),
        bytes=len(payload),
    )


def write_version(
    model_dir: Path,
    version: str,
    booster: xgb.Booster,
    *,
    threshold: float = THRESHOLD,
    promote: bool = True,
    features: list[str] | None = None,
) -> ModelMeta:
    """Write ``versions/<version>/`` (booster, reference sample, meta.json) and promote it."""
    folder = model_dir / VERSIONS_DIR / version
    folder.mkdir(parents=True, exist_ok=True)
    booster_path = folder / "booster.ubj"
    booster.save_model(str(booster_path))
    x, y = synthetic_transactions(200, seed=1)
    table = pa.table({name: x[:, i] for i, name in enumerate(FEATURE_NAMES)} | {LABEL: y})
    reference_path = folder / "reference.parquet"
    pq.write_table(table, reference_path)
    meta = ModelMeta(
        version=version,
        trained_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        features=features if features is not None else list(FEATURE_NAMES),
        label=LABEL,
        threshold=threshold,
        threshold_rule={"rule": "max_f1"},
        metrics={"test": {"roc_auc": 0.97, "pr_auc": 0.9, "rows": 800}},
        data=DatasetInfo(
            rows=4000, fraud_rate=0.15, md5="0123456789abcdef0123456789abcdef.dir", source="synthetic"
        ),
        params={"max_depth": 3},
        libraries={"xgboost": xgb.__version__},
        artifacts={
            BOOSTER: _artifact(model_dir, booster_path),
            REFERENCE: _artifact(model_dir, reference_path),
        },
    )
    (folder / META_FILE).write_text(meta.to_json(), encoding="utf-8")
    if promote:
        promote_version(model_dir, version)
    return meta


def promote_version(model_dir: Path, version: str) -> None:
    """Atomically point model/meta.json at an existing version, as the pipeline does."""
    source = model_dir / VERSIONS_DIR / version / META_FILE
    staging = model_dir / f".{META_FILE}.tmp"
    staging.write_bytes(source.read_bytes())
    os.replace(staging, model_dir / META_FILE)


def rewrite_meta(model_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the promoted meta.json in place (to build broken directories)."""
    path = model_dir / META_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(json.dumps(raw), encoding="utf-8")


def replace_booster(model_dir: Path, version: str, payload: bytes, name: str = "booster.json") -> None:
    """Serve ``payload`` as the promoted version's booster: written beside it, recorded in meta.json."""
    path = model_dir / VERSIONS_DIR / version / name
    path.write_bytes(payload)
    artifact = _artifact(model_dir, path)
    rewrite_meta(model_dir, lambda raw: raw["artifacts"].update({BOOSTER: artifact.model_dump()}))


@pytest.fixture(scope="session")
def booster_v1() -> xgb.Booster:
    return train_booster(seed=11, rounds=30, depth=3)


@pytest.fixture(scope="session")
def booster_v2() -> xgb.Booster:
    return train_booster(seed=23, rounds=60, depth=4)


@pytest.fixture
def model_dir(tmp_path: Path, booster_v1: xgb.Booster) -> Path:
    """A model directory with v1 promoted."""
    directory = tmp_path / "model"
    write_version(directory, "v1", booster_v1)
    return directory


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    def build(model_dir: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "prod",
            "model_dir": model_dir,
            "admin_token": ADMIN_TOKEN,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def build(model_dir: Path, **overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(model_dir, **overrides)), raise_server_exceptions=False)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def client(model_dir: Path, make_client: Callable[..., TestClient]) -> TestClient:
    """A client of an app serving v1, with reload enabled."""
    return make_client(model_dir)


@pytest.fixture
def empty_client(tmp_path: Path, make_client: Callable[..., TestClient]) -> TestClient:
    """A client of an app whose model directory holds no model."""
    return make_client(tmp_path / "nothing-here")


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Factories:
    """The helpers above, handed to test modules as a fixture (conftest is not imported directly)."""

    admin_token = ADMIN_TOKEN
    threshold = THRESHOLD
    synthetic_transactions = staticmethod(synthetic_transactions)
    random_valid_rows = staticmethod(random_valid_rows)
    train_booster = staticmethod(train_booster)
    booster_document = staticmethod(booster_document)
    threshold_rows = staticmethod(threshold_rows)
    write_version = staticmethod(write_version)
    promote_version = staticmethod(promote_version)
    rewrite_meta = staticmethod(rewrite_meta)
    replace_booster = staticmethod(replace_booster)
    auth = staticmethod(auth)

    @staticmethod
    def valid() -> dict[str, Any]:
        return dict(VALID_TRANSACTION)

    @staticmethod
    def fraud() -> dict[str, Any]:
        return dict(FRAUD_TRANSACTION)


@pytest.fixture(scope="session")
def factories() -> type[Factories]:
    return Factories
