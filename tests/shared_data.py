"""Locate the shared sample market data (``../shared/data`` next to the repository), if present.

The project never requires this folder; tests that use it skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RAYTRADE_SHARED_DATA"


def shared_data_dir() -> Path | None:
    """Return the shared data folder, or ``None`` when it does not exist.

    ``$RAYTRADE_SHARED_DATA`` wins when set (an explicit setting that points nowhere gives ``None``,
    not a silent fallback); otherwise ``<repo>/../shared/data`` (``/work/shared/data`` for a repo at
    ``/work/main``).
    """
    override = os.environ.get(ENV_VAR)
    candidate = Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"
    return candidate if candidate.is_dir() else None


def shared_data_reason() -> str:
    """Why ``shared_data_dir()`` found nothing, for ``pytest.skip``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return f"shared sample data not found: ${ENV_VAR}={override!r} is not a directory"
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return f"shared sample data not found at {default} (set ${ENV_VAR} to point at it)"
