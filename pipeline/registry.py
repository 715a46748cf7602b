"""Step 6, registry: promotion, history and rollback of model versions in ``model/``.

Promotion is atomic. Each version's artifacts are written to a staging folder, fsynced, and
renamed to ``versions/<version>/`` in one step; then ``meta.json`` is replaced by rename, which is
the single commit point. Artifact files are never modified afterwards, so a reader sees the old
version or the new one, never a mix, even if the process is killed between any two writes.

``history.jsonl`` is appended after the commit point. If a crash falls between the two,
``recover()`` (run under the lock before every change) rolls the history forward from
``meta.json``, so the history always ends at the served version.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.artifacts import (
    HISTORY_FILE,
    META_FILE,
    VERSIONS_DIR,
    Artifact,
    ModelDirError,
    ModelMeta,
    parse_meta,
    read_meta,
    verify,
    version_number,
)

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
PRUNING_PREFIX = ".pruning-"
"""A pruned version is renamed to this prefix before its files are removed, so a crash mid-removal
never leaves a half-deleted ``versions/vN/``; ``recover()`` finishes the removal."""


class RegistryBusy(Exception):
    """Another pipeline process holds the registry lock."""


class RegistryError(Exception):
    """A promotion or rollback could not be carried out; the served model is unchanged."""


@dataclass(frozen=True)
class HistoryEntry:
    event: str
    """``promote``, ``rollback`` or ``recovered`` (history rolled forward after a crash)."""
    version: str
    at: str
    roc_auc: float | None
    pr_auc: float | None
    data_md5: str
    previous: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _checkpoint(step: str) -> None:
    """A named point between the writes of a promotion; tests inject crashes here."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, payload: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_file(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        _write_file(temporary, payload)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    """Hold the registry's exclusive lock; raise RegistryBusy at once if another process has it."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        handle = (model_dir / LOCK_FILE).open("a")
    except OSError as exc:
        # A read-only or full model/ must fail here, clearly, before any step runs.
        raise RegistryError(
            f"cannot open the registry lock {model_dir / LOCK_FILE}: {exc.strerror or exc}; "
            f"{model_dir} must be writable; nothing was changed"
        ) from exc
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RegistryBusy(
                    f"another pipeline run holds the lock on {model_dir}; wait for it to finish"
                ) from exc
            raise
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def current(model_dir: Path) -> ModelMeta | None:
    """The promoted version's metadata, or None when nothing has been promoted."""
    if not (model_dir / META_FILE).exists():
        return None
    return read_meta(model_dir)


