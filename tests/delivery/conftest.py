"""Stand-ins for what the delivery steps talk to, all on this machine.

- GitHub's repository: a bare git repository, ``origin``, seeded with this working tree on ``prod``;
- the DVC remote: a local directory, seeded with the data the committed model was trained on;
- Render's deploy hook: an HTTP receiver on 127.0.0.1 that records each call and answers as told;
- the Render app: the real service (``python -m service``) on 127.0.0.1, serving a checkout of
  ``origin``'s ``prod``; when the hook fires it pulls ``prod`` and reloads the model, as a deploy would.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = PROJECT / ".github" / "workflows"
DEPLOY_BRANCH = "prod"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd)


def dvc(*args: str, cwd: Path) -> str:
    return run([str(BIN / "dvc"), *args], cwd)


def configure_identity(repo: Path) -> None:
    git("config", "user.name", "Delivery Test", cwd=repo)
    git("config", "user.email", "delivery-test@example.invalid", cwd=repo)


def regenerate_committed_data(data_dir: Path) -> str:
    """Rebuild the committed model's training snapshot from the parameters its meta.json records.

    data/ is not in git, and a clean CI clone has none; the simulator is deterministic, so the
    snapshot comes back byte for byte (the returned md5 is checked against data.dvc by the caller).
    """
    from pipeline.config import ExtractParams, Settings
    from pipeline.dataset import commit_dataset, stage_dataset
    from pipeline.extract import simulate
    from pipeline.validate import validate

    meta = json.loads((PROJECT / "model" / "meta.json").read_text(encoding="utf-8"))
    params = dict(meta["params"]["extract"])
    scenario = params.pop("scenario")
    frame = validate(simulate(ExtractParams(**params), scenario), Settings().validation).frame
    assert frame is not None
    md5 = stage_dataset(frame, data_dir)
    commit_dataset(data_dir)
    return md5


@dataclass(frozen=True)
class Origin:
    bare: Path
    dvc_remote: Path
    seed_commit: str


def make_origin(root: Path) -> Origin:
    """A bare repository holding this working tree on ``prod``, and a DVC remote holding its data."""
    seed = root / "seed"
    seed.mkdir(parents=True)
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=PROJECT)
    for relative in filter(None, listed.split("\0")):
        source = PROJECT / relative
        if source.is_file():
            target = seed / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git("init", "--quiet", "--initial-branch", DEPLOY_BRANCH, cwd=seed)
    configure_identity(seed)
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "--message", "Seed: the working tree under test", cwd=seed)

    md5 = regenerate_committed_data(seed / "data")
    recorded = (seed / "data.dvc").read_text(encoding="utf-8")
    assert md5 in recorded, f"data.dvc does not record the committed model's data {md5}:\n{recorded}"
    dvc("add", "--quiet", "data", cwd=seed)
    assert git("status", "--porcelain", cwd=seed) == "", "dvc add changed data.dvc"
    remote = root / "dvc-remote"
    dvc("remote", "modify", "--local", "storage", "url", str(remote), cwd=seed)
    dvc("push", "--quiet", cwd=seed)

    bare = root / "origin.git"
    git("clone", "--quiet", "--bare", str(seed), str(bare), cwd=root)
    return Origin(bare, remote, git("rev-parse", "HEAD", cwd=seed).strip())


@pytest.fixture(scope="session")
def origin_template(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("origin-template"))


@pytest.fixture
def origin(origin_template: Origin, tmp_path: Path) -> Origin:
    """A fresh copy of the seeded origin and DVC remote for each test (they push to them)."""
    bare = tmp_path / "origin.git"
    remote = tmp_path / "dvc-remote"
    shutil.copytree(origin_template.bare, bare)
    shutil.copytree(origin_template.dvc_remote, remote)
    return Origin(bare, remote, origin_template.seed_commit)


def checkout_from(origin: Origin) -> Callable[[dict[str, str], Path], None]:
    """The ``actions/checkout`` stand-in: clone ``origin`` at the ``ref`` the workflow asks for."""

    def checkout(with_: dict[str, str], workdir: Path) -> None:
        ref = with_.get("ref") or DEPLOY_BRANCH
        git("clone", "--quiet", "--branch", ref, str(origin.bare), str(workdir), cwd=workdir.parent)

    return checkout


@dataclass
class HookCall:
    method: str
    path: str
    at: float


@dataclass
class HookReceiver:
    """Render's deploy hook on 127.0.0.1. ``script`` says how to answer each call in turn:
    ``ok`` (run ``on_deploy``, then 200), ``500``, or ``hang`` (answer after ``hang_s`` seconds)."""

    script: list[str]
    on_deploy: Callable[[], None] | None = None
    hang_s: float = 3.0
    calls: list[HookCall] = field(default_factory=list)
    secret_path: str = field(default_factory=lambda: f"/deploy/srv-{secrets.token_hex(8)}")
    key: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}{self.secret_path}?key={self.key}"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                receiver.calls.append(HookCall("POST", self.path, time.monotonic()))
                index = len(receiver.calls) - 1
                action = receiver.script[min(index, len(receiver.script) - 1)]
                if action == "hang":
                    time.sleep(receiver.hang_s)
                if action == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if action == "ok" and receiver.on_deploy is not None:
                    receiver.on_deploy()
                body = json.dumps({"deploy": {"id": f"dep-{index}"}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                receiver.calls.append(HookCall("GET", self.path, time.monotonic()))
                self.send_response(405)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def hook_receiver() -> Iterator[Callable[..., HookReceiver]]:
    started: list[HookReceiver] = []

    def start(script: list[str], **kwargs: Any) -> HookReceiver:
        receiver = HookReceiver(script, **kwargs)
        receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def post_json(url: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@dataclass
class ServedApp:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_app(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> ServedApp:
    """Start the service with ``command`` and wait until ``/ready`` answers 200."""
    port = int(env["PORT"])
    handle = log.open("wb")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    app = ServedApp(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}:\n{log.read_text()}")
        try:
            if get_json(f"{app.url}/ready", timeout=1)[0] == 200:
                return app
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    app.stop()
    raise AssertionError(f"the service was not ready within 60 s:\n{log.read_text()}")


@dataclass
class RenderStandIn:
    """The Render app: the real service serving a checkout of ``prod``; a deploy pulls and reloads."""

    checkout: Path
    app: ServedApp
    admin_token: str
    deploys: int = 0

    def deploy(self) -> None:
        git("pull", "--quiet", "--ff-only", "origin", DEPLOY_BRANCH, cwd=self.checkout)
        status, body = post_json(
            f"{self.app.url}/reload-model", {}, {"Authorization": f"Bearer {self.admin_token}"}
        )
        assert status == 200, body
        self.deploys += 1


@pytest.fixture
def render_app(tmp_path: Path) -> Iterator[Callable[[Origin], RenderStandIn]]:
    started: list[RenderStandIn] = []

    def start(origin: Origin) -> RenderStandIn:
        checkout = tmp_path / "render-checkout"
        git("clone", "--quiet", "--branch", DEPLOY_BRANCH, str(origin.bare), str(checkout), cwd=tmp_path)
        token = secrets.token_urlsafe(24)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "MODEL_DIR": str(checkout / "model"),
            "ADMIN_TOKEN": token,
            "ENVIRONMENT": "prod",
            "LOG_LEVEL": "WARNING",
        }
        app = start_app([sys.executable, "-m", "service"], checkout, env, tmp_path / "render-app.log")
        stand_in = RenderStandIn(checkout, app, token)
        started.append(stand_in)
        return stand_in

    yield start
    for stand_in in started:
        stand_in.app.stop()


class Recorder(http.server.ThreadingHTTPServer):
    """A loopback JSON server: answers every request with ``reply`` and records it."""

    def __init__(self, reply: Callable[[str, str], tuple[int, dict[str, Any]]]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                server.requests.append((self.command, self.path, dict(self.headers)))
                status, body = reply(self.command, self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = _answer  # noqa: N815 - the http.server API

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


@pytest.fixture
def recorder() -> Iterator[Callable[..., Recorder]]:
    servers: list[Recorder] = []

    def start(reply: Callable[[str, str], tuple[int, dict[str, Any]]]) -> Recorder:
        servers.append(Recorder(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
