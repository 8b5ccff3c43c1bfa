"""``raytrade demo``: the end-to-end job on the embedded synthetic universe.

Stages so far: ingest a seeded synthetic universe (equities + crypto, quotes, macro) into a fresh
store under OUT/store, print the store summary, read the features back through Ray Data (a local
Ray started here) and check it against the pandas path, show the train/validation/test split, and
evaluate the baseline policies (cash, buy-and-hold, equal weight, inverse vol, kelly_lite) on the
test split and under stress scenarios through the market simulator (same costs for all)
with the evaluation harness, writing OUT/report/ (report.json, report.md, report.html, plots); then a
smoke Tune search of the PPO family on the train split (scored on validation), promotion of the best
trial to OUT/registry/demo_ppo/1, and an evaluation of that model against the baselines on the test
split (OUT/report_model/); finally that model is deployed on Ray Serve and asked for a decision
through the trading loop's client (``serve.client``) over HTTP on 127.0.0.1.

Where it runs: on a local Ray it starts itself (with the dashboard unless ``dashboard=False``), or on
the Ray already running in this process (the test suite's), or on an existing cluster
(``address="auto"`` or ``host:port``). It shuts down only a Ray it started, and deploys its policy as
its own Serve application (``raytrade-demo`` at ``/raytrade-demo``), shutting Serve down afterwards
only if Serve was not running before: a cluster's own services are left alone. The universe, search
and evaluation sizes are :class:`DemoConfig`'s (the defaults are ``make demo``'s; the tests run a
smaller one).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import click
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.cash_rate import MAX_ANNUAL_RATE, CashRate

DEMO_APP: Final = "raytrade-demo"
DEMO_ROUTE: Final = "/raytrade-demo"


class DemoConfig(BaseModel):
    """Sizes of one demo run and where it runs; the defaults are ``make demo``'s."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_symbols: int = Field(24, ge=2, description="synthetic equities")
    n_crypto: int = Field(2, ge=0, description="synthetic crypto pairs")
    years: float = Field(3.0, gt=0, description="years of daily bars")
    tune_samples: int | None = Field(None, ge=1, description="Tune trials (None: the smoke budget's)")
    tune_iterations: int | None = Field(
        None, ge=1, description="iterations per trial (None: the smoke budget's)"
    )
    scenarios: tuple[str, ...] = Field(
        ("crisis_2008_like", "flash_crash", "vol_spike", "bootstrap_crisis"),
        description="stress scenarios of the baselines' evaluation (envs.scenarios)",
    )
    bootstrap_samples: int = Field(500, ge=0, description="bootstrap crisis paths in the evaluations")
    model_seeds: int = Field(2, ge=1, description="seeds of the model's evaluation")
    cash_rate: float = Field(
        0.04,
        ge=0,
        le=MAX_ANNUAL_RATE,
        description="annual rate idle cash earns in both evaluations (the ratios' risk-free)",
    )
    address: str | None = Field(None, description="Ray to connect to: auto, host:port; None: a local one")
    dashboard: bool = Field(True, description="start the Ray dashboard with a local Ray")


