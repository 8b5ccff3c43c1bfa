"""The live loop: decide, submit, log every decision and fill into the store, remember the peak."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pa_ds
import pytest

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.replay import ReplayWriter, read_frame
from raytrade.replay.errors import InputError
from raytrade.replay.sources.alpaca import SourceError, TopOfBook
from raytrade.serve.client import ServiceError
from raytrade.serve.live import (
    BrokerAccount,
    BrokerPosition,
    LiveLoop,
    OrderState,
    UniverseError,
    order_is_open,
)
from raytrade.serve.orders import AssetFlags, LiveConfig, OrderPlan
from raytrade.serve.schemas import CallerKillSwitch
from tests.live_doubles import ScriptedPolicy

T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)


class FakeBroker:
    """In-memory broker: market orders fill at once at the touch; limit orders rest until filled."""

    def __init__(self, cash: float, prices: dict[str, tuple[float, float]], refuse: set[str] | None = None):
        self.cash, self.prices, self.refuse = cash, prices, refuse or set()
        self.qty: dict[str, float] = {}
        self.orders: dict[str, OrderState] = {}
        self.submitted: list[OrderPlan] = []
        self.cancelled: list[str] = []
        self.client_ids: dict[str, str] = {}  # client_order_id -> order id
        self.sides: dict[str, tuple[str, str, str]] = {}  # order id -> (symbol, side, client id)
        self.history_peak: float | None = None
        self.is_open = False  # the market clock: closed unless a test opens it
        self.flags: dict[str, AssetFlags] = {}

    def _mid(self, s: str) -> float:
        bid, ask = self.prices[s]
        return 0.5 * (bid + ask)

    def account(self) -> BrokerAccount:
        equity = self.cash + sum(q * self._mid(s) for s, q in self.qty.items())
        return BrokerAccount(
            equity=equity, cash=self.cash, buying_power=2 * equity, last_equity=None, account_id="PA-TEST"
        )

    def positions(self) -> list[BrokerPosition]:
        return [BrokerPosition(s, q, q * self._mid(s), self._mid(s)) for s, q in self.qty.items() if q]

    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]:
        return {s: TopOfBook(T0, *self.prices[s], 100.0, 100.0) for s in symbols if s in self.prices}

    def submit(self, plan: OrderPlan) -> str:
        if plan.symbol in self.refuse:
            raise SourceError(f"HTTP 403 insufficient buying power for {plan.symbol}", 403)
        self.submitted.append(plan)
        order_id = f"o{len(self.submitted)}"
        self.client_ids[plan.client_order_id] = order_id
        self.sides[order_id] = (plan.symbol, plan.side, plan.client_order_id)
        if plan.order_type == "market":
            bid, ask = self.prices[plan.symbol]
            price = ask if plan.side == "buy" else bid
            sign = 1.0 if plan.side == "buy" else -1.0
            self.qty[plan.symbol] = self.qty.get(plan.symbol, 0.0) + sign * plan.qty
            self.cash -= sign * plan.qty * price
            filled_at = T0 + timedelta(seconds=2)
            self.orders[order_id] = OrderState(order_id, "filled", plan.qty, price, filled_at, qty=plan.qty)
        else:
            self.orders[order_id] = OrderState(
                order_id, "new", 0.0, None, None, qty=plan.qty, limit_price=plan.limit_price
            )
        return order_id

    def order(self, order_id: str) -> OrderState:
        return self.orders[order_id]

    def order_by_client_id(self, client_order_id: str) -> OrderState | None:
        order_id = self.client_ids.get(client_order_id)
        return None if order_id is None else self.orders[order_id]

    def open_orders(self) -> list[OrderState]:
        return [
            o._replace(client_order_id=self.sides[i][2], symbol=self.sides[i][0], side=self.sides[i][1])
            for i, o in self.orders.items()
            if order_is_open(o.status)
        ]

    def peak_equity(self, days: int) -> float | None:
        return self.history_peak

    def market_open(self) -> bool:
        return self.is_open

    def assets(self, symbols: Sequence[str]) -> dict[str, AssetFlags]:
        """Every asset tradable, fractionable and shortable (``flags`` overrides one symbol's)."""
        return {s: self.flags.get(s, AssetFlags()) for s in symbols}

    def cancel(self, order_id: str) -> None:
        o = self.orders[order_id]
        self.cancelled.append(order_id)
        self.orders[order_id] = o._replace(status="canceled")


PRICES = {"AAPL": (99.99, 100.01), "MSFT": (399.9, 400.1), "BTCUSD": (49_990.0, 50_010.0)}


def _loop(tmp_path: Path, broker: FakeBroker, policy: Any, reset: bool = True) -> LiveLoop:
    state = tmp_path / "live_state.json"
    return LiveLoop(
        broker,
        policy,
        ["AAPL", "MSFT", "BTCUSD"],
        state,
        tmp_path / "store",
        reset=not state.exists() and reset,
    )


def test_a_cycle_submits_logs_every_decision_and_reconciles_fills_next_cycle(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.08, "passive"), "BTCUSD": (0.0, "flat")})
    loop = _loop(tmp_path, broker, policy)
    report = loop.cycle(T0)
    assert [(p.symbol, p.side, p.qty, p.order_type) for p in broker.submitted] == [
        ("AAPL", "buy", 100.0, "market"),
        ("MSFT", "buy", 20.0, "limit"),
    ]
    assert report.rejected == {} and set(report.submitted) == {
        f"{report.cycle_id}:AAPL",
        f"{report.cycle_id}:MSFT",
    }
    exp = read_frame(tmp_path / "store", "experience")
    assert sorted(exp["symbol"]) == ["AAPL", "BTCUSD", "MSFT"]  # every decision, traded or not
    btc = exp[exp["symbol"] == "BTCUSD"].iloc[0]
    assert btc["side"] == "flat" and not btc["submitted"] and btc["policy_version"] == "alpha@2"
    aapl = exp[exp["symbol"] == "AAPL"].iloc[0]
    assert aapl["submitted"] and aapl["order_id"] == "o1" and aapl["quantity"] == 100.0
    assert json.loads(aapl["state"])["snapshot"]["bid_price"] == 99.99

    # The resting MSFT limit fills; the next cycle logs both fills (AAPL 1 bp above the mid, MSFT at
    # the bid, 2.5 bp under it) and cancels nothing.
    msft_order = report.submitted[f"{report.cycle_id}:MSFT"]
    broker.orders[msft_order] = OrderState(msft_order, "filled", 20.0, 399.9, T0 + timedelta(hours=3))
    report2 = loop.cycle(T0 + timedelta(days=1))
    assert report2.fills_logged == 2 and broker.cancelled == []
    rows = read_frame(tmp_path / "store", "experience")
    fills = rows[rows["decision_id"].str.endswith(":fill")].set_index("symbol")
    assert fills.loc["AAPL", "fill_price"] == 100.01 and fills.loc["AAPL", "filled"]
    assert fills.loc["AAPL", "slippage_bps"] == pytest.approx(1.0, abs=1e-9)
    assert fills.loc["AAPL", "latency_order_to_fill_ms"] == pytest.approx(2000.0)
    assert fills.loc["MSFT", "slippage_bps"] == pytest.approx(-2.5, abs=1e-9)
    assert fills.loc["MSFT", "latency_order_to_fill_ms"] == pytest.approx(3 * 3600e3)


