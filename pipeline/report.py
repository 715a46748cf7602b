"""The run report: ``report.json`` for machines, ``report.md`` for people (a GitHub job summary),
and PNG plots of the feature distributions and the ROC/PR curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from service.features import FEATURES

if TYPE_CHECKING:
    from pipeline.evaluate import Curves

DISTRIBUTIONS_PNG = "distributions.png"
CURVES_PNG = "curves.png"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """Render ``report.json``'s content as Markdown."""
    lines = [f"# Pipeline run `{report['run_id']}`", ""]
    lines.append(f"**Decision: `{report['decision']}`** (exit code {report['exit_code']})")
    lines.append("")
    for reason in report.get("reasons", []):
        lines.append(f"- {reason}")
    if report.get("version"):
        lines.append(f"- promoted version: **{report['version']}**")
    lines.append("")

    lines += ["## Steps", "", "| step | status | seconds | rows |", "| --- | --- | ---: | ---: |"]
    for name, step in report["steps"].items():
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.2f} | {_fmt(step.get('rows'))} |")
    lines.append("")

    validation = report["steps"].get("validate", {}).get("result")
    if validation and validation["violations"]:
        lines += [
            "## Data violations",
            "",
            "| column | rule | rows | problem |",
            "| --- | --- | ---: | --- |",
        ]
        for v in validation["violations"]:
            lines.append(f"| {v['column']} | {v['rule']} | {v['count']} | {v['message']} |")
        lines.append("")

    drift = report["steps"].get("drift", {}).get("result")
    if drift and drift.get("input"):
        data = drift["input"]
        lines += [
            "## Drift",
            "",
            f"Reference {data['reference_rows']} rows, current {data['current_rows']} rows; "
            f"{data['correction']} at family-wise alpha {data['alpha']}, PSI floor {data['psi_floor']}.",
            "",
            "| feature | test | statistic | p (adjusted) | PSI | drifted |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
        for name, f in data["features"].items():
            lines.append(
                f"| {name} | {f['test']} | {_fmt(f['statistic'])} | {_fmt(f['p_value_adjusted'])} | "
                f"{_fmt(f['effect_size'])} | {'**yes**' if f['drifted'] else 'no'} |"
            )
        lines.append("")
    if drift and drift.get("decay"):
        decay = drift["decay"]
        lines += [
            f"Champion on fresh data: ROC-AUC {_fmt(decay['roc_auc'])} against "
            f"{_fmt(decay['recorded_roc_auc'])} recorded; decayed: {_fmt(decay['decayed'])}. "
            f"{decay['reason']}",
            "",
        ]

    evaluation = report["steps"].get("evaluate", {}).get("result")
    if evaluation:
        candidate = evaluation["candidate"]
        champion = evaluation.get("champion") or {}
        lines += [
            "## Metrics on the holdout (most recent rows)",
            "",
            "| metric | candidate | champion |",
            "| --- | ---: | ---: |",
        ]
        for key in (
            "roc_auc",
            "pr_auc",
            "precision",
            "recall",
            "f1",
            "alert_rate",
            "brier",
            "ece",
            "threshold",
        ):
            lines.append(f"| {key} | {_fmt(candidate[key])} | {_fmt(champion.get(key))} |")
        gate = evaluation["gate"]
        lines += ["", f"Quality gate: **{'passed' if gate['passed'] else 'failed'}**"]
        lines += [f"- {r}" for r in gate["reasons"]]
        lines.append("")

    plots = report.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    plot_errors = report.get("plot_errors", [])
    if plot_errors:
        lines += ["## Plots that could not be drawn", ""] + [f"- {e}" for e in plot_errors] + [""]
    return "\n".join(lines)


def plot_distributions(reference: pd.DataFrame, current: pd.DataFrame, path: Path) -> None:
    """One panel per feature: the reference sample against the current batch.

    Drawn on a ``Figure`` of its own, never through pyplot's global figure registry, so a run can
    render it on a worker thread while it trains.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(FEATURES), 3.2))
    axes = fig.subplots(1, len(FEATURES))
    for axis, feature in zip(axes, FEATURES, strict=True):
        ref = reference[feature.name].to_numpy(dtype=float)
        cur = current[feature.name].to_numpy(dtype=float)
        if feature.kind == "continuous":
            top = float(np.quantile(np.concatenate([ref, cur]), 0.99))
            bins = np.linspace(0.0, max(top, 1e-9), 40)
        else:
            top = float(max(ref.max(initial=0), cur.max(initial=0)))
            bins = np.arange(-0.5, min(top, 60) + 1.5)
        # Binned with numpy and drawn as one step outline per series: matplotlib's hist() draws a
        # patch per bin and took 5 s of a 1M-row run; the picture is the same.
        for values, label in ((ref, "reference"), (cur, "current")):
            density, _ = np.histogram(values, bins=bins, density=True)
            axis.stairs(density, bins, fill=True, alpha=0.55, label=label)
        axis.set_title(feature.name)
        axis.set_xlabel(feature.unit)
    # A fixed layout and legend place: tight_layout and loc="best" measure every artist and took
    # a second or two of each run, for the same picture.
    axes[0].legend(loc="upper right")
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.17, top=0.9, wspace=0.22)
    fig.savefig(path, dpi=80)


def plot_curves(curves: dict[str, Curves], base_rate: float, path: Path) -> None:
    """ROC and precision-recall curves of each model on the same holdout.

    Args:
        curves: each model's curves on the holdout (``pipeline.evaluate.ranking_curves``).
        base_rate: the holdout's fraud rate, drawn as the precision of a random ranking.
        path: the PNG to write.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    roc, pr = fig.subplots(1, 2)
    for name, scored in curves.items():
        roc.plot(scored.fpr, scored.tpr, label=name)
        pr.plot(*scored.pr_corners(), label=name)
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    pr.axhline(base_rate, linestyle=":", color="grey", label="base rate")
    pr.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    roc.legend(loc="lower right")
    pr.legend(loc="upper right")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.22)
    fig.savefig(path, dpi=80)


def write_report(report: dict[str, Any], directory: Path) -> None:
    """Write ``report.json`` and ``report.md`` into ``directory`` (plots are written by the run)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (directory / "report.md").write_text(render_markdown(report), encoding="utf-8")
