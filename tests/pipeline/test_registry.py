from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import registry
from pipeline.registry import RegistryBusy, RegistryError
from service.artifacts import HISTORY_FILE, META_FILE, ModelDirError, read_meta, verify
from tests.pipeline.conftest import meta_fields


def promote(model_dir: Path, tag: str, keep: int = 10) -> str:
    files = {
        "booster": ("booster.ubj", f"booster {tag}".encode()),
        "reference": ("reference.parquet", tag.encode()),
    }
    return registry.promote(model_dir, meta_fields(), files, keep).version


def test_promote_first_version_writes_meta_artifacts_and_history(tmp_path: Path) -> None:
    assert promote(tmp_path, "a") == "v1"
    meta = read_meta(tmp_path)
    assert meta.version == "v1"
    assert verify(tmp_path, meta)["booster"] == b"booster a"
    assert (tmp_path / "versions" / "v1" / META_FILE).read_text() == (tmp_path / META_FILE).read_text()
    assert [(e.event, e.version, e.previous) for e in registry.history(tmp_path)] == [("promote", "v1", None)]


def test_promote_versions_are_monotonic(tmp_path: Path) -> None:
    assert [promote(tmp_path, t) for t in "abc"] == ["v1", "v2", "v3"]
    assert registry.current(tmp_path).version == "v3"  # type: ignore[union-attr]


def test_rollback_serves_earlier_version_and_next_promotion_continues_numbering(tmp_path: Path) -> None:
    for t in "abc":
        promote(tmp_path, t)
    meta = registry.rollback(tmp_path, "v1", keep=10)
    assert meta.version == "v1" and read_meta(tmp_path).version == "v1"
    assert verify(tmp_path, read_meta(tmp_path))["booster"] == b"booster a"
    assert promote(tmp_path, "d") == "v4"
    events = [(e.event, e.version, e.previous) for e in registry.history(tmp_path)]
    assert events[-2:] == [("rollback", "v1", "v3"), ("promote", "v4", "v1")]


def test_rollback_to_unknown_version_fails_and_keeps_serving(tmp_path: Path) -> None:
    promote(tmp_path, "a")
    with pytest.raises(RegistryError, match="v7 is not kept"):
        registry.rollback(tmp_path, "v7", keep=10)
    assert read_meta(tmp_path).version == "v1"


def test_rollback_to_corrupt_version_fails_and_keeps_serving(tmp_path: Path) -> None:
    promote(tmp_path, "a")
    promote(tmp_path, "b")
    (tmp_path / "versions" / "v1" / "booster.ubj").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="sha256"):
        registry.rollback(tmp_path, "v1", keep=10)
    assert read_meta(tmp_path).version == "v2"


def test_rollback_rejects_malformed_version(tmp_path: Path) -> None:
    promote(tmp_path, "a")
    with pytest.raises(ValueError, match="not a model version"):
        registry.rollback(tmp_path, "latest", keep=10)


def test_promote_prunes_old_versions_but_keeps_the_served_one(tmp_path: Path) -> None:
    for t in "abcd":
        promote(tmp_path, t, keep=2)
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v3", "v4"]


def test_locked_refuses_a_second_holder(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pipeline import registry
        with registry.locked(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RegistryBusy, match="another pipeline run holds the lock"):
            with registry.locked(tmp_path):
                pass
    finally:
        holder.communicate("\n", timeout=30)
    with registry.locked(tmp_path):
        pass  # released once the holder is gone


def test_history_skips_a_torn_last_line_and_recover_repairs_it(tmp_path: Path) -> None:
    promote(tmp_path, "a")
    with (tmp_path / HISTORY_FILE).open("a") as handle:
        handle.write('{"event": "promote", "vers')
    assert [e.version for e in registry.history(tmp_path)] == ["v1"]
    registry.recover(tmp_path)
    assert (tmp_path / HISTORY_FILE).read_text().endswith("}\n")
    assert len((tmp_path / HISTORY_FILE).read_text().splitlines()) == 1


def test_promote_write_error_keeps_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    promote(tmp_path, "a")

    def disk_full(step: str) -> None:
        if step == "artifact:reference":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry, "_checkpoint", disk_full)
    with pytest.raises(RegistryError, match="No space left on device"):
        promote(tmp_path, "b")
    assert read_meta(tmp_path).version == "v1"
    assert verify(tmp_path, read_meta(tmp_path))["booster"] == b"booster a"
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "versions").iterdir())


KILL_POINTS = ["artifact:booster", "artifact:reference", "staged", "version_dir", "meta", "history"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_promotion_killed_between_writes_leaves_one_complete_version(tmp_path: Path, point: str) -> None:
    promote(tmp_path, "a")
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from pipeline import registry
        from tests.pipeline.conftest import meta_fields

        def die(step):
            if step == {point!r}:
                os.kill(os.getpid(), signal.SIGKILL)

        registry._checkpoint = die
        files = {{"booster": ("booster.ubj", b"booster b"), "reference": ("reference.parquet", b"b")}}
        registry.promote(Path({str(tmp_path)!r}), meta_fields(), files, 10)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == -signal.SIGKILL

    meta = read_meta(tmp_path)
    assert meta.version in ("v1", "v2")
    assert verify(tmp_path, meta)["booster"] == {"v1": b"booster a", "v2": b"booster b"}[meta.version]
    with registry.locked(tmp_path):
        registry.recover(tmp_path)
    assert registry.history(tmp_path)[-1].version == meta.version
    assert not any(p.name.startswith(".") for p in (tmp_path / "versions").iterdir())
    for line in (tmp_path / HISTORY_FILE).read_text().splitlines():
        json.loads(line)
    assert promote(tmp_path, "c") in ("v2", "v3")
    assert verify(tmp_path, read_meta(tmp_path))["booster"] == b"booster c"


def test_verify_rejects_feature_mismatch(tmp_path: Path) -> None:
    files = {"booster": ("booster.ubj", b"x")}
    with pytest.raises(ModelDirError, match="features"):
        registry.promote(tmp_path, meta_fields(features=["amount", "hour"]), files, 10)
    assert registry.current(tmp_path) is None
