"""Ingest benchmark: synthetic N symbols x 10 years daily, generation + validation + all features + writes.

Targets (issue [1/7]): 500 x 10 y (about 1.26M rows) in <= 60 s on the 2-core machine, and twice
the rows in <= 2.2x the time. Writes JSON (``--json PATH``) and prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import print_table, timed, write_report
from raytrade.replay.ingest import ingest_frames
from raytrade.replay.sources.synthetic import generate


def ingest_once(n_symbols: int, years: float, workdir: Path) -> tuple[int, float]:
    store = workdir / f"store-{n_symbols}"
    shutil.rmtree(store, ignore_errors=True)

    def run() -> int:
        market = generate(n_symbols=n_symbols, years=years, seed=0)
        ingest_frames(store, market.bars, market.macro, show_progress=False)
        return len(market.bars)

    rows, seconds = timed(run)
    shutil.rmtree(store, ignore_errors=True)
    return rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows, seconds = ingest_once(args.symbols, args.years, Path(tmp))
        rows2, seconds2 = ingest_once(args.symbols * 2, args.years, Path(tmp))
    results = {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "rows_2x": rows2,
        "seconds_2x": seconds2,
        "time_ratio_2x": seconds2 / seconds,
        "row_ratio_2x": rows2 / rows,
        "target_seconds": 60.0,
        "target_time_ratio_2x": 2.2,
    }
    write_report(args.json, "ingest", results)
    print_table(
        f"ingest: synthetic {args.symbols} symbols x {args.years:g} y daily"
        " (generate + validate + features + write)",
        [
            ("rows", rows, ""),
            ("wall seconds", seconds, "<= 60 s"),
            ("rows per second", rows / seconds, ""),
            (f"rows at {args.symbols * 2} symbols", rows2, f"{rows2 / rows:.2f}x the rows"),
            ("wall seconds (2x)", seconds2, ""),
            ("time ratio 2x / 1x", seconds2 / seconds, "<= 2.2"),
        ],
    )


if __name__ == "__main__":
    main()