def test_a_fill_the_broker_gives_no_time_for_is_logged_without_a_latency(tmp_path: Path) -> None:
    # the latency was 0 (the fill time taken as the submit): cost calibration would read it as a fill
    # at once, against the decision mid, though the order may have waited for the market to open
    broker = FakeBroker(100_000.0, PRICES)
    loop = _loop(tmp_path, broker, ScriptedPolicy({"MSFT": (0.08, "passive")}))
    report = loop.cycle(T0)
    order_id = report.submitted[f"{report.cycle_id}:MSFT"]
    broker.orders[order_id] = OrderState(order_id, "filled", 20.0, 399.9, None)
    assert loop.cycle(T0 + timedelta(days=1)).fills_logged == 1
    rows = read_frame(tmp_path / "store", "experience")
    fill = rows[rows["decision_id"] == f"{report.cycle_id}:MSFT:fill"].iloc[0]
    assert fill["slippage_bps"] == pytest.approx(-2.5, abs=1e-9)
    assert pd.isna(fill["latency_order_to_fill_ms"])


def test_a_cycle_reads_only_the_experience_files_committed_since_the_last_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    loop = _loop(tmp_path, broker, ScriptedPolicy({"AAPL": (0.1, "aggressive")}))
    loop.cycle(T0)
    table_dir = tmp_path / "store" / "experience"
    ours = set(table_dir.glob("year=*/*.parquet"))
    with ReplayWriter(tmp_path / "store") as other:  # another process logs between two cycles
        other.append_experience(
            pd.DataFrame(
                [
                    {
                        "symbol": "MSFT",
                        "ts": T0,
                        "decision_id": "elsewhere",
                        "policy_version": "p@1",
                        "side": "buy",
                    }
                ]
            )
        )
    foreign = set(table_dir.glob("year=*/*.parquet")) - ours
    read: list[Path] = []  # every experience file pyarrow opens as a dataset (or under one)
    real = pa_ds.dataset

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        for p in map(Path, [source] if isinstance(source, str | Path) else source):
            read.extend(sorted(p.glob("year=*/*.parquet")) if p.is_dir() else [p])
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pa_ds, "dataset", spy)
    loop.cycle(T0 + timedelta(days=1))
    assert [p for p in read if table_dir in p.parents] == sorted(foreign)  # not the whole table
    assert len(foreign) == 1 and len(ours) >= 1


