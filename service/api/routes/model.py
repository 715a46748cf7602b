"""The served model's metadata, and hot reload."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import ModelStoreDep, ScorerDep, SettingsDep
from service.api.errors import NO_MODEL_RESPONSE
from service.artifacts import ModelDirError
from service.schemas import ErrorResponse, ModelInfo, ReloadFailure, ReloadResponse, feature_infos

router = APIRouter(tags=["model"])

bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN, as `Authorization: Bearer <token>`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@router.get("/model", response_model=ModelInfo, responses=NO_MODEL_RESPONSE)
async def model_info(scorer: ScorerDep) -> ModelInfo:
    """Metadata of the served model: version, training time, metrics, threshold, data md5, features."""
    meta = scorer.meta
    return ModelInfo(
        version=scorer.version,
        trained_at=meta.trained_at,
        threshold=meta.threshold,
        threshold_rule=meta.threshold_rule,
        metrics=meta.metrics,
        data={
            "rows": meta.data.rows,
            "fraud_rate": meta.data.fraud_rate,
            "md5": meta.data.md5,
            "source": meta.data.source,
        },
        data_md5=meta.data.md5,
        features=feature_infos(),
        libraries=meta.libraries,
        evaluator=scorer.evaluator,
        trees=scorer.trees,
    )


@router.post(
    "/reload-model",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
        403: {"model": ErrorResponse, "description": "Reload is disabled: ADMIN_TOKEN is not set."},
        409: {
            "model": ReloadFailure,
            "description": "The model directory was refused; the old model serves on.",
        },
    },
)
def reload_model(
    store: ModelStoreDep, settings: SettingsDep, credentials: BearerDep
) -> ReloadResponse | JSONResponse:
    """Load model/ again, verify it, and swap it in atomically; needs the admin bearer token."""
    if settings.admin_token is None:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="model reload is disabled: no ADMIN_TOKEN is configured on this service",
        )
    expected = settings.admin_token.get_secret_value().encode()
    offered = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(offered, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid 'Authorization: Bearer <ADMIN_TOKEN>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        old_version, new = store.reload()
    except ModelDirError as exc:
        current = store.current()
        failure = ReloadFailure(
            detail=f"reload refused, the old model keeps serving: {exc}",
            serving_version=current.version if current else None,
        )
        return JSONResponse(status_code=status.HTTP_409_CONFLICT, content=failure.model_dump(mode="json"))
    return ReloadResponse(old_version=old_version, new_version=new.version)
