"""Read benchmark: the features table through Ray Data into numpy batches vs pyarrow + numpy.

Both read the same committed files of a synthetic store (default 500 symbols x 10 y daily) and turn
every numeric feature column into numpy. Reported: rows/s of each and the ratio Ray Data / pyarrow
(target >= 0.3). Ray is started before timing (its start-up is not counted) and Ray Data's progress
bars are off, as in a batch job; repeats are interleaved and the best of each is kept.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import print_table, timed, write_report
from raytrade.replay.ingest import ingest_frames
from raytrade.replay.reader import read, table_files
from raytrade.replay.schema import FEATURES_SCHEMA
from raytrade.replay.sources.synthetic import generate

NUMERIC = [f.name for f in FEATURES_SCHEMA if pa.types.is_floating(f.type)]


def pyarrow_numpy(root: Path) -> int:
    table = pq.read_table([str(p) for p in table_files(root, "features")], columns=NUMERIC)
    arrays = [table[c].to_numpy() for c in NUMERIC]
    return int(arrays[0].shape[0])


def ray_numpy(root: Path) -> int:
    rows = 0
    for batch in read(root, "features", columns=NUMERIC).iter_batches(batch_format="numpy", batch_size=None):
        rows += int(np.asarray(batch[NUMERIC[0]]).shape[0])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import ray
    import ray.data

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        market = generate(n_symbols=args.symbols, years=args.years, seed=0)
        ingest_frames(root, market.bars, market.macro, show_progress=False)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            rows = pyarrow_numpy(root)
            if ray_numpy(root) != rows:  # also warms the worker pool
                raise RuntimeError("Ray Data and pyarrow read different row counts")
            arrow_times, ray_times = [], []
            for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
                arrow_times.append(timed(lambda: pyarrow_numpy(root))[1])
                ray_times.append(timed(lambda: ray_numpy(root))[1])
            arrow, ray_s = min(arrow_times), min(ray_times)
        finally:
            ray.shutdown()
    results = {
        "rows": rows,
        "columns": len(NUMERIC),
        "pyarrow_seconds": arrow,
        "ray_data_seconds": ray_s,
        "pyarrow_rows_per_s": rows / arrow,
        "ray_data_rows_per_s": rows / ray_s,
        "ratio_ray_over_pyarrow": arrow / ray_s,
        "target_ratio": 0.3,
    }
    write_report(args.json, "read_features", results)
    print_table(
        f"read features ({rows:,} rows x {len(NUMERIC)} numeric columns), best of {args.repeats}",
        [
            ("pyarrow + numpy rows/s", rows / arrow, "baseline"),
            ("Ray Data numpy batches rows/s", rows / ray_s, ""),
            ("ratio Ray Data / pyarrow", arrow / ray_s, ">= 0.3"),
        ],
    )


if __name__ == "__main__":
    main()