def history(model_dir: Path) -> list[HistoryEntry]:
    """Every promotion and rollback, oldest first. A torn last line (a crash mid-append) is skipped."""
    path = model_dir / HISTORY_FILE
    if not path.exists():
        return []
    entries = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(HistoryEntry(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            if number == len(lines):
                log.warning("ignoring a torn last line in %s", path)
                continue
            raise RegistryError(f"{path}:{number} is not a history entry: {exc}") from exc
    return entries


def _entry(event: str, meta: ModelMeta, previous: str | None) -> HistoryEntry:
    holdout = meta.metrics.get("holdout", {})
    return HistoryEntry(
        event=event,
        version=meta.version,
        at=_now(),
        roc_auc=holdout.get("roc_auc"),
        pr_auc=holdout.get("pr_auc"),
        data_md5=meta.data.md5,
        previous=previous,
    )


def _append_history(model_dir: Path, entry: HistoryEntry) -> None:
    path = model_dir / HISTORY_FILE
    existing = path.read_bytes() if path.exists() else b""
    # Drop a torn last line before appending, so the file stays one JSON object per line.
    if existing and not existing.endswith(b"\n"):
        existing = existing[: existing.rfind(b"\n") + 1]
    _replace_file(path, existing + entry.to_json().encode("utf-8") + b"\n")


def recover(model_dir: Path) -> None:
    """Bring the registry back to a consistent state after a crash. Call under ``locked``.

    Removes staging folders of interrupted promotions and appends the served version to the
    history when a crash fell between the commit point and the history append.
    """
    versions = model_dir / VERSIONS_DIR
    if versions.is_dir():
        for leftover in [*versions.glob(f"{STAGING_PREFIX}*"), *versions.glob(f"{PRUNING_PREFIX}*")]:
            log.warning("removing %s left by an interrupted promotion", leftover)
            shutil.rmtree(leftover)
    for temporary in model_dir.glob(".*.tmp"):
        temporary.unlink()
    path = model_dir / HISTORY_FILE
    if path.exists():
        content = path.read_bytes()
        if content and not content.endswith(b"\n"):
            log.warning("dropping a torn last line from %s", path)
            _replace_file(path, content[: content.rfind(b"\n") + 1])
    meta = current(model_dir)
    if meta is None:
        return
    entries = history(model_dir)
    if not entries or entries[-1].version != meta.version:
        log.warning("history did not record the served %s; rolling it forward", meta.version)
        _append_history(model_dir, _entry("recovered", meta, entries[-1].version if entries else None))


def known_versions(model_dir: Path) -> list[str]:
    """Every version name this registry has used, in any of its records."""
    names = {entry.version for entry in history(model_dir)}
    versions = model_dir / VERSIONS_DIR
    if versions.is_dir():
        names |= {p.name for p in versions.iterdir() if not p.name.startswith(".")}
    meta = current(model_dir)
    if meta is not None:
        names.add(meta.version)
    return sorted(names, key=version_number)


def next_version(model_dir: Path) -> str:
    """One more than any version ever used here: versions never repeat, even after a rollback."""
    used = known_versions(model_dir)
    return f"v{version_number(used[-1]) + 1}" if used else "v1"


def promote(
    model_dir: Path, meta_fields: dict[str, Any], files: dict[str, tuple[str, bytes]], keep: int
) -> ModelMeta:
    """Promote a new version atomically. Call under ``locked``.

    Args:
        model_dir: the registry.
        meta_fields: every ``ModelMeta`` field except ``version`` and ``artifacts``.
        files: artifact role -> (file name, contents).
        keep: versions to keep under ``versions/`` (older ones are pruned; git tags keep them).

    Returns:
        The promoted version's metadata.
    """
    recover(model_dir)
    previous = current(model_dir)
    version = next_version(model_dir)
    versions = model_dir / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    staging = versions / f"{STAGING_PREFIX}{version}-{os.getpid()}"
    final = versions / version
    try:
        staging.mkdir()
        artifacts: dict[str, Artifact] = {}
        for role, (name, payload) in files.items():
            _write_file(staging / name, payload)
            artifacts[role] = Artifact(
                path=f"{VERSIONS_DIR}/{version}/{name}",
                sha256=hashlib.sha256(payload).hexdigest(),
                bytes=len(payload),
            )
            _checkpoint(f"artifact:{role}")
        meta = ModelMeta(version=version, artifacts=artifacts, **meta_fields)
        _write_file(staging / META_FILE, meta.to_json().encode("utf-8"))
        _fsync_dir(staging)
        _checkpoint("staged")
        os.rename(staging, final)
        _fsync_dir(versions)
        _checkpoint("version_dir")
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RegistryError(
            f"could not write {version} under {versions}: {exc}; the served model is unchanged"
        ) from exc
    try:
        return _activate(model_dir, final, "promote", previous, keep)
    except (RegistryError, ModelDirError):
        # When the switch of meta.json failed, the new version was never served: remove it, leaving
        # model/ as it was (a version that no record names can be numbered again).
        served = model_dir / META_FILE
        if not served.exists() or served.read_bytes() != (final / META_FILE).read_bytes():
            shutil.rmtree(final, ignore_errors=True)
        raise


def _activate(
    model_dir: Path, version_dir: Path, event: str, previous: ModelMeta | None, keep: int
) -> ModelMeta:
    text = (version_dir / META_FILE).read_text(encoding="utf-8")
    meta = parse_meta(text, str(version_dir / META_FILE))
    verify(model_dir, meta)
    try:
        _replace_file(model_dir / META_FILE, text.encode("utf-8"))
    except OSError as exc:
        raise RegistryError(
            f"could not switch {model_dir / META_FILE} to {meta.version}: {exc}; "
            "the served model is unchanged"
        ) from exc
    _checkpoint("meta")
    # Past the commit point the new version is served: a failure to record it must not be
    # reported as a failed promotion. recover() rolls the history forward on the next run.
    try:
        _append_history(model_dir, _entry(event, meta, previous.version if previous else None))
        _checkpoint("history")
        _prune(model_dir, keep, served=meta.version)
    except OSError as exc:
        log.warning(
            "%s %s is served, but updating %s failed (%s); the next run's recovery completes it",
            event,
            meta.version,
            model_dir,
            exc,
        )
    log.info("%s %s (previous: %s)", event, meta.version, previous.version if previous else "none")
    return meta


def _prune(model_dir: Path, keep: int, served: str) -> None:
    versions = sorted(
        (p for p in (model_dir / VERSIONS_DIR).iterdir() if not p.name.startswith(".")),
        key=lambda p: version_number(p.name),
    )
    for old in versions[:-keep]:
        if old.name != served:
            doomed = old.with_name(f"{PRUNING_PREFIX}{old.name}")
            os.rename(old, doomed)
            _checkpoint("prune")
            shutil.rmtree(doomed)


def rollback(model_dir: Path, version: str, keep: int) -> ModelMeta:
    """Serve an earlier version again, through the same atomic switch as a promotion. Call under ``locked``.

    Args:
        model_dir: the registry.
        version: a version still kept under ``versions/``.
        keep: versions to keep under ``versions/``.

    Returns:
        The metadata of the version now served.
    """
    recover(model_dir)
    version_number(version)
    version_dir = model_dir / VERSIONS_DIR / version
    if not (version_dir / META_FILE).is_file():
        kept = ", ".join(known_versions(model_dir)) or "none"
        raise RegistryError(
            f"{version} is not kept in {model_dir / VERSIONS_DIR} (versions known: {kept}); "
            f"older versions can be restored from the git tag model-{version}"
        )
    previous = current(model_dir)
    if previous is not None and previous.version == version:
        raise RegistryError(f"{version} is already the served version")
    try:
        return _activate(model_dir, version_dir, "rollback", previous, keep)
    except ModelDirError as exc:
        raise RegistryError(f"cannot roll back to {version}: {exc}") from exc
