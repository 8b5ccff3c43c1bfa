"""``raytrade demo``: the end-to-end job on the embedded synthetic universe.

Stages so far: ingest a seeded synthetic universe (equities + crypto, quotes, macro) into a fresh
store under OUT/store, print the store summary, read the features back through Ray Data (a local
Ray started here) and check it against the pandas path, and show the train/validation/test split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click


def run_demo(out: Path, seed: int) -> None:
    from replay import fractional_splits, read, read_frame
    from replay.ingest import ingest_frames
    from replay.sources.synthetic import generate
    from replay.summary import summarize_store

    store = out / "store"
    if store.exists():
        click.echo(f"[demo] removing the previous demo store {store}")
        shutil.rmtree(store)
    click.echo("[demo] 1/3 ingest: synthetic universe of 24 equities + 2 crypto pairs, 3 years daily")
    market = generate(n_symbols=24, years=3.0, seed=seed, n_crypto=2)
    ingest_frames(store, market.bars, market.macro, origin="synthetic")
    click.echo(summarize_store(store).render())

    click.echo("[demo] 2/3 Ray Data: reading the features table on a local Ray")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        rows = read(store, "features", columns=["symbol", "ts", "ret_1"]).count()
    finally:
        ray.shutdown()
    pandas_rows = len(read_frame(store, "features", columns=["symbol"]))
    if rows != pandas_rows:
        raise RuntimeError(f"Ray Data read {rows} feature rows but pandas read {pandas_rows}")
    click.echo(f"Ray Data read {rows:,} feature rows (pandas: {pandas_rows:,})")

    click.echo("[demo] 3/3 splits with a 5-bar embargo")
    calendar = read_frame(store, "bars", columns=["ts"])["ts"]
    for name, window in fractional_splits(calendar, 0.6, 0.2, embargo_bars=5).items():
        click.echo(f"  {name:<11}{window.start.date()} .. {window.end.date()}  ({window.n_bars} bars)")
