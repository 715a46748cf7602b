"""The training dataset snapshot under ``data/``, tracked by DVC, and its DVC md5.

``meta.json`` records the md5 that ``dvc add data`` writes into ``data.dvc``, so a served model
points at exactly the data it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

DATASET_FILE = "transactions.parquet"


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


PENDING_FILE = f".{DATASET_FILE}.pending"


def dvc_dir_md5(directory: Path, overrides: dict[str, Path] | None = None) -> str:
    """The md5 DVC 3 records for a tracked directory (``<hex>.dir``).

    DVC hashes the JSON list of ``{"md5", "relpath"}`` entries of every file, sorted by path and
    serialised with sorted keys; ``tests/pipeline/test_dataset.py`` checks it against ``dvc add``.

    Args:
        directory: the tracked directory.
        overrides: relpath -> file whose contents will stand at that relpath; the pending
            snapshot is hashed as the file it is about to become.
    """
    overrides = overrides or {}
    sources = {
        path.relative_to(directory).as_posix(): path
        for path in directory.rglob("*")
        if path.is_file() and path.name != PENDING_FILE
    }
    sources.update(overrides)
    entries = [{"md5": file_md5(path), "relpath": relpath} for relpath, path in sorted(sources.items())]
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"


def stage_dataset(frame: pd.DataFrame, data_dir: Path) -> str:
    """Write the new snapshot beside the current one, without replacing it yet.

    Returns:
        The DVC md5 ``data_dir`` will have once ``commit_dataset`` puts the snapshot in place.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pending = data_dir / PENDING_FILE
    frame.to_parquet(pending, index=False)
    with pending.open("rb") as handle:
        os.fsync(handle.fileno())
    return dvc_dir_md5(data_dir, {DATASET_FILE: pending})


def commit_dataset(data_dir: Path) -> None:
    """Put a staged snapshot in place with one rename (a no-op when nothing is staged)."""
    pending = data_dir / PENDING_FILE
    if pending.exists():
        os.replace(pending, data_dir / DATASET_FILE)


def discard_dataset(data_dir: Path) -> None:
    (data_dir / PENDING_FILE).unlink(missing_ok=True)


def reconcile_dataset(data_dir: Path, promoted_md5: str | None) -> str:
    """Finish or undo a snapshot left staged by an interrupted run.

    A staged snapshot whose md5 the promoted model records was promoted before the crash: it is
    put in place. Any other staged snapshot belongs to a run that never promoted: it is removed.

    Returns:
        ``committed``, ``discarded`` or ``clean``.
    """
    pending = data_dir / PENDING_FILE
    if not pending.exists():
        return "clean"
    if promoted_md5 is not None and dvc_dir_md5(data_dir, {DATASET_FILE: pending}) == promoted_md5:
        commit_dataset(data_dir)
        return "committed"
    discard_dataset(data_dir)
    return "discarded"
