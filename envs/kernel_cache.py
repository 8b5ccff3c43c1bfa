"""Where numba keeps the simulator's compiled kernels: a folder named after the kernels' own source.

numba's ``cache=True`` keys a cached kernel on the file that defines it, not on the files whose
compiled functions it inlines: after an edit of ``envs/costs.py`` the cached step kernel of
``envs/step_kernel.py`` would keep running the old cost formulas. For a simulator whose answers
decide trades that is not acceptable, so every kernel module calls :func:`use_kernel_cache` before
it compiles anything, and the cache lives in ``<base>/<digest>``, the digest being a SHA-256 of the
contents of every kernel module (``KERNEL_MODULES``): any edit of any of them starts a fresh cache.

``<base>`` is ``$RAYTRADE_KERNEL_CACHE`` or ``~/.cache/raytrade/numba``. A ``NUMBA_CACHE_DIR`` set by
the user wins (numba reads it itself), as it does for every other numba cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import numba

KERNEL_MODULES: Final[tuple[str, ...]] = ("costs.py", "kill_switch.py", "projection.py", "step_kernel.py")
"""The envs modules that compile with ``cache=True`` (a test checks the list is complete)."""


def source_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the names and contents of ``paths`` (in the order given)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def kernel_cache_dir(base: Path | None = None) -> Path:
    """The cache folder for the kernels as they are on disk now."""
    here = Path(__file__).resolve().parent
    root = base or Path(os.environ.get("RAYTRADE_KERNEL_CACHE") or Path.home() / ".cache/raytrade/numba")
    return root / source_digest(here / name for name in KERNEL_MODULES)[:16]


def use_kernel_cache() -> None:
    """Point numba's cache at :func:`kernel_cache_dir` (idempotent; a user's ``NUMBA_CACHE_DIR`` wins)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    numba.config.CACHE_DIR = str(kernel_cache_dir())  # type: ignore[attr-defined]
