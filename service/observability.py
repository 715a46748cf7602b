"""Structured logs and the request middleware: one JSON line and one metrics sample per request."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics

access_logger = logging.getLogger("service.access")

# Attributes every LogRecord has; anything else on a record came through ``extra=`` and is logged.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HANDLER_MARK = "_service_json_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields.

    It formats one access line per request, so it is built for speed: orjson, and the timestamp's
    date and time formatted once a second (a third of the cost of ``json`` and ``datetime``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        # ISO 8601 in UTC to the millisecond, as datetime.isoformat(timespec="milliseconds") writes it.
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except (orjson.JSONEncodeError, TypeError):
            # What orjson refuses and str() cannot fix (an integer over 64 bits, a non-string key).
            return json.dumps(line, default=str)


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines in batches rather than one write per line.

    Each line costs a ``write`` system call when flushed on its own, and on a pipe (Docker's and
    Render's log collection, Lambda's runtime) that call and the wake-up of the reader cost more than
    formatting the line: one access line per request made it the service's biggest cost after the
    HTTP server's own (docs/benchmarks.md, "What each serving fix gave"). Lines wait here at most
    ``interval`` seconds and are written together by a background thread, as nginx's ``access_log
    ... buffer= flush=`` does. A line at ``flush_level`` or above (a warning, an error) is written at
    once, with every line before it; so is everything pending when ``max_bytes`` is reached, at
    ``flush()`` and at ``close()`` (``logging.shutdown`` calls both when the interpreter exits). What
    a ``SIGKILL`` can lose is at most the last ``interval`` of lines. ``interval=0`` writes every line
    at once, as ``StreamHandler`` does.
    """

    def __init__(
        self,
        stream: Any,
        interval: float,
        flush_level: int = logging.WARNING,
        max_bytes: int = 64 * 1024,
    ) -> None:
        super().__init__(stream)
        self.interval = interval
        self.flush_level = flush_level
        self.max_bytes = max_bytes
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if interval > 0:
            self._flusher = threading.Thread(target=self._flush_every_interval, name="log-flush", daemon=True)
            self._flusher.start()

    def _flush_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle). As in StreamHandler.emit, a failure
        # here is reported by handleError and never reaches the request that logged.
        try:
            line = self.format(record)
            self._pending.append(line)
            self._pending_bytes += len(line) + 1
            if (
                self._flusher is None
                or self.closed  # no thread left to write it later
                or record.levelno >= self.flush_level
                or self._pending_bytes >= self.max_bytes
            ):
                self.flush()
        except Exception:
            self.handleError(record)

    @property
    def closed(self) -> bool:
        """True once closed: ``logging.config.dictConfig`` (uvicorn's startup) closes every handler."""
        return self._stop.is_set()

    def flush(self) -> None:
        """Write every pending line in one call, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                text = "\n".join(self._pending) + "\n"
                self._pending.clear()
                self._pending_bytes = 0
                try:
                    self.stream.write(text)
                except Exception:  # a closed or broken stream: report it as logging does, lose no request
                    self.handleError(logging.makeLogRecord({"msg": "log lines could not be written"}))
            super().flush()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        self.flush()
        super().close()


def configure_logging(level: str, flush_interval: float = 0.0) -> None:
    """Send the service's logs to stdout as JSON lines; idempotent, called at startup, never at import.

    ``flush_interval`` (``LOG_FLUSH_INTERVAL``) is how long a line may wait to be written with the
    lines after it (``BatchingStreamHandler``); 0 writes each line at once. A handler of ours that
    a later logging setup closed is replaced: the app's lifespan calls this again after uvicorn's.

    It also turns off what every LogRecord would otherwise collect and no line of ours writes: the
    caller's file and line, the thread, the process and the multiprocessing names. These are the
    switches the logging HOWTO lists under "Optimization"; they hold for the whole process, which is
    the service's own. With one access line per request they cost about 6 us of the app's own 94 us
    of CPU per ``POST /predict`` (docs/benchmarks.md, "What each serving fix gave").
    """
    logging._srcfile = None  # the HOWTO's switch for the caller lookup
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logger = logging.getLogger("service")
    logger.setLevel(level)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        if not getattr(handler, "closed", False):
            return
        # Closed by a later logging setup (uvicorn's dictConfig closes every handler): replaced.
        logger.removeHandler(handler)
    handler = BatchingStreamHandler(sys.stdout, flush_interval)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.propagate = False


def flush_logs() -> None:
    """Write out the service's pending log lines now (Lambda: before the runtime freezes the process)."""
    for handler in logging.getLogger("service").handlers:
        handler.flush()


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label, so a scanner cannot blow up the metrics' cardinality.
    return path if isinstance(path, str) else "<unmatched>"


# Sent on every response. The API answers JSON and the page is served apart or from /ui/: nothing
# here should be sniffed as another type, framed, leak its URL as a referrer, or be cached.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_NO_STORE = (b"cache-control", b"no-store")


class BodyTooLarge(Exception):
    """A chunked body grew past the limit while the route was reading it."""


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"detail": f"the request body is larger than {limit} bytes (MAX_BODY_BYTES)"}).encode()


class RequestObservability:
    """Pure ASGI middleware (no per-request task or body copy), one layer for everything per request:
    the body size cap, security headers, the request id, the access log line and the metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        declared_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else ""
            elif name == b"content-length":
                declared_length = value
        if not request_id:
            request_id = os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                headers = list(message.get("headers", []))
                if not any(name == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                headers.extend(SECURITY_HEADERS)
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        limit = self.max_body_bytes
        received = 0

        async def capped_receive() -> Message:
            # Only for bodies without a Content-Length (chunked): the server holds a declared
            # length to its word, so a declared length within the limit needs no counting.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            if declared_length is not None and not _length_within(declared_length, limit):
                await _answer_too_large(send_with_headers, limit)
            elif declared_length is None and scope["method"] in _BODY_METHODS:
                try:
                    await self.app(scope, capped_receive, send_with_headers)
                except BodyTooLarge:
                    if started:
                        raise
                    await _answer_too_large(send_with_headers, limit)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope["method"]
            self.metrics.observe_request(route, method, status, elapsed)
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round(elapsed * 1000, 3),
                    },
                )


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _length_within(declared: bytes, limit: int) -> bool:
    # The server has already refused a malformed Content-Length; anything odd here counts as over.
    return declared.isdigit() and len(declared) <= 12 and int(declared) <= limit


async def _answer_too_large(send: Send, limit: int) -> None:
    body = _too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
