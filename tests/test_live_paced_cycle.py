"""A cycle whose broker requests take minutes (paced under Alpaca's rate limit: three requests a resting
order before the quotes are read, one an order after) ages its quotes, and asks the policy, as of when
the quotes were read, and sends no order whose quote has aged past its limit by the time its turn
comes. A reviewer's book of 250 resting orders read its quotes four minutes into the cycle: aged at
the cycle's start, quotes 33 minutes old (a halt) passed the 30-minute open-market limit; at 400,
fresh quotes read six minutes in were "stamped ahead of this machine's clock" and held, every other
cycle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from raytrade.replay import read_frame
from raytrade.replay.sources.alpaca import TopOfBook
from raytrade.serve.live import BrokerPosition, LiveLoop
from raytrade.serve.orders import OrderPlan
from tests.live_doubles import ScriptedPolicy
from tests.test_live import PRICES, T0, FakeBroker, _loop

BUYS = {"AAPL": (0.1, "aggressive"), "MSFT": (0.1, "aggressive"), "BTCUSD": (0.0, "flat")}


class _Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class _Slow(FakeBroker):
    """Quotes stamped ``stamp``; reading the positions (after the sync and the cancels) takes
    ``sync_s`` of the loop's clock, and each submit ``submit_s``."""

    def __init__(self, clock: _Clock, stamp: datetime, sync_s: float = 0.0, submit_s: float = 0.0) -> None:
        super().__init__(100_000.0, PRICES)
        self.clock, self.stamp, self.sync_s, self.submit_s = clock, stamp, sync_s, submit_s

    def positions(self) -> list[BrokerPosition]:
        self.clock.seconds += self.sync_s
        return super().positions()

    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]:
        return {s: q._replace(ts=self.stamp) for s, q in super().quotes(symbols).items()}

    def submit(self, plan: OrderPlan) -> str:
        self.clock.seconds += self.submit_s
        return super().submit(plan)


def _paced(tmp_path: Path, broker: _Slow, market_open: bool) -> LiveLoop:
    broker.is_open = market_open
    loop = _loop(tmp_path, broker, ScriptedPolicy(BUYS))
    loop.monotonic = broker.clock
    return loop


def test_quotes_are_aged_when_they_were_read_not_when_the_cycle_began(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Market open; quotes 27 minutes old at the cycle's start, read four minutes in: 31 minutes old,
    past the 30-minute limit. Before, aged at the start, every order went out."""
    broker = _Slow(_Clock(), T0 - timedelta(minutes=27), sync_s=240.0)
    with caplog.at_level("WARNING"):
        _paced(tmp_path, broker, market_open=True).cycle(T0)
    assert broker.submitted == []
    assert "AAPL (31 min old)" in caplog.text


def test_fresh_quotes_read_minutes_into_a_cycle_are_not_ahead_of_its_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Quotes read six minutes into the cycle, stamped then. Before, they were "stamped 6 min ahead
    of this machine's clock" and the whole book was held, every other cycle."""
    broker = _Slow(_Clock(), T0 + timedelta(minutes=6), sync_s=360.0)
    policy_asked = []
    loop = _paced(tmp_path, broker, market_open=False)
    ask = loop.policy.act

    def act(request: object, **kwargs: object) -> object:
        policy_asked.append(request)
        return ask(request, **kwargs)  # type: ignore[arg-type]

    loop.policy.act = act  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        loop.cycle(T0)
    assert sorted(p.symbol for p in broker.submitted) == ["AAPL", "MSFT"]
    assert "ahead" not in caplog.text
    assert policy_asked[0].as_of == T0 + timedelta(minutes=6)  # the policy asked as of the read


def test_an_order_whose_quote_aged_past_its_limit_during_the_submits_is_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Market open, quotes 20 minutes old when read; each submit takes 11 minutes (a long paced
    basket): the second order's quote is 31 minutes old by its turn."""
    broker = _Slow(_Clock(), T0 - timedelta(minutes=20), submit_s=660.0)
    with caplog.at_level("WARNING"):
        report = _paced(tmp_path, broker, market_open=True).cycle(T0)
    assert len(broker.submitted) == 1 and len(report.submitted) == 1
    (why,) = report.rejected.values()
    assert "its quote is 31 min old by now, past its limit" in why


def test_a_fills_latency_counts_from_its_submit_not_from_the_cycles_start(tmp_path: Path) -> None:
    """Six minutes of paced sync, then a submit the broker fills a second later: the fill row said
    361,000 ms (counted from the cycle's start)."""

    class Fills(_Slow):
        def submit(self, plan: OrderPlan) -> str:
            order_id = super().submit(plan)
            filled = T0 + timedelta(seconds=self.clock.seconds + 1)  # a second after it arrived
            self.orders[order_id] = self.orders[order_id]._replace(filled_at=filled)
            return order_id

    broker = Fills(_Clock(), T0 + timedelta(minutes=6), sync_s=360.0)
    loop = _paced(tmp_path, broker, market_open=False)
    loop.cycle(T0)
    broker.stamp = T0 + timedelta(minutes=70)
    loop.cycle(T0 + timedelta(minutes=60))
    rows = read_frame(tmp_path / "store", "experience")
    fills = rows[rows["decision_id"].str.endswith(":fill")]
    assert len(fills) == 2 and (fills["latency_order_to_fill_ms"] == 1000.0).all()
