"""Real servers and a real browser for the page's tests.

The scoring service runs as ``python -m service`` on 127.0.0.1 with a copy of the committed model;
the page is served by a static file server on 127.0.0.1, as Vercel would serve ``frontend/``, with a
``config.js`` pointing at the service. Chromium is Debian's, driven by Playwright; nothing is
downloaded.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", PROJECT / "test-artifacts")) / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]


def start_service(model_dir: Path, cors_origin: str, log: Path) -> Service:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL_DIR": str(model_dir),
        "CORS_ORIGINS": cors_origin,
        "LOG_LEVEL": "WARNING",
    }
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=PROJECT, env=env, stdout=handle, stderr=handle
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Service(url, process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the service did not answer /health within 60 s: {log.read_text()}")


def stop_service(service: Service) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class StaticSite:
    url: str
    root: Path

    def point_at(self, api_url: str) -> None:
        (self.root / "config.js").write_text(f'window.API_URL = "{api_url}";\n')


@pytest.fixture(scope="session")
def static_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticSite]:
    """frontend/ served as a static site on 127.0.0.1 (the Vercel side); config.js is rewritten per test."""
    root = tmp_path_factory.mktemp("site")
    shutil.copy(PROJECT / "frontend" / "index.html", root / "index.html")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StaticSite(f"http://127.0.0.1:{server.server_address[1]}", root)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("served") / "model"
    shutil.copytree(PROJECT / "model", target, ignore=shutil.ignore_patterns(".lock"))
    return target


@pytest.fixture(scope="session")
def service(
    model_dir: Path, static_site: StaticSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    running = start_service(model_dir, static_site.url, tmp_path_factory.mktemp("logs") / "service.log")
    try:
        yield running
    finally:
        stop_service(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: while Playwright's sync API is open it owns a running event loop
    # in this thread, which would break later tests that run their own (Mangum's handler does).
    assert CHROMIUM.exists(), "Debian's chromium is required at /usr/bin/chromium (.ci/run installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
