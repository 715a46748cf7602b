"""The original pipeline's approach, kept as the baseline of ``bench/pipeline_bench.py``.

A reconstruction of how the pipeline first handled its data, step for step, on the same input:

- every step hands the next one a CSV file: extract writes ``extracted.csv``, validate re-reads it and
  writes ``validated.csv``, drift, train and evaluate each re-read that;
- the drift baseline is the whole training set, kept as JSON records beside the model; the drift
  check loads the champion's JSON and runs a KS test per continuous feature (p < 0.05) on every row;
- the model is trained through the scikit-learn wrapper, ``xgboost.XGBClassifier`` (100 trees of
  depth 6, learning rate 0.1, the wrapper's defaults of the time), with pandas in float64 throughout;
- evaluation re-reads the CSV, scores with ``predict_proba`` and writes the metrics as JSON.

Only the plumbing is the original's; the checks are the contract's, so both pipelines do the same
work on the same rows. Not part of any test: it exists to be timed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.features import FEATURE_NAMES, FEATURES, LABEL, TIMESTAMP

StepFactory = Callable[[str], AbstractContextManager[Any]]
CONTINUOUS = [f.name for f in FEATURES if f.kind == "continuous"] + ["num_transactions_last_24h"]


def _no_step(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


def make_baseline(frame: pd.DataFrame, model_dir: Path) -> None:
    """Write a champion's drift baseline the original way: its whole training set, as JSON records."""
    model_dir.mkdir(parents=True, exist_ok=True)
    frame.to_json(model_dir / "baseline.json", orient="records", date_format="iso")


def run_original(
    source_csv: Path, work: Path, model_dir: Path, step: StepFactory = _no_step
) -> dict[str, Any]:
    """Run extract -> validate -> drift -> train -> evaluate -> promote the original way.

    Args:
        source_csv: the input transactions.
        work: scratch folder for the CSV files handed from step to step.
        model_dir: holds the champion's ``baseline.json``; receives the new model and baseline.
        step: context manager factory wrapped around each step (the bench's meter).

    Returns:
        The decision, drift p-values and holdout metrics.
    """
    import xgboost as xgb
    from scipy.stats import ks_2samp
    from sklearn.metrics import average_precision_score, roc_auc_score

    work.mkdir(parents=True, exist_ok=True)
    extracted, validated = work / "extracted.csv", work / "validated.csv"
    result: dict[str, Any] = {}

    with step("extract"):
        frame = pd.read_csv(source_csv)
        frame.to_csv(extracted, index=False)

    with step("validate"):
        frame = pd.read_csv(extracted)
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        bad = pd.Series(False, index=frame.index)
        for feature in FEATURES:
            values = frame[feature.name]
            low = values <= feature.minimum if feature.exclusive_minimum else values < feature.minimum
            bad |= values.isna() | low | (values > feature.maximum)
        bad |= ~frame[LABEL].isin([0, 1])
        if bad.any() or frame["transaction_id"].duplicated().any():
            raise ValueError(f"{int(bad.sum())} invalid rows")
        frame = frame.sort_values(TIMESTAMP, kind="stable")
        frame.to_csv(validated, index=False)

    with step("drift"):
        current = pd.read_csv(validated)
        reference = pd.read_json(model_dir / "baseline.json", orient="records")
        p_values = {name: float(ks_2samp(reference[name], current[name]).pvalue) for name in CONTINUOUS}
        result["drift"] = {name: p < 0.05 for name, p in p_values.items()}

    with step("train"):
        frame = pd.read_csv(validated)
        n = len(frame)
        test_start = n - round(n * 0.2)
        validation_start = test_start - round(n * 0.2)
        train_part = frame.iloc[:validation_start]
        positives = int(train_part[LABEL].sum())
        model = xgb.XGBClassifier(
            n_estimators=100,
            max_depth=6,
            learning_rate=0.1,
            scale_pos_weight=(len(train_part) - positives) / positives,
            eval_metric="logloss",
            random_state=42,
            n_jobs=2,
        )
        model.fit(train_part[list(FEATURE_NAMES)], train_part[LABEL])
        model.save_model(work / "model.json")
        make_baseline(train_part, work / "candidate")

    with step("evaluate"):
        frame = pd.read_csv(validated)
        test = frame.iloc[test_start:]
        scores = model.predict_proba(test[list(FEATURE_NAMES)])[:, 1]
        metrics = {
            "roc_auc": float(roc_auc_score(test[LABEL], scores)),
            "pr_auc": float(average_precision_score(test[LABEL], scores)),
            "rows": len(test),
        }
        (work / "metrics.json").write_text(json.dumps(metrics))
        result["metrics"] = metrics

    with step("promote"):
        shutil.copy(work / "model.json", model_dir / "model.json")
        shutil.copy(work / "candidate" / "baseline.json", model_dir / "baseline.json")
        shutil.copy(work / "metrics.json", model_dir / "metrics.json")
    result["decision"] = "promoted" if metrics["roc_auc"] >= 0.85 else "rejected_quality"
    result["mean_score"] = float(np.mean(scores))
    return result