def test_a_resting_order_is_cancelled_by_the_next_decision_and_its_fills_logged(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    loop = _loop(tmp_path, broker, ScriptedPolicy({"MSFT": (0.08, "passive")}))
    first = loop.cycle(T0)
    order_id = first.submitted[f"{first.cycle_id}:MSFT"]
    broker.orders[order_id] = OrderState(order_id, "partially_filled", 5.0, 399.9, None)
    second = loop.cycle(T0 + timedelta(days=1))
    assert broker.cancelled == [order_id] and second.fills_logged == 0  # still open when read
    third = loop.cycle(T0 + timedelta(days=2))
    assert third.fills_logged == 1
    rows = read_frame(tmp_path / "store", "experience")
    fill = rows[rows["decision_id"] == f"{first.cycle_id}:MSFT:fill"].iloc[0]
    assert fill["partial"] and not fill["filled"] and fill["filled_qty"] == 5.0


def test_drawdown_comes_from_the_remembered_peak(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    loop = _loop(tmp_path, broker, policy)
    loop.cycle(T0)
    broker.cash = 90_000.0  # a 10 % loss
    loop.close()
    loop2 = _loop(tmp_path, broker, policy, reset=False)  # a restart: the peak comes from the state file
    loop2.cycle(T0 + timedelta(days=1))
    assert policy.requests[0].drawdown_pct == 0.0
    assert policy.requests[1].drawdown_pct == pytest.approx(-0.10)


def test_a_new_high_seen_by_a_cycle_that_then_fails_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peak was saved with the intents only: a cycle failing in between (the service, a hot swap's
    looser rule) forgot a new high, and the next cycle measured its drawdown from the old one."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    with _loop(tmp_path, broker, policy) as loop:
        loop.cycle(T0)
        broker.cash = 120_000.0  # a new high ...
        with monkeypatch.context() as patched:  # ... seen by a cycle that fails before its orders
            patched.setattr(loop, "_ask", lambda *a: (_ for _ in ()).throw(RuntimeError("service down")))
            with pytest.raises(RuntimeError, match="service down"):
                loop.cycle(T0 + timedelta(days=1))
    assert json.loads((tmp_path / "live_state.json").read_text())["peak_equity"] == 120_000.0
    broker.cash = 96_000.0
    with _loop(tmp_path, broker, policy, reset=False) as restarted:
        restarted.cycle(T0 + timedelta(days=2))
    assert policy.requests[-1].drawdown_pct == pytest.approx(-0.20)  # from the high, not from 100,000
    assert policy.requests[-1].kill_switch == CallerKillSwitch(
        active=True, bars_active=0, peak_equity=120_000.0
    )


def _saved_switch(tmp_path: Path) -> Any:
    return json.loads((tmp_path / "live_state.json").read_text())["kill_switch"]


def test_a_restart_keeps_a_tripped_kill_switch(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    with _loop(tmp_path, broker, policy) as loop:
        loop.cycle(T0)
        broker.cash = 79_000.0  # 21 % down: it trips
        loop.cycle(T0 + timedelta(days=1))
    assert _saved_switch(tmp_path) == {  # its peak is the file's peak_equity
        "active": True,
        "bars_active": 0,
        "peak_equity": None,
        "as_of": "2026-11-25T14:30:00Z",
        "rule": KillSwitchConfig().model_dump(),  # the served rule it was advanced with
        "bar": None,  # the bar the answer observed: this double's answers say none
    }
    broker.cash = 81_000.0  # 19 % down: under the trigger, not back within the release drawdown
    with _loop(tmp_path, broker, policy, reset=False) as restarted:
        restarted.cycle(T0 + timedelta(days=2))
    assert [r.kill_switch for r in policy.requests] == [
        CallerKillSwitch(active=False, bars_active=0, peak_equity=100_000.0),
        CallerKillSwitch(active=True, bars_active=0, peak_equity=100_000.0),
        CallerKillSwitch(active=True, bars_active=1, peak_equity=100_000.0),  # still on, one bar on
    ]


def test_a_state_file_from_before_the_kill_switch_loads_and_trips_on_its_drawdown(tmp_path: Path) -> None:
    (tmp_path / "live_state.json").write_text(
        json.dumps({"account_id": "PA-TEST", "peak_equity": 1e5, "pending": [], "unlogged_rows": []})
    )
    broker = FakeBroker(79_000.0, PRICES)  # 21 % below the file's peak: the safe side is on
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    with _loop(tmp_path, broker, policy, reset=False) as loop:
        loop.cycle(T0)
    assert policy.requests[0].kill_switch == CallerKillSwitch(active=True, bars_active=0, peak_equity=1e5)
    assert _saved_switch(tmp_path)["active"] is True


def test_a_timed_release_keeps_the_switchs_own_peak_until_the_accounts_peak_is_it_again(
    tmp_path: Path,
) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, kill_switch=KillSwitchConfig(release_after_bars=2))
    state_file = tmp_path / "live_state.json"
    saved = []
    for day, cash in enumerate([100_000.0, 75_000.0, 75_000.0, 75_000.0, 76_000.0, 101_000.0]):
        broker.cash = cash
        with LiveLoop(broker, policy, ["AAPL"], state_file, reset=day == 0) as loop:
            loop.cycle(T0 + timedelta(days=day))  # a restart every cycle
        saved.append({k: v for k, v in _saved_switch(tmp_path).items() if k not in ("as_of", "rule", "bar")})
    assert [r.drawdown_pct for r in policy.requests][-2:] == [pytest.approx(-0.24), 0.0]  # the account's peak
    assert saved == [
        {"active": False, "bars_active": 0, "peak_equity": None},
        {"active": True, "bars_active": 0, "peak_equity": None},
        {"active": True, "bars_active": 1, "peak_equity": None},
        {"active": False, "bars_active": 0, "peak_equity": 75_000.0},  # released by time: restarted
        {"active": False, "bars_active": 0, "peak_equity": 76_000.0},
        {"active": False, "bars_active": 0, "peak_equity": None},  # past the account's peak: one peak
    ]


def test_a_new_high_in_a_failing_cycle_is_the_switchs_peak_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a timed release the switch keeps its own, lower peak; a new account high is that peak too
    (its advance takes max(peak, equity)), so the early save of the high leaves it the file's."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, kill_switch=KillSwitchConfig(release_after_bars=2))
    state_file = tmp_path / "live_state.json"
    for day, cash in enumerate([100_000.0, 75_000.0, 75_000.0, 75_000.0]):
        broker.cash = cash
        with LiveLoop(broker, policy, ["AAPL"], state_file, reset=day == 0) as loop:
            loop.cycle(T0 + timedelta(days=day))
    assert _saved_switch(tmp_path)["peak_equity"] == 75_000.0  # released by time: its own peak
    broker.cash = 101_000.0
    with LiveLoop(broker, policy, ["AAPL"], state_file) as loop:
        monkeypatch.setattr(loop, "_ask", lambda *a: (_ for _ in ()).throw(RuntimeError("service down")))
        with pytest.raises(RuntimeError, match="service down"):
            loop.cycle(T0 + timedelta(days=4))
    saved = json.loads(state_file.read_text())
    assert saved["peak_equity"] == 101_000.0 and saved["kill_switch"]["peak_equity"] is None
    assert saved["kill_switch"]["active"] is False  # otherwise as it was: not advanced by the failed cycle


def test_a_refused_order_does_not_stop_the_others(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES, refuse={"AAPL"})
    loop = _loop(tmp_path, broker, ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.1, "aggressive")}))
    report = loop.cycle(T0)
    assert (
        list(report.rejected) == [f"{report.cycle_id}:AAPL"]
        and "buying power" in report.rejected[f"{report.cycle_id}:AAPL"]
    )
    assert [p.symbol for p in broker.submitted] == ["MSFT"]
    exp = read_frame(tmp_path / "store", "experience")
    aapl = exp[exp["symbol"] == "AAPL"].iloc[0]
    assert not aapl["submitted"] and "buying power" in json.loads(aapl["state"])["broker_error"]


