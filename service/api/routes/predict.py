"""Scoring: one transaction, or a batch of them."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import ScorerDep, SettingsDep, get_scorer
from service.api.errors import NO_MODEL_RESPONSE, VALIDATION_RESPONSES
from service.metrics import ServiceMetrics
from service.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    Prediction,
    ReasonCode,
    Transaction,
    plainly_valid_batch,
)
from service.scorer import Reason, Rows, Scorer, Scores

router = APIRouter(tags=["scoring"])

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


def _prediction(scorer: Scorer, scores: Scores, index: int) -> Prediction:
    reasons = scores.reasons[index]
    return Prediction.model_construct(
        is_fraud=bool(scores.flagged[index]),
        fraud_probability=float(scores.probabilities[index]),
        model_version=scorer.version,
        threshold=scorer.threshold,
        reasons=None
        if reasons is None
        else [
            ReasonCode.model_construct(feature=r.feature, value=r.value, contribution=r.contribution)
            for r in reasons
        ],
    )


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
    raw = request.query_params.get("explain")
    if raw is None:
        return False
    value = _BOOLEAN_WORDS.get(raw.strip().lower())
    if value is None:
        raise RequestValidationError(
            [{"loc": ("query", "explain"), "msg": "Input should be a valid boolean", "type": "bool_parsing"}]
        )
    return value


@router.post(
    "/predict",
    response_model=Prediction,
    responses={**VALIDATION_RESPONSES, **NO_MODEL_RESPONSE},
    openapi_extra=_EXPLAIN_PARAMETER_DOC,
)
async def predict(transaction: Transaction, request: Request) -> Prediction:
    """Score one transaction; a flagged one carries its reason codes."""
    # The scorer, the metrics and ?explain are read from the request rather than declared as
    # ScorerDep, MetricsDep and a Query parameter: on this route each such declaration costs FastAPI
    # about as much as scoring the transaction, or more (docs/service.md, "Performance"). The
    # behaviour is the same, including the 503 without a model; the other routes use ScorerDep.
    explain = _explain_flag(request)
    scorer = await get_scorer(request)
    rows = [transaction.as_row()]
    scores = scorer.score(rows, explain=explain, defer_unready_reasons=True)
    if scores.reasons_deferred:
        # The reasons need XGBoost, not loaded yet (an import of seconds, or the warm-up thread
        # holding the explainer's lock): wait for it in a worker thread, never on the event loop.
        scores = await run_in_threadpool(scorer.score, rows, explain=explain)
    fraud = int(scores.flagged[0])
    _metrics(request).count_predictions(scorer.version, fraud, 1 - fraud)
    return _prediction(scorer, scores, 0)


def _batch_request_doc() -> dict[str, Any]:
    """OpenAPI body of /predict/batch, which reads its body itself (see predict_batch)."""
    schema = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # Transaction is already a component, through /predict
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _validation_error(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error.get("loc", ()))} for error in errors])


def _parse_batch(body: bytes, limit: int) -> Rows:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN and Infinity tokens outright, as strict JSON does.
        error = {"loc": (exc.pos,), "msg": f"JSON decode error: {exc.msg}", "type": "json_invalid"}
        raise _validation_error([error]) from None
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


def _reasons_json(reasons: tuple[Reason, ...] | None) -> list[dict[str, Any]] | None:
    if reasons is None:
        return None
    return [{"feature": r.feature, "value": r.value, "contribution": r.contribution} for r in reasons]


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses={
        **VALIDATION_RESPONSES,
        **NO_MODEL_RESPONSE,
        413: {"model": ErrorResponse, "description": "More transactions than MAX_BATCH_ROWS."},
    },
    openapi_extra=_batch_request_doc(),
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
    rows = _parse_batch(await request.body(), settings.max_batch_rows)
    version, threshold = scorer.version, scorer.threshold
    predictions: list[dict[str, Any]] = []
    if len(rows):
        # Off the event loop: a 10,000-row batch would otherwise hold up every other request.
        scores = await run_in_threadpool(scorer.score, rows, explain=explain)
        flagged = scores.flagged.tolist()
        predictions = [
            {
                "is_fraud": fraud,
                "fraud_probability": probability,
                "model_version": version,
                "threshold": threshold,
                "reasons": _reasons_json(reasons),
            }
            for fraud, probability, reasons in zip(
                flagged, scores.probabilities.tolist(), scores.reasons, strict=True
            )
        ]
        fraud_count = sum(flagged)
        _metrics(request).count_predictions(version, fraud_count, len(rows) - fraud_count)
    body = {"predictions": predictions, "model_version": version, "threshold": threshold}
    return Response(content=orjson.dumps(body), media_type="application/json")
