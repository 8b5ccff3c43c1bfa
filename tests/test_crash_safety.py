"""A writer killed with SIGKILL mid-append leaves every committed batch readable and nothing partial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from raytrade.replay import ReplayWriter, read_frame

WRITER = textwrap.dedent(
    """
    import sys, pandas as pd
    from raytrade.replay import ReplayWriter
    root = sys.argv[1]
    rows_per_batch = 2000
    with ReplayWriter(root) as writer:
        for batch in range(100000):
            # Each batch spans two years so a commit renames two files.
            ts = pd.date_range("2000-12-31", periods=rows_per_batch, freq="min", tz="UTC")
            ts = ts + pd.Timedelta(days=366 * 2 * batch) - pd.Timedelta(minutes=rows_per_batch // 2)
            frame = pd.DataFrame({
                "symbol": "AAA", "ts": ts, "open": 1.0 + batch, "high": 2.0 + batch, "low": 0.5,
                "close": 1.5 + batch, "volume": float(batch), "asset_class": "equity", "source": "crash",
            })
            writer.append_bars(frame)
            print(f"committed {batch}", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_appends_loses_no_committed_batch_and_shows_no_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    committed: list[int] = []
    deadline = time.monotonic() + 60
    while len(committed) < 12 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("committed"):
            committed.append(int(line.split()[1]))
    time.sleep(0.013)  # land the kill somewhere inside a later append
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed += [int(x.split()[1]) for x in proc.stdout.read().splitlines() if x.startswith("committed")]
    assert len(committed) >= 12

    # What a plain reader sees now, before any recovery: every visible file is complete parquet.
    visible = [p for p in (root / "bars").rglob("*.parquet") if not p.name.startswith((".", "_"))]
    for path in visible:
        pq.read_metadata(path)
    plain = ds.dataset(root / "bars", partitioning="hive").to_table()
    seen_batches = set(pd.unique(plain["volume"].to_numpy()).astype(int).tolist())
    assert set(committed) <= seen_batches

    # After the next writer opens (recovery), every committed batch is whole, and no temp file remains.
    with ReplayWriter(root) as writer:
        writer._open_table("bars")
    stored = read_frame(root, "bars")
    per_batch = stored.groupby(stored["volume"].astype(int)).size()
    for batch in committed:
        assert per_batch[batch] == 2000
    assert set(per_batch.index) - set(committed) <= {max(committed) + 1}
    assert (per_batch == 2000).all()
    assert not list((root / "bars").rglob(".tmp-*"))