def test_a_fallback_answer_trades_nothing_and_is_logged(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    broker.qty["AAPL"] = 50.0
    broker.cash -= 5_000.0
    report = _loop(tmp_path, broker, ScriptedPolicy({}, fallback=True)).cycle(T0)
    assert report.answer.fallback and report.plans == [] and broker.submitted == []
    exp = read_frame(tmp_path / "store", "experience")
    row = exp[exp["symbol"] == "AAPL"].iloc[0]
    assert row["gate_mode"] == "hold" and json.loads(row["state"])["fallback"] is True
    assert row["target_weight"] == pytest.approx(0.05)


def test_the_loop_needs_symbols(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="symbols"):
        LiveLoop(FakeBroker(1.0, PRICES), ScriptedPolicy({}), [], tmp_path / "s.json")


def test_a_pair_named_as_alpaca_spells_it_is_traded_in_the_stores_spelling(tmp_path: Path) -> None:
    """``--symbols BTC/USD`` used to reach the service as ``BTC/USD``, outside a universe that spells
    it ``BTCUSD``: every cycle was refused (422) and the pair's position never matched its symbol."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "BTCUSD": (0.02, "aggressive")})
    with LiveLoop(broker, policy, ["AAPL", "BTC/USD"], tmp_path / "s.json", reset=True) as loop:
        assert loop.symbols == ["AAPL", "BTCUSD"]
        report = loop.cycle(T0)
    assert set(policy.requests[0].analysis) == {"AAPL", "BTCUSD"}
    assert sorted(p.symbol for p in report.plans) == ["AAPL", "BTCUSD"]


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        (
            ["BTCUSD", "AAPL", "BTC/USD"],
            "symbols: 'BTCUSD' and 'BTC/USD' are the same symbol (BTCUSD): name it once",
        ),
        (["AAPL", "AAPL"], "symbols: 'AAPL' and 'AAPL' are the same symbol (AAPL)"),
        (["btc/usd"], "symbols: 'btc/usd' is not in capitals, as Alpaca spells every symbol (BTC/USD)"),
        (["suiusd"], "symbols: 'suiusd' is not in capitals"),  # passed here, failed in the first cycle
        (["aapl"], "symbols: 'aapl' is not in capitals"),
        # quoted in BTC: sized in dollars from ~0.05 a unit, it would order ~BTCUSD times too much
        (["AAPL", "ETH/BTC"], "symbols: 'ETH/BTC' is a pair quoted in BTC"),
        (["ETHBTC"], "symbols: 'ETHBTC' is a pair quoted in BTC"),
    ],
)
def test_a_symbol_named_twice_or_a_malformed_pair_is_refused_naming_it(
    tmp_path: Path, symbols: list[str], message: str
) -> None:
    with pytest.raises(InputError) as err:
        LiveLoop(FakeBroker(1.0, PRICES), ScriptedPolicy({}), symbols, tmp_path / "s.json", reset=True)
    assert message in str(err.value)
    assert not (tmp_path / "s.json.lock").exists()  # refused before the state file's lock


def test_a_symbol_outside_the_served_universe_is_named_and_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service refuses a request naming a symbol outside its universe (HTTP 422): a loop started
    on one failed every cycle and traded nothing. Now it is named at start and held; the rest trade
    (a loop restarted after a hot swap that dropped one of its symbols keeps managing the others)."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")}, universe=["AAPL", "MSFT"])
    with (
        caplog.at_level("WARNING", logger="raytrade.live"),
        LiveLoop(broker, policy, ["AAPL", "XYZ", "BTCUSD"], tmp_path / "s.json", reset=True) as loop,
    ):
        loop.start()
        assert (
            "alpha@2 does not decide XYZ, BTCUSD: held while it does not (alpha@2's universe: AAPL, MSFT)"
            in caplog.text
        )
        report = loop.cycle(T0)
    assert set(policy.requests[0].analysis) == {"AAPL"}
    assert [p.symbol for p in report.plans] == ["AAPL"]


def test_a_loop_whose_symbols_the_served_model_decides_none_of_refuses_to_start(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")}, universe=["MSFT", "NVDA"])
    with (
        LiveLoop(broker, policy, ["AAPL", "XYZ"], tmp_path / "s.json", reset=True) as loop,
        pytest.raises(UniverseError) as err,
    ):
        loop.cycle(T0)
    assert str(err.value) == (
        "symbols: alpha@2 decides none of AAPL, XYZ (alpha@2's universe: MSFT, NVDA): trade a subset of "
        "it, or name none to trade it all"
    )
    assert broker.submitted == [] and policy.requests == []
    assert not (tmp_path / "s.json").exists()  # refused before a state file is started


def test_a_pair_the_universe_spells_otherwise_is_asked_in_its_spelling_and_traded_in_the_brokers(
    tmp_path: Path,
) -> None:
    """A store ingested from CSV may spell a pair ``BTC/USD``, while Alpaca names its quotes and
    positions ``BTCUSD``. The request names the pair, and its position, as the universe does; the answer
    is read back in the broker's spelling, so the pair is quoted, and its position unwound. Taking the
    universe's spelling for the loop's own symbol left the pair unquoted, its position unmanaged."""
    broker = FakeBroker(100_000.0, PRICES)
    broker.qty["BTCUSD"] = 0.4
    broker.cash -= 0.4 * 50_000.0
    policy = ScriptedPolicy(
        {"AAPL": (0.1, "aggressive"), "BTC/USD": (0.0, "flat")}, universe=["AAPL", "BTC/USD"]
    )
    with LiveLoop(broker, policy, ["AAPL", "BTC/USD"], tmp_path / "s.json", reset=True) as loop:
        loop.start()
        assert loop.symbols == ["AAPL", "BTCUSD"]  # the broker's spelling: its quotes and positions
        report = loop.cycle(T0)
    asked = policy.requests[0]
    assert set(asked.analysis) == {"AAPL", "BTC/USD"} and asked.analysis["BTC/USD"].bid_price == 49_990.0
    assert [p.symbol for p in asked.positions] == ["BTC/USD"]
    assert set(report.answer.decisions) == {"AAPL", "BTCUSD"}
    assert sorted((p.symbol, p.side, p.qty) for p in report.plans) == [
        ("AAPL", "buy", 100.0),
        ("BTCUSD", "sell", 0.4),
    ]


def test_the_universe_is_matched_at_the_first_cycle_that_can_read_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``GET /v1/model`` unreadable at start: the first cycle that reads it names (and holds) a symbol
    the model does not decide, as the start would have; one that decides none stops the loop."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")}, universe=["AAPL"])
    policy.model_error = ServiceError("policy service unreachable: ConnectError", 0)
    with (
        caplog.at_level("WARNING", logger="raytrade.live"),
        LiveLoop(broker, policy, ["AAPL", "MSTF"], tmp_path / "s.json", reset=True) as loop,
    ):
        loop.start()
        policy.model_error = None
        report = loop.cycle(T0)
        assert "alpha@2 does not decide MSTF: held while it does not" in caplog.text
        assert [p.symbol for p in report.plans] == ["AAPL"]
    policy = ScriptedPolicy({}, universe=["NVDA"])
    policy.model_error = ServiceError("policy service unreachable: ConnectError", 0)
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "t.json", reset=True) as loop:
        loop.start()
        policy.model_error = None
        with pytest.raises(UniverseError, match="alpha@2 decides none of AAPL"):
            loop.cycle(T0)


def test_a_universe_the_service_cannot_tell_is_checked_by_its_answers(tmp_path: Path) -> None:
    """A ``GET /v1/model`` without a list of symbols leaves the start unchecked (nothing to check
    against); the loop starts and trades what the service answers."""

    class NoUniverse(ScriptedPolicy):
        def model(self, deadline: Any = None) -> dict[str, Any]:
            return {**super().model(deadline), "symbols": "MSFT"}  # not a list of symbols

    broker = FakeBroker(100_000.0, PRICES)
    policy = NoUniverse({"AAPL": (0.1, "aggressive")})
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "s.json", reset=True) as loop:
        report = loop.cycle(T0)
    assert [p.symbol for p in report.plans] == ["AAPL"]


def test_a_swap_to_a_smaller_universe_holds_the_symbols_it_dropped_and_trades_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hot swap to a model that no longer decides MSFT: the service refused every request naming it
    (422), so every cycle failed and nothing was managed, AAPL included. Now MSFT is held (its
    position still sent, for the caps) and AAPL traded; with none of the loop's symbols left, the
    cycle holds, saying why, and asks nothing."""
    broker = FakeBroker(100_000.0, PRICES)
    broker.qty["MSFT"] = 10.0
    broker.cash -= 4_000.0
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat")}, universe=["AAPL", "MSFT"])
    with (
        caplog.at_level("WARNING", logger="raytrade.live"),
        LiveLoop(broker, policy, ["AAPL", "MSFT"], tmp_path / "s.json", reset=True) as loop,
    ):
        loop.start()
        policy.universe = ["AAPL"]
        policy.targets = {"AAPL": (0.1, "aggressive")}
        report = loop.cycle(T0)
        assert set(policy.requests[-1].analysis) == {"AAPL"}
        assert [p.symbol for p in policy.requests[-1].positions] == ["MSFT"]
        assert [(p.symbol, p.side) for p in report.plans] == [("AAPL", "buy")]
        assert "alpha@2 does not decide MSFT: held, not asked about" in caplog.text
        asked = len(policy.requests)
        policy.universe = ["NVDA"]
        held = loop.cycle(T0 + timedelta(days=1))
    assert len(policy.requests) == asked and held.plans == [] and held.answer.fallback
    assert held.answer.reason == "alpha@2 decides none of the loop's symbols"


def test_an_unreadable_state_file_stops_the_loop_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "live_state.json"
    state.write_text("{not json")
    loop = LiveLoop(FakeBroker(1000.0, PRICES), ScriptedPolicy({}), ["AAPL"], state)
    with pytest.raises(ValueError, match="live_state.json"):
        loop.cycle(T0)


def _aapl_bought_against_stored_volumes(tmp_path: Path, days_back: list[int], volumes: list[float]) -> Any:
    """One cycle at :data:`T0` asking for 10 % of equity in AAPL, the store holding AAPL's
    ``dollar_volume_20`` on the date labels ``days_back`` days before T0's date (0: today's bar, still
    open): the policy, with its requests, and the orders sent."""
    import pandas as pd

    from raytrade.replay.writer import ReplayWriter

    today = pd.Timestamp(T0).normalize()
    rows = pd.DataFrame(
        {
            "symbol": "AAPL",
            "ts": [today - pd.Timedelta(days=d) for d in days_back],
            "asset_class": "equity",
            "close": 100.0,
            "dollar_volume_20": volumes,
        }
    )
    with ReplayWriter(tmp_path / "store") as writer:
        writer.append_features(rows)
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.0, "flat")})
    _loop(tmp_path, broker, policy).cycle(T0)
    return policy, [(p.symbol, p.qty) for p in broker.submitted]


