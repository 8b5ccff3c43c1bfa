"""``raytrade live --paper``: run the trading loop on an Alpaca paper account against the policy service.

    raytrade live --paper [--serve-url http://127.0.0.1:8000] [--symbols AAPL,MSFT,BTCUSD]
                  [--store DIR] [--state-file PATH] [--account-lock-dir DIR] [--reset]
                  [--once | --every-minutes N]

Keys come from the environment or the settings file: the Alpaca pair (``ALPACA_API_KEY`` /
``ALPACA_SECRET_KEY`` or Alpaca's ``APCA_*`` names) and ``RAYTRADE_SERVE_TOKEN``. Without
``--symbols`` the loop trades the served model's universe (``GET /v1/model``). With ``--store`` every
decision and fill is appended to that replay store's ``experience`` table. Only paper trading is
enabled: without ``--paper`` the command refuses to start, and ``--trading-url`` must be Alpaca's paper
host or loopback.

The state file (peak equity, orders not yet reconciled) defaults to ``~/.raytrade/live/<account
id>.json``; it is locked while the loop runs, and so is the account (``--account-lock-dir``, default
``~/.raytrade/live/locks/<account id>.lock``): a second loop on the same account refuses to start,
whatever its ``--state-file``, naming the account and the running loop's pid and state file. A missing
state file is refused unless ``--reset`` starts a new one (the peak drawdown the kill switch reads would
otherwise be forgotten silently); one that is unreadable (malformed, a non-finite number, a peak that
is not positive) is refused, ``--reset`` or not.

Without ``--symbols`` the policy service must answer ``GET /v1/model`` before anything else happens: a
service that does not answer (retried as an act is, within the client's deadline), or refuses the token,
ends the command with one line and exit status 2 (``cluster.errors``), before the account is read or
locked and before any order.

The loop advances the drawdown kill switch with the rule the served policy was trained with (``GET
/v1/model``: ``kill_switch``), read at start and at every cycle (again when the answer comes from
another model version or the service refuses the switch's count); while it cannot be read the cycle
holds (no order), saying why (``serve/live.py``). A cycle's rule reads and acts share one client
deadline (``total_deadline_s``): an act it cuts is an outage hold, a rule read it cuts a hold for want
of the rule.

The loop survives a failed cycle (it retries at the next one) and a cycle held without a decision
of the policy service (unreachable, erring, an unusable answer, its kill-switch rule unreadable, or a
hot swap to a model that decides none of the loop's symbols: the loop's own hold), up to
``--max-failed-cycles`` of the two in a row (a broker that keeps failing, a position it cannot
value, a service that stays down): then it stops with exit status 2 and one line naming
the last, so that a supervisor or a person sees it instead of a loop that retries for ever and
manages nothing, kill-switch unwinds included. A cycle the service decided resets the count (its own
holds, for stale features say, are decisions). The count is kept in the state file, so a restart
(a supervisor's, or the next ``--once`` run of a timer) counts on from it; a state file that can no
longer be read or written ends the loop at once. Four errors end it at once, the same way:
a pending order Alpaca cannot read (not a 404) on
``--max-unreadable-order-cycles`` cycles in a row (naming the order; its symbol has been held all
along), a hot swap to a kill-switch rule the configured one is looser than, a served model that
decides none of the loop's symbols (checked at the first ``GET /v1/model`` the loop can read), and the
policy service refusing the token (401/403: rotated on the service; the loop reads it once, at start).
Quotes older than ``--max-quote-age-hours`` (equities; ``--max-open-quote-age-minutes`` while the
market is open) or ``--max-crypto-quote-age-hours`` (crypto) hold their symbol for the cycle.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import LocalPath, caps_options, exposure_caps, written_path_option

if TYPE_CHECKING:
    from raytrade.serve.live import LiveLoop


class _Duration(click.FloatRange):
    """A finite number of ``unit`` > 0 (click's ``FloatRange`` lets NaN through: ``nan <= 0`` is false)."""

    def __init__(self, unit: str) -> None:
        super().__init__(min=0, min_open=True)
        self.name = self.unit = unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        amount = super().convert(value, param, ctx)
        if not math.isfinite(amount):
            self.fail(f"{value!r} is not a finite number of {self.unit} > 0", param, ctx)
        return amount


@click.command("live")
@click.option("--paper", is_flag=True, help="Trade the Alpaca paper account (required: live money is off).")
@click.option("--serve-url", default="http://127.0.0.1:8000", show_default=True, help="Policy service.")
@click.option(
    "--symbols",
    default=None,
    help="Comma-separated part of the served model's universe to trade (default: all of it); a crypto "
    "pair as BTCUSD or BTC/USD.",
)
@written_path_option("--store", type=LocalPath(), default=None, help="Replay store for the log.")
@written_path_option(
    "--state-file",
    type=LocalPath(),
    default=None,
    help="Peak equity and open orders between cycles (default: ~/.raytrade/live/<account id>.json).",
)
@written_path_option(
    "--account-lock-dir",
    type=LocalPath(),
    default=None,
    help="Folder of the per-account locks: a second loop on the same account refuses to start, "
    "whatever its --state-file (default: ~/.raytrade/live/locks).",
)
@click.option(
    "--reset",
    is_flag=True,
    help="Start a new state file when there is none (the peak equity starts at the account's highest "
    "daily equity over --peak-lookback-days, from its portfolio history).",
)
@click.option(
    "--peak-lookback-days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="With --reset: the new peak is the account's highest daily equity over this many days.",
)
@click.option("--once", is_flag=True, help="One cycle, then exit.")
@click.option(
    "--every-minutes",
    type=click.FloatRange(min=1),
    default=1440.0,
    show_default=True,
    help="Minutes between cycles (without --once).",
)
@click.option(
    "--min-trade-notional",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="Orders below this many dollars are skipped (dust).",
)
@click.option(
    "--max-trade-fraction",
    type=click.FloatRange(0, 2, min_open=True),
    default=0.25,
    show_default=True,
    help="No single order exceeds this fraction of equity.",
)
@click.option(
    "--max-participation",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.1,
    show_default=True,
    help="Cap on one order's notional, fraction of the symbol's latest 20-bar dollar volume in --store.",
)
@click.option("--fractional", is_flag=True, help="Trade fractional equity shares.")
@click.option(
    "--max-quote-age-hours",
    type=_Duration("hours"),
    default=96.0,
    show_default=True,
    help="A quote older than this (its own timestamp) is no quote: the symbol is held this cycle "
    "(96 h spans a long weekend of a closed market). Crypto has its own limit.",
)
@click.option(
    "--max-open-quote-age-minutes",
    type=_Duration("minutes"),
    default=30.0,
    show_default=True,
    help="While the equity market is open (Alpaca's clock), an equity quote older than this is no "
    "quote: a stock halted for news keeps its pre-halt quote. A clock that cannot be read counts as open.",
)
@click.option(
    "--max-crypto-quote-age-hours",
    type=_Duration("hours"),
    default=2.0,
    show_default=True,
    help="The same for crypto symbols: crypto quotes around the clock, so a quote hours old means the "
    "feed or the pair is broken (2 h leaves room for a quiet pair).",
)
@click.option(
    "--max-unreadable-order-cycles",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="A pending order the broker cannot read on this many consecutive cycles (not a 404) stops the "
    "loop (exit status 2, naming the order); its symbol was held all along. The state file keeps it.",
)
@click.option(
    "--max-failed-cycles",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="This many cycles in a row that failed (the broker failing, say) or held without a decision "
    "of the policy service (down, erring, its kill-switch rule unreadable, none of the symbols served) "
    "stop the loop (exit status 2, naming the last); a cycle the service decided resets the count. The "
    "count is kept in the state file: a restart, or the next --once run, counts on.",
)
@click.option(
    "--trading-url", default=None, help="Override of Alpaca's trading URL (its paper host or loopback only)."
)
@click.option("--data-url", default=None, help="Override of Alpaca's market-data URL (https or loopback).")
@caps_options()
@one_line_errors
def live_command(
    paper: bool,
    serve_url: str,
    symbols: str | None,
    store: Path | None,
    state_file: Path | None,
    account_lock_dir: Path | None,
    reset: bool,
    peak_lookback_days: int,
    once: bool,
    every_minutes: float,
    min_trade_notional: float,
    max_trade_fraction: float,
    max_participation: float,
    fractional: bool,
    max_quote_age_hours: float,
    max_open_quote_age_minutes: float,
    max_crypto_quote_age_hours: float,
    max_unreadable_order_cycles: int,
    max_failed_cycles: int,
    trading_url: str | None,
    data_url: str | None,
    **caps: float,
) -> None:
    """Run the trading loop: ask the policy service, trade the answer on Alpaca paper, log it."""
    if not paper:
        raise click.UsageError("live trading with real money is not enabled: pass --paper")
    from raytrade.cluster.settings import MissingCredentialsError, load_settings
    from raytrade.serve.alpaca_broker import AlpacaBroker
    from raytrade.serve.caps import ExposureCaps, widest
    from raytrade.serve.client import ClientConfig, PolicyClient
    from raytrade.serve.guard import check_token
    from raytrade.serve.live import LiveLoop, default_state_file, loop_universe
    from raytrade.serve.orders import LiveConfig

    given = None if symbols is None else [s.strip() for s in symbols.split(",") if s.strip()]
    if given is not None:  # a misspelt symbol is refused before any account or service is reached
        if not given:
            raise click.BadParameter(f"{symbols!r} names no symbol", param_hint="--symbols")
        loop_universe(given)

    settings = load_settings()
    if settings.serve_token is None:
        raise MissingCredentialsError("missing the Serve token: set RAYTRADE_SERVE_TOKEN")
    check_token(settings.serve_token.get_secret_value())
    broker = AlpacaBroker(settings.alpaca_access(), trading_url=trading_url, data_url=data_url)
    config = LiveConfig(
        min_trade_notional=min_trade_notional,
        max_trade_fraction=max_trade_fraction,
        max_participation=max_participation,
        fractional=fractional,
        max_quote_age_hours=max_quote_age_hours,
        max_open_quote_age_minutes=max_open_quote_age_minutes,
        max_crypto_quote_age_hours=max_crypto_quote_age_hours,
        max_unreadable_order_cycles=max_unreadable_order_cycles,
        caps=(held_to := exposure_caps(caps)),
        peak_lookback_days=peak_lookback_days,
        account_lock_dir=account_lock_dir.absolute() if account_lock_dir else None,
    )
    # The client holds an answer past the service's caps as inconsistent (serve.answer_check); the
    # loop's own caps, when tighter, are the planner's to apply (it trims an answer to them): an answer
    # is checked against the looser of the two, or a tighter loop held every answer, reductions too.
    checked = widest(held_to, ExposureCaps())
    with PolicyClient(ClientConfig(base_url=serve_url, caps=checked), settings.serve_token) as client:
        universe = given if given is not None else client.model()["symbols"]
        state_path = state_file.absolute() if state_file else default_state_file(broker.account().account_id)
        with LiveLoop(broker, client, universe, state_path, store, config, reset=reset) as loop:
            loop.start()
            click.echo(
                f"live loop (paper) on {len(universe)} symbols, policy at {serve_url}, state {state_path}"
            )
            _run(loop, once, every_minutes, max_failed_cycles)


def _run(loop: LiveLoop, once: bool, every_minutes: float, max_failed_cycles: int = 10) -> None:
    """Cycle until interrupted (or once); an order the broker cannot read for too long ends the
    loop (:class:`serve.live.UnreadableOrderError`: a person must look), and so does a hot swap to a
    kill-switch rule the configured one is looser than (``serve.kill_switch_rule.KillSwitchRuleError``),
    a served model that decides none of the loop's symbols (:class:`serve.live.UniverseError`, when
    the start could not read it), and the service refusing the token (``serve.client.ServiceAuthError``:
    rotated on the service, say; the loop reads its token once, so no later cycle could succeed).
    Anything else is retried at the next cycle, and so is a cycle held without a decision of the
    service (``CycleReport.held_without_service``: down or erring, its rule unreadable, none of the
    loop's symbols served), up to ``max_failed_cycles`` of the two in a row
    (:class:`serve.live.FailedCyclesError`); a cycle the service decided resets the count. The count
    is kept in the state file (``LiveLoop.record_cycle``), so it carries over a restart and over
    ``--once`` runs: a held ``--once`` run exits 0 until the count reaches the limit, and a failed
    one raises its error after counting it. A state file that cannot be read or written when the
    cycle is counted ends the loop at once with that error (``LiveStateError``, one line): no later
    cycle could read it either."""
    from raytrade.serve.client import ServiceAuthError
    from raytrade.serve.kill_switch_rule import KillSwitchRuleError
    from raytrade.serve.live import FailedCyclesError, UniverseError, UnreadableOrderError

    while True:
        error: Exception | None = None
        try:
            report = loop.cycle()
        except (UnreadableOrderError, UniverseError, KillSwitchRuleError, ServiceAuthError):
            raise
        except Exception as exc:  # a broker or network hiccup must not end a long-running loop
            error = exc
            failure: str | None = " ".join(f"failed: {type(exc).__name__}: {exc}".split())[:300]  # one line
        else:
            _show(report)
            held = report.held_without_service
            failure = None if held is None else f"held without the service: {held}"
        failed = loop.record_cycle(failure is not None)
        if error is not None and once:
            raise error
        if failure is not None and failed >= max_failed_cycles:
            raise FailedCyclesError(
                f"live loop stopped: {failed} cycles in a row failed or held without the policy "
                f"service (--max-failed-cycles; the state file keeps the count and the orders sent); "
                f"the last {failure}"
            )
        if failure is not None:
            click.echo(
                f"cycle {failure} ({failed} in a row; the loop stops at {max_failed_cycles}); "
                + ("the next run counts on" if once else "retrying at the next one"),
                err=True,
            )
        if once:
            return
        time.sleep(every_minutes * 60.0)


def _show(report: Any) -> None:
    """One cycle's report, a line (and one per refused or unresolved order)."""
    status = f"fallback ({report.answer.reason})" if report.answer.fallback else report.answer.model
    click.echo(
        f"[{report.cycle_id}] {status}: {len(report.plans)} orders, {len(report.submitted)} sent, "
        f"{len(report.rejected)} refused, {report.fills_logged} fills logged"
    )
    for decision_id, message in report.rejected.items():
        click.echo(f"  refused {decision_id}: {message}", err=True)
    for decision_id, message in report.uncertain.items():
        click.echo(f"  unknown outcome {decision_id} (resolved next cycle): {message}", err=True)
