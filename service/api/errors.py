"""Error responses: validation errors that name the field (and batch row), never a 500 for bad input."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.schemas import ErrorResponse, ValidationErrorResponse

VALIDATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ValidationErrorResponse,
        "description": "A field is missing, not a number, or out of bounds.",
    }
}
NO_MODEL_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No model is loaded."}
}


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with loc/msg/type only: the offending input is not echoed (NaN would not even serialise)."""
    assert isinstance(exc, RequestValidationError)
    issues = [
        {
            "loc": [part for part in error.get("loc", ()) if isinstance(part, str | int)],
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    body = ValidationErrorResponse.model_validate({"detail": issues})
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content=body.model_dump(mode="json")
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