def test_the_loop_caps_an_order_at_the_participation_share_of_the_stored_dollar_volume(
    tmp_path: Path,
) -> None:
    # The store says AAPL's latest bars traded $50k each: 10 % is $5k, 50 shares, not the 100 asked.
    _, orders = _aapl_bought_against_stored_volumes(tmp_path, [2, 1], [9e9, 50_000.0])
    assert orders == [("AAPL", 50.0)]


def test_the_loop_caps_orders_with_the_dollar_volume_of_a_closed_bar_not_todays_partial_one(
    tmp_path: Path,
) -> None:
    """A store refreshed during the session holds today's bar (labelled today, closed at midnight UTC)
    with a fraction of a day's volume: the cap reads yesterday's closed bar, as serving observes it."""
    policy, orders = _aapl_bought_against_stored_volumes(tmp_path, [1, 0], [50_000.0, 20_000.0])
    assert orders == [("AAPL", 50.0)]
    assert policy.requests[0].analysis["AAPL"].avg_dollar_vol == 50_000.0


@pytest.mark.parametrize(
    ("days_back", "aapl"),
    [
        ([5, 4], "AAPL (2026-11-20, 2 trading days before)"),
        ([1, 0], None),  # Monday's bar closed: today's (Tuesday's) is still open, not a lag
    ],
    ids=["friday-on-tuesday", "monday-on-tuesday"],
)
def test_a_cycle_warns_when_the_stores_newest_closed_bar_is_over_a_trading_day_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, days_back: list[int], aapl: str | None
) -> None:
    # the store holds AAPL's bars only: MSFT and BTCUSD, in the loop's universe, have none
    with caplog.at_level("WARNING", logger="raytrade.live"):
        _aapl_bought_against_stored_volumes(tmp_path, days_back, [50_000.0, 50_000.0])
    (refreshed,) = [r.getMessage() for r in caplog.records if "the store was not refreshed" in r.getMessage()]
    lagging = 2 if aapl is None else 3
    assert refreshed == (
        f"the store's newest closed bar lags as_of 2026-11-24T14:30:00+00:00 for {lagging} of 3 symbols: "
        + ", ".join(
            [
                *([aapl] if aapl else []),
                "MSFT (none in the 30 days before)",
                "BTCUSD (none in the 30 days before)",
            ]
        )
        + ": the store was not refreshed (its dollar volumes cap the orders)"
    )


