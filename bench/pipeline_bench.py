"""Pipeline scale benchmark: wall time and peak RSS of every step and of the whole run, by row count.

The timed path is the scheduled retraining run: a champion is served (a copy of the committed
``model/``, v1) and a fresh batch arrives from a Parquet file whose legitimate amounts are inflated
x1.5 (``generate --scenario amount_inflation``), so the run goes extract -> validate -> drift gate
(drift found, decay checked) -> train -> evaluate (candidate and champion on the holdout) -> quality
gate -> promote v2. The input is generated beforehand (``python -m pipeline generate``) and is not
timed. At 1M rows the original approach (``bench/pipeline_original.py``) runs side by side on the
same rows, read from CSV, alternating with the pipeline within each repeat.

Each run is a fresh subprocess. Per step, the peak RSS is Linux's ``VmHWM`` after resetting it at
the step's start (``/proc/self/clear_refs``); the run's peak is the highest of them (the process's
resident memory, imported libraries included). ``run s`` is the pipeline call itself, ``process s``
adds interpreter start and imports (slow on machines that run with ``PYTHONDONTWRITEBYTECODE``, as
this one does).

Usage::

    uv run --locked --all-extras python -m bench.pipeline_bench \
        --rows 10000,100000,1000000,10000000 --repeats 3 --plot docs/pipeline_scale.png

Results: a table on stdout, JSON under ``bench/results/`` and the log-log plot; the figures are
copied into docs/benchmarks.md by hand. Never part of pass/fail.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SEED = 11
SCENARIO = "amount_inflation"


# --- measurement inside the child process ------------------------------------------------------


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> None:
    # Writing 5 resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


class Meter:
    """Records seconds and peak RSS of each named step."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        _reset_hwm()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = {"seconds": time.perf_counter() - started, "peak_rss_mb": _vm_hwm_mb()}


def child_pipeline(source: Path, root: Path) -> dict[str, Any]:
    imported = time.perf_counter()
    # Import what the steps import lazily, so that 'run s' times the work, not the imports.
    import matplotlib.figure  # noqa: F401
    import scipy.optimize  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import pipeline.run as run_module
    from pipeline.config import Settings
    from pipeline.extract import Source

    imports = time.perf_counter() - imported
    meter = Meter()
    original_step = run_module._Steps.step

    @contextmanager
    def metered(self: Any, name: str) -> Iterator[dict[str, Any]]:
        with meter.step(name), original_step(self, name) as record:
            yield record

    run_module._Steps.step = metered  # type: ignore[method-assign,assignment]
    settings = Settings(model_dir=root / "model", data_dir=root / "data", reports_dir=root / "reports")
    _reset_hwm()
    started = time.perf_counter()
    result = run_module.run_pipeline(
        settings, run_module.RunOptions(source=Source("file", str(source))), "bench"
    )
    seconds = time.perf_counter() - started
    # Each step reset the high-water mark: the run's peak is the highest of the steps' peaks.
    run_peak = max([_vm_hwm_mb(), *(step["peak_rss_mb"] for step in meter.steps.values())])
    steps = result.report["steps"]
    evaluation = steps.get("evaluate", {}).get("result") or {}
    return {
        "decision": result.decision.value,
        "version": result.version,
        "run_seconds": seconds,
        "run_peak_rss_mb": run_peak,
        "import_seconds": imports,
        "steps": meter.steps,
        "best_iteration": (steps.get("train", {}).get("result") or {}).get("best_iteration"),
        "roc_auc": (evaluation.get("candidate") or {}).get("roc_auc"),
        "pr_auc": (evaluation.get("candidate") or {}).get("pr_auc"),
        "champion_roc_auc": (evaluation.get("champion") or {}).get("roc_auc"),
    }


def child_original(source: Path, root: Path) -> dict[str, Any]:
    imported = time.perf_counter()
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import xgboost  # noqa: F401

    from bench.pipeline_original import run_original

    imports = time.perf_counter() - imported
    meter = Meter()
    _reset_hwm()
    started = time.perf_counter()
    result = run_original(source, root / "work", root / "model", meter.step)
    seconds = time.perf_counter() - started
    run_peak = max([_vm_hwm_mb(), *(step["peak_rss_mb"] for step in meter.steps.values())])
    return {
        "decision": result["decision"],
        "run_seconds": seconds,
        "run_peak_rss_mb": run_peak,
        "import_seconds": imports,
        "steps": meter.steps,
        "roc_auc": result["metrics"]["roc_auc"],
        "pr_auc": result["metrics"]["pr_auc"],
    }


# --- the parent: data, repeats, table --------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def prepare_input(rows: int, data_dir: Path, csv: bool) -> Path:
    """Generate the fresh batch once (not timed): Parquet, and CSV for the original."""
    parquet = data_dir / f"tx_{rows}.parquet"
    if not parquet.exists():
        # What ``python -m pipeline generate --rows N --seed 11 --scenario amount_inflation`` does.
        from pipeline.config import Settings
        from pipeline.extract import simulate, write_table

        params = Settings().extract.model_copy(update={"rows": rows, "seed": SEED})
        write_table(simulate(params, SCENARIO), parquet)
    if not csv:
        return parquet
    target = data_dir / f"tx_{rows}.csv"
    if not target.exists():
        import pandas as pd

        pd.read_parquet(parquet).to_csv(target, index=False)
    return target


