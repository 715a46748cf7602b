"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from service.api.deps import ModelStoreDep
from service.api.errors import NO_MODEL_RESPONSE
from service.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["probes"])

NO_MODEL_VERSION = "none"


@router.get("/health", response_model=HealthResponse)
async def health(store: ModelStoreDep) -> HealthResponse:
    """Liveness: always 200 while the process answers; says whether a model is loaded."""
    scorer = store.current()
    return HealthResponse(
        model_loaded=scorer is not None, model_version=scorer.version if scorer else NO_MODEL_VERSION
    )


@router.get("/ready", response_model=ReadyResponse, responses=NO_MODEL_RESPONSE)
async def ready(store: ModelStoreDep) -> ReadyResponse:
    """Readiness: 200 only when a verified model is loaded, 503 otherwise."""
    scorer = store.current()
    if scorer is None:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"not ready: no model is loaded ({store.last_error or 'not loaded yet'})",
        )
    return ReadyResponse(model_version=scorer.version)