@pytest.mark.parametrize(
    ("symbol", "newest", "now", "why"),
    [
        ("AAPL", "2026-11-20", "2026-11-23T15:00Z", None),  # Friday's bar on Monday: one session
        ("AAPL", "2026-11-19", "2026-11-23T15:00Z", "2 trading days"),  # Thursday's on Monday
        ("AAPL", "2026-11-25", "2026-11-27T15:00Z", None),  # Wednesday's on the day after Thanksgiving
        ("AAPL", "2026-11-24", "2026-11-27T15:00Z", "2 trading days"),  # Tuesday's then
        ("AAPL", "2026-01-16", "2026-01-20T15:00Z", None),  # Friday's on the Tuesday after MLK day
        ("AAPL", "2025-01-08", "2025-01-10T15:00Z", None),  # across President Carter's funeral
        ("BTCUSD", "2026-11-22T05:00Z", "2026-11-23T15:00Z", None),  # crypto's Sunday bar on Monday
        ("BTCUSD", "2026-11-20T05:00Z", "2026-11-23T15:00Z", "3 days"),  # Friday's: its bars never pause
        ("BTC/USD", "2026-11-25T05:00Z", "2026-11-27T15:00Z", "2 days"),  # a holiday is a crypto day
    ],
)
def test_the_store_lag_counts_the_sessions_of_each_symbols_market(
    symbol: str, newest: str, now: str, why: str | None
) -> None:
    import pandas as pd

    from raytrade.serve.live import store_lag

    at = pd.Timestamp(now).to_pydatetime()
    said = store_lag({symbol: pd.Timestamp(newest, tz="UTC")}, [symbol], at)
    if why is None:
        assert said is None
    else:
        day = pd.Timestamp(newest).date().isoformat()
        assert said is not None and said.endswith(f"{symbol} ({day}, {why} before)")


def test_the_store_lag_names_each_symbol_left_behind_not_only_the_newest_bar() -> None:
    # a store refreshed for crypto only: its newest bar is fresh, the equities' volumes are a week old
    import pandas as pd

    from raytrade.serve.live import store_lag

    at = pd.Timestamp("2026-11-23T15:00Z").to_pydatetime()
    equities = [f"E{i}" for i in range(6)]
    last = {"BTCUSD": pd.Timestamp("2026-11-22T05:00Z")} | {
        s: pd.Timestamp("2026-11-16", tz="UTC") for s in equities
    }
    why = store_lag(last, ["BTCUSD", *equities, "NEW"], at)
    assert why == (
        "the store's newest closed bar lags as_of 2026-11-23T15:00:00+00:00 for 7 of 8 symbols: "
        "E0 (2026-11-16, 5 trading days before), E1 (2026-11-16, 5 trading days before), E2 (2026-11-16, "
        "5 trading days before), E3 (2026-11-16, 5 trading days before), E4 (2026-11-16, 5 trading days "
        "before) and 2 more"
    )
    assert store_lag(last, ["BTCUSD"], at) is None
    assert store_lag({}, ["NEW"], at) == (
        "the store's newest closed bar lags as_of 2026-11-23T15:00:00+00:00 for 1 of 1 symbols: "
        "NEW (none in the 30 days before)"
    )


