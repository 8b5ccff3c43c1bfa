"""Shared helpers of the benchmarks: JSON output and a printed table (benchmarks are not tests)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def quotes_at_close(service: Any) -> dict[str, dict[str, float]]:
    """A 2 bps quote at each symbol's close on the served data's last bar (100 where it has none), as
    a loop would send: inside the service's quote band, so every listed symbol is decided."""
    closes = service.data.close[-1].tolist()
    return {
        s: {"bid_price": 0.9999 * c, "ask_price": 1.0001 * c}
        for s, c in zip(service.data.symbols, [c if c > 0 else 100.0 for c in closes], strict=True)
    }


def quick_and_json_args(
    doc: str | None, argv: list[str] | None, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The common command line of a benchmark: ``--json PATH`` (write the results) and ``--quick``
    (a tiny budget, a smoke test); ``extra`` adds a benchmark's own options (listed by ``--help``)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test)")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def on_local_ray(fn: Callable[[], T]) -> T:
    """``fn()`` on a local Ray started for it (no dashboard) and shut down after it, even on error.
    Garbage is collected first: Ray Data's batch iterators must close while Ray is still up."""
    import gc
    import os

    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        return fn()
    finally:
        gc.collect()
        ray.shutdown()


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(result, wall seconds) of one call."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def write_report(path: str | Path | None, name: str, results: dict[str, Any]) -> None:
    """Write ``{"benchmark": name, "machine": ..., **results}`` as JSON (when a path is given)."""
    if path is None:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "machine": machine(), **results}, indent=2, default=float))


def print_table(title: str, rows: Sequence[tuple[str, Any, str]]) -> None:
    """Rows of (metric, value, target or note)."""
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'metric':<{width}}{'value':>16}  target / note")
    for metric, value, note in rows:
        shown = (
            f"{value:,.3f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
        )
        print(f"{metric:<{width}}{shown:>16}  {note}")
