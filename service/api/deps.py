"""Dependencies of the routes, as Annotated aliases so tests can override them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from service.config import Settings, get_settings
from service.metrics import ServiceMetrics
from service.model_store import ModelStore
from service.scorer import Scorer

SettingsDep = Annotated[Settings, Depends(get_settings)]

# The dependencies below are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a
# worker thread, a hop that costs more than scoring a transaction.


async def get_model_store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.model_store
    return store


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


ModelStoreDep = Annotated[ModelStore, Depends(get_model_store)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


async def get_scorer(request: Request) -> Scorer:
    """The Scorer this request runs on from start to finish; 503 while no model is loaded."""
    # Reads the store itself rather than through ModelStoreDep: each nested dependency costs
    # FastAPI about as much as scoring the transaction.
    store: ModelStore = request.app.state.model_store
    scorer = store.current()
    if scorer is None:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"no model is loaded, so nothing can be scored: {store.last_error or 'not loaded yet'}",
        )
    return scorer


ScorerDep = Annotated[Scorer, Depends(get_scorer)]