@functools.cache
def _champion_data() -> Path:
    """The committed v1's training data: ``data/`` when pulled (``dvc pull``), else regenerated.

    A fresh clone has no ``data/`` (DVC keeps it). The simulator is seeded, so the parameters
    ``model/meta.json`` records give the same rows; the regenerated folder must have the DVC md5
    meta.json records, or the bench stops.
    """
    if (ROOT / "data" / "transactions.parquet").exists():  # pipeline.dataset.DATASET_FILE
        return ROOT / "data"
    from pipeline.config import ExtractParams
    from pipeline.dataset import DATASET_FILE, dvc_dir_md5
    from pipeline.extract import simulate, write_table

    meta = json.loads((ROOT / "model" / "meta.json").read_text())
    extract = dict(meta["params"]["extract"])
    scenario = extract.pop("scenario")
    folder = Path(tempfile.mkdtemp(prefix="bench-champion-data-")) / "data"
    folder.mkdir()
    write_table(simulate(ExtractParams(**extract), scenario), folder / DATASET_FILE)
    if (md5 := dvc_dir_md5(folder)) != meta["data"]["md5"]:
        raise SystemExit(
            f"data/ is missing and regenerating it gave md5 {md5}, not the {meta['data']['md5']} "
            "model/meta.json records: run `dvc pull` first"
        )
    print(f"data/ not pulled: regenerated the champion's data from meta.json ({md5})", file=sys.stderr)
    return folder


def _champion(root: Path, original: bool) -> None:
    """A served champion: the committed v1 and its data (and, for the original, its training set as JSON)."""
    shutil.copytree(ROOT / "model", root / "model", ignore=shutil.ignore_patterns("*.lock"))
    data = _champion_data()
    shutil.copytree(data, root / "data")
    if original:
        import pandas as pd

        from bench.pipeline_original import make_baseline

        frame = pd.read_parquet(data / "transactions.parquet")
        make_baseline(frame.iloc[: round(len(frame) * 0.6)], root / "model")


