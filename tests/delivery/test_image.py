"""The Docker image and the Lambda package, without a Docker engine: the Dockerfile's own install,
start and health-check lines are read from the file and run on this machine, so what passes here
is what the image runs. Also: hadolint, .dockerignore and the Render Blueprint."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.delivery.conftest import BIN, PROJECT, free_port, get_json, post_json, start_app

DOCKERFILE = PROJECT / "Dockerfile"
LAMBDA_LIMIT_BYTES = 250 * 1024 * 1024
SERVE_INSTALL_LIMIT_BYTES = 250 * 10**6
"""Issue target for the serving install on disk, in decimal MB (the stricter reading)."""
"""AWS Lambda's limit on a function's unzipped size (zip deploy); the container image allows 10 GB."""
HEAVY = (
    "xgboost_cpu",
    "xgboost",
    "scipy",
    "pandas",
    "scikit_learn",
    "dvc",
    "matplotlib",
    "sqlalchemy",
    "pyarrow",
    "nvidia_nccl_cu12",
)
"""The training stack: the service scores and explains the trees with numpy, so none is installed."""
BASE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")
"""The interpreter without this test environment's packages, as in the images."""
TRANSACTION = {
    "amount": 4200.0,
    "hour": 3,
    "merchant_category": 8,
    "distance_from_home": 800.0,
    "num_transactions_last_24h": 9,
}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    """Stages by name, each with its instructions (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            words = args.split()
            current = Stage(words[2] if len(words) > 2 else words[0], words[0])
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword.upper(), args.strip()))
    return stages


def command_of(run_args: str) -> str:
    """A RUN instruction's shell command without its BuildKit ``--mount`` flags."""
    return re.sub(r"--mount=\S+\s+", "", run_args).strip()


def uv() -> str:
    found = shutil.which("uv")
    assert found, "uv is required (the README's install)"
    return found


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def copy_source(target: Path) -> None:
    """What the runtime stages COPY: service/ and the builder's model/ (the committed one)."""
    ignore = shutil.ignore_patterns("__pycache__", ".lock", ".*.tmp", ".staging-*")
    shutil.copytree(PROJECT / "service", target / "service", ignore=ignore)
    shutil.copytree(PROJECT / "model", target / "model", ignore=ignore)


STAGES = parse_dockerfile(DOCKERFILE)


def test_hadolint_passes_at_warning_threshold() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_layers_dependencies_before_code_and_runs_as_a_non_root_user() -> None:
    assert STAGES["base"].base == "python:3.11-slim"
    assert STAGES["uv"].base.startswith("ghcr.io/astral-sh/uv:")
    assert "COPY --from=uv /uv /uvx /usr/local/bin/" in [f"COPY {a}" for a in STAGES["base"].all("COPY")]
    runtime = STAGES["runtime"]
    assert list(STAGES)[-1] == "runtime", "Render builds the last stage"
    assert runtime.base == "base"
    order = [key if key != "RUN" or "uv sync" not in args else "SYNC" for key, args in runtime.instructions]
    assert order.index("SYNC") < order.index("COPY"), "dependencies install before the code is copied"
    assert command_of(runtime.all("RUN")[0]).startswith(
        "uv sync --locked --no-install-project --no-dev --extra serve && "
    )
    assert runtime.all("COPY") == ["service ./service", "--from=model /app/model ./model"]
    (user,) = runtime.all("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert runtime.all("EXPOSE") == ["8000"]
    assert runtime.all("HEALTHCHECK") and runtime.all("CMD") == ['["python", "-m", "service"]']
    assert "PORT" not in runtime.env(), "Render sets PORT; the service falls back to 8000"


def test_builder_stage_leaves_a_committed_model_untouched(tmp_path: Path) -> None:
    builder = STAGES["model"]
    assert (
        command_of(builder.all("RUN")[0]) == "uv sync --locked --no-install-project --no-dev --extra pipeline"
    )
    (bootstrap,) = builder.all("RUN")[1:]
    assert bootstrap == "/app/.venv/bin/python -m pipeline bootstrap"
    shutil.copytree(PROJECT / "model", tmp_path / "model", ignore=shutil.ignore_patterns(".lock"))
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "model").rglob("*") if p.is_file()}
    done = subprocess.run(
        [sys.executable, *shlex.split(bootstrap)[1:]],
        cwd=PROJECT,
        env={
            **os.environ,
            "PIPELINE_MODEL_DIR": str(tmp_path / "model"),
            "PIPELINE_REPORTS_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "already serves v1; nothing to train" in done.stdout
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "model").rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k.name != ".lock"} == before


