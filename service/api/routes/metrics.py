"""Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep

router = APIRouter(tags=["observability"])


class PrometheusResponse(Response):
    media_type = CONTENT_TYPE_LATEST


@router.get("/metrics", response_model=str, response_class=PrometheusResponse)
async def metrics(service_metrics: MetricsDep) -> str:
    """Prometheus metrics: requests and latencies per route and status, predictions, the served model."""
    return service_metrics.render().decode("utf-8")
