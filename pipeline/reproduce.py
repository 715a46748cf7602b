"""Reproduce a promoted model from git and DVC alone, and prove it byte for byte.

``python -m pipeline reproduce v7`` clones this repository into a scratch folder at tag
``model-v7``, points that clone's DVC at this repository's remote, runs ``dvc pull``, checks that
the pulled data has the md5 that both ``data.dvc`` and ``meta.json`` record, retrains with the
parameters ``meta.json`` records, and compares the new booster with the recorded one. The working
tree of this repository is never touched.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings, TrainParams
from pipeline.dataset import DATASET_FILE, dvc_dir_md5
from pipeline.delivery import DVC_FILE, TAG_PREFIX, DeliveryError, Redactor, dvc_file_md5, run_tool
from service.artifacts import BOOSTER, read_meta, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reproduction:
    version: str
    commit: str
    data_md5: str
    rows: int
    booster_bytes: int
    identical: bool
    libraries_recorded: dict[str, str]


def _remote_config(root: Path, redact: Redactor) -> list[tuple[str, str]]:
    """This repository's DVC remote settings, merged over every config level, paths made absolute."""
    listing = run_tool(["dvc", "config", "--list"], root, redact, "reading the DVC config")
    settings = []
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("remote.") or key == "core.remote":
            settings.append((key.strip(), value.strip()))
    if not any(key == "core.remote" for key, _ in settings):
        raise DeliveryError("the DVC config names no default remote (core.remote): nothing to pull from")
    return settings


def reproduce(
    root: Path, version: str, settings: Settings, redact: Redactor, workdir: Path | None = None
) -> Reproduction:
    """Retrain ``version`` from its tagged data and compare the model file with the recorded one.

    Args:
        root: the git repository holding the ``model-<version>`` tag and the DVC config.
        version: e.g. ``v7``.
        settings: the validation parameters used to rebuild the training frame.
        redact: hides secrets (remote URLs, credentials) from error messages.
        workdir: where to clone; a temporary folder, removed afterwards, by default.

    Returns:
        What was compared; ``identical`` is True when the booster bytes match exactly.
    """
    from pipeline.extract import read_table
    from pipeline.train import time_split, train
    from pipeline.validate import validate

    tag = f"{TAG_PREFIX}{version}"
    commit = run_tool(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"],
        root,
        redact,
        f"finding tag {tag} (fetch tags with `git fetch --tags`)",
    ).strip()
    remote = _remote_config(root, redact)
    with tempfile.TemporaryDirectory(prefix=f"reproduce-{version}-", dir=workdir) as scratch:
        clone = Path(scratch) / "repo"
        run_tool(
            ["git", "clone", "--quiet", "--no-checkout", str(root), str(clone)], root, redact, "git clone"
        )
        run_tool(["git", "checkout", "--quiet", "--detach", commit], clone, redact, f"checking out {tag}")
        for key, value in remote:
            run_tool(["dvc", "config", "--local", key, value], clone, redact, "configuring the DVC remote")
        run_tool(["dvc", "pull", "--quiet", DVC_FILE], clone, redact, f"dvc pull of {version}'s data")

        meta = read_meta(clone / "model")
        if meta.version != version:
            raise DeliveryError(f"tag {tag} serves {meta.version}, not {version}")
        recorded_md5 = dvc_file_md5(clone / DVC_FILE)
        pulled_md5 = dvc_dir_md5(clone / "data")
        if not recorded_md5 == pulled_md5 == meta.data.md5:
            raise DeliveryError(
                f"data md5 mismatch at {tag}: data.dvc {recorded_md5}, pulled {pulled_md5}, "
                f"meta.json {meta.data.md5}"
            )
        frame = validate(read_table(clone / "data" / DATASET_FILE), settings.validation).frame
        if frame is None:
            raise DeliveryError(f"{version}'s data no longer passes validation with today's parameters")
        params = TrainParams(**meta.params["train"])
        model = train(time_split(frame, params), params)
        recorded = verify(clone / "model", meta, (BOOSTER,))[BOOSTER]
    return Reproduction(
        version=version,
        commit=commit,
        data_md5=pulled_md5,
        rows=len(frame),
        booster_bytes=len(recorded),
        identical=model.model_bytes == recorded,
        libraries_recorded=dict(meta.libraries),
    )