def measure(kind: str, source: Path, omp_wait_policy: str) -> dict[str, Any]:
    """One run in a fresh process; returns the child's figures plus the process wall time."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        root = Path(tmp)
        _champion(root, kind == "original")
        before = load_average()
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.pipeline_bench",
                "--omp-wait-policy",
                omp_wait_policy,
                "--child",
                kind,
                str(source),
                str(root),
            ],
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        figures.update(process_seconds=wall, load_before=before, load_after=load_average())
        return figures


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def _run_peak(run: dict[str, Any]) -> float:
    return max([float(run["run_peak_rss_mb"]), *(float(s["peak_rss_mb"]) for s in run["steps"].values())])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(runs[0]["steps"])
    return {
        "runs": len(runs),
        "run_seconds": _median(runs, "run_seconds"),
        "process_seconds": _median(runs, "process_seconds"),
        "run_peak_rss_mb": statistics.median(_run_peak(r) for r in runs),
        "import_seconds": _median(runs, "import_seconds"),
        "steps": {
            name: {
                "seconds": statistics.median(r["steps"][name]["seconds"] for r in runs),
                "peak_rss_mb": statistics.median(r["steps"][name]["peak_rss_mb"] for r in runs),
            }
            for name in names
        },
        "decision": sorted({r["decision"] for r in runs}),
        "roc_auc": runs[0].get("roc_auc"),
        "pr_auc": runs[0].get("pr_auc"),
        "best_iteration": runs[0].get("best_iteration"),
        "load": [r["load_before"] for r in runs],
    }


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    memory = next(
        int(line.split()[1]) // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    libraries = {
        name: version(name) for name in ("xgboost-cpu", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn")
    }
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "libraries": libraries,
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def table(results: dict[str, Any]) -> str:
    step_names = ["extract", "validate", "drift", "train", "evaluate", "promote"]
    header = (
        "| pipeline | rows | runs | run s | process s | peak RSS MB | "
        + " | ".join(f"{s} s / MB" for s in step_names)
        + " | load (1-min avg before each run) |"
    )
    lines = [header, "|" + " --- |" * (6 + len(step_names) + 1)]
    for entry in results["entries"]:
        s = entry["summary"]
        cells = [
            f"{s['steps'][n]['seconds']:.2f} / {s['steps'][n]['peak_rss_mb']:.0f}" if n in s["steps"] else "-"
            for n in step_names
        ]
        lines.append(
            f"| {entry['kind']} | {entry['rows']:,} | {s['runs']} | {s['run_seconds']:.2f} | "
            f"{s['process_seconds']:.2f} | {s['run_peak_rss_mb']:.0f} | "
            + " | ".join(cells)
            + f" | {', '.join(x.split()[0] for x in s['load'])} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-log plot of run time and peak RSS against rows, with a line of slope 1 for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted((e for e in results["entries"] if e["kind"] == "pipeline"), key=lambda e: e["rows"])
    rows = [e["rows"] for e in entries]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    series = [("run s", "run_seconds", left), ("peak RSS MB", "run_peak_rss_mb", right)]
    for title, key, axis in series:
        values = [e["summary"][key] for e in entries]
        axis.loglog(rows, values, "o-", label="pipeline, whole run")
        if key == "run_seconds":
            for step in ("train", "drift", "evaluate"):
                axis.loglog(
                    rows, [e["summary"]["steps"][step]["seconds"] for e in entries], ".--", label=step
                )
        linear = [values[-1] * r / rows[-1] for r in rows]
        axis.loglog(rows, linear, ":", color="grey", label="linear (slope 1)")
        for e in results["entries"]:
            if e["kind"] == "original":
                axis.loglog([e["rows"]], [e["summary"][key]], "s", color="red", label="original approach")
        axis.set(title=title, xlabel="rows")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(f"Pipeline scale, medians ({results['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000,1000000,10000000", help="comma-separated row counts")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row count; the median is reported")
    parser.add_argument(
        "--repeats-10m", type=int, default=None, help="runs at 10M rows and above (default: --repeats)"
    )
    parser.add_argument(
        "--original-rows",
        default="1000000",
        help="row counts where the original runs side by side ('' = none)",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "pipeline-bench-data")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: bench/results/...)")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY of both pipelines: PASSIVE (as the CLI sets), ACTIVE, or 'default' (unset)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="write the log-log plot (PNG) here")
    parser.add_argument(
        "--replot", type=Path, default=None, help="only re-tabulate and redraw --plot from a results JSON"
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SOURCE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        # What ``python -m pipeline`` sets before it imports anything (pipeline/cli.py); the original
        # runs under the same setting, so the ratio compares the pipelines, not the OpenMP runtime.
        if args.omp_wait_policy == "default":
            os.environ.pop("OMP_WAIT_POLICY", None)  # libgomp's own default, as before the CLI set it
        else:
            os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
        kind, source, root = args.child
        runner = child_pipeline if kind == "pipeline" else child_original
        print(json.dumps(runner(Path(source), Path(root))))
        return 0

    if args.replot:
        # Re-summarise stored runs (e.g. after a change to the summary) and redraw; nothing is run.
        stored = json.loads(args.replot.read_text())
        for entry in stored["entries"]:
            entry["summary"] = summarise(entry["runs"])
        print(table(stored))
        plot(stored, args.plot or ROOT / "docs" / "pipeline_scale.png")
        return 0

    rows_list = [int(r) for r in args.rows.split(",") if r]
    original_rows = {int(r) for r in args.original_rows.split(",") if r}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "omp_wait_policy": args.omp_wait_policy,
        "path": f"scheduled run: champion v1 served, fresh batch ({SCENARIO}, seed {SEED}) read from Parquet",
        "entries": [],
    }
    for rows in rows_list:
        source = prepare_input(rows, args.data_dir, csv=False)
        csv = prepare_input(rows, args.data_dir, csv=True) if rows in original_rows else None
        repeats = args.repeats_10m if (args.repeats_10m and rows >= 10_000_000) else args.repeats
        runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "original": []}
        for repeat in range(repeats):
            # Side by side: the two approaches alternate within each repeat.
            runs["pipeline"].append(measure("pipeline", source, args.omp_wait_policy))
            print(
                f"{rows:>10,} pipeline #{repeat + 1}: {runs['pipeline'][-1]['run_seconds']:.2f} s", flush=True
            )
            if csv is not None:
                runs["original"].append(measure("original", csv, args.omp_wait_policy))
                print(
                    f"{rows:>10,} original #{repeat + 1}: {runs['original'][-1]['run_seconds']:.2f} s",
                    flush=True,
                )
        for kind, kind_runs in runs.items():
            if kind_runs:
                results["entries"].append(
                    {"kind": kind, "rows": rows, "summary": summarise(kind_runs), "runs": kind_runs}
                )
        if runs["original"]:
            ratios = [
                p["run_seconds"] / o["run_seconds"]
                for p, o in zip(runs["pipeline"], runs["original"], strict=True)
            ]
            results.setdefault("ratios", {})[str(rows)] = {
                "run_seconds": statistics.median(ratios),
                "process_seconds": statistics.median(
                    p["process_seconds"] / o["process_seconds"]
                    for p, o in zip(runs["pipeline"], runs["original"], strict=True)
                ),
            }
    out = args.out or RESULTS / f"pipeline-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    for rows, ratio in results.get("ratios", {}).items():
        print(
            f"pipeline / original at {int(rows):,} rows: run {ratio['run_seconds']:.3f}, "
            f"process {ratio['process_seconds']:.3f} (median of per-repeat ratios)"
        )
    print(f"results: {out}")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
