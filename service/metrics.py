"""Prometheus metrics of one app instance, in a registry of its own (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

# Latency buckets in seconds: single-row answers take well under a millisecond of service time,
# 10,000-row batches tens of milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """Request counts and latencies per route and status, predictions per outcome, the served model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request received to response sent, by route template, method and status code.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "fraud_predictions",
            "Transactions scored, by outcome (fraud or legit) and model version.",
            ["outcome", "model_version"],
            registry=self.registry,
        )
        self.model = Info("fraud_model", "The model being served.", registry=self.registry)
        self.model_loaded = Gauge(
            "fraud_model_loaded", "1 while a verified model is loaded, else 0.", registry=self.registry
        )
        self.reloads = Counter(
            "fraud_model_reloads", "Model reload attempts, by result.", ["result"], registry=self.registry
        )
        self.model.info({"version": "none", "trained_at": "", "threshold": ""})
        # labels() takes a lock and builds a tuple on every call; the children are reused instead.
        # Routes are templates and statuses few, so these stay small.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._prediction_children: dict[str, tuple[Counter, Counter]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            code = str(status)
            children = (self.requests.labels(route, method, code), self.latency.labels(route, method, code))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_predictions(self, version: str, fraud: int, legit: int) -> None:
        children = self._prediction_children.get(version)
        if children is None:
            children = (self.predictions.labels("fraud", version), self.predictions.labels("legit", version))
            self._prediction_children[version] = children
        if fraud:
            children[0].inc(fraud)
        if legit:
            children[1].inc(legit)

    def set_model(self, version: str, trained_at: str, threshold: float) -> None:
        self.model.info({"version": version, "trained_at": trained_at, "threshold": repr(threshold)})
        self.model_loaded.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
