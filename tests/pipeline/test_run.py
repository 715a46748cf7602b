"""End-to-end runs of the whole pipeline in temporary folders, one per decision path."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from pipeline.config import EvaluateParams, ExtractParams, Settings
from pipeline.dataset import DATASET_FILE, PENDING_FILE, dvc_dir_md5
from pipeline.extract import Source, write_table
from pipeline.outcomes import Decision, ExitCode
from pipeline.run import RunOptions, RunResult, run_pipeline
from service.artifacts import read_meta, verify
from tests.pipeline.conftest import make_frame, make_settings

pytestmark = pytest.mark.slow  # whole pipeline runs

ROWS = 50_000  # the default: a 10,000-row holdout measures ROC-AUC to about +-0.01


def settings_in(root: Path, **overrides: object) -> Settings:
    return make_settings(root, extract=ExtractParams(rows=ROWS), **overrides)


def run(settings: Settings, run_id: str, **options: object) -> RunResult:
    opts = {"source": Source("simulator"), **options}
    return run_pipeline(settings, RunOptions(**opts), run_id)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult]:
    root = tmp_path_factory.mktemp("bootstrapped")
    return root, run(settings_in(root), "first", seed=1)


@pytest.fixture
def registry_copy(bootstrapped: tuple[Path, RunResult], tmp_path: Path) -> Path:
    shutil.copytree(bootstrapped[0] / "model", tmp_path / "model")
    shutil.copytree(bootstrapped[0] / "data", tmp_path / "data")
    return tmp_path


def test_run_without_champion_promotes_v1_with_full_report(bootstrapped: tuple[Path, RunResult]) -> None:
    root, result = bootstrapped
    assert (result.decision, result.exit_code, result.version) == (Decision.PROMOTED, 0, "v1")
    meta = read_meta(root / "model")
    verify(root / "model", meta)
    assert meta.metrics["holdout"]["roc_auc"] >= 0.85
    assert 0 < meta.threshold < 1
    assert meta.data.md5 == dvc_dir_md5(root / "data")
    assert meta.data.rows == ROWS
    report = json.loads((result.report_dir / "report.json").read_text())
    assert report["decision"] == "promoted"
    assert list(report["steps"]) == ["extract", "validate", "drift", "train", "evaluate", "promote"]
    assert all(step["status"] == "ok" and step["seconds"] >= 0 for step in report["steps"].values())
    markdown = (result.report_dir / "report.md").read_text()
    assert "Decision: `promoted`" in markdown and "| roc_auc |" in markdown
    assert (result.report_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_same_distribution_skips_and_changes_nothing(registry_copy: Path) -> None:
    before = (registry_copy / "model" / "meta.json").read_bytes()
    data_before = dvc_dir_md5(registry_copy / "data")
    result = run(settings_in(registry_copy), "again", seed=2)
    assert (result.decision, result.exit_code) == (Decision.SKIPPED_NO_DRIFT, ExitCode.OK)
    assert (registry_copy / "model" / "meta.json").read_bytes() == before
    assert dvc_dir_md5(registry_copy / "data") == data_before
    drift = result.report["steps"]["drift"]["result"]
    assert drift["input"]["drift"] is False and drift["decay"]["decayed"] is False
    markdown = (result.report_dir / "report.md").read_text()
    for feature in ("amount", "hour", "merchant_category", "distance_from_home", "num_transactions_last_24h"):
        assert f"| {feature} |" in markdown
    assert (result.report_dir / "distributions.png").exists()


def test_run_amount_inflation_after_default_retrains(registry_copy: Path) -> None:
    result = run(settings_in(registry_copy), "inflation", seed=2, scenario="amount_inflation")
    assert (result.decision, result.version) == (Decision.PROMOTED, "v2")
    assert any("input drift in amount" in reason for reason in result.reasons)
    assert read_meta(registry_copy / "model").version == "v2"


def test_run_new_fraud_pattern_after_default_retrains_on_decay(registry_copy: Path) -> None:
    result = run(settings_in(registry_copy), "concept", seed=2, scenario="new_fraud_pattern")
    assert (result.decision, result.version) == (Decision.PROMOTED, "v2")
    decay = result.report["steps"]["drift"]["result"]["decay"]
    assert decay["decayed"] is True
    assert any("decayed" in reason for reason in result.reasons)


def test_run_force_retrains_without_drift(registry_copy: Path) -> None:
    result = run(settings_in(registry_copy), "forced", seed=2, force=True)
    assert result.decision == Decision.PROMOTED
    assert "retraining forced (--force)" in result.reasons


def test_run_rejected_candidate_keeps_model_and_data(registry_copy: Path) -> None:
    before = (registry_copy / "model" / "meta.json").read_bytes()
    data_before = dvc_dir_md5(registry_copy / "data")
    strict = settings_in(registry_copy, evaluate=EvaluateParams(min_roc_auc=0.999))
    result = run(strict, "strict", seed=2, force=True)
    assert (result.decision, result.exit_code) == (Decision.REJECTED_QUALITY, ExitCode.REJECTED_QUALITY)
    assert "below the floor 0.9990" in result.reasons[0]
    assert (registry_copy / "model" / "meta.json").read_bytes() == before
    assert dvc_dir_md5(registry_copy / "data") == data_before
    assert not (registry_copy / "data" / PENDING_FILE).exists(), "the snapshot staged in training stays"
    assert (result.report_dir / "candidate" / "booster.ubj").stat().st_size > 0
    assert "Quality gate: **failed**" in (result.report_dir / "report.md").read_text()


def test_run_failed_plot_is_reported_and_the_candidate_still_promoted(
    registry_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr("pipeline.run.plot_curves", broken)
    result = run(settings_in(registry_copy), "no-curves", seed=2, force=True)
    assert (result.decision, result.version) == (Decision.PROMOTED, "v2")
    assert result.report["plots"] == ["distributions.png"]
    assert result.report["plot_errors"] == ["curves.png: RuntimeError('no fonts')"]
    assert not (result.report_dir / "curves.png").exists()
    assert "curves.png: RuntimeError('no fonts')" in (result.report_dir / "report.md").read_text()
    assert dvc_dir_md5(registry_copy / "data") == read_meta(registry_copy / "model").data.md5


def test_run_that_crashes_in_training_leaves_model_and_data_as_they_were(
    registry_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (registry_copy / "model" / "meta.json").read_bytes()
    data_before = (registry_copy / "data" / DATASET_FILE).read_bytes()

    def crash(*args: object) -> None:
        # Once the snapshot that is staged while the candidate trains has been written.
        deadline = time.monotonic() + 60
        while not (registry_copy / "data" / PENDING_FILE).exists():
            assert time.monotonic() < deadline, "the data snapshot was never staged"
            time.sleep(0.01)
        raise MemoryError("out of memory in training")

    monkeypatch.setattr("pipeline.run.train", crash)
    with pytest.raises(MemoryError):
        run(settings_in(registry_copy), "crash", seed=2, force=True)
    assert (registry_copy / "model" / "meta.json").read_bytes() == before
    assert (registry_copy / "data" / DATASET_FILE).read_bytes() == data_before
    assert not (registry_copy / "data" / PENDING_FILE).exists()


def test_run_invalid_data_stops_before_training(registry_copy: Path) -> None:
    frame = make_frame(rows=2_000)
    frame.loc[[3, 4], "hour"] = 25
    path = registry_copy / "bad.csv"
    write_table(frame, path)
    before = (registry_copy / "model" / "meta.json").read_bytes()
    result = run(settings_in(registry_copy), "bad", source=Source("file", str(path)))
    assert (result.decision, result.exit_code) == (Decision.INVALID_DATA, ExitCode.INVALID_DATA)
    assert result.reasons == ("hour: must be <= 23 (2 rows)",)
    assert list(result.report["steps"]) == ["extract", "validate"]
    assert (registry_copy / "model" / "meta.json").read_bytes() == before


def test_run_unreadable_source_is_invalid_data(registry_copy: Path) -> None:
    result = run(
        settings_in(registry_copy), "missing", source=Source("file", str(registry_copy / "none.parquet"))
    )
    assert result.decision == Decision.INVALID_DATA
    assert "none.parquet: no such file" in result.reasons[0]


def test_run_same_seed_gives_byte_identical_model_files(
    tmp_path: Path, bootstrapped: tuple[Path, RunResult]
) -> None:
    run(settings_in(tmp_path), "twin", seed=1)
    first = read_meta(bootstrapped[0] / "model")
    second = read_meta(tmp_path / "model")
    for role in ("booster", "reference"):
        assert second.artifacts[role].sha256 == first.artifacts[role].sha256
    assert second.data.md5 == first.data.md5


def test_run_retraining_from_the_data_snapshot_reproduces_the_model(
    bootstrapped: tuple[Path, RunResult],
) -> None:
    root, _ = bootstrapped
    meta = read_meta(root / "model")
    from pipeline.config import TrainParams
    from pipeline.extract import read_table
    from pipeline.train import time_split, train
    from pipeline.validate import validate

    frame = validate(read_table(root / "data" / DATASET_FILE), Settings().validation).frame
    assert frame is not None
    params = TrainParams(**meta.params["train"])
    model = train(time_split(frame, params), params)
    assert model.model_bytes == verify(root / "model", meta, ("booster",))["booster"]
