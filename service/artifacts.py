"""The model-directory contract: what the pipeline promotes and the service loads.

Layout of ``model/``::

    meta.json                 the promoted version; the single commit point of a promotion
    history.jsonl             append-only log of promotions and rollbacks
    versions/<version>/       immutable artifacts of each kept version, with its own meta.json

``meta.json`` names every artifact by a path relative to ``model/`` with its sha256. Artifact
files are never rewritten once written, so a reader that reads ``meta.json`` and then the files
it names always sees one complete version. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.features import FEATURE_NAMES

META_FILE = "meta.json"
HISTORY_FILE = "history.jsonl"
VERSIONS_DIR = "versions"
BOOSTER = "booster"
"""Artifact role of the XGBoost booster (UBJSON, XGBoost's own binary format)."""
REFERENCE = "reference"
"""Artifact role of the drift reference sample (Parquet)."""
SCHEMA_VERSION = 1


class ModelDirError(Exception):
    """The model directory is missing, incomplete, corrupt or does not match the contract."""


class Artifact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Path relative to the model directory.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class DatasetInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(ge=0)
    fraud_rate: float = Field(ge=0, le=1)
    md5: str = Field(description="DVC md5 of the data directory the model was trained on.")
    source: str
    start: str | None = None
    end: str | None = None


class ModelMeta(BaseModel):
    """Metadata of one promoted model version (``meta.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    version: str = Field(pattern=r"^v[1-9][0-9]*$")
    trained_at: str
    features: list[str]
    label: str
    threshold: float = Field(ge=0, le=1)
    threshold_rule: dict[str, Any]
    metrics: dict[str, Any]
    data: DatasetInfo
    params: dict[str, Any]
    libraries: dict[str, str]
    artifacts: dict[str, Artifact]

    @property
    def number(self) -> int:
        return version_number(self.version)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def version_number(version: str) -> int:
    """``"v12"`` -> 12; raises ValueError on anything else."""
    if not version.startswith("v") or not version[1:].isdigit() or version[1:].startswith("0"):
        raise ValueError(f"not a model version: {version!r} (expected v1, v2, ...)")
    return int(version[1:])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_meta(text: str, origin: str) -> ModelMeta:
    """Parse and validate ``meta.json`` text; ``origin`` names the file in errors."""
    try:
        return ModelMeta.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ModelDirError(f"{origin} is not valid model metadata: {problems}") from exc


def read_meta(model_dir: Path) -> ModelMeta:
    """Read the promoted version's metadata from ``model_dir``."""
    path = model_dir / META_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelDirError(f"{path} does not exist: no model has been promoted") from exc
    except OSError as exc:
        raise ModelDirError(f"{path} cannot be read: {exc.strerror}") from exc
    return parse_meta(text, str(path))


def artifact_path(model_dir: Path, meta: ModelMeta, role: str) -> Path:
    try:
        artifact = meta.artifacts[role]
    except KeyError as exc:
        raise ModelDirError(f"meta.json of {meta.version} lists no {role!r} artifact") from exc
    relative = Path(artifact.path)
    if relative.is_absolute() or ".." in relative.parts:
        raise ModelDirError(f"artifact path {artifact.path!r} must stay inside the model directory")
    return model_dir / relative


def verify(model_dir: Path, meta: ModelMeta, roles: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """Check the feature list and each artifact's sha256; return the verified artifact bytes.

    The bytes are returned rather than re-read so that what was hashed is exactly what gets
    loaded, even if the file changes afterwards.
    """
    if tuple(meta.features) != FEATURE_NAMES:
        raise ModelDirError(
            f"{meta.version} was trained on features {meta.features}, "
            f"but this code expects {list(FEATURE_NAMES)}"
        )
    verified: dict[str, bytes] = {}
    for role in roles if roles is not None else tuple(meta.artifacts):
        path = artifact_path(model_dir, meta, role)
        try:
            payload = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelDirError(f"{role} artifact {path} of {meta.version} is missing") from exc
        except OSError as exc:
            raise ModelDirError(
                f"{role} artifact {path} of {meta.version} cannot be read: {exc.strerror}"
            ) from exc
        actual = hashlib.sha256(payload).hexdigest()
        if actual != meta.artifacts[role].sha256:
            raise ModelDirError(
                f"{role} artifact {path} of {meta.version} has sha256 {actual[:12]}..., "
                f"but meta.json records {meta.artifacts[role].sha256[:12]}...: "
                "the file is corrupt or was replaced"
            )
        verified[role] = payload
    return verified
