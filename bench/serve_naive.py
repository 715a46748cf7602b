"""The naive baseline of bench/serve_bench.py: scoring the way the original service did.

An ``XGBClassifier`` (the scikit-learn wrapper) saved with joblib, loaded when this module is imported,
and a sync ``def`` endpoint that calls ``predict_proba`` on each request. Same request and response
models as the service. Bench code only: the service itself loads no pickle or joblib file and imports
no scikit-learn (/work/shared/STYLE.md). ``NAIVE_MODEL=path.joblib uvicorn bench.serve_naive:app``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
from fastapi import FastAPI

from service.schemas import Prediction, Transaction

MODEL_ENV = "NAIVE_MODEL"
"""Environment variable naming the joblib file that ``save_model`` wrote."""
THRESHOLD = 0.5


def save_model(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int_], trees: int, depth: int, path: Path
) -> None:
    """Train the classifier with the bench model's parameters and dump it with joblib."""
    from xgboost import XGBClassifier

    model = XGBClassifier(
        n_estimators=trees,
        max_depth=depth,
        learning_rate=0.05,
        subsample=0.9,
        random_state=7,
        objective="binary:logistic",
        n_jobs=1,  # trains 30x faster on a loaded 2-core machine than with contending OpenMP threads
    )
    model.fit(x, y)
    model.set_params(n_jobs=None)  # served with XGBoost's default threads, as the original was
    joblib.dump(model, path)


def _load() -> Any:
    # A side effect at import, on purpose: it is what the original did, and what this baseline stands for.
    return joblib.load(os.environ[MODEL_ENV])


_model = _load() if MODEL_ENV in os.environ else None

app = FastAPI(title="naive baseline: XGBClassifier.predict_proba per request")


@app.post("/predict", response_model=Prediction)
def predict(transaction: Transaction) -> Prediction:
    """Score one transaction with the scikit-learn wrapper, in the thread pool, as the original did."""
    if _model is None:
        raise RuntimeError(f"set {MODEL_ENV} to the joblib model file")
    features = np.array([transaction.as_row()], dtype=np.float32)
    probability = float(_model.predict_proba(features)[0, 1])
    return Prediction(
        is_fraud=probability >= THRESHOLD,
        fraud_probability=probability,
        model_version="naive",
        threshold=THRESHOLD,
        reasons=None,
    )
