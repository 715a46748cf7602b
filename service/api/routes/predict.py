"""Scoring: one transaction, or a batch of them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import ScorerDep, SettingsDep, get_scorer
from service.api.errors import NO_MODEL_RESPONSE, VALIDATION_RESPONSES
from service.api.routing import RequestOnlyRoute
from service.metrics import ServiceMetrics
from service.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    Prediction,
    Transaction,
    plainly_valid_batch,
    plainly_valid_row,
)
from service.scorer import Reason, Rows

router = APIRouter(tags=["scoring"])
"""``POST /predict/batch``, included like any router."""
direct_router = APIRouter(tags=["scoring"])
"""``POST /predict``, the hot path: registered on the app's own router (``register_directly``)."""

ExplainQuery = Annotated[
    bool,
    Query(description="Attach reason codes to every prediction, not only to those flagged as fraud."),
]
"""?explain on /predict/batch, where FastAPI's parameter handling costs little next to the batch."""


def _metrics(request: Request) -> ServiceMetrics:
    # Read from the app rather than through MetricsDep: on this hot path each FastAPI dependency
    # costs about as much as scoring the transaction (see docs/service.md, "Performance").
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


EXPLAIN_DESCRIPTION = "Attach reason codes to every prediction, not only to those flagged as fraud."
# pydantic's spellings of a boolean in a query string.
_BOOLEAN_WORDS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n", "off"), False),
}
_EXPLAIN_PARAMETER_DOC = {
    "parameters": [
        {
            "name": "explain",
            "in": "query",
            "required": False,
            "description": EXPLAIN_DESCRIPTION,
            "schema": {"type": "boolean", "default": False, "title": "Explain"},
        }
    ]
}


def _explain_flag(request: Request) -> bool:
    """``?explain=`` read by hand: as a declared Query parameter it cost FastAPI ~150 us a request."""
    if not request.scope["query_string"]:
        return False
    raw = request.query_params.get("explain")
    if raw is None:
        return False
    value = _BOOLEAN_WORDS.get(raw.strip().lower())
    if value is None:
        raise RequestValidationError(
            [{"loc": ("query", "explain"), "msg": "Input should be a valid boolean", "type": "bool_parsing"}]
        )
    return value


TRANSACTION_REF = "#/components/schemas/Transaction"
BATCH_REQUEST_REF = "#/components/schemas/BatchRequest"
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The body is larger than MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "The body is not declared as application/json."},
}


def _request_body_doc(ref: str) -> dict[str, Any]:
    """OpenAPI body of a route that reads its body itself (the schema is registered in service.main)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}}


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _json_body(request: Request) -> Any:
    """The request's JSON body. A body with no Content-Type is read as JSON, as FastAPI does."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"the body must be JSON sent as 'Content-Type: application/json', not {content_type!r}",
        )
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # orjson refuses NaN and Infinity tokens, as strict JSON does. The standard parser reads them,
    # so that validation can name the field that carries one; it refuses everything else.
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        issue = {"loc": (error.pos,), "msg": f"JSON decode error: {error.msg}", "type": "json_invalid"}
        raise _validation_error([issue]) from None


async def predict(request: Request) -> Response:
    """Score one transaction; a flagged one carries its reason codes."""
    # The body is read, validated and answered by hand rather than declared as a Transaction
    # parameter with a Prediction response model; the scorer, the metrics and ?explain are read from
    # the request rather than declared as dependencies, and the route is a RequestOnlyRoute, which
    # FastAPI documents but calls directly. On this route each of FastAPI's generic steps costs about
    # as much as scoring the transaction (docs/service.md, "Performance"). The contract is the same:
    # Transaction judges every body the fast check does not accept, and the answer has Prediction's
    # shape (tests/service/api/routes/test_predict_route.py checks both).
    explain = _explain_flag(request)
    data = await _json_body(request)
    row = plainly_valid_row(data)
    if row is None:
        try:
            row = Transaction.model_validate(data).as_row()
        except ValidationError as exc:
            raise _validation_error([dict(error) for error in exc.errors(include_url=False)]) from None
    scorer = await get_scorer(request)
    # On the event loop, reasons included: a flagged row's TreeSHAP takes tens of microseconds
    # (docs/service.md, "Reason codes"), less than a hop to the thread pool.
    scores = scorer.score([row], explain=explain)
    fraud = bool(scores.flagged[0])
    _metrics(request).count_predictions(scorer.version, int(fraud), 1 - int(fraud))
    body = _prediction_json(
        fraud, float(scores.probabilities[0]), scorer.version, scorer.threshold, scores.reasons[0]
    )
    return Response(content=orjson.dumps(body), media_type="application/json")