def test_the_loop_sells_one_share_of_a_position_whose_share_is_above_the_cap_and_logs_why_a_buy_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's dollar volumes cap AAPL's orders at $50 and MSFT's at $100, less than one share:
    the close of 10 AAPL sells one share this cycle (it only reduces), MSFT's buy sends nothing and
    its decision row and the log say which cap kept it from its target."""
    import pandas as pd

    from raytrade.replay.writer import ReplayWriter

    rows = pd.DataFrame(
        {
            "symbol": ["AAPL", "MSFT"],
            "ts": [pd.Timestamp(T0).normalize() - pd.Timedelta(days=1)] * 2,
            "asset_class": ["equity", "equity"],
            "close": [100.0, 400.0],
            "dollar_volume_20": [500.0, 1_000.0],
        }
    )
    with ReplayWriter(tmp_path / "store") as writer:
        writer.append_features(rows)
    broker = FakeBroker(99_000.0, PRICES)
    broker.qty["AAPL"] = 10.0
    wanted = {"AAPL": (0.0, "flat"), "MSFT": (0.05, "aggressive"), "BTCUSD": (0.0, "flat")}
    with caplog.at_level("WARNING", logger="raytrade.live"):
        report = _loop(tmp_path, broker, ScriptedPolicy(wanted)).cycle(T0)
    assert [(p.symbol, p.side, p.qty) for p in broker.submitted] == [("AAPL", "sell", 1.0)]
    assert report.plans[0].note is not None and "cannot add exposure" in report.plans[0].note
    assert set(report.notes) == {"MSFT"} and "participation cap" in report.notes["MSFT"]
    exp = read_frame(tmp_path / "store", "experience").set_index("symbol")
    assert json.loads(exp.loc["MSFT", "state"])["note"] == report.notes["MSFT"]
    assert f"no order for MSFT: {report.notes['MSFT']}" in caplog.text


def test_the_loop_sends_nothing_for_a_symbol_whose_stored_dollar_volume_is_zero(tmp_path: Path) -> None:
    import pandas as pd

    from raytrade.replay.writer import ReplayWriter

    rows = pd.DataFrame(
        {
            "symbol": ["AAPL", "MSFT"],
            "ts": [pd.Timestamp(T0).normalize() - pd.Timedelta(days=1)] * 2,
            "asset_class": ["equity", "equity"],
            "close": [100.0, 100.0],
            "dollar_volume_20": [0.0, 9e9],  # AAPL: nothing traded over the window
        }
    )
    with ReplayWriter(tmp_path / "store") as writer:
        writer.append_features(rows)
    broker = FakeBroker(100_000.0, PRICES)
    wanted = {"AAPL": (0.1, "aggressive"), "MSFT": (0.05, "aggressive"), "BTCUSD": (0.0, "flat")}
    _loop(tmp_path, broker, ScriptedPolicy(wanted)).cycle(T0)
    assert [p.symbol for p in broker.submitted] == ["MSFT"]


@pytest.mark.parametrize(("volume", "reason"), [(9e9, "spread 20.0 bps > cap 8 bps"), (5e7, None)])
def test_the_loop_sends_the_stored_dollar_volume_so_the_service_gates_a_mega_cap_at_its_cap(
    tmp_path: Path, volume: float, reason: str | None
) -> None:
    """AAPL quoted 20 bps wide: over the 8 bps cap of a mega cap (stored dollar volume per bar >= 1e9),
    under the 25 bps cap of another stock. The loop sends the store's ``dollar_volume_20`` as the
    row's ``avg_dollar_vol``, so the service's gate (``serve.caps``) tells which (sent without it, a
    mega cap was gated at 25 bps)."""
    import pandas as pd

    from raytrade.replay.writer import ReplayWriter
    from raytrade.serve.caps import gate_reason

    rows = pd.DataFrame(
        {
            "symbol": ["AAPL"],
            "ts": [pd.Timestamp(T0).normalize() - pd.Timedelta(days=1)],
            "asset_class": ["equity"],
            "close": [100.0],
            "dollar_volume_20": [volume],
        }
    )
    with ReplayWriter(tmp_path / "store") as writer:
        writer.append_features(rows)
    broker = FakeBroker(100_000.0, {**PRICES, "AAPL": (99.9, 100.1)})
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    _loop(tmp_path, broker, policy).cycle(T0)
    row = policy.requests[0].analysis["AAPL"]
    assert row.avg_dollar_vol == volume and policy.requests[0].analysis["MSFT"].avg_dollar_vol is None
    assert gate_reason(row, False) == reason


def test_a_position_the_broker_prices_at_zero_does_not_stop_the_book(tmp_path: Path) -> None:
    """A held symbol the broker prices at 0 (halted, delisted) is sent without a price, not refused:
    the other symbols still trade (a price of 0 failed the request's validation on every cycle)."""

    class ZeroPriced(FakeBroker):
        def positions(self) -> list[BrokerPosition]:
            return [*super().positions(), BrokerPosition("HALTED", 10.0, 0.0, 0.0)]

    broker = ZeroPriced(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.0, "flat")})
    report = _loop(tmp_path, broker, policy).cycle(T0)
    assert [(p.symbol, p.side, p.qty) for p in broker.submitted] == [("AAPL", "buy", 100.0)]
    assert report.rejected == {}


