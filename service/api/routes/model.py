"""The served model's metadata, and hot reload."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import ModelStoreDep, ScorerDep, SettingsDep
from service.api.errors import NO_MODEL_RESPONSE
from service.artifacts import ModelDirError
from service.schemas import ErrorResponse, ModelInfo, ReloadFailure, ReloadResponse, feature_infos

router = APIRouter(tags=["model"])

bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN, as `Authorization: Bearer <token>`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class AttemptLimiter:
    """At most ``limit`` attempts in any ``window`` seconds: a sliding log, thread-safe, in process."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._attempts: deque[float] = deque()
        self._lock = threading.Lock()

    def attempt(self) -> float | None:
        """Count one attempt: None when it is allowed, else the seconds until one will be."""
        with self._lock:
            now = self._clock()
            while self._attempts and self._attempts[0] <= now - self.window:
                self._attempts.popleft()
            if len(self._attempts) >= self.limit:
                # Refused attempts are not logged: a client that keeps knocking is not locked out
                # for longer than the window, and the log stays at most ``limit`` long.
                return self._attempts[0] + self.window - now
            self._attempts.append(now)
            return None


_limiter_lock = threading.Lock()


def _reload_limiter(request: Request, limit: int, window: float) -> AttemptLimiter:
    """The app's /reload-model limiter, made on first use (one per app, so tests get their own)."""
    state = request.app.state
    with _limiter_lock:
        limiter: AttemptLimiter | None = getattr(state, "reload_limiter", None)
        if limiter is None:
            limiter = AttemptLimiter(limit, window)
            state.reload_limiter = limiter
        return limiter


def _token_matches(offered: str, expected: str) -> bool:
    # Both sides are hashed first so that compare_digest always compares 32 bytes with 32 bytes:
    # neither the content nor the length of the offered token changes how long the check takes.
    return hmac.compare_digest(
        hashlib.sha256(offered.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


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
        429: {
            "model": ErrorResponse,
            "description": "Over RELOAD_RATE_LIMIT attempts in RELOAD_RATE_WINDOW seconds; see Retry-After.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds until an attempt is allowed again.",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
)
def reload_model(
    request: Request, store: ModelStoreDep, settings: SettingsDep, credentials: BearerDep
) -> ReloadResponse | JSONResponse:
    """Load model/ again, verify it, and swap it in atomically; needs the admin bearer token."""
    # Every attempt counts, before auth: a wrong token costs a guesser one attempt of the budget.
    wait = _reload_limiter(request, settings.reload_rate_limit, settings.reload_rate_window).attempt()
    if wait is not None:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=(
                f"too many reload attempts: at most {settings.reload_rate_limit} every "
                f"{settings.reload_rate_window:g} s (RELOAD_RATE_LIMIT, RELOAD_RATE_WINDOW)"
            ),
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    if settings.admin_token is None:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="model reload is disabled: no ADMIN_TOKEN is configured on this service",
        )
    offered = credentials.credentials if credentials is not None else ""
    if not _token_matches(offered, settings.admin_token.get_secret_value()):
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
