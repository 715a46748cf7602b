"""Every tunable number of the pipeline, grouped by step, with its unit and why it has its value.

Values come, in increasing priority, from the defaults below, ``params.toml`` at the project
root (the file DVC and reviewers read), and ``PIPELINE_<STEP>__<FIELD>`` environment
variables. ``get_settings()`` builds them once per process; tests build ``Settings(...)``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = PROJECT_ROOT / "params.toml"

Scenario = Literal["none", "amount_inflation", "new_fraud_pattern", "volume_spike"]
SCENARIOS: tuple[str, ...] = ("none", "amount_inflation", "new_fraud_pattern", "volume_spike")


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExtractParams(_Params):
    rows: int = Field(50_000, ge=1, description="Rows the simulator generates (before a volume spike).")
    seed: int = Field(42, description="Simulator seed: the same seed gives the same rows.")
    fraud_rate: float = Field(
        0.02, ge=0.005, le=0.15, description="Share of fraudulent rows; real card data sits near 0.1-2%."
    )
    days: int = Field(30, ge=1, le=3650, description="Days of history the simulator spreads rows over.")
    end: str = Field(
        "2026-01-01T00:00:00Z",
        description="Timestamp the simulated history ends at; fixed so a seed reproduces the same data.",
    )
    inflation_factor: float = Field(
        1.5, gt=0, description="amount_inflation: legitimate amounts are multiplied by this."
    )
    spike_factor: float = Field(
        3.0, ge=1, description="volume_spike: rows and per-card activity are multiplied by this."
    )
    sql_table: str = Field("transactions", description="Table read by the SQL source.")
    sql_window_days: int = Field(30, ge=1, description="SQL source reads the last N days before its end.")


class ValidateParams(_Params):
    min_rows: int = Field(500, ge=1, description="Fewer rows cannot train or test anything reliably.")
    max_null_fraction: float = Field(0.05, ge=0, le=1, description="More nulls than this in a column fails.")


class DriftParams(_Params):
    alpha: float = Field(
        0.005,
        gt=0,
        lt=1,
        description=(
            "Family-wise significance level across the five feature tests (Holm-corrected). 0.005 bounds "
            "false alarms at half the 1% target by construction; measured 0.1% of 1,000 no-drift runs at "
            "~1,000 rows a side, while amount x1.5 at that size is caught on 100% of runs (docs/drift.md)."
        ),
    )
    psi_floor: float = Field(
        0.005,
        ge=0,
        description=(
            "Smallest population stability index that counts as material: a shift must be both "
            "significant and at least this large to trigger retraining. 0.005 is the PSI of roughly a "
            "10% rescaling of amount: measured PSI of amount x1.2 is 0.018-0.026 (3.5x above), of "
            "x1.02 at most 0.0009 (5x below), so big samples stop flagging trivial shifts. The common "
            "0.1/0.25 rules of thumb would let a 20% inflation of amounts through."
        ),
    )
    psi_bins: int = Field(
        10,
        ge=2,
        le=100,
        description=(
            "Quantile bins for PSI on continuous features. 20 bins raised amount x1.2's PSI by only 5% "
            "but doubled its no-drift noise at 1,000 rows; 10 is the usual choice."
        ),
    )
    min_expected: float = Field(
        5.0, gt=0, description="Chi-square cells with fewer expected counts are merged (Cochran's rule)."
    )
    reference_rows: int = Field(
        20_000, ge=500, le=50_000, description="Size of the drift reference sample stored in model/."
    )
    decay_rows: int = Field(
        200_000,
        ge=1_000,
        description=(
            "Most labelled rows the champion scores for the decay check: a label-stratified, seeded "
            "sample of larger batches. 200,000 rows at a 2% fraud rate measure ROC-AUC to about "
            "+-0.003 (one standard error), and the noise allowance (decay_z) uses the sample's own "
            "counts; scoring every row took 3.1 s at 1M rows (loaded 2-core machine), 10x that at 10M, "
            "for no better decision (docs/drift.md)."
        ),
    )
    decay_floor: float = Field(
        0.85, ge=0, le=1, description="Champion ROC-AUC on fresh labelled data below this forces a retrain."
    )
    decay_margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Champion ROC-AUC falling this far below its recorded ROC-AUC forces a retrain.",
    )
    decay_z: float = Field(
        2.33,
        ge=0,
        description=(
            "Standard errors of sampling noise allowed on top of decay_margin (2.33 = one-sided 1%): "
            "a drop within the noise of a small holdout is not decay."
        ),
    )


class TrainParams(_Params):
    n_estimators: int = Field(300, ge=1, description="Boosting rounds (upper bound; early stopping may cut).")
    max_depth: int = Field(4, ge=1, le=12)
    learning_rate: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.9, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(
        30, ge=1, description="Stop when the validation eval_metric stalls for this many rounds."
    )
    eval_metric: Literal["logloss", "aucpr"] = Field(
        "logloss",
        description=(
            "Validation metric watched by early stopping. logloss is O(rows) a round; aucpr sorts the "
            "validation window every round and was half the training time at 1M rows, for the same "
            "holdout ROC-AUC and PR-AUC (docs/benchmarks.md, Pipeline scale)."
        ),
    )
    negatives_per_positive: float | None = Field(
        5.0,
        gt=0,
        description=(
            "Negative downsampling: train on every fraud row and a deterministic random sample of at most "
            "this many legitimate rows per fraud row (never fewer than min_negatives). The class weight "
            "makes the objective balanced anyway: against every row, 10 per fraud row left holdout "
            "ROC-AUC and PR-AUC within 0.001 at 1M rows on 4.5x fewer rows, and 5 against 10 gives "
            "ROC-AUC 0.9303 / 0.9302 and PR-AUC 0.6550 / 0.6558 at 1M rows (0.9302 / 0.9302 and "
            "0.6582 / 0.6589 at 500k) on 72k training rows instead of 132k, a third less training time "
            "(docs/benchmarks.md, Pipeline scale). The intercept is re-fitted on the validation window, "
            "sampled and weighted back the same way. None keeps every row."
        ),
    )
    min_negatives: int = Field(
        50_000,
        ge=1,
        description=(
            "Legitimate rows always kept in training and early-stopping data: below this no row is "
            "dropped, so small batches (the 50,000-row default trains on 29,400) use every row."
        ),
    )
    seed: int = Field(
        7, description="XGBoost seed; with nthread fixed, the same data gives a bit-identical model."
    )
    nthread: int = Field(
        1,
        ge=1,
        description=(
            "XGBoost's threads, fixed so the model does not depend on the machine's core count. One: "
            "under the passive OpenMP wait policy the CLI sets, a second thread trains little faster on "
            "an idle machine (whole 1M-row runs 3.10-3.81 s with two, 3.34-3.62 s with one) and slower "
            "on a busy one (training 1.58-2.91 s with two, 1.43-1.64 s with one, at load 2.2), while "
            "the run uses the second core for its plots, the champion's holdout scores and the data "
            "snapshot as the candidate trains (pipeline.run; docs/benchmarks.md)."
        ),
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="Rows before the test window used for early stopping and the threshold.",
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=0.5, description="Most recent rows held out for the quality gate; never a random split."
    )
    scale_pos_weight: float | Literal["auto"] = Field(
        "auto",
        description=(
            "Weight of fraud rows; 'auto' = legitimate/fraud ratio. The trained model's intercept is then "
            "re-fitted on the validation window so served probabilities stay calibrated."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_sampling(cls, data: Any) -> Any:
        """Read a complete record of the parameters from before eval_metric existed as what it meant.

        Models promoted before then (``meta.json`` ``params.train`` lists every other field) were
        trained with early stopping on aucpr and every row; ``pipeline reproduce`` rebuilds them
        from that record, so it must keep meaning exactly that.
        """
        if isinstance(data, dict) and _LEGACY_FIELDS <= data.keys() and not _NEW_FIELDS & data.keys():
            return {**data, "eval_metric": "aucpr", "negatives_per_positive": None}
        return data


_NEW_FIELDS = frozenset({"eval_metric", "negatives_per_positive", "min_negatives"})
_LEGACY_FIELDS = frozenset(TrainParams.model_fields) - _NEW_FIELDS


class EvaluateParams(_Params):
    threshold_rule: Literal["max_f1", "alert_rate", "min_precision"] = Field(
        "max_f1",
        description=(
            "How the decision threshold is chosen on validation data: max_f1 maximises F1; alert_rate flags "
            "at most threshold_target of transactions; min_precision takes the lowest threshold whose "
            "precision is at least threshold_target."
        ),
    )
    threshold_target: float = Field(0.01, gt=0, le=1, description="Target of alert_rate or min_precision.")
    min_roc_auc: float = Field(0.85, ge=0, le=1, description="A candidate below this ROC-AUC is rejected.")
    max_regression: float = Field(
        0.01,
        ge=0,
        le=1,
        description="A candidate whose holdout ROC-AUC is this much below the champion's is rejected.",
    )
    calibration_bins: int = Field(10, ge=2, le=100, description="Bins of the expected calibration error.")


class RegistryParams(_Params):
    keep_versions: int = Field(
        10, ge=1, description="Versions kept under model/versions/ for rollback; older ones live in git tags."
    )


class Settings(BaseSettings):
    """Pipeline configuration: paths plus the parameters of each step."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        toml_file=PARAMS_FILE,
        extra="forbid",
        frozen=True,
    )

    model_dir: Path = Field(PROJECT_ROOT / "model", description="Where the promoted model lives.")
    data_dir: Path = Field(PROJECT_ROOT / "data", description="DVC-tracked dataset of the latest promotion.")
    reports_dir: Path = Field(PROJECT_ROOT / "reports", description="One folder per run.")

    extract: ExtractParams = ExtractParams()
    validation: ValidateParams = ValidateParams()
    drift: DriftParams = DriftParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    registry: RegistryParams = RegistryParams()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


@lru_cache
def get_settings() -> Settings:
    return Settings()
