"""The live loop's gross budget counts the unfilled remainder of orders that may still fill: a resting
order whose cancel is stuck cannot take the account past the gross cap when it fills later, and one
whose size cannot be known holds all new risk."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from raytrade.cluster.settings import Settings
from raytrade.serve.alpaca_broker import AlpacaBroker
from raytrade.serve.caps import ExposureCaps
from raytrade.serve.live import LiveLoop, LiveState, OrderState
from raytrade.serve.orders import OrderPlan
from tests.fake_alpaca import TEST_KEYS, FakeAlpaca
from tests.fake_alpaca_trading import FakeAlpacaTrading
from tests.live_doubles import T0, ScriptedPolicy
from tests.test_live import FakeBroker

HELD = ["MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AVGO"]
"""Seven positions of 150 shares at a $100 mid: 0.15 of a $100k account each, 1.05 gross."""
SYMBOLS = ["AAPL", "JPM", *HELD]
PRICES = {s: (99.99, 100.01) for s in SYMBOLS}
GROSS_CAP = ExposureCaps().gross_limit  # 1.2


class _StuckCancel(FakeBroker):
    """A cancel is accepted but never completes (Alpaca's ``pending_cancel``): the order may still
    fill, and :meth:`fill` fills a resting limit at its limit price."""

    def cancel(self, order_id: str) -> None:
        self.cancelled.append(order_id)
        self.orders[order_id] = self.orders[order_id]._replace(status="pending_cancel")

    def fill(self, order_id: str) -> None:
        o = self.orders[order_id]
        symbol, side, _ = self.sides[order_id]
        assert o.qty is not None and o.limit_price is not None and side == "buy"
        self.qty[symbol] = self.qty.get(symbol, 0.0) + o.qty
        self.cash -= o.qty * o.limit_price
        self.orders[order_id] = o._replace(status="filled", filled_qty=o.qty, filled_avg_price=o.limit_price)

    def gross(self) -> float:
        equity = self.account().equity
        return sum(abs(q * self._mid(s)) for s, q in self.qty.items()) / equity


def _nearly_full_account() -> _StuckCancel:
    broker = _StuckCancel(100_000.0 - 105_000.0, PRICES)  # equity $100k: cash + 7 x $15k
    broker.qty.update({s: 150.0 for s in HELD})
    assert broker.account().equity == pytest.approx(100_000.0)
    return broker


def test_a_resting_buy_whose_cancel_is_stuck_keeps_its_room_in_the_gross_budget(tmp_path: Path) -> None:
    """AAPL's 0.10 buy rests and its cancel sticks in ``pending_cancel``; JPM then asks for 0.15. The
    budget left is 1.2 - 1.05 held - 0.10 that AAPL's remainder can still add = 0.05: 50 JPM at the
    $100 mid. When AAPL fills after all, the account is at the cap, not past it. (Without the
    remainder counted JPM got 150 shares and the fill took gross to 1.30.)"""
    broker = _nearly_full_account()
    policy = ScriptedPolicy({"AAPL": (0.10, "passive")})
    loop = LiveLoop(broker, policy, SYMBOLS, tmp_path / "s.json", reset=True)
    loop.cancel_confirm_s = 0.0
    first = loop.cycle(T0)
    assert [(p.symbol, p.side, p.qty, p.limit_price) for p in first.plans] == [("AAPL", "buy", 100.0, 99.99)]
    (aapl_order,) = first.submitted.values()

    policy.targets = {"AAPL": (0.10, "passive"), "JPM": (0.15, "aggressive")}
    second = loop.cycle(T0 + timedelta(minutes=5))
    assert broker.cancelled == [aapl_order]
    assert [(p.symbol, p.side, p.qty) for p in second.plans] == [("JPM", "buy", 50.0)]

    broker.fill(aapl_order)  # the cancel came too late
    assert broker.gross() <= GROSS_CAP


def _old_state_file(path: Path) -> None:
    """A state file as the previous version wrote it: its pending order has no quantity."""
    path.write_text(
        json.dumps(
            {
                "account_id": "PA-TEST",
                "peak_equity": 100_000.0,
                "pending": [
                    {
                        "decision_id": "20261123T143000000000Z:AAPL",
                        "client_order_id": "rt-20261123T143000000000Z-AAPL",
                        "order_id": "o-old",
                        "status": "submitted",
                        "symbol": "AAPL",
                        "side": "buy",
                        "mid": 100.0,
                        "target_weight": 0.1,
                        "policy_version": "alpha@1",
                        "submitted_at": "2026-11-23T14:30:00+00:00",
                    }
                ],
            }
        )
    )


def test_an_order_of_unknown_size_holds_every_order_that_adds_gross(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An order from an old state file (no quantity) rests, its cancel stuck, and the broker does not
    report its size either: it could add any amount, so this cycle sends no order that adds gross
    (NVDA's buy is held, with a log line saying why) while MSFT's reduction still goes out. Once the
    broker reports the order's size, the next cycle sizes around it and buys NVDA."""
    broker = _StuckCancel(100_000.0 - 10_000.0, {s: (100.0, 100.0) for s in SYMBOLS})  # no spread
    broker.qty["MSFT"] = 100.0  # 0.10 of equity
    broker.orders["o-old"] = OrderState("o-old", "new", 0.0, None, None)  # no qty, no limit price
    broker.sides["o-old"] = ("AAPL", "buy", "rt-20261123T143000000000Z-AAPL")
    state_file = tmp_path / "s.json"
    _old_state_file(state_file)
    assert [p.get("qty") for p in LiveState.load(state_file).pending] == [None]  # the old file loads

    policy = ScriptedPolicy({"MSFT": (0.05, "aggressive"), "NVDA": (0.10, "aggressive")})
    loop = LiveLoop(broker, policy, ["AAPL", "MSFT", "NVDA"], state_file)
    loop.cancel_confirm_s = 0.0
    with caplog.at_level(logging.WARNING, logger="raytrade.live"):
        first = loop.cycle(T0)
    assert broker.cancelled == ["o-old"]
    assert [(p.symbol, p.side, p.qty) for p in first.plans] == [("MSFT", "sell", 50.0)]
    assert "unknown size" in (first.plans[0].note or "")
    assert any(
        "rt-20261123T143000000000Z-AAPL" in r.getMessage() and "size is unknown" in r.getMessage()
        for r in caplog.records
    )

    broker.orders["o-old"] = broker.orders["o-old"]._replace(qty=100.0, limit_price=100.0)
    second = loop.cycle(T0 + timedelta(minutes=5))
    assert [(p.symbol, p.side, p.qty) for p in second.plans] == [("NVDA", "buy", 100.0)]
    (old,) = [p for p in json.loads(state_file.read_text())["pending"] if p["order_id"] == "o-old"]
    assert (old["qty"], old["limit_price"], old["filled_qty"]) == (100.0, 100.0, 0.0)


def test_an_order_is_saved_with_its_size_before_it_is_submitted(tmp_path: Path) -> None:
    """The intent written before the submit carries the order's quantity, side and limit price: a
    restart (or a lost answer) can size its remainder without asking the broker."""

    class _Crash(BaseException):
        pass

    class _Crashing(FakeBroker):
        def submit(self, plan: OrderPlan) -> str:
            raise _Crash

    state_file = tmp_path / "s.json"
    loop = LiveLoop(
        _Crashing(100_000.0, PRICES),
        ScriptedPolicy({"AAPL": (0.05, "passive")}),
        ["AAPL"],
        state_file,
        reset=True,
    )
    with pytest.raises(_Crash):
        loop.cycle(T0)
    (intent,) = json.loads(state_file.read_text())["pending"]
    assert (intent["status"], intent["side"], intent["qty"], intent["limit_price"], intent["filled_qty"]) == (
        "planned",
        "buy",
        50.0,
        99.99,
        0.0,
    )


def _alpaca(trading: FakeAlpacaTrading, data: FakeAlpaca) -> Any:
    settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1], alpaca_data_url=data.url)
    return AlpacaBroker(settings.alpaca_access(), trading_url=trading.url)


