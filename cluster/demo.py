"""``raytrade demo``: the end-to-end job on the embedded synthetic universe.

Stages so far: ingest a seeded synthetic universe (equities + crypto, quotes, macro) into a fresh
store under OUT/store, print the store summary, read the features back through Ray Data (a local
Ray started here) and check it against the pandas path, show the train/validation/test split, and
evaluate the baseline policies (cash, buy-and-hold, equal weight, inverse vol, kelly_lite) on the
test split and under stress scenarios through the market simulator (same costs for all)
with the evaluation harness, writing OUT/report/ (report.json, report.md, report.html, plots); then a
smoke Tune search of the PPO family on the train split (scored on validation), promotion of the best
trial to OUT/registry/demo_ppo/1, and an evaluation of that model against the baselines on the test
split (OUT/report_model/).
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
    click.echo("[demo] 1/5 ingest: synthetic universe of 24 equities + 2 crypto pairs, 3 years daily")
    market = generate(n_symbols=24, years=3.0, seed=seed, n_crypto=2)
    ingest_frames(store, market.bars, market.macro, origin="synthetic")
    click.echo(summarize_store(store).render())

    click.echo("[demo] 2/5 Ray Data: reading the features table on a local Ray")
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

    click.echo("[demo] 3/5 splits with a 5-bar embargo")
    bars = read_frame(store, "bars", columns=["ts", "asset_class"])
    calendar = bars.loc[bars["asset_class"] == "equity", "ts"]  # the simulator steps on equity days
    for name, window in fractional_splits(calendar, 0.6, 0.2, embargo_bars=5).items():
        click.echo(f"  {name:<11}{window.start.date()} .. {window.end.date()}  ({window.n_bars} bars)")

    click.echo("[demo] 4/5 evaluation: baselines replayed over the test split, same simulator and costs")
    from cluster.evaluate import run_evaluation

    report_dir = out / "report"
    report = run_evaluation(
        store,
        ["cash", "buy_and_hold", "equal_weight", "inverse_vol", "kelly_lite"],
        report_dir,
        split="test",
        seeds=1,
        scenarios=["crisis_2008_like", "flash_crash", "vol_spike", "bootstrap_crisis"],
        bootstrap_samples=500,
    )
    header = ("policy", "total", "sharpe", "sortino", "max dd", "cvar 5%", "costs $")
    click.echo(
        "  "
        + header[0].ljust(14)
        + "".join(h.rjust(w) for h, w in zip(header[1:], (9, 8, 9, 9, 9, 10), strict=True))
    )
    for name, entry in report["policies"].items():
        m = entry["metrics"]
        click.echo(
            f"  {name:<14}{m['total_return']:>9.2%}{_num(m['sharpe']):>8}{_num(m['sortino']):>9}"
            f"{m['max_drawdown']:>9.2%}{m['cvar_5']:>9.2%}{m['costs_paid']:>10,.0f}"
        )
    click.echo(f"report with plots: {report_dir / 'report.md'} (and report.html, report.json)")

    click.echo(
        "[demo] 5/5 Tune smoke search (ppo), promote the best trial, evaluate it against the baselines"
    )
    from cluster.promote import promote
    from cluster.tune import TuneOptions, format_leaderboard, run_tune

    runs, registry = out / "runs", out / "registry"
    shutil.rmtree(runs, ignore_errors=True)
    outcome = run_tune(
        TuneOptions(spec="ppo", replay=store, smoke=True, storage=runs, name="demo-ppo", wandb="disabled")
    )
    click.echo(format_leaderboard(outcome.leaderboard))
    version = promote(outcome.run_dir, "demo_ppo", registry)
    click.echo(f"promoted to {version} (manifest.json beside the module)")
    model_report = run_evaluation(
        store,
        ["registry:demo_ppo", "equal_weight", "kelly_lite"],
        out / "report_model",
        split="test",
        seeds=2,
        scenarios=["flash_crash"],
        registry=registry,
        bootstrap_samples=500,
    )
    for name, entry in model_report["policies"].items():
        m = entry["metrics"]
        click.echo(
            f"  {name:<20}{m['total_return']:>9.2%}  sharpe {_num(m['sharpe'])}  costs {m['costs_paid']:,.0f}"
        )
    click.echo(f"model report: {out / 'report_model' / 'report.md'} (a smoke budget: expect no skill)")


def _num(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"
