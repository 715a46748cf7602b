"""Request and response models of the API.

The transaction model is built from the feature contract (``service.features``): bounds, units,
descriptions and examples come from there, so they are defined once. Input is strict: booleans
and strings are not numbers, and NaN or infinity is refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from service.features import FEATURE_NAMES, FEATURES, FEATURES_BY_NAME, Feature

EXAMPLE_TRANSACTION: dict[str, JsonValue] = {
    f.name: (int(f.example) if f.dtype == "int" else f.example) for f in FEATURES
}


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 14.0 is the integer 14 (as the original API accepted); 14.5 is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


def _contract_field(name: str) -> Any:
    feature: Feature = FEATURES_BY_NAME[name]
    cast = int if feature.dtype == "int" else float
    lower, upper = cast(feature.minimum), cast(feature.maximum)
    return Field(
        ...,
        description=f"{feature.description} Unit: {feature.unit}.",
        examples=[EXAMPLE_TRANSACTION[name]],
        allow_inf_nan=False if feature.dtype == "float" else None,
        gt=lower if feature.exclusive_minimum else None,
        ge=None if feature.exclusive_minimum else lower,
        le=upper,
    )


class Transaction(BaseModel):
    """One card transaction: the five model features."""

    # strict: true, "150" and null are not numbers. Unknown fields are ignored, as the original API did.
    model_config = ConfigDict(
        strict=True, extra="ignore", json_schema_extra={"examples": [EXAMPLE_TRANSACTION]}
    )

    amount: float = _contract_field("amount")
    hour: WholeNumber = _contract_field("hour")
    merchant_category: WholeNumber = _contract_field("merchant_category")
    distance_from_home: float = _contract_field("distance_from_home")
    num_transactions_last_24h: WholeNumber = _contract_field("num_transactions_last_24h")

    def as_row(self) -> tuple[float, ...]:
        """The features in contract order, as the scorer takes them."""
        return (
            self.amount,
            self.hour,
            self.merchant_category,
            self.distance_from_home,
            self.num_transactions_last_24h,
        )


class BatchRequest(BaseModel):
    """Transactions to score together; one invalid row rejects the whole batch."""

    model_config = ConfigDict(
        strict=True, extra="forbid", json_schema_extra={"examples": [{"transactions": [EXAMPLE_TRANSACTION]}]}
    )

    transactions: list[Transaction] = Field(
        ..., description="Transactions in the order their predictions are returned; capped by MAX_BATCH_ROWS."
    )


class ReasonCode(BaseModel):
    """A feature that pushed the score up, with its exact TreeSHAP contribution."""

    feature: str = Field(..., description="Feature name.", examples=["distance_from_home"])
    value: float = Field(
        ..., description="The feature's value in the request (as the model saw it, float32)."
    )
    contribution: float = Field(
        ...,
        description="Contribution to the score in log-odds (margin) space; positive pushes towards fraud.",
    )


class Prediction(BaseModel):
    """The score of one transaction."""

    is_fraud: bool = Field(..., description="fraud_probability >= threshold.")
    fraud_probability: float = Field(..., ge=0, le=1, description="Model probability that this is fraud.")
    model_version: str = Field(..., description="Version of the model that scored this transaction.")
    threshold: float = Field(
        ..., ge=0, le=1, description="Decision threshold of that model (from meta.json)."
    )
    reasons: list[ReasonCode] | None = Field(
        None,
        description=(
            "Features that pushed the score up most, largest first. Present on every flagged "
            "transaction and on any with ?explain=true; null otherwise."
        ),
    )


class BatchResponse(BaseModel):
    """Predictions in the order of the request's transactions."""

    predictions: list[Prediction]
    model_version: str = Field(..., description="Version of the model that scored the whole batch.")
    threshold: float = Field(..., ge=0, le=1)


class HealthResponse(BaseModel):
    """Liveness: the process answers. Also says whether a model is loaded."""

    status: Literal["ok"] = "ok"
    model_loaded: bool
    model_version: str = Field(..., description="Served model version, or 'none' while no model is loaded.")


class ReadyResponse(BaseModel):
    """Readiness: a verified model is loaded and serving."""

    status: Literal["ready"] = "ready"
    model_version: str


class FeatureInfo(BaseModel):
    name: str
    dtype: Literal["float", "int"]
    minimum: float
    exclusive_minimum: bool
    maximum: float
    unit: str
    description: str