@pytest.mark.slow
def test_image_install_and_start_commands_serve_the_committed_model(tmp_path: Path) -> None:
    runtime = STAGES["runtime"]
    venv = tmp_path / "venv"
    image_env = {**STAGES["base"].env(), "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": BASE_PYTHON}
    install = command_of(runtime.all("RUN")[0])
    done = subprocess.run(
        ["bash", "-euc", install],
        cwd=PROJECT,
        env={**os.environ, **image_env, "PATH": f"{Path(uv()).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    site = next(venv.glob("lib/python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"fastapi", "uvicorn", "mangum", "numpy", "orjson", "prometheus_client"} <= installed
    assert not installed & set(HEAVY), installed & set(HEAVY)
    size = tree_bytes(venv)
    print(f"serve install: {size / 1e6:.0f} MB")
    assert size < SERVE_INSTALL_LIMIT_BYTES, f"the serve install is {size / 1e6:.0f} MB"
    assert (site / "numpy").is_dir() and not list(site.glob("numpy/**/tests"))

    app_dir = tmp_path / "app"
    copy_source(app_dir)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "VIRTUAL_ENV"))},
        **runtime.env(),
        "PATH": runtime.env()["PATH"].replace("/app/.venv", str(venv)).replace("${PATH}", os.environ["PATH"]),
        "MODEL_DIR": str(app_dir / "model"),
        # The image listens on 0.0.0.0; a test listens on loopback only.
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    command = json.loads(runtime.all("CMD")[0])
    assert command[0] == "python" and shutil.which("python", path=env["PATH"]) == str(venv / "bin" / "python")
    app = start_app([str(venv / "bin" / "python"), *command[1:]], app_dir, env, tmp_path / "app.log")
    healthcheck = json.loads(runtime.all("HEALTHCHECK")[0].split(" CMD ", 1)[1])

    def run_healthcheck() -> subprocess.CompletedProcess[bytes]:
        """The image's HEALTHCHECK command, run with the fresh venv's Python."""
        return subprocess.run(
            [str(venv / "bin" / "python"), *healthcheck[1:]],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )

    try:
        status, ready = get_json(f"{app.url}/ready")
        assert status == 200 and ready["model_version"] == "v1"
        status, prediction = post_json(f"{app.url}/predict", TRANSACTION)
        assert status == 200, prediction
        assert prediction["model_version"] == "v1" and 0 <= prediction["fraud_probability"] <= 1
        # TRANSACTION is flagged by the committed model: its reasons come without XGBoost installed.
        assert prediction["is_fraud"] is True and prediction["reasons"], prediction
        probe = run_healthcheck()
        assert probe.returncode == 0, probe.stderr
    finally:
        app.stop()
    probe = run_healthcheck()
    assert probe.returncode != 0, "the health check must fail when nothing answers"


def lambda_event(method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    """An API Gateway HTTP API (v2) event of the named stage ``prod``."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": f"/prod{path}",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.eu-west-3.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-3.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": f"/prod{path}",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.0",
            },
            "requestId": "id-1",
            "routeKey": "$default",
            "stage": "prod",
            "time": "03/Dec/2026:17:00:00 +0000",
            "timeEpoch": 1796317200000,
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


INVOKE = """
import json, sys
from service.lambda_handler import handler
for event in json.load(sys.stdin):
    response = handler(event, None)
    print("RESULT", json.dumps({"status": response["statusCode"], "body": json.loads(response["body"])}))
"""


@pytest.mark.slow
def test_lambda_target_installs_under_250_mb_and_its_handler_answers(tmp_path: Path) -> None:
    stage = STAGES["lambda"]
    assert stage.base.startswith("public.ecr.aws/lambda/python:3.11")
    assert stage.all("CMD") == ['["service.lambda_handler.handler"]']
    task = tmp_path / "task"
    (install,) = stage.all("RUN")
    command = command_of(install).replace("/tmp/requirements.txt", str(tmp_path / "requirements.txt"))
    done = subprocess.run(
        ["bash", "-euc", command],
        cwd=PROJECT,
        env={
            **os.environ,
            **stage.env(),
            "PATH": f"{Path(uv()).parent}:{os.environ['PATH']}",
            "LAMBDA_TASK_ROOT": str(task),
            "UV_PYTHON": BASE_PYTHON,
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert stage.all("COPY") == [
        "service ${LAMBDA_TASK_ROOT}/service",
        "--from=model /app/model ${LAMBDA_TASK_ROOT}/model",
    ]
    copy_source(task)
    installed = {p.name.split("-")[0].lower() for p in task.glob("*.dist-info")}
    assert not installed & set(HEAVY)
    size = tree_bytes(task)
    print(f"lambda package: {size / 1e6:.0f} MB unzipped")
    assert size < LAMBDA_LIMIT_BYTES

    events = [lambda_event("GET", "/ready"), lambda_event("POST", "/predict", TRANSACTION)]
    invoked = subprocess.run(
        [BASE_PYTHON, "-s", "-E", "-c", INVOKE],
        cwd=task,
        input=json.dumps(events),
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MODEL_DIR": str(task / "model")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert invoked.returncode == 0, invoked.stderr
    results = [line.split(" ", 1)[1] for line in invoked.stdout.splitlines() if line.startswith("RESULT ")]
    ready, prediction = (json.loads(result) for result in results)
    assert ready["status"] == 200 and ready["body"]["model_version"] == "v1"
    assert prediction["status"] == 200 and prediction["body"]["model_version"] == "v1"
    assert prediction["body"]["is_fraud"] is True and prediction["body"]["reasons"], prediction


def test_dockerignore_keeps_out_git_data_caches_reports_tests_bench_and_the_frontend() -> None:
    patterns = {
        line.strip()
        for line in (PROJECT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", "data/", "reports/", "tests/", "bench/", "frontend/", ".venv", "**/__pycache__"):
        assert required in patterns, required
    assert ".mypy_cache" in patterns and ".pytest_cache" in patterns and ".ruff_cache" in patterns
    assert not {"model", "model/", "service", "service/"} & patterns


def test_render_blueprint_is_a_docker_web_service_on_prod_deployed_only_by_the_hook() -> None:
    blueprint = yaml.safe_load((PROJECT / "render.yaml").read_text())
    (service,) = blueprint["services"]
    assert service["type"] == "web" and service["runtime"] == "docker"
    assert service["branch"] == "prod" and service["plan"] == "free"
    assert service["healthCheckPath"] == "/ready"
    assert service["autoDeployTrigger"] == "off"
    assert service["dockerfilePath"] == "./Dockerfile"
    env = {item["key"]: item for item in service["envVars"]}
    assert env["ADMIN_TOKEN"] == {"key": "ADMIN_TOKEN", "sync": False}
    assert all("value" not in item for key, item in env.items() if key in ("ADMIN_TOKEN", "CORS_ORIGINS"))
