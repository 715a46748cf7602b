"""Size on disk of the serving install: the ``serve`` extra in a fresh virtual environment.

Builds a throw-away venv in a temporary directory with uv (its cache makes this fast), installs the
``serve`` extra at the versions pinned in ``uv.lock`` (``uv export --extra serve``, as the
Dockerfile's stages do) plus the project itself without dependencies, and reports:

- the size of ``site-packages`` and of the whole venv, as ``du`` counts it (allocated blocks) and as
  the sum of file sizes, with and without the ``__pycache__`` bytecode that the Docker image compiles
  (``UV_COMPILE_BYTECODE=1``);
- the biggest distributions;
- what could be pruned: the packages' own test suites and bytecode.

Usage: ``uv run --locked --all-extras python -m bench.install_size [--top 15] [--keep]``.
Never part of pass/fail. Needs PyPI or a warm uv cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 250
MB = 1_000_000


@dataclass
class Size:
    """Bytes as ``du`` counts them (allocated blocks) and as the sum of file sizes."""

    disk: int = 0
    apparent: int = 0

    def add(self, stat: os.stat_result) -> None:
        self.disk += stat.st_blocks * 512
        self.apparent += stat.st_size


@dataclass
class Tally:
    total: Size = field(default_factory=Size)
    bytecode: Size = field(default_factory=Size)
    tests: Size = field(default_factory=Size)


def _walk(root: Path) -> list[tuple[Path, os.stat_result]]:
    """Every file under ``root`` once (hard links counted once, as ``du`` does)."""
    seen: set[tuple[int, int]] = set()
    files = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            stat = path.lstat()
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            files.append((path, stat))
    return files


def _is_test_path(relative: Path) -> bool:
    return any(part in ("tests", "test") for part in relative.parts[:-1])


def _owners(site_packages: Path) -> dict[Path, str]:
    """File path (relative to site-packages) -> distribution name, from each dist-info's RECORD."""
    owners: dict[Path, str] = {}
    for info in site_packages.glob("*.dist-info"):
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        record = info / "RECORD"
        owners[Path(info.name)] = name
        if not record.exists():
            continue
        with record.open(newline="") as handle:
            for row in csv.reader(handle):
                if row:
                    owners[Path(os.path.normpath(row[0]))] = name
    return owners


def _owner(relative: Path, owners: dict[Path, str], folders: dict[Path, str]) -> str:
    if relative in owners:
        return owners[relative]
    # Compiled bytecode is not in RECORD: charge it to the distribution owning its source folder.
    folder = relative.parent.parent if relative.parent.name == "__pycache__" else relative.parent
    while folder != Path("."):
        if folder in folders:
            return folders[folder]
        folder = folder.parent
    return "(unowned)"


def measure(venv: Path) -> dict[str, object]:
    """Sizes of ``venv``: totals, per distribution, and the prunable parts."""
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    owners = _owners(site_packages)
    folders = {path.parent: name for path, name in owners.items() if path.parent != Path(".")}
    venv_size = Size()
    for _, stat in _walk(venv):
        venv_size.add(stat)
    site = Tally()
    per_dist: dict[str, Tally] = defaultdict(Tally)
    for path, stat in _walk(site_packages):
        relative = path.relative_to(site_packages)
        tally = per_dist[_owner(relative, owners, folders)]
        for target in (site, tally):
            target.total.add(stat)
            if "__pycache__" in relative.parts:
                target.bytecode.add(stat)
            if _is_test_path(relative):
                target.tests.add(stat)
    return {
        "venv": vars(venv_size),
        "site_packages": {key: vars(value) for key, value in vars(site).items()},
        "distributions": {
            name: {key: vars(value) for key, value in vars(tally).items()}
            for name, tally in sorted(per_dist.items(), key=lambda item: -item[1].total.disk)
        },
    }