@contextlib.contextmanager
def demo_ray(config: DemoConfig) -> Iterator[None]:
    """Ray for a stage: the one already running in this process, else ``config.address``'s cluster,
    else a local 2-CPU Ray (printing its dashboard URL). Shuts down only a Ray it started."""
    import ray

    from raytrade.cluster.local_cluster import init_ray

    started = init_ray(config.address, dashboard=config.dashboard, num_cpus=2)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_demo(out: Path, seed: int, config: DemoConfig | None = None) -> None:
    """The six stages on a fresh store under ``out``; each prints what it produced."""
    config = config or DemoConfig()
    from raytrade.replay import fractional_splits, read, read_frame
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate
    from raytrade.replay.summary import summarize_store

    store = out / "store"
    if store.exists():
        click.echo(f"[demo] removing the previous demo store {store}")
        shutil.rmtree(store)
    click.echo(
        f"[demo] 1/6 ingest: synthetic universe of {config.n_symbols} equities + {config.n_crypto} "
        f"crypto pairs, {config.years:g} years daily"
    )
    market = generate(n_symbols=config.n_symbols, years=config.years, seed=seed, n_crypto=config.n_crypto)
    ingest_frames(store, market.bars, market.macro, origin="synthetic")
    click.echo(summarize_store(store).render())

    click.echo("[demo] 2/6 Ray Data: reading the features table on Ray")
    with demo_ray(config):
        rows = read(store, "features", columns=["symbol", "ts", "ret_1"]).count()
    pandas_rows = len(read_frame(store, "features", columns=["symbol"]))
    if rows != pandas_rows:
        raise RuntimeError(f"Ray Data read {rows} feature rows but pandas read {pandas_rows}")
    click.echo(f"Ray Data read {rows:,} feature rows (pandas: {pandas_rows:,})")

    click.echo("[demo] 3/6 splits with a 5-bar embargo")
    from raytrade.envs.replay_loader import market_calendar

    calendar = market_calendar(read_frame(store, "bars", columns=["ts", "asset_class", "volume"]))
    for name, window in fractional_splits(calendar, 0.6, 0.2, embargo_bars=5).items():
        click.echo(f"  {name:<11}{window.start.date()} .. {window.end.date()}  ({window.n_bars} bars)")

    click.echo("[demo] 4/6 evaluation: baselines replayed over the test split, same simulator and costs")
    from raytrade.cluster.evaluate import report_warnings, run_evaluation

    report_dir = out / "report"
    report = run_evaluation(
        store,
        ["cash", "buy_and_hold", "equal_weight", "inverse_vol", "kelly_lite"],
        report_dir,
        split="test",
        seeds=1,
        scenarios=list(config.scenarios),
        bootstrap_samples=config.bootstrap_samples,
        cash_rate=CashRate(annual=config.cash_rate),
    )
    click.echo(
        f"  idle cash earns {config.cash_rate:.2%}/year (raytrade evaluate's --cash-rate, or --cash-rates "
        "FILE for dated rates); Sharpe and Sortino are over it, so cash has none"
    )
    header = ("policy", "total", "sharpe", "sortino", "max dd", "cvar 5%", "costs $")
    click.echo(
        "  "
        + header[0].ljust(14)
        + "".join(h.rjust(w) for h, w in zip(header[1:], (9, 8, 9, 9, 9, 10), strict=True))
    )
    for name, entry in report.policies.items():
        m = entry.metrics
        click.echo(
            f"  {name:<14}{m.total_return:>9.2%}{_num(m.sharpe):>8}{_num(m.sortino):>9}"
            f"{m.max_drawdown:>9.2%}{m.cvar_5:>9.2%}{m.costs_paid:>10,.0f}"
        )
    click.echo(f"report with plots: {report_dir / 'report.md'} (and report.html, report.json)")

    click.echo(
        "[demo] 5/6 Tune smoke search (ppo), promote the best trial, evaluate it against the baselines"
    )
    from raytrade.cluster.promote import promote
    from raytrade.cluster.settings import registry_hmac_key
    from raytrade.cluster.tune import TuneOptions, best_cash_line, format_leaderboard, run_tune

    runs, registry = out / "runs", out / "registry"
    shutil.rmtree(runs, ignore_errors=True)
    options = TuneOptions(
        spec="ppo",
        replay=store,
        smoke=True,
        num_samples=config.tune_samples,
        iterations=config.tune_iterations,
        storage=runs,
        name="demo-ppo",
        wandb="disabled",
        cash_rate=config.cash_rate,  # trained with cash earning what the evaluation below credits
    )
    with demo_ray(config):
        outcome = run_tune(options)
    click.echo(format_leaderboard(outcome.leaderboard))
    cash = best_cash_line(outcome.leaderboard)
    if cash is not None:
        click.echo(f"warning: {cash}")
    version = promote(outcome.run_dir, "demo_ppo", registry, hmac_key=registry_hmac_key())
    click.echo(f"promoted to {version} (manifest.json beside the module)")
    model_report = run_evaluation(
        store,
        ["registry:demo_ppo", "equal_weight", "kelly_lite"],
        out / "report_model",
        split="test",
        seeds=config.model_seeds,
        scenarios=["flash_crash"],
        registry=registry,
        bootstrap_samples=config.bootstrap_samples,
        cash_rate=CashRate(annual=config.cash_rate),
    )
    for name, entry in model_report.policies.items():
        m = entry.metrics
        click.echo(f"  {name:<20}{m.total_return:>9.2%}  sharpe {_num(m.sharpe)}  costs {m.costs_paid:,.0f}")
    for line in report_warnings(model_report):
        click.echo(f"warning: {line}")
    click.echo(f"model report: {out / 'report_model' / 'report.md'} (a smoke budget: expect no skill)")

    click.echo("[demo] 6/6 serve: demo_ppo on Ray Serve at 127.0.0.1, asked by the trading loop's client")
    with demo_ray(config):
        serve_demo(registry, store)


