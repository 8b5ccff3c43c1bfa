"""The trading fake, driven by the real alpaca-py ``TradingClient`` over loopback (no network).

Book (``DEFAULT_QUOTES``): AAPL 181.90/181.93 (mid 181.915), MSFT 367.90/368.00 (mid 367.95),
BTC/USD 44189.5/44190.5 (mid 44190). Start: 100000 cash, 10 AAPL, 0.5 BTC, so equity is
100000 + 10 x 181.915 + 0.5 x 44190 = 123914.15. Every expected number below is worked by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

from tests.fake_alpaca_trading import TEST_KEYS, FakeAlpacaTrading

START_EQUITY = Decimal("123914.15")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeAlpacaTrading]:
    with FakeAlpacaTrading(cash=100_000, positions={"AAPL": 10, "BTC/USD": 0.5}) as server:
        yield server


@pytest.fixture
def client(fake: FakeAlpacaTrading) -> TradingClient:
    return TradingClient(*TEST_KEYS, paper=True, url_override=fake.url)


def _market(symbol: str, side: OrderSide, qty: float, **kw: Any) -> MarketOrderRequest:
    tif = TimeInForce.GTC if "/" in symbol else TimeInForce.DAY
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=tif, **kw)


def _limit(symbol: str, side: OrderSide, qty: float, price: float, **kw: Any) -> LimitOrderRequest:
    tif = TimeInForce.GTC if "/" in symbol else TimeInForce.DAY
    return LimitOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=tif, limit_price=price, **kw)


def _api_error(call: Any, *args: Any) -> APIError:
    with pytest.raises(APIError) as info:
        call(*args)
    return info.value


def _d(value: Any) -> Decimal:
    return Decimal(str(value))


def _positions(client: TradingClient) -> dict[str, Any]:
    listed: Any = client.get_all_positions()
    return {p.symbol: p for p in listed}


def test_account_parses_with_the_starting_numbers(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    account: Any = client.get_account()
    assert (account.status.value, account.currency) == ("ACTIVE", "USD")
    assert _d(account.cash) == 100_000
    assert _d(account.equity) == _d(account.portfolio_value) == START_EQUITY
    assert _d(account.last_equity) == START_EQUITY
    assert _d(account.long_market_value) == Decimal("23914.15")
    assert _d(account.buying_power) == 100_000
    assert fake.paths() == ["GET /v2/account"]
    assert fake.requests[0].headers["APCA-API-KEY-ID"] == TEST_KEYS[0]


def test_last_equity_is_what_the_test_sets(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    fake.last_equity = 120_000.5
    assert _d(client.get_account().last_equity) == Decimal("120000.5")  # type: ignore[union-attr]


def test_positions_list_equity_and_crypto_in_alpacas_spelling(client: TradingClient) -> None:
    by_symbol = _positions(client)
    assert sorted(by_symbol) == ["AAPL", "BTCUSD"]  # crypto positions come back unslashed
    aapl, btc = by_symbol["AAPL"], by_symbol["BTCUSD"]
    assert (aapl.asset_class.value, aapl.side.value, _d(aapl.qty)) == ("us_equity", "long", 10)
    assert (_d(aapl.current_price), _d(aapl.market_value)) == (Decimal("181.915"), Decimal("1819.15"))
    assert (btc.asset_class.value, btc.exchange.value, _d(btc.qty)) == ("crypto", "CRYPTO", Decimal("0.5"))
    assert _d(btc.market_value) == 22095
    assert _d(btc.unrealized_pl) == 0  # starting positions are entered at the mid


def test_open_position_is_found_only_unslashed(client: TradingClient) -> None:
    assert _d(client.get_open_position("BTCUSD").qty) == Decimal("0.5")  # type: ignore[union-attr]
    assert _api_error(client.get_open_position, "BTC/USD").status_code == 404


def test_market_buy_fills_at_the_ask(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    order: Any = client.submit_order(_market("MSFT", OrderSide.BUY, 5))
    assert order.status == OrderStatus.FILLED
    assert (_d(order.filled_qty), _d(order.filled_avg_price)) == (5, 368)
    assert order.filled_at is not None and order.position_intent.value == "buy_to_open"
    account: Any = client.get_account()
    assert _d(account.cash) == Decimal("98160")  # 100000 - 5 x 368
    # 98160 + 5 x 367.95 + 23914.15: the half spread on 5 shares (0.25) is gone from equity
    assert _d(account.equity) == START_EQUITY - Decimal("0.25") == fake.equity()
    assert fake.position_qty("MSFT") == 5


def test_fractional_market_sell_fills_at_the_bid(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    order: Any = client.submit_order(_market("AAPL", OrderSide.SELL, 2.5))
    assert (_d(order.filled_avg_price), order.position_intent.value) == (Decimal("181.9"), "sell_to_close")
    assert fake.cash == Decimal("100454.75")  # + 2.5 x 181.90
    assert fake.position_qty("AAPL") == Decimal("7.5")


def test_notional_crypto_buy_trades_the_floor_to_nine_decimals(
    fake: FakeAlpacaTrading, client: TradingClient
) -> None:
    order: Any = client.submit_order(
        MarketOrderRequest(symbol="BTC/USD", notional=1000, side=OrderSide.BUY, time_in_force=TimeInForce.GTC)
    )
    qty = (Decimal(1000) / Decimal("44190.5")).quantize(Decimal("1e-9"), rounding=ROUND_DOWN)
    assert (order.symbol, order.qty, _d(order.notional), _d(order.filled_qty)) == ("BTC/USD", None, 1000, qty)
    assert fake.cash == 100_000 - qty * Decimal("44190.5")
    assert fake.position_qty("BTCUSD") == Decimal("0.5") + qty


def test_short_sale_from_flat_opens_a_short(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    client.submit_order(_market("MSFT", OrderSide.SELL, 3))
    msft = _positions(client)["MSFT"]
    assert (msft.side.value, _d(msft.qty), _d(msft.market_value)) == ("short", -3, Decimal("-1103.85"))
    assert fake.cash == Decimal("101103.7")  # + 3 x 367.90
    assert fake.equity() == START_EQUITY - Decimal("0.15")


def test_marketable_limit_fills_at_once_at_the_ask(client: TradingClient) -> None:
    order: Any = client.submit_order(_limit("MSFT", OrderSide.BUY, 2, 400))
    assert (order.status, _d(order.filled_avg_price), _d(order.limit_price)) == (OrderStatus.FILLED, 368, 400)


def test_resting_limit_holds_buying_power_then_fills_at_its_price(
    fake: FakeAlpacaTrading, client: TradingClient
) -> None:
    order: Any = client.submit_order(_limit("MSFT", OrderSide.BUY, 10, 360))
    assert (order.status, _d(order.filled_qty), order.filled_avg_price) == (OrderStatus.NEW, 0, None)
    assert [o.id for o in client.get_orders()] == [order.id]  # type: ignore[union-attr]
    account: Any = client.get_account()
    assert (_d(account.cash), _d(account.buying_power)) == (100_000, 96_400)  # 10 x 360 held
    assert fake.fill_open_orders() == [str(order.id)]
    filled: Any = client.get_order_by_id(order.id)
    assert (filled.status, _d(filled.filled_qty), _d(filled.filled_avg_price)) == (
        OrderStatus.FILLED,
        10,
        360,
    )
    assert fake.cash == 96_400 and fake.position_qty("MSFT") == 10
    assert client.get_orders() == []


def test_cancel_closes_a_resting_order(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    order: Any = client.submit_order(_limit("AAPL", OrderSide.BUY, 1, 150, client_order_id="cid-1"))
    client.cancel_order_by_id(order.id)
    canceled: Any = client.get_order_by_client_id("cid-1")
    assert (canceled.status, canceled.canceled_at is not None) == (OrderStatus.CANCELED, True)
    closed: Any = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert [o.id for o in closed] == [order.id] and client.get_orders() == []
    assert fake.fill_open_orders() == [] and fake.cash == 100_000
    again = _api_error(client.cancel_order_by_id, order.id)
    assert (again.status_code, again.message) == (422, 'order is already in "canceled" state')


def test_duplicate_client_order_id_is_422(client: TradingClient) -> None:
    client.submit_order(_market("AAPL", OrderSide.BUY, 1, client_order_id="once"))
    err = _api_error(client.submit_order, _market("MSFT", OrderSide.BUY, 1, client_order_id="once"))
    assert (err.status_code, err.code, err.message) == (422, 40010001, "client_order_id must be unique")


def test_unknown_symbol_is_422(client: TradingClient) -> None:
    err = _api_error(client.submit_order, _market("NOPE", OrderSide.BUY, 1))
    assert (err.status_code, err.code, err.message) == (422, 42210000, 'asset "NOPE" not found')


def test_non_positive_qty_is_422(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    err = _api_error(client.submit_order, _market("AAPL", OrderSide.BUY, -1))  # alpaca-py lets it through
    assert (err.status_code, err.code) == (422, 40010001)
    assert fake.cash == 100_000


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day"}, 422, 40010001),
        ({"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}, 422, 40010001),
        (
            {"symbol": "AAPL", "qty": 0.5, "side": "buy", "type": "market", "time_in_force": "gtc"},
            422,
            42210000,
        ),
        (
            {"symbol": "BTC/USD", "qty": 0.1, "side": "buy", "type": "market", "time_in_force": "day"},
            422,
            42210000,
        ),
        (
            {"symbol": "MSFT", "qty": 0.5, "side": "sell", "type": "market", "time_in_force": "day"},
            422,
            42210000,
        ),
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "stop", "time_in_force": "day"}, 422, 40010001),
    ],
    ids=["limit-without-price", "no-qty", "fractional-gtc", "crypto-day", "fractional-short", "stop"],
)
def test_malformed_orders_are_refused(
    client: TradingClient, body: dict[str, Any], status: int, code: int
) -> None:
    err = _api_error(client.post, "/orders", body)
    assert (err.status_code, err.code) == (status, code)


def test_wrong_keys_are_401(fake: FakeAlpacaTrading) -> None:
    stranger = TradingClient("PKWRONG", "wrong-secret", paper=True, url_override=fake.url)
    err = _api_error(stranger.get_account)
    assert (err.status_code, err.code) == (401, 40110000)


def test_crypto_cannot_go_short(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    err = _api_error(client.submit_order, _market("BTC/USD", OrderSide.SELL, 1))
    assert (err.status_code, err.code) == (403, 40310000)
    assert err.message == "insufficient balance for BTC (requested: 1, available: 0.5)"
    assert fake.position_qty("BTC/USD") == Decimal("0.5")


def test_equity_cannot_flip_through_zero_in_one_order(client: TradingClient) -> None:
    err = _api_error(client.submit_order, _market("AAPL", OrderSide.SELL, 15))
    assert (err.status_code, err.message) == (
        403,
        "insufficient qty available for order (requested: 15, available: 10)",
    )


def test_open_sell_holds_the_shares_it_would_sell(client: TradingClient) -> None:
    client.submit_order(_limit("AAPL", OrderSide.SELL, 10, 200))
    aapl = _positions(client)["AAPL"]
    assert _d(aapl.qty_available) == 0
    err = _api_error(client.submit_order, _market("AAPL", OrderSide.SELL, 1))
    assert err.message == "insufficient qty available for order (requested: 1, available: 0)"


def test_buy_beyond_buying_power_is_403(client: TradingClient) -> None:
    err = _api_error(client.submit_order, _market("MSFT", OrderSide.BUY, 300))  # 300 x 368 = 110400
    assert (err.status_code, err.message) == (403, "insufficient buying power")


def test_ioc_limit_that_cannot_fill_is_canceled(client: TradingClient) -> None:
    order: Any = client.submit_order(
        LimitOrderRequest(
            symbol="BTCUSD", qty=0.1, side=OrderSide.BUY, time_in_force=TimeInForce.IOC, limit_price=40_000
        )
    )
    assert (order.symbol, order.status) == ("BTC/USD", OrderStatus.CANCELED)


def test_fail_injects_errors_then_recovers(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    fake.fail("/v2/account", 500, times=2)
    assert _api_error(client.get_account).status_code == 500
    assert _api_error(client.get_account).status_code == 500
    assert _d(client.get_account().equity) == START_EQUITY  # type: ignore[union-attr]


def test_order_requests_are_recorded_with_their_body(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    client.submit_order(_limit("AAPL", OrderSide.BUY, 1, 150, client_order_id="rec-1"))
    (post,) = [r for r in fake.requests if r.method == "POST"]
    assert post.path == "/v2/orders"
    assert post.body == {
        "symbol": "AAPL",
        "qty": 1.0,
        "side": "buy",
        "type": "limit",
        "time_in_force": "day",
        "client_order_id": "rec-1",
        "limit_price": 150.0,
    }


def test_assets_parse_in_alpacas_shape(fake: FakeAlpacaTrading, client: TradingClient) -> None:
    from alpaca.trading.enums import AssetClass
    from alpaca.trading.requests import GetAssetsRequest

    aapl: Any = client.get_asset("AAPL")
    assert (aapl.symbol, aapl.asset_class, aapl.tradable, aapl.fractionable) == (
        "AAPL",
        "us_equity",
        True,
        True,
    )
    assert (aapl.shortable, aapl.easy_to_borrow, aapl.min_order_size) == (True, True, None)
    for spelling in ("BTCUSD", "BTC/USD"):
        btc: Any = client.get_asset(spelling)
        assert (btc.symbol, btc.asset_class, btc.shortable) == ("BTC/USD", "crypto", False)
        assert (btc.min_order_size, btc.min_trade_increment) == (1e-9, 1e-9)
    fake.set_asset("BTCUSD", min_trade_increment="0.0001", tradable=False)
    pairs: Any = client.get_all_assets(GetAssetsRequest(asset_class=AssetClass.CRYPTO))
    by_symbol = {a.symbol: a for a in pairs}
    assert sorted(by_symbol) == sorted(s for s in fake._quotes if "/" in s)
    assert (by_symbol["BTC/USD"].min_trade_increment, by_symbol["BTC/USD"].tradable) == (0.0001, False)
    assert _api_error(client.get_asset, "NOPE").status_code == 404


@pytest.mark.parametrize(
    ("flags", "order", "message"),
    [
        ({"tradable": False}, ("AAPL", OrderSide.SELL, 1), 'asset "AAPL" is not tradable'),
        ({"status": "inactive"}, ("AAPL", OrderSide.BUY, 1), 'asset "AAPL" is not tradable'),
        ({"fractionable": False}, ("AAPL", OrderSide.SELL, 0.5), 'asset "AAPL" is not fractionable'),
        ({"shortable": False}, ("MSFT", OrderSide.SELL, 1), 'asset "MSFT" cannot be sold short'),
        ({"easy_to_borrow": False}, ("MSFT", OrderSide.SELL, 1), 'asset "MSFT" cannot be sold short'),
    ],
    ids=["untradable", "inactive", "not-fractionable", "not-shortable", "hard-to-borrow"],
)
def test_orders_follow_the_asset_flags(
    fake: FakeAlpacaTrading,
    client: TradingClient,
    flags: dict[str, Any],
    order: tuple[str, OrderSide, float],
    message: str,
) -> None:
    fake.set_asset(order[0], **flags)
    err = _api_error(client.submit_order, _market(*order))
    assert (err.status_code, err.code, err.message) == (422, 42210000, message)
    client.submit_order(_market("AAPL" if order[0] == "MSFT" else "MSFT", OrderSide.BUY, 1))  # others trade


def test_a_crypto_qty_follows_the_pairs_minimum_and_increment_but_a_whole_close_passes(
    fake: FakeAlpacaTrading, client: TradingClient
) -> None:
    fake.set_asset("BTC/USD", min_order_size="0.6", min_trade_increment="0.0001")
    assert _api_error(client.submit_order, _market("BTC/USD", OrderSide.BUY, 0.1)).code == 40010001  # < 0.6
    assert _api_error(client.submit_order, _market("BTC/USD", OrderSide.BUY, 0.60005)).code == 40010001
    client.submit_order(_market("BTC/USD", OrderSide.SELL, 0.5))  # the whole 0.5 held, under the minimum
    assert fake.position_qty("BTC/USD") == 0
