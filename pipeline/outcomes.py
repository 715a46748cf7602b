"""How a pipeline command ends: the run's decisions, the process exit codes, and source errors.

Kept free of heavy imports so that every CLI command can use it without loading the training stack.
"""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    PROMOTED = "promoted"
    SKIPPED_NO_DRIFT = "skipped_no_drift"
    REJECTED_QUALITY = "rejected_quality"
    INVALID_DATA = "invalid_data"


class ExitCode:
    """Process exit codes of ``python -m pipeline``; documented in the README."""

    OK = 0  # promoted, skipped_no_drift, or a successful command
    INTERNAL = 1  # a bug: an unexpected exception
    USAGE = 2  # bad arguments or unreadable input to a command
    INVALID_DATA = 3  # the data failed the quality gate or its source could not be read
    REJECTED_QUALITY = 4  # the candidate failed the model quality gate
    BUSY = 5  # another run holds the registry lock
    PROMOTION_FAILED = 6  # writing the new version failed; the old one still serves
    DELIVERY_FAILED = 7  # a delivery step failed: dvc push, git push, deploy hook or /health wait


DECISION_EXIT = {
    Decision.PROMOTED: ExitCode.OK,
    Decision.SKIPPED_NO_DRIFT: ExitCode.OK,
    Decision.REJECTED_QUALITY: ExitCode.REJECTED_QUALITY,
    Decision.INVALID_DATA: ExitCode.INVALID_DATA,
}


class SourceError(Exception):
    """A source cannot be read at all: a missing file, an unreachable database, an unknown format."""
