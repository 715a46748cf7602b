"""Holds the served Scorer: loads it once per process, swaps it atomically on reload.

The model is loaded on first need, not in the ASGI lifespan: Mangum runs the lifespan on every
Lambda invocation, while this object lives as long as the container. A request takes the current
Scorer once, at its start, and finishes on it even if a reload swaps in another meanwhile.
"""

from __future__ import annotations

import logging
import threading

from service.artifacts import ModelDirError
from service.config import Settings
from service.metrics import ServiceMetrics
from service.scorer import Scorer

logger = logging.getLogger(__name__)


class ModelStore:
    """The current Scorer (or None) and the one way to replace it."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._scorer: Scorer | None = None
        self._attempted = False
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def current(self) -> Scorer | None:
        """The served Scorer; the first call in a process loads the model directory."""
        if not self._attempted:
            self._initial_load()
        # A single reference read: atomic, so a reader gets the old or the new Scorer, never a mix.
        return self._scorer

    def _initial_load(self) -> None:
        with self._lock:
            if self._attempted:
                return
            try:
                self._install(self._load())
            except ModelDirError as exc:
                self.last_error = str(exc)
                logger.error("no model loaded", extra={"reason": str(exc)})
            finally:
                self._attempted = True

    def reload(self) -> tuple[str | None, Scorer]:
        """Load and verify the model directory, then swap it in; on ModelDirError the old one stays."""
        with self._lock:
            self._attempted = True
            old = self._scorer
            try:
                new = self._load()
            except ModelDirError as exc:
                self._metrics.reloads.labels("failure").inc()
                logger.error(
                    "reload refused; the old model keeps serving",
                    extra={"reason": str(exc), "serving_version": old.version if old else None},
                )
                raise
            self._install(new)
            self.last_error = None
            self._metrics.reloads.labels("success").inc()
            logger.info(
                "model reloaded",
                extra={"old_version": old.version if old else None, "new_version": new.version},
            )
            return (old.version if old else None), new

    def _load(self) -> Scorer:
        return Scorer.load(
            self._settings.model_dir,
            fallback_version=self._settings.model_version,
            reasons_top_k=self._settings.reasons_top_k,
        )

    def _install(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self._metrics.set_model(scorer.version, scorer.meta.trained_at, scorer.threshold)
