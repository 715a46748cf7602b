"""Model directory faults at start-up, against the real service (``python -m service``).

Whatever is wrong with ``model/``, the service starts: ``/health`` answers 200 with
``model_loaded: false``, ``/ready`` and the scoring routes answer 503 with the reason, the reason
is logged, and a later good reload recovers without a restart.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.service_support import (
    VALID_TRANSACTION,
    auth,
    booster,
    live_service,
    rewrite_meta,
    write_version,
)

Fault = Callable[[Path], None]


def _missing(model_dir: Path) -> None:
    shutil.rmtree(model_dir)


def _partial(model_dir: Path) -> None:
    # An interrupted copy: meta.json arrived, the booster it names did not.
    (model_dir / "versions" / "v1" / "booster.ubj").unlink()


def _corrupt_meta(model_dir: Path) -> None:
    text = (model_dir / "meta.json").read_text(encoding="utf-8")
    (model_dir / "meta.json").write_text(text[: len(text) // 2], encoding="utf-8")


def _corrupt_booster(model_dir: Path) -> None:
    # Garbage whose sha256 meta.json records: the hash passes, decoding must refuse it.
    garbage = b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner" + bytes(range(256)) * 4
    (model_dir / "versions" / "v1" / "booster.ubj").write_bytes(garbage)
    rewrite_meta(
        model_dir,
        lambda raw: raw["artifacts"]["booster"].update(
            sha256=hashlib.sha256(garbage).hexdigest(), bytes=len(garbage)
        ),
    )


def _wrong_features(model_dir: Path) -> None:
    features = ["amount", "hour", "merchant_category", "distance_from_home", "card_age_days"]
    write_version(model_dir, "v1", booster("v1"), features=features)


def _wrong_hash(model_dir: Path) -> None:
    rewrite_meta(model_dir, lambda raw: raw["artifacts"]["booster"].update(sha256="0" * 64))


def _unreadable(model_dir: Path) -> None:
    # The suite runs as root in CI, where chmod 000 does not stop a read; a directory standing where
    # the file should be fails read() for every user (EISDIR).
    path = model_dir / "versions" / "v1" / "booster.ubj"
    path.unlink()
    path.mkdir()


FAULTS: dict[str, tuple[Fault, str]] = {
    "missing": (_missing, "does not exist"),
    "partial": (_partial, "is missing"),
    "corrupt-meta": (_corrupt_meta, "is not valid model metadata"),
    "corrupt-booster": (_corrupt_booster, "cannot be served"),
    "wrong-features": (_wrong_features, "card_age_days"),
    "wrong-hash": (_wrong_hash, "sha256"),
    "unreadable": (_unreadable, "cannot be read"),
}


def _repair(model_dir: Path) -> None:
    """What an operator (or the next pipeline run) does: promote a good version."""
    if (model_dir / "versions" / "v1" / "booster.ubj").is_dir():
        (model_dir / "versions" / "v1" / "booster.ubj").rmdir()
    write_version(model_dir, "v2", booster("v2"))


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_model_dir_fault_at_start_up_serves_health_then_recovers_on_reload(
    tmp_path: Path, fault: str
) -> None:
    model_dir = tmp_path / "model"
    write_version(model_dir, "v1", booster("v1"))
    damage, reason = FAULTS[fault]
    damage(model_dir)

    with (
        live_service(model_dir, tmp_path / "service.log") as service,
        httpx.Client(base_url=service.url, timeout=30) as http,
    ):
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "model_loaded": False, "model_version": "none"}
        down: dict[str, Any] = {
            "/ready": http.get("/ready"),
            "/predict": http.post("/predict", json=VALID_TRANSACTION),
            "/predict/batch": http.post("/predict/batch", json={"transactions": [VALID_TRANSACTION]}),
            "/model": http.get("/model"),
        }
        for route, response in down.items():
            assert response.status_code == 503, (route, response.text)
            assert reason in response.json()["detail"], (route, response.json())
        assert "fraud_model_loaded 0.0" in http.get("/metrics").text

        errors = [line for line in service.log_lines() if line.get("msg") == "no model loaded"]
        assert len(errors) == 1
        assert errors[0]["level"] == "ERROR"
        assert reason in errors[0]["reason"]

        _repair(model_dir)
        reload = http.post("/reload-model", headers=auth())
        assert reload.status_code == 200, reload.text
        assert reload.json() == {"status": "reloaded", "old_version": None, "new_version": "v2"}
        assert http.get("/health").json() == {"status": "ok", "model_loaded": True, "model_version": "v2"}
        assert http.get("/ready").status_code == 200
        prediction = http.post("/predict", json=VALID_TRANSACTION)
        assert prediction.status_code == 200
        assert prediction.json()["model_version"] == "v2"
        assert "fraud_model_loaded 1.0" in http.get("/metrics").text
        assert [
            line
            for line in service.log_lines()
            if line.get("logger") == "service.access" and line["status"] not in (200, 503)
        ] == []
