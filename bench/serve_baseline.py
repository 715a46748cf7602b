"""The framework floor of bench/serve_bench.py: FastAPI with the service's request and response
models, and no scoring, no middleware. Also the bench's bare FastAPI app for cold starts, under
uvicorn and behind Mangum. ``uvicorn bench.serve_baseline:app``."""

from __future__ import annotations

from fastapi import FastAPI

from service.schemas import Prediction, Transaction

app = FastAPI(title="baseline: same models, no scoring")

_CONSTANT = Prediction(
    is_fraud=False, fraud_probability=0.01, model_version="v0", threshold=0.5, reasons=None
)


@app.post("/predict", response_model=Prediction)
async def predict(transaction: Transaction) -> Prediction:
    """Parse and validate like the service, answer a constant."""
    return _CONSTANT