def build(venv: Path, python: str) -> list[str]:
    """A fresh venv with the serve extra at the locked versions; returns the installed distributions."""
    env = {**os.environ, "UV_LINK_MODE": "copy"}  # copies, as in the Docker image, not cache hard links
    for key in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
        env.pop(key, None)
    subprocess.run(["uv", "venv", "--quiet", "--python", python, str(venv)], check=True, env=env)
    requirements = venv.parent / "requirements.txt"
    subprocess.run(
        [
            "uv",
            "export",
            "--locked",
            "--no-emit-project",
            "--no-dev",
            "--no-hashes",
            "--extra",
            "serve",
            "--output-file",
            str(requirements),
        ],
        check=True,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
    )
    install = ["uv", "pip", "install", "--quiet", "--compile-bytecode", "--no-deps"]
    install += ["--python", str(venv / "bin" / "python")]
    subprocess.run(
        [*install, "-r", str(requirements)],
        check=True,
        env=env,
    )
    # The project itself (service/ and pipeline/ code, a few hundred KB): what `pip install .[serve]` adds.
    subprocess.run(
        [*install, str(PROJECT_ROOT)],
        check=True,
        env=env,
    )
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    # What was installed (the export lists every Python version's pins, with markers).
    return sorted(
        "==".join(info.name.removesuffix(".dist-info").rsplit("-", 1))
        for info in site_packages.glob("*.dist-info")
    )


def _mb(value: int) -> str:
    return f"{value / MB:,.1f}"


def report(sizes: dict[str, object], requirements: list[str], top: int) -> str:
    site = sizes["site_packages"]
    venv = sizes["venv"]
    dists = sizes["distributions"]
    assert isinstance(site, dict) and isinstance(venv, dict) and isinstance(dists, dict)
    total, bytecode, tests = site["total"], site["bytecode"], site["tests"]
    lines = [
        f"serve extra, {len(requirements)} distributions installed: {' '.join(requirements)}",
        "",
        "| what (MB = 10^6 bytes) | du (allocated) | sum of file sizes |",
        "| --- | ---: | ---: |",
        f"| whole venv, with bytecode (as the Docker image) | {_mb(venv['disk'])} "
        f"| {_mb(venv['apparent'])} |",
        f"| site-packages, with bytecode | {_mb(total['disk'])} | {_mb(total['apparent'])} |",
        f"| site-packages, without `__pycache__` | {_mb(total['disk'] - bytecode['disk'])} "
        f"| {_mb(total['apparent'] - bytecode['apparent'])} |",
        f"| site-packages, with bytecode, without the packages' own test suites "
        f"| {_mb(total['disk'] - tests['disk'])} | {_mb(total['apparent'] - tests['apparent'])} |",
        f"| of which packages' own test suites | {_mb(tests['disk'])} | {_mb(tests['apparent'])} |",
        f"| of which bytecode (`__pycache__`) | {_mb(bytecode['disk'])} | {_mb(bytecode['apparent'])} |",
        "",
        f"target: under {TARGET_MB} MB -> whole venv {_mb(venv['disk'])} MB: "
        + ("met" if venv["disk"] < TARGET_MB * MB else "NOT met"),
        "",
        "| distribution | du MB | of which tests | of which bytecode |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, tally in list(dists.items())[:top]:
        lines.append(
            f"| {name} | {_mb(tally['total']['disk'])} | {_mb(tally['tests']['disk'])} "
            f"| {_mb(tally['bytecode']['disk'])} |"
        )
    rest = list(dists.values())[top:]
    if rest:
        lines.append(f"| {len(rest)} others | {_mb(sum(t['total']['disk'] for t in rest))} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--python", default=sys.executable, help="Interpreter of the venv (default: this one)."
    )
    parser.add_argument("--top", type=int, default=15, help="Distributions listed by size.")
    parser.add_argument("--keep", action="store_true", help="Keep the venv and print its path.")
    parser.add_argument(
        "--json", type=Path, default=None, help="Also write the figures here (bench/results/ is git-ignored)."
    )
    args = parser.parse_args()
    if shutil.which("uv") is None:
        sys.exit("uv is not on PATH")
    work = Path(tempfile.mkdtemp(prefix="serve-install-"))
    try:
        venv = work / "venv"
        requirements = build(venv, args.python)
        sizes = measure(venv)
        print(report(sizes, requirements, args.top))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": args.python,
                "requirements": requirements,
                **sizes,
            }
            args.json.write_text(json.dumps(payload, indent=2))
        if args.keep:
            print(f"\nvenv kept at {venv}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
