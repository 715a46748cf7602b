"""Step 1, extract: where the transactions come from.

Three sources, chosen by one option (see ``parse_source``):

* the embedded simulator (default): realistic, overlapping card transactions, deterministic for a seed;
* a CSV or Parquet file;
* a SQL database through a SQLAlchemy URL, reading a time window such as the last 30 days.

Every source returns the same columns: ``transaction_id``, ``timestamp`` (UTC), the five contract
features and ``label``. Types are checked by ``validate``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.config import SCENARIOS, ExtractParams
from pipeline.outcomes import SourceError as SourceError  # re-exported for callers of extract
from service.features import FEATURE_NAMES, LABEL, TIMESTAMP, TRANSACTION_ID

COLUMNS: tuple[str, ...] = (TRANSACTION_ID, TIMESTAMP, *FEATURE_NAMES, LABEL)
FILE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Source:
    """Where to read transactions from."""

    kind: Literal["simulator", "file", "sql"]
    location: str = ""

    def describe(self) -> str:
        if self.kind == "simulator":
            return "simulator"
        if self.kind == "sql":
            return f"sql:{redact_url(self.location)}"
        return f"file:{self.location}"


@dataclass(frozen=True)
class ExtractResult:
    frame: pd.DataFrame
    source: str
    """Human-readable origin, with any credentials redacted."""
    scenario: str
    rows: int


def parse_source(value: str) -> Source:
    """Interpret the ``--source`` option.

    Args:
        value: ``simulator``, a path to a ``.csv``/``.parquet`` file, or a SQLAlchemy URL
            (anything containing ``://``, e.g. ``sqlite:///data/tx.db``).

    Returns:
        The parsed source.
    """
    if value in ("", "simulator", "sim"):
        return Source("simulator")
    if "://" in value:
        return Source("sql", value)
    if Path(value).suffix.lower() in FILE_SUFFIXES:
        return Source("file", value)
    raise SourceError(
        f"source {value!r} is not 'simulator', a .csv/.parquet file or a SQLAlchemy URL (driver://...)"
    )


def redact_url(url: str) -> str:
    """Hide the password of a database URL so it never reaches logs or reports."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported without its contents
        return "<unparsable database URL>"


# --- the simulator -------------------------------------------------------------------------------

# Hourly activity profile of legitimate spending (relative weights, hour 0..23): quiet nights,
# a lunch peak and an evening peak, as in published card-volume curves.
_LEGIT_HOURS = np.array(
    [
        0.6,
        0.35,
        0.25,
        0.2,
        0.2,
        0.35,
        1.0,
        2.2,
        3.6,
        4.6,
        5.2,
        5.8,
        6.6,
        6.4,
        5.6,
        5.4,
        5.6,
        6.2,
        6.8,
        6.4,
        5.0,
        3.6,
        2.2,
        1.2,
    ]
)
# Fraud concentrates at night but not only there: some of it happens in office hours.
_FRAUD_HOURS = np.array(
    [
        4.5,
        5.0,
        5.2,
        4.8,
        3.6,
        2.2,
        1.4,
        1.4,
        1.6,
        1.8,
        2.0,
        2.2,
        2.2,
        2.2,
        2.2,
        2.2,
        2.2,
        2.4,
        2.6,
        2.8,
        3.0,
        3.4,
        3.8,
        4.2,
    ]
)
# Merchant categories: 0-4 are everyday (grocery, fuel, restaurants, transport, retail), 5-9 high
# risk (electronics, jewellery, gift cards, gambling, crypto).
_LEGIT_MERCHANTS = np.array([0.26, 0.18, 0.2, 0.13, 0.17, 0.02, 0.015, 0.01, 0.01, 0.005])
_FRAUD_MERCHANTS = np.array([0.07, 0.04, 0.05, 0.03, 0.06, 0.2, 0.16, 0.18, 0.12, 0.09])
# Share of fraud that imitates the cardholder closely (account takeover): it draws most of its
# features from the legitimate distributions and is what keeps ROC-AUC well below 1.
_STEALTH_SHARE = 0.2


def _pick(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _legit(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    big = rng.random(n) < 0.04  # occasional large purchases: furniture, travel, electronics
    amount = np.where(big, rng.lognormal(np.log(420), 0.8, n), rng.lognormal(np.log(32), 0.95, n))
    travelling = rng.random(n) < 0.05
    distance = np.where(travelling, rng.lognormal(np.log(300), 1.0, n), rng.lognormal(np.log(4), 1.0, n))
    activity = rng.gamma(3.0, 1.0, n)  # per-card rate: a negative binomial count, mean 3
    return {
        "amount": amount,
        "hour": _pick(rng, _LEGIT_HOURS, n),
        "merchant_category": _pick(rng, _LEGIT_MERCHANTS, n),
        "distance_from_home": distance,
        "num_transactions_last_24h": rng.poisson(activity),
    }


def _fraud(rng: np.random.Generator, n: int, pattern: Literal["classic", "daytime"]) -> dict[str, np.ndarray]:
    legit = _legit(rng, n)
    if pattern == "classic":
        stealth = rng.random(n) < _STEALTH_SHARE
        fraud = {
            "amount": rng.lognormal(np.log(260), 1.1, n),
            "hour": _pick(rng, _FRAUD_HOURS, n),
            "merchant_category": _pick(rng, _FRAUD_MERCHANTS, n),
            "distance_from_home": rng.lognormal(np.log(90), 1.5, n),
            "num_transactions_last_24h": rng.poisson(rng.gamma(4.0, 2.0, n)),
        }
        # Even "classic" fraud looks legitimate on some features; stealthy fraud on most of them.
        keep_fraud_value = {
            name: np.where(stealth, rng.random(n) < 0.25, rng.random(n) < 0.85) for name in fraud
        }
    else:
        # Concept drift: card testing. Fraudsters move to office hours at everyday merchants and
        # probe stolen cards with bursts of tiny payments, which yesterday's model reads as benign.
        fraud = {
            "amount": rng.lognormal(np.log(4), 0.7, n),
            "hour": _pick(rng, _LEGIT_HOURS, n),
            "merchant_category": _pick(rng, _LEGIT_MERCHANTS, n),
            "distance_from_home": rng.lognormal(np.log(30), 1.2, n),
            "num_transactions_last_24h": rng.poisson(rng.gamma(5.0, 2.0, n)),
        }
        keep_fraud_value = {name: rng.random(n) < 0.85 for name in fraud}
    return {name: np.where(keep_fraud_value[name], fraud[name], legit[name]) for name in fraud}


def simulate(params: ExtractParams, scenario: str = "none") -> pd.DataFrame:
    """Generate labelled card transactions.

    Fraud and legitimate spending overlap as in real card data: some fraud is small, daytime, near
    home and at everyday merchants; some legitimate spending is large, late or far away.

    Args:
        params: row count, seed, fraud rate, time span and scenario factors.
        scenario: ``none``, ``amount_inflation`` (legitimate amounts x ``inflation_factor``),
            ``new_fraud_pattern`` (fraud moves to daytime at common merchants) or ``volume_spike``
            (``spike_factor`` x rows and per-card activity, as on a shopping holiday).

    Returns:
        A frame with ``COLUMNS``, sorted by timestamp; identical for identical arguments.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}; got {scenario!r}")
    rng = np.random.default_rng(params.seed)
    rows = params.rows
    if scenario == "volume_spike":
        rows = int(round(rows * params.spike_factor))
    n_fraud = int(round(rows * params.fraud_rate))
    n_legit = rows - n_fraud

    legit = _legit(rng, n_legit)
    if scenario == "amount_inflation":
        legit["amount"] = legit["amount"] * params.inflation_factor
    if scenario == "volume_spike":
        legit["num_transactions_last_24h"] = rng.poisson(rng.gamma(3.0, params.spike_factor, n_legit))
    fraud = _fraud(rng, n_fraud, "daytime" if scenario == "new_fraud_pattern" else "classic")

    columns = {name: np.concatenate([legit[name], fraud[name]]) for name in FEATURE_NAMES}
    label = np.concatenate([np.zeros(n_legit, np.int8), np.ones(n_fraud, np.int8)])

    amount = np.clip(np.round(columns["amount"], 2), 0.01, 1_000_000.0)
    distance = np.clip(np.round(columns["distance_from_home"], 2), 0.0, 20_038.0)
    count = np.minimum(columns["num_transactions_last_24h"], 10_000)
    hour = columns["hour"]

    end = pd.Timestamp(params.end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    start_day = end.normalize() - pd.Timedelta(days=params.days)
    day = rng.integers(0, params.days, rows)
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, rows)
    timestamp = start_day + pd.to_timedelta(seconds, unit="s")

    frame = pd.DataFrame(
        {
            TIMESTAMP: timestamp,
            "amount": amount,
            "hour": hour.astype(np.int8),
            "merchant_category": columns["merchant_category"].astype(np.int8),
            "distance_from_home": distance,
            "num_transactions_last_24h": count.astype(np.int32),
            LABEL: label,
        }
    )
    frame = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    frame.insert(0, TRANSACTION_ID, np.arange(1, rows + 1, dtype=np.int64))
    return frame


# --- files and databases -------------------------------------------------------------------------


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, chosen by its suffix; raise SourceError naming the file."""
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise SourceError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise SourceError(f"{path}: the file is empty") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SourceError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from exc


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet, chosen by the path's suffix."""
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise SourceError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def read_sql(url: str, table: str, window_days: int, until: datetime | None = None) -> pd.DataFrame:
    """Read the transactions of the last ``window_days`` days from a SQL database.

    Args:
        url: SQLAlchemy URL of the database.
        table: table holding the transactions.
        window_days: length of the window, ending at ``until``.
        until: end of the window (exclusive); now, in UTC, when omitted.

    Returns:
        The rows whose timestamp falls in the window, oldest first.
    """
    import sqlalchemy as sa

    end = until or datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    start = end - timedelta(days=window_days)
    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # noqa: BLE001 - bad URLs raise several unrelated types
        raise SourceError(f"{redact_url(url)}: not a usable SQLAlchemy URL: {exc}") from exc
    try:
        with engine.connect() as connection:
            reflected = sa.Table(table, sa.MetaData(), autoload_with=connection)
            if TIMESTAMP not in reflected.c:
                raise SourceError(f"{redact_url(url)}: table {table!r} has no {TIMESTAMP!r} column")
            column = reflected.c[TIMESTAMP]
            # Compare naive UTC values: SQLite and most warehouses store timestamps without a zone.
            query = (
                sa.select(reflected)
                .where(column >= start.replace(tzinfo=None), column < end.replace(tzinfo=None))
                .order_by(column)
            )
            frame = pd.read_sql(query, connection)
    except sa.exc.NoSuchTableError as exc:
        raise SourceError(f"{redact_url(url)}: no table named {table!r}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"{redact_url(url)}: query failed: {type(exc).__name__}: {exc.args[0]}") from exc
    finally:
        engine.dispose()
    if TIMESTAMP in frame:
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def extract(
    source: Source,
    params: ExtractParams,
    scenario: str = "none",
    until: datetime | None = None,
) -> ExtractResult:
    """Read one batch of labelled transactions from ``source``.

    Args:
        source: where to read.
        params: simulator settings and the SQL table and window.
        scenario: simulator scenario; only the simulator can apply one.
        until: end of the SQL window (default: now).

    Returns:
        The frame and where it came from.
    """
    if source.kind == "simulator":
        frame = simulate(params, scenario)
    elif scenario != "none":
        raise SourceError(f"scenario {scenario!r} only applies to the simulator, not to {source.describe()}")
    elif source.kind == "file":
        frame = read_table(Path(source.location))
    else:
        frame = read_sql(source.location, params.sql_table, params.sql_window_days, until)
    return ExtractResult(frame=frame, source=source.describe(), scenario=scenario, rows=len(frame))
