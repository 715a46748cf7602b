"""Static security checks: no pickle-family serialisation anywhere in the code, model files only in
formats that cannot execute code (XGBoost UBJSON, Parquet, JSON), and every bandit exception justified."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from service import ubjson
from service.artifacts import read_meta, verify

PROJECT = Path(__file__).resolve().parents[2]
CODE = ("service", "pipeline")
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}
UNSAFE_CALLS = re.compile(r"\b(read_pickle|to_pickle|allow_pickle\s*=\s*True|torch\.load)\b")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav", ".dill")


def unsafe_uses(source: str) -> list[str]:
    """Imports of pickle-family modules, and calls that unpickle, in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            names = [
                arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            ]
        found += [
            f"line {getattr(node, 'lineno', 0)}: import {n}"
            for n in names
            if n.split(".")[0] in UNSAFE_MODULES
        ]
    found += [
        f"line {source[: m.start()].count(chr(10)) + 1}: {m.group(0)}" for m in UNSAFE_CALLS.finditer(source)
    ]
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import joblib as jl",
        "from joblib import load",
        "from pickle import loads",
        "import cloudpickle",
        "m = __import__('pickle')",
        "import pandas as pd\npd.read_pickle('m.pkl')",
        "import numpy as np\nnp.load('m.npy', allow_pickle=True)",
    ],
)
def test_scanner_flags_every_pickle_family_use(source: str) -> None:
    assert unsafe_uses(source), source


def test_service_and_pipeline_never_use_pickle_or_joblib() -> None:
    offenders = {
        str(path.relative_to(PROJECT)): uses
        for package in CODE
        for path in sorted((PROJECT / package).rglob("*.py"))
        if (uses := unsafe_uses(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_no_pickle_files_are_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    assert [name for name in tracked if name.lower().endswith(PICKLE_SUFFIXES)] == []


def test_model_files_are_ubjson_parquet_and_json_only() -> None:
    model_dir = PROJECT / "model"
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert files, "model/ holds a committed model"
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".ubj":
            document = ubjson.loads(data)  # raises on anything that is not UBJSON
            assert isinstance(document, dict) and "learner" in document, path
        elif path.suffix == ".parquet":
            assert data[:4] == data[-4:] == b"PAR1", path
        elif path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".jsonl":
            for line in data.decode("utf-8").splitlines():
                json.loads(line)
        else:
            raise AssertionError(f"{path.relative_to(PROJECT)}: not an allowed model file format")
    meta = read_meta(model_dir)
    assert {artifact.path.rsplit(".", 1)[1] for artifact in meta.artifacts.values()} == {"ubj", "parquet"}
    verify(model_dir, meta)


def test_every_bandit_exception_names_its_check_and_a_reason() -> None:
    exceptions = []
    for package in CODE:
        for path in sorted((PROJECT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if "nosec" in line:
                    exceptions.append((f"{path.relative_to(PROJECT)}:{number}", line))
    for where, line in exceptions:
        assert re.search(r"# nosec B\d{3}(,B\d{3})* # \S.{8,}", line), f"{where}: unjustified nosec: {line}"