class DatasetSummary(BaseModel):
    rows: int
    fraud_rate: float
    md5: str = Field(..., description="DVC md5 of the dataset the model was trained on.")
    source: str


class ModelInfo(BaseModel):
    """Metadata of the served model, from its meta.json."""

    version: str
    trained_at: str
    threshold: float
    threshold_rule: dict[str, Any]
    metrics: dict[str, Any]
    data: DatasetSummary
    data_md5: str
    features: list[FeatureInfo]
    libraries: dict[str, str]
    evaluator: str = Field(..., description="How the service evaluates the trees (bitvector or traversal).")
    trees: int


class ReloadResponse(BaseModel):
    """Outcome of a successful reload."""

    status: Literal["reloaded"] = "reloaded"
    old_version: str | None = Field(..., description="Version served before the reload (null if none was).")
    new_version: str


class ErrorResponse(BaseModel):
    """An error with a human-readable reason."""

    detail: str


class ReloadFailure(BaseModel):
    """The new model was refused; the old one keeps serving."""

    detail: str
    serving_version: str | None


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(..., description="Where: ['body', 'transactions', 3, 'amount'] names row 3.")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """The request was refused; each issue names the field (and batch row) at fault."""

    detail: list[ValidationIssue]


_NUMBER_TYPES = frozenset({int, float})
# (name, lower bound, lower bound exclusive, upper bound, integral) per feature, in contract order.
_ROW_RULES = tuple((f.name, f.minimum, f.exclusive_minimum, f.maximum, f.dtype == "int") for f in FEATURES)


def plainly_valid_row(data: Any) -> tuple[float, ...] | None:
    """One transaction as a row when it is plainly valid; None means "let Transaction judge".

    The single-row twin of ``plainly_valid_batch``, in plain Python because one row is too small
    for numpy to pay off: the same subset of what ``Transaction`` accepts, with the same values.
    """
    if type(data) is not dict:
        return None
    row: list[float] = []
    for name, lower, exclusive, upper, integral in _ROW_RULES:
        value: Any = data.get(name)
        kind = type(value)
        if kind is not float and kind is not int:
            return None
        # NaN fails every comparison and +-inf fails one bound, so both fall through to Transaction.
        if not ((value > lower) if exclusive else (value >= lower)) or not value <= upper:
            return None
        if not integral:
            value = float(value)
        elif kind is float:
            if not value.is_integer():
                return None
            value = int(value)
        row.append(value)
    return tuple(row)


def plainly_valid_batch(data: Any) -> npt.NDArray[np.float64] | None:
    """The batch as an (n, 5) matrix when every row is plainly valid; None means "let BatchRequest judge".

    A fast path for large batches: it accepts a subset of what ``BatchRequest`` accepts (exact
    int/float values, no booleans or strings, finite, within the contract's bounds, integral where
    the contract wants integers) and gives the same numbers, so a batch it accepts is one that
    validation would accept identically. Anything else, including every invalid batch, goes through
    ``BatchRequest``, which names the row and field at fault.
    """
    if not isinstance(data, dict) or len(data) != 1 or not isinstance(data.get("transactions"), list):
        return None
    rows = data["transactions"]
    try:
        values = [row[name] for row in rows for name in FEATURE_NAMES]
    except (KeyError, TypeError, IndexError):
        return None
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    try:
        x = np.array(values, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
    except (OverflowError, ValueError):
        return None
    if not np.isfinite(x).all():
        return None
    for column, feature in enumerate(FEATURES):
        values_f = x[:, column]
        low_ok = values_f > feature.minimum if feature.exclusive_minimum else values_f >= feature.minimum
        if not (low_ok.all() and (values_f <= feature.maximum).all()):
            return None
        if feature.dtype == "int" and not (np.floor(values_f) == values_f).all():
            return None
    return x


def feature_infos() -> list[FeatureInfo]:
    return [
        FeatureInfo(
            name=f.name,
            dtype=f.dtype,
            minimum=f.minimum,
            exclusive_minimum=f.exclusive_minimum,
            maximum=f.maximum,
            unit=f.unit,
            description=f.description,
        )
        for f in FEATURES
    ]


assert tuple(Transaction.model_fields) == FEATURE_NAMES, (
    "Transaction must list the contract's features in order"
)
