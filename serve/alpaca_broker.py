"""The live loop's broker on Alpaca (alpaca-py ``TradingClient``, paper account only).

Symbols are the store's spelling (``BTCUSD``); orders go out in Alpaca's (``BTC/USD``). Quotes come
from :func:`replay.sources.alpaca.fetch_top_of_book` (latest stock quote, latest crypto order book).
Keys come from an :class:`replay.credentials.AlpacaAccess` (built by the entrypoint from its settings)
and are read only to build the clients. A refused or
failed call is a one-line :class:`replay.sources.alpaca.SourceError` (status and Alpaca's message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raytrade.replay.credentials import AlpacaAccess, check_secure_url
from raytrade.replay.sources.alpaca import TopOfBook, alpaca_call, fetch_top_of_book, parse_symbol
from raytrade.serve.live import BrokerAccount, BrokerPosition, OrderState
from raytrade.serve.orders import OrderPlan


def _float(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


class AlpacaBroker:
    """:class:`serve.live.Broker` over an Alpaca **paper** account."""

    def __init__(self, access: AlpacaAccess, trading_url: str | None = None, data_url: str | None = None):
        from alpaca.trading.client import TradingClient

        creds = access.credentials()
        url = check_secure_url(trading_url, field="trading_url") if trading_url else None
        self._access, self._data_url = access, data_url
        self._client = TradingClient(
            creds.api_key.get_secret_value(),
            creds.secret_key.get_secret_value(),
            paper=True,
            url_override=url,
        )

    def __repr__(self) -> str:
        return "AlpacaBroker(paper=True)"

    def account(self) -> BrokerAccount:
        with alpaca_call("trading account"):
            a: Any = self._client.get_account()
        equity = _float(a.equity)
        if equity is None or equity <= 0:
            raise RuntimeError(f"Alpaca account has no usable equity ({a.equity!r})")
        return BrokerAccount(
            equity=equity,
            cash=_float(a.cash) or 0.0,
            buying_power=_float(a.buying_power) or 0.0,
            last_equity=_float(a.last_equity),
        )

    def positions(self) -> list[BrokerPosition]:
        out = []
        with alpaca_call("trading positions"):
            held = self._client.get_all_positions()
        for p in held:
            pos: Any = p
            qty = abs(float(pos.qty))
            sign = -1.0 if _enum_text(pos.side) == "short" else 1.0
            out.append(
                BrokerPosition(
                    symbol=parse_symbol(str(pos.symbol)).name,
                    qty=sign * qty,
                    market_value=sign * abs(_float(pos.market_value) or 0.0),
                    current_price=_float(pos.current_price),
                )
            )
        return out

    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]:
        return fetch_top_of_book(symbols, self._access, url_override=self._data_url)

    def submit(self, plan: OrderPlan) -> str:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

        common: dict[str, Any] = {
            "symbol": parse_symbol(plan.symbol).alpaca,
            "qty": plan.qty,
            "side": OrderSide.BUY if plan.side == "buy" else OrderSide.SELL,
            "time_in_force": TimeInForce.GTC if plan.time_in_force == "gtc" else TimeInForce.DAY,
            "client_order_id": plan.client_order_id,
        }
        request = (
            LimitOrderRequest(limit_price=plan.limit_price, **common)
            if plan.order_type == "limit"
            else MarketOrderRequest(**common)
        )
        with alpaca_call(f"{plan.side} order", [plan.symbol]):
            order: Any = self._client.submit_order(request)
        return str(order.id)

    def cancel(self, order_id: str) -> None:
        with alpaca_call(f"cancel of order {order_id}"):
            self._client.cancel_order_by_id(order_id)

    def order(self, order_id: str) -> OrderState:
        with alpaca_call(f"order {order_id}"):
            o: Any = self._client.get_order_by_id(order_id)
        return OrderState(
            order_id=str(o.id),
            status=_enum_text(o.status),
            filled_qty=_float(o.filled_qty) or 0.0,
            filled_avg_price=_float(o.filled_avg_price),
            filled_at=o.filled_at,
        )