def test_alpacas_order_reports_its_quantity_and_limit_price_and_the_loop_adopts_them(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    """Through alpaca-py: an order's ``qty`` and ``limit_price`` reach :class:`OrderState`, an order
    for a notional has no quantity (unknown size), and an adopted order's record keeps its size."""
    trading, data = fakes
    client = TradingClient(*TEST_KEYS, paper=True, url_override=trading.url)
    resting = client.submit_order(
        LimitOrderRequest(
            symbol="MSFT",
            qty=2,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=300.0,
            client_order_id="rt-20261101T143000000000Z-MSFT",
        )
    )
    notional = client.submit_order(
        MarketOrderRequest(symbol="AAPL", notional=500, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )
    broker = _alpaca(trading, data)
    (listed,) = broker.open_orders()
    assert (listed.side, listed.qty, listed.limit_price, listed.filled_qty) == ("buy", 2.0, 300.0, 0.0)
    assert broker.order(str(notional.id)).qty is None  # type: ignore[union-attr]

    state_file = tmp_path / "s.json"
    LiveLoop(broker, ScriptedPolicy({}), ["MSFT"], state_file, reset=True).start()
    (adopted,) = json.loads(state_file.read_text())["pending"]
    assert adopted["order_id"] == str(resting.id)  # type: ignore[union-attr]
    assert (adopted["side"], adopted["qty"], adopted["limit_price"], adopted["filled_qty"]) == (
        "buy",
        2.0,
        300.0,
        0.0,
    )
