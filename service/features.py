"""The feature contract: the one definition of the model's inputs.

The API schema, the data validator, the drift gate and the trainer all read it, so a bound
changed here changes everywhere at once. Keep this module free of heavy imports: it is on the
service's cold-start path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["continuous", "discrete"]


@dataclass(frozen=True, slots=True)
class Feature:
    """One model input with its type, bounds and documentation."""

    name: str
    dtype: Literal["float", "int"]
    # "continuous" values rarely tie; "discrete" ones are counts or category codes and tie heavily,
    # which decides the drift test used for them.
    kind: Kind
    minimum: float
    maximum: float
    unit: str
    description: str
    example: float
    # amount must be strictly positive; every other lower bound is inclusive.
    exclusive_minimum: bool = False

    def violation(self, value: float) -> str | None:
        """Return why ``value`` breaks this feature's bounds, or None when it is valid."""
        if value != value or value in (float("inf"), float("-inf")):
            return "must be a finite number"
        if self.exclusive_minimum and value <= self.minimum:
            return f"must be greater than {self.minimum:g}"
        if not self.exclusive_minimum and value < self.minimum:
            return f"must be at least {self.minimum:g}"
        if value > self.maximum:
            return f"must be at most {self.maximum:g}"
        if self.dtype == "int" and value != int(value):
            return "must be a whole number"
        return None


FEATURES: tuple[Feature, ...] = (
    Feature(
        name="amount",
        dtype="float",
        kind="continuous",
        minimum=0.0,
        exclusive_minimum=True,
        # A ceiling keeps absurd values (1e308) out of the model; no card authorises more.
        maximum=1_000_000.0,
        unit="EUR",
        description="Transaction amount in euros; strictly positive.",
        example=150.0,
    ),
    Feature(
        name="hour",
        dtype="int",
        kind="discrete",
        minimum=0,
        maximum=23,
        unit="hour of day",
        description="Local hour of the transaction, 0-23.",
        example=14,
    ),
    Feature(
        name="merchant_category",
        dtype="int",
        kind="discrete",
        minimum=0,
        maximum=9,
        unit="category code",
        description="Merchant category code: 0-4 are common categories, 5-9 are high risk.",
        example=2,
    ),
    Feature(
        name="distance_from_home",
        dtype="float",
        kind="continuous",
        minimum=0.0,
        # Half the Earth's circumference: no point on the planet is farther from home.
        maximum=20_038.0,
        unit="km",
        description="Distance between the transaction and the cardholder's home, in km.",
        example=5.0,
    ),
    Feature(
        name="num_transactions_last_24h",
        dtype="int",
        kind="discrete",
        minimum=0,
        maximum=10_000,
        unit="transactions",
        description="Transactions on the same card in the previous 24 hours.",
        example=3,
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

LABEL = "label"
"""Target column: 1 = fraud, 0 = legitimate."""
TIMESTAMP = "timestamp"
"""Event time (UTC); the trainer holds out the most recent rows by it."""
TRANSACTION_ID = "transaction_id"
"""Optional unique id; the validator rejects duplicates when the column is present."""

HIGH_RISK_MERCHANTS: tuple[int, ...] = (5, 6, 7, 8, 9)
