"""``raytrade demo``: the end-to-end job on the embedded synthetic universe.

Stages so far: ingest a seeded synthetic universe (equities + crypto, quotes, macro) into a fresh
store under OUT/store, print the store summary, read the features back through Ray Data (a local
Ray started here) and check it against the pandas path, show the train/validation/test split, and
replay baseline policies over the test split through the market simulator (same costs for all),
printing their metrics and writing OUT/demo_equity.png (equity curves and drawdowns).
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
    click.echo("[demo] 1/4 ingest: synthetic universe of 24 equities + 2 crypto pairs, 3 years daily")
    market = generate(n_symbols=24, years=3.0, seed=seed, n_crypto=2)
    ingest_frames(store, market.bars, market.macro, origin="synthetic")
    click.echo(summarize_store(store).render())

    click.echo("[demo] 2/4 Ray Data: reading the features table on a local Ray")
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

    click.echo("[demo] 3/4 splits with a 5-bar embargo")
    bars = read_frame(store, "bars", columns=["ts", "asset_class"])
    calendar = bars.loc[bars["asset_class"] == "equity", "ts"]  # the simulator steps on equity days
    for name, window in fractional_splits(calendar, 0.6, 0.2, embargo_bars=5).items():
        click.echo(f"  {name:<11}{window.start.date()} .. {window.end.date()}  ({window.n_bars} bars)")

    click.echo("[demo] 4/4 simulator: baselines replayed over the test split with the default cost model")
    plot = replay_baselines(store, out / "demo_equity.png")
    click.echo(f"equity curves and drawdowns: {plot}")


def replay_baselines(store: Path, plot_path: Path) -> Path:
    """Replay cash and equal-weight over the test split; print metrics and costs; plot equity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from envs.metrics import summarize
    from envs.replay_loader import load_market_data
    from envs.rollout import cash, equal_weight, replay_policy

    data = load_market_data(store, "test")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=(2, 1))
    header = (
        f"  {'policy':<14}{'total':>9}{'sharpe':>8}{'sortino':>9}{'max dd':>9}{'cvar 5%':>9}{'costs $':>10}"
    )
    click.echo(header)
    for name, policy in (("cash", cash), ("equal_weight", equal_weight)):
        rollout = replay_policy(data, policy)
        r = rollout.returns[0]
        m = summarize(r, data.periods_per_year, turnover=rollout.turnover[0], costs=rollout.costs[0].sum(-1))
        click.echo(
            f"  {name:<14}{m['total_return']:>9.2%}{m['sharpe']:>8.2f}{m['sortino']:>9.2f}"
            f"{m['max_drawdown']:>9.2%}{m['cvar_5']:>9.2%}{m['costs_paid']:>10,.0f}"
        )
        equity = np.cumprod(1.0 + r)
        top.plot(rollout.timestamps, equity, label=name)
        bottom.plot(rollout.timestamps, equity / np.maximum.accumulate(equity) - 1.0, label=name)
    top.set_yscale("log")
    top.set_ylabel("equity (log)")
    top.set_title(f"baselines on the test split ({len(data.symbols)} assets, costs included)")
    top.legend()
    bottom.set_ylabel("drawdown")
    fig.tight_layout()
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_path, dpi=110)
    plt.close(fig)
    return plot_path
