"""The loop's own guards, whatever the service answers: its spread gate, sizing on the account marked at
the quotes (not a stale broker equity), and quotes stamped ahead of its clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from raytrade.replay.sources.alpaca import TopOfBook
from raytrade.serve.live import BrokerAccount, BrokerPosition, LiveLoop
from raytrade.serve.orders import (
    QUOTE_CLOCK_SKEW_HOURS,
    loop_spread_gates,
    plan_cycle,
    sizing_equity,
    stale_quotes,
)
from tests.live_doubles import T0, ScriptedPolicy
from tests.test_live import FakeBroker
from tests.test_live_orders import EQUITY, _answer, _book


def test_a_wide_quote_gets_no_order_from_the_planner_whatever_the_answer() -> None:
    """A risk desk's case: the service (another version, misconfigured) answers ``aggressive`` for a
    stock quoted 99/101 (200 bps); the loop used to send a market buy, paying 100 bps at once, again
    every cycle. Now it holds it, as the service's own gate would: no order, the note naming the
    spread and the cap."""
    quotes = {"AAPL": _book(99.0, 101.0)}
    plan = plan_cycle(_answer({"AAPL": (0.1, 0.0, "aggressive")}), EQUITY, quotes, {}, "c1")
    assert plan.orders == []
    assert plan.notes["AAPL"] == (
        "AAPL: held this cycle, target +0.1000 not pursued: spread 200.0 bps > the loop's cap 8 bps"
    )


def test_a_wide_quote_holds_the_position_as_it_is_valued_at_its_market_value() -> None:
    """Neither bought, sold nor flipped on a 99/101 quote (a reduction there pays the half spread at
    once; the next cycle with a tradeable quote trades it), and its weight is the broker's market
    value over equity, not the wide quote's mid: a short quoted 95/905 pre-open used to count as five
    times its value against the gross cap and force sales of other names."""
    held = {"AAPL": 100.0}
    for target in (0.05, -0.05, 0.14, 0.0):
        plan = plan_cycle(
            _answer({"AAPL": (target, 0.1, "aggressive")}), EQUITY, {"AAPL": _book(99.0, 101.0)}, held, "c1"
        )
        assert plan.orders == [] and "spread 200.0 bps > the loop's cap 8 bps" in plan.notes["AAPL"]
    quotes = {"XYZ": _book(95.0, 905.0), "AAPL": _book(99.99, 100.01)}
    held, values = {"XYZ": -100.0, "AAPL": 150.0}, {"XYZ": -10_000.0, "AAPL": 15_000.0}
    answer = _answer({"XYZ": (-0.1, -0.1, "aggressive"), "AAPL": (0.15, 0.15, "aggressive")})
    plan = plan_cycle(answer, EQUITY, quotes, held, "c1", held_value=values)
    assert plan.orders == []  # gross 0.25 at market value: no cap binds, nothing to sell


@pytest.mark.parametrize(
    ("symbol", "bid", "ask", "volume", "gated"),
    [
        ("AAPL", 99.95, 100.05, 2e9, True),  # 10 bps, a mega cap by volume: cap 8
        ("AAPL", 99.95, 100.05, 5e8, False),  # 10 bps, another stock: cap 25
        ("AAPL", 99.95, 100.05, None, True),  # volume unknown: the strictest stock cap, 8
        ("AAPL", 99.95, 100.05, float("nan"), True),
        ("BTCUSD", 99.85, 100.15, None, False),  # 30 bps, crypto: cap 35
        ("BTCUSD", 99.8, 100.2, None, True),  # 40 bps
        ("AAPL", 99.96, 100.04, 2e9, False),  # 8 bps exactly: at the cap is not over it
    ],
)
def test_the_loops_spread_cap_is_the_contracts(
    symbol: str, bid: float, ask: float, volume: float | None, gated: bool
) -> None:
    volumes = {} if volume is None else {symbol: volume}
    gates = loop_spread_gates({symbol: _book(bid, ask)}, [symbol], volumes)
    assert (symbol in gates) == gated


def test_a_quote_stamped_ahead_of_the_loops_clock_is_held_like_a_stale_one() -> None:
    """A feed with a broken clock stamped its quotes days ahead: never stale by age, they were
    traded. Now one stamped more than the skew ahead is in the stale set (a negative age)."""

    def book(ts_offset: timedelta) -> TopOfBook:
        return TopOfBook(T0 + ts_offset, 99.99, 100.01, 100.0, 100.0)

    skew = timedelta(hours=QUOTE_CLOCK_SKEW_HOURS)
    quotes = {"AAPL": book(timedelta(days=5)), "MSFT": book(skew / 2), "BTCUSD": book(skew * 2)}
    stale = stale_quotes(quotes, T0, 96.0, 2.0)
    assert set(stale) == {"AAPL", "BTCUSD"} and stale["AAPL"] == pytest.approx(-120.0)


def test_sizing_equity_is_the_smaller_of_the_brokers_and_the_account_at_the_quotes() -> None:
    # 400 MSFT marked by the broker at $400 (equity $100k with cash -$60k); the quote says $240
    quotes = {"MSFT": _book(239.95, 240.05)}
    held, values = {"MSFT": 400.0}, {"MSFT": 160_000.0}
    assert sizing_equity(100_000.0, -60_000.0, held, values, quotes) == pytest.approx(36_000.0)
    # a quote wider than the loop's cap marks nothing: the broker's market value stands
    assert sizing_equity(100_000.0, -60_000.0, held, values, {"MSFT": _book(200.0, 280.0)}) == 100_000.0
    # a rally the broker has not marked yet is not spent either: the broker's figure stands
    assert sizing_equity(100_000.0, -60_000.0, held, values, {"MSFT": _book(499.9, 500.1)}) == 100_000.0
    # unquoted: the broker's market value; unknown value: no evidence, the broker's equity
    assert sizing_equity(100_000.0, -60_000.0, held, values, {}) == pytest.approx(100_000.0)
    assert sizing_equity(100_000.0, -60_000.0, {"XYZ": 5.0}, {}, {}) == 100_000.0


class _StaleEquityBroker(FakeBroker):
    """Marks its positions (and so its equity) at ``marks`` (yesterday's closes) while its quotes show
    today's prices: Alpaca's picture before the open after a gap."""

    def __init__(self, cash: float, prices: dict[str, tuple[float, float]], marks: dict[str, float]):
        super().__init__(cash, prices)
        self.marks = marks

    def account(self) -> BrokerAccount:
        equity = self.cash + sum(q * self.marks[s] for s, q in self.qty.items())
        return BrokerAccount(equity, self.cash, 2 * equity, None, "PA-TEST")

    def positions(self) -> list[BrokerPosition]:
        return [BrokerPosition(s, q, q * self.marks[s], self.marks[s]) for s, q in self.qty.items() if q]

    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]:
        return {s: TopOfBook(T0, *self.prices[s], 100.0, 100.0) for s in symbols if s in self.prices}


def test_a_stale_broker_equity_after_a_gap_does_not_size_orders_past_the_caps(tmp_path: Path) -> None:
    """The risk desk's case: 400 MSFT at a $400 mark, cash -$60k (equity $100k by the broker), MSFT
    quoted $240 after a -40 % gap: the account is worth $36k and MSFT alone is 2.67x it. The loop
    sized on $100k and bought AAPL beside the MSFT sale. Now it sizes on $36k: over the gross cap,
    nothing is added, and the MSFT sale is a quarter of the $36k."""
    prices = {"AAPL": (99.99, 100.01), "MSFT": (239.95, 240.05), "BTCUSD": (49_990.0, 50_010.0)}
    broker = _StaleEquityBroker(-60_000.0, prices, {"AAPL": 100.0, "MSFT": 400.0, "BTCUSD": 50_000.0})
    broker.qty["MSFT"] = 400.0
    policy = ScriptedPolicy(
        {"AAPL": (0.1, "aggressive"), "MSFT": (0.15, "aggressive"), "BTCUSD": (0.0, "flat")}
    )
    state = tmp_path / "state.json"
    LiveLoop(broker, policy, ["AAPL", "MSFT", "BTCUSD"], state, tmp_path / "store", reset=True).cycle(T0)
    assert [p.symbol for p in broker.submitted if p.side == "buy"] == []
    (sale,) = broker.submitted
    assert sale.symbol == "MSFT" and sale.qty * 240.0 <= 0.25 * 36_000.0 + 240.0


def test_a_gap_the_broker_has_not_marked_trips_the_kill_switch_at_once(tmp_path: Path) -> None:
    """800 AAPL marked at $100 (the broker says $100k, the peak), AAPL quoted $50 after a -40 % gap:
    the account is worth $60k. The drawdown and the switch used to take the broker's $100k: the switch
    stayed off and the cycle bought MSFT; it tripped a cycle later, once the broker re-marked. Now the
    request carries the marked account (a 40 % drawdown, AAPL at its mid) and the switch is on."""
    prices = {"AAPL": (49.99, 50.01), "MSFT": (99.99, 100.01)}
    broker = _StaleEquityBroker(20_000.0, prices, {"AAPL": 100.0, "MSFT": 100.0})
    broker.qty["AAPL"] = 800.0
    broker.history_peak = 100_000.0
    policy = ScriptedPolicy({"AAPL": (0.4, "aggressive"), "MSFT": (0.1, "aggressive")})
    LiveLoop(broker, policy, ["AAPL", "MSFT"], tmp_path / "state.json", None, reset=True).cycle(T0)
    (request,) = policy.requests
    assert request.account.equity == pytest.approx(60_000.0)
    assert request.drawdown_pct == pytest.approx(-0.4)
    assert request.kill_switch is not None and request.kill_switch.active
    (aapl,) = request.positions
    assert aapl.market_value == pytest.approx(40_000.0) and aapl.current_price == pytest.approx(50.0)
    assert [p.side for p in broker.submitted] == ["sell"]  # the unwind only: nothing bought


def test_a_mark_within_half_a_percent_keeps_the_brokers_account(tmp_path: Path) -> None:
    """The mid differs from the broker's last price by a little every cycle: that is no gap."""
    prices = {"AAPL": (99.69, 99.71), "MSFT": (99.99, 100.01)}
    broker = _StaleEquityBroker(20_000.0, prices, {"AAPL": 100.0, "MSFT": 100.0})
    broker.qty["AAPL"] = 800.0
    policy = ScriptedPolicy({"AAPL": (0.8, "hold"), "MSFT": (0.0, "hold")})
    LiveLoop(broker, policy, ["AAPL", "MSFT"], tmp_path / "state.json", None, reset=True).cycle(T0)
    (request,) = policy.requests
    assert request.account.equity == 100_000.0 and request.positions[0].market_value == 80_000.0


def test_an_account_worth_nothing_at_the_quotes_only_reduces(tmp_path: Path) -> None:
    """400 MSFT at a $400 mark on $100k of debt (the broker says $60k); MSFT quoted $200: the account is
    worth -$20k. The cycle used to raise, every cycle, so not even the unwind went out. Now it sizes
    on the broker's figure and sends only the orders that reduce a position."""
    prices = {"AAPL": (99.99, 100.01), "MSFT": (199.95, 200.05), "BTCUSD": (49_990.0, 50_010.0)}
    broker = _StaleEquityBroker(-100_000.0, prices, {"AAPL": 100.0, "MSFT": 400.0, "BTCUSD": 50_000.0})
    broker.qty["MSFT"] = 400.0
    targets = {"AAPL": (0.1, "aggressive"), "MSFT": (0.1, "aggressive"), "BTCUSD": (0.0, "flat")}
    state = tmp_path / "state.json"
    loop = LiveLoop(
        broker, ScriptedPolicy(targets), ["AAPL", "MSFT", "BTCUSD"], state, tmp_path / "s", reset=True
    )
    loop.cycle(T0)
    assert [(p.symbol, p.side) for p in broker.submitted] == [("MSFT", "sell")]


def test_a_clock_behind_every_feed_is_named_as_ours(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every quote stamped ahead is this machine's clock, not three broken feeds: said so, and held."""
    broker = FakeBroker(
        100_000.0, {"AAPL": (99.99, 100.01), "MSFT": (399.9, 400.1), "BTCUSD": (49_990.0, 50_010.0)}
    )
    targets = {"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.0, "flat")}
    loop = LiveLoop(
        broker, ScriptedPolicy(targets), ["AAPL", "MSFT", "BTCUSD"], tmp_path / "s.json", reset=True
    )
    with caplog.at_level("WARNING"):
        loop.cycle(T0 - timedelta(minutes=10))  # the fake stamps its quotes at T0
    assert broker.submitted == []
    assert "every quote is stamped 10-10 min ahead of this machine's clock" in caplog.text


def test_a_wide_quoted_position_outside_the_answer_counts_at_its_market_value() -> None:
    """A position outside the answer quoted 95/905 counted at the 500 mid against the gross cap (its
    broker value: 1,100 a share), letting AAPL be bought past the cap; now at its market value."""
    held, values = {"AAPL": 0.0, "ODD": 100.0}, {"ODD": 110_000.0}
    answer = _answer({"AAPL": (0.15, 0.0, "aggressive")})
    quoted = {"AAPL": _book(99.99, 100.01), "ODD": _book(95.0, 905.0)}
    wide = plan_cycle(answer, EQUITY, quoted, held, "c1", held_value=values)
    unquoted = plan_cycle(answer, EQUITY, {"AAPL": quoted["AAPL"]}, held, "c1", held_value=values)
    assert [(p.symbol, p.qty) for p in wide.orders] == [(p.symbol, p.qty) for p in unquoted.orders]
    assert [(p.symbol, p.qty) for p in wide.orders] == [("AAPL", 100.0)]  # 1.2 - 1.1 of gross left


def test_a_held_wide_quoted_position_over_its_cap_or_under_the_kill_switch_is_said() -> None:
    """The gate keeps a position the caps or the kill switch would cut; every cycle it stays, the note
    says so, with its weight at market value."""
    held, values = {"AAPL": 400.0}, {"AAPL": 40_000.0}
    quotes = {"AAPL": _book(99.85, 100.15)}  # 30 bps: over the 8 bps cap of a stock of unknown volume
    plan = plan_cycle(
        _answer({"AAPL": (0.4, 0.4, "aggressive")}), EQUITY, quotes, held, "c1", held_value=values
    )
    assert plan.orders == []
    assert plan.notes["AAPL"] == (
        "AAPL: over the per-symbol cap (+0.4000 of equity at its market value > 0.15) while spread 30.0 bps "
        "> the loop's cap 8 bps: held until a quote within the cap"
    )
    killed = _answer({"AAPL": (0.0, 0.1, "aggressive")}).model_copy(update={"kill_switch_active": True})
    plan = plan_cycle(killed, EQUITY, quotes, {"AAPL": 100.0}, "c1", held_value={"AAPL": 10_000.0})
    assert plan.orders == [] and "not unwound by the kill switch while spread 30.0 bps" in plan.notes["AAPL"]


def test_reduce_only_drops_every_order_that_adds_and_keeps_those_that_reduce() -> None:
    """The planner's side of the worthless-account case, with no cap binding: a buy from flat and an
    addition are dropped naming why, a sale of a long and a flip's close go out."""
    answer = _answer(
        {
            "AAPL": (0.05, 0.0, "aggressive"),
            "MSFT": (0.08, 0.04, "aggressive"),
            "NVDA": (-0.02, 0.02, "aggressive"),
        }
    )
    quotes = {s: _book(99.99, 100.01) for s in ("AAPL", "MSFT", "NVDA")}
    held = {"MSFT": 40.0, "NVDA": 20.0}
    why = "the account is worth -20000.00 at this cycle's quotes"
    plan = plan_cycle(answer, EQUITY, quotes, held, "c1", reduce_only=why)
    assert [(p.symbol, p.side, p.qty) for p in plan.orders] == [("NVDA", "sell", 20.0)]
    for symbol in ("AAPL", "MSFT"):
        assert plan.notes[symbol].startswith(f"{symbol}: {why}: unwind only, a buy of")
    free = plan_cycle(answer, EQUITY, quotes, held, "c1")
    assert {p.symbol for p in free.orders} == {"AAPL", "MSFT", "NVDA"}  # without it, all three go