direct_router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    route_class_override=RequestOnlyRoute,
    response_model=Prediction,
    responses={**VALIDATION_RESPONSES, **NO_MODEL_RESPONSE, **BODY_RESPONSES},
    openapi_extra={**_EXPLAIN_PARAMETER_DOC, **_request_body_doc(TRANSACTION_REF)},
)


def _validation_error(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error.get("loc", ()))} for error in errors])


def _parse_batch(data: Any, limit: int) -> Rows:
    transactions = data.get("transactions") if isinstance(data, dict) else None
    # Before validating: an oversized batch is refused without paying for it.
    if isinstance(transactions, list) and len(transactions) > limit:
        raise HTTPException(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"the batch has {len(transactions)} transactions; the limit is {limit} (MAX_BATCH_ROWS)",
        )
    matrix = plainly_valid_batch(data)
    if matrix is not None:
        return matrix
    try:
        batch = BatchRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_error([dict(error) for error in exc.errors(include_url=False)]) from None
    return [transaction.as_row() for transaction in batch.transactions]


def _prediction_json(
    fraud: bool, probability: float, version: str, threshold: float, reasons: tuple[Reason, ...] | None
) -> dict[str, Any]:
    """One prediction as plain data, in ``Prediction``'s shape, for orjson."""
    return {
        "is_fraud": fraud,
        "fraud_probability": probability,
        "model_version": version,
        "threshold": threshold,
        "reasons": None
        if reasons is None
        else [{"feature": r.feature, "value": r.value, "contribution": r.contribution} for r in reasons],
    }


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses={
        **VALIDATION_RESPONSES,
        **NO_MODEL_RESPONSE,
        **BODY_RESPONSES,
        413: {
            "model": ErrorResponse,
            "description": "More transactions than MAX_BATCH_ROWS, or a body larger than MAX_BODY_BYTES.",
        },
    },
    openapi_extra=_request_body_doc(BATCH_REQUEST_REF),
)
async def predict_batch(
    request: Request,
    scorer: ScorerDep,
    settings: SettingsDep,
    explain: ExplainQuery = False,
) -> Response:
    """Score many transactions at once, in order; one invalid row rejects the whole batch."""
    # The body is parsed and the answer serialised with orjson, and the answer built as plain
    # data: FastAPI's generic path (json.loads, then dump-validate-serialise of 10,000 models)
    # costs more than scoring. The shapes are BatchRequest and BatchResponse all the same
    # (tests/service/api/routes/test_predict_route.py validates them).
    rows = _parse_batch(await _json_body(request), settings.max_batch_rows)
    version, threshold = scorer.version, scorer.threshold
    predictions: list[dict[str, Any]] = []
    if len(rows):
        # Off the event loop: a 10,000-row batch would otherwise hold up every other request.
        scores = await run_in_threadpool(scorer.score, rows, explain=explain)
        flagged = scores.flagged.tolist()
        predictions = [
            _prediction_json(fraud, probability, version, threshold, reasons)
            for fraud, probability, reasons in zip(
                flagged, scores.probabilities.tolist(), scores.reasons, strict=True
            )
        ]
        fraud_count = sum(flagged)
        _metrics(request).count_predictions(version, fraud_count, len(rows) - fraud_count)
    body = {"predictions": predictions, "model_version": version, "threshold": threshold}
    return Response(content=orjson.dumps(body), media_type="application/json")