@pytest.mark.parametrize(("hours", "traded"), [(95.0, True), (97.0, False)])
def test_a_quote_older_than_the_limit_is_no_quote(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hours: float, traded: bool
) -> None:
    """Quotes stamped ``T0`` read ``hours`` later: within the 96 h limit they size orders, past it every
    symbol is held and the loop says which quotes it dropped."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.0, "flat")})
    with caplog.at_level("WARNING"):
        report = _loop(tmp_path, broker, policy).cycle(T0 + timedelta(hours=hours))
    assert [p.symbol for p in broker.submitted] == (["AAPL"] if traded else [])
    assert report.rejected == {}
    assert ("AAPL (97 h old)" in caplog.text) == (not traded)


@pytest.mark.parametrize(
    ("clock", "minutes", "traded"),
    [
        ("open", 20, ["AAPL", "BTCUSD"]),
        ("open", 45, ["BTCUSD"]),  # a stock halted for news keeps its pre-halt quote
        ("closed", 45, ["AAPL", "BTCUSD"]),  # after the close an equity's quote is the close's
        ("unreadable", 45, ["BTCUSD"]),  # a clock that cannot be read counts as open
    ],
)
def test_an_equity_quote_minutes_old_is_stale_while_the_market_is_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: str, minutes: int, traded: list[str]
) -> None:
    """Quotes stamped ``T0`` read ``minutes`` later. Before, any equity quote under 96 h old sized
    orders, market open or not: one from before a halt did, hours into it."""

    class Clocked(FakeBroker):
        def market_open(self) -> bool:
            if clock == "unreadable":
                raise RuntimeError("HTTP 500 on GET /v2/clock")
            return clock == "open"

    broker = Clocked(100_000.0, PRICES)
    policy = ScriptedPolicy(
        {"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.05, "aggressive")}
    )
    with caplog.at_level("WARNING"):
        _loop(tmp_path, broker, policy).cycle(T0 + timedelta(minutes=minutes))
    assert sorted(p.symbol for p in broker.submitted) == traded
    assert ("AAPL (45 min old)" in caplog.text) == ("AAPL" not in traded)
    assert ("cannot read the market clock" in caplog.text) == (clock == "unreadable")


def test_the_alpaca_broker_reads_the_market_clock() -> None:
    from raytrade.cluster.settings import Settings
    from raytrade.serve.alpaca_broker import AlpacaBroker
    from tests.fake_alpaca import TEST_KEYS
    from tests.fake_alpaca_trading import FakeAlpacaTrading

    with FakeAlpacaTrading() as trading:
        settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1])
        broker = AlpacaBroker(settings.alpaca_access(), trading_url=trading.url)
        assert broker.market_open() is False
        trading.market_is_open = True
        assert broker.market_open() is True


def test_stale_quotes_measures_each_quotes_age_at_now() -> None:
    from raytrade.serve.orders import stale_quotes

    quotes = {
        "OLD": TopOfBook(T0 - timedelta(hours=5), 1.0, 1.1, 1.0, 1.0),
        "EDGE": TopOfBook(T0 - timedelta(hours=4), 1.0, 1.1, 1.0, 1.0),
        "AHEAD": TopOfBook(T0 + timedelta(minutes=3), 1.0, 1.1, 1.0, 1.0),  # a broker clock ahead of ours
    }
    assert stale_quotes(quotes, T0, max_age_hours=4.0, max_crypto_age_hours=4.0) == {"OLD": 5.0}


@pytest.mark.parametrize(("hours", "traded"), [(1.0, ["AAPL", "BTCUSD"]), (3.0, ["AAPL"])])
def test_a_crypto_quote_has_its_own_shorter_age_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hours: float, traded: list[str]
) -> None:
    """Quotes stamped ``T0`` read ``hours`` later: AAPL's is well within the 96 h equity limit, but
    crypto quotes around the clock, so past the 2 h crypto limit BTCUSD's is no quote (held, said)."""
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy(
        {"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.05, "aggressive")}
    )
    with caplog.at_level("WARNING"):
        _loop(tmp_path, broker, policy).cycle(T0 + timedelta(hours=hours))
    assert [p.symbol for p in broker.submitted] == traded
    assert ("BTCUSD (3 h old)" in caplog.text) == (hours == 3.0)
    assert "AAPL (" not in caplog.text


@pytest.mark.parametrize("flag", ["--max-quote-age-hours", "--max-crypto-quote-age-hours"])
@pytest.mark.parametrize("value", ["0", "-2", "nan"])
def test_a_bad_quote_age_is_refused_naming_the_flag_and_the_value(flag: str, value: str) -> None:
    from click.testing import CliRunner

    from raytrade.cluster.cli import main

    result = CliRunner().invoke(main, ["live", "--paper", flag, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}': " in result.output and value in result.output.split(flag)[1]


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("max_crypto_quote_age_hours", 0.0, "greater_than"),
        ("max_crypto_quote_age_hours", float("nan"), "finite_number"),
        ("max_quote_age_hours", float("inf"), "finite_number"),  # "no limit" is no stale-quote check
        ("max_unreadable_order_cycles", 0, "greater_than_equal"),
    ],
)
def test_the_loop_settings_refuse_a_bad_limit_naming_it(name: str, value: float, kind: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=rf"{name}\n.*\[type={kind}, input_value={value}"):
        LiveConfig(**{name: value})


@pytest.mark.parametrize("cancel_finishes", [True, False], ids=["cancelled", "pending_cancel"])
def test_a_symbol_whose_cancel_is_not_done_gets_no_new_order(tmp_path: Path, cancel_finishes: bool) -> None:
    """A resting limit order is cancelled by the next cycle's decision. Alpaca cancels asynchronously:
    while the broker still shows the order open (``pending_cancel``) it can fill, so its symbol is held
    this cycle; once the cancel is done the new order goes out."""

    class AsyncCancel(FakeBroker):
        def cancel(self, order_id: str) -> None:
            if cancel_finishes:
                return super().cancel(order_id)
            self.cancelled.append(order_id)
            self.orders[order_id] = self.orders[order_id]._replace(status="pending_cancel")

    broker = AsyncCancel(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat"), "MSFT": (0.08, "passive"), "BTCUSD": (0.0, "flat")})
    loop = _loop(tmp_path, broker, policy)
    loop.cancel_confirm_s = 0.0  # one look, no wait
    loop.cycle(T0)  # MSFT: a limit order rests
    assert [(p.symbol, p.order_type) for p in broker.submitted] == [("MSFT", "limit")]
    loop.cycle(T0 + timedelta(days=1))
    assert broker.cancelled == ["o1"]
    assert [p.symbol for p in broker.submitted[1:]] == (["MSFT"] if cancel_finishes else [])