def _serve_http_port() -> int | None:
    """The HTTP port of the Serve already running on the connected Ray; None when none runs."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    http_options: Any = ray.get(controller.get_http_config.remote())
    return int(http_options.port)


def serve_demo(registry: Path, store: Path) -> None:
    """Deploy ``demo_ppo``, send one decision-time state through ``serve.client``, print the answer.

    The token is ``RAYTRADE_SERVE_TOKEN`` when set, else a random one for this run (never printed).
    The synthetic data is historical, so the request is dated at its last bar and staleness is off.
    Runs on the connected Ray (:func:`demo_ray`); Serve is shut down afterwards only if this function
    started it, else only the demo's application is deleted.
    """
    import os
    import secrets
    import socket

    from pydantic import SecretStr
    from ray import serve

    from raytrade.cluster.settings import registry_key_reader
    from raytrade.replay import read_frame
    from raytrade.serve.app import HttpConfig, ServiceConfig, build_app
    from raytrade.serve.client import ClientConfig, PolicyClient, request_from_loop
    from raytrade.serve.decide import ServeConfig

    token = os.environ.get("RAYTRADE_SERVE_TOKEN") or secrets.token_urlsafe(24)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    running_port = _serve_http_port()
    started_serve = running_port is None
    if running_port is None:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    else:
        port = running_port
    try:
        config = ServiceConfig(
            model="demo_ppo", registry=str(registry), decide=ServeConfig(max_feature_age_hours=None)
        )
        http = HttpConfig(max_as_of_skew_s=None)  # the request is dated when the data's last bar closed
        app = build_app(config, token, replica_cpus=0.5, http=http, registry_key=registry_key_reader())
        serve.run(app, name=DEMO_APP, route_prefix=DEMO_ROUTE)
        state = _demo_loop_state(read_frame(store, "bars", columns=["symbol", "ts", "close"]))
        base_url = f"http://127.0.0.1:{port}{DEMO_ROUTE}"
        client_cfg = ClientConfig(base_url=base_url, timeout_s=5.0, total_deadline_s=10.0)
        with PolicyClient(client_cfg, SecretStr(token)) as client:
            # the earliest as_of that observes the last bar (serving sees a bar only once it has closed)
            closed = datetime.fromisoformat(client.model()["data_last_bar_closed_at"])
            answer = client.act(request_from_loop(state, as_of=closed))
        if answer.fallback:
            raise RuntimeError(f"the demo service did not answer: {answer.reason}")
        click.echo(
            f"  {answer.model} decided from the features of {answer.features_as_of:%Y-%m-%d}: "
            f"gross {answer.gross_exposure:.2f}x, kill switch {'on' if answer.kill_switch_active else 'off'}"
        )
        trades = answer.decisions.items()
        top = sorted(trades, key=lambda kv: -abs(kv[1].target_weight - kv[1].current_weight))[:5]
        for sym, d in top:
            click.echo(
                f"  {sym:<10}{d.current_weight:>+8.3f} -> {d.target_weight:>+8.3f}  {d.side:<5} "
                f"{d.gate_mode:<10} confidence {d.confidence:.2f}"
            )
    finally:
        if started_serve:
            serve.shutdown()
        else:
            serve.delete(DEMO_APP)


def _demo_loop_state(bars: Any) -> dict[str, Any]:
    """A decision-time state like the trading loop's: 100k equity, two positions, quotes at the
    last close with a 4 bps spread (no ``as_of``: the caller dates it)."""
    last = bars.sort_values("ts").groupby("symbol")["close"].last().astype(float)
    held = list(last.index[:2])
    positions = [
        {"symbol": s, "qty": f"{10_000 / last[s]:.4f}", "side": "long", "market_value": "10000.00"}
        for s in held
    ]
    return {
        "account": {"equity": 100_000.0, "cash": 80_000.0, "buying_power": 160_000.0},
        "positions": positions,
        "drawdown_pct": -0.01,
        "analysis": {
            s: {"bid_price": p * (1 - 2e-4), "ask_price": p * (1 + 2e-4), "spread_bps": 4.0, "last_close": p}
            for s, p in last.items()
        },
    }


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
