"""The paper loop keeps to Alpaca's asset flags (``GET /v2/assets``): the real alpaca-py clients against
the fakes of Alpaca's trading and market-data APIs on 127.0.0.1, whose orders follow the flags as
Alpaca's do (``tests.fake_alpaca_trading``: a fractional qty on an asset that is not fractionable, a
short of one Alpaca will not lend, any order on one it does not trade, a crypto qty off its pair's
increment or under its minimum are refused, every cycle).

Book: AAPL 181.90/181.93 (mid 181.915), MSFT 367.90/368.00 (mid 367.95), BTC/USD 44189.5/44190.5
(mid 44190). Every expected quantity below is worked by hand from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from raytrade.cluster.settings import Settings
from raytrade.serve.alpaca_broker import AlpacaBroker
from raytrade.serve.live import CycleReport, LiveLoop
from raytrade.serve.orders import LiveConfig
from tests.fake_alpaca import TEST_KEYS, FakeAlpaca
from tests.fake_alpaca_trading import FakeAlpacaTrading
from tests.live_doubles import T0, ScriptedPolicy


@contextmanager
def _paper(
    tmp_path: Path,
    targets: dict[str, tuple[float, str]],
    *,
    cash: float = 100_000,
    positions: Mapping[str, float] | None = None,
    assets: Mapping[str, dict[str, Any]] | None = None,
    fractional: bool = False,
) -> Iterator[tuple[LiveLoop, FakeAlpacaTrading, ScriptedPolicy]]:
    """A loop trading ``targets``' symbols on a fake paper account holding ``cash`` and ``positions``,
    whose assets have the flags ``assets`` gives (``FakeAlpacaTrading.set_asset``)."""
    with FakeAlpacaTrading(cash=cash, positions=positions or {}) as trading, FakeAlpaca() as data:
        data.stamp_quotes(T0)
        for symbol, flags in (assets or {}).items():
            trading.set_asset(symbol, **flags)
        settings = Settings(
            alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1], alpaca_data_url=data.url
        )
        broker = AlpacaBroker(settings.alpaca_access(), trading_url=trading.url)
        policy = ScriptedPolicy(targets)
        config = LiveConfig(fractional=fractional, account_lock_dir=tmp_path / "locks")
        with LiveLoop(
            broker, policy, list(targets), tmp_path / "state.json", None, config, reset=True
        ) as loop:
            yield loop, trading, policy


def _sent(trading: FakeAlpacaTrading) -> list[tuple[str, str, Decimal]]:
    """(symbol, side, qty) of every order the loop posted, refused ones included."""
    return [
        (r.body["symbol"], r.body["side"], Decimal(str(r.body["qty"])))
        for r in trading.requests
        if r.method == "POST" and r.path == "/v2/orders"
    ]


def _refused(report: CycleReport) -> list[str]:
    return list(report.rejected.values())


# ---------------------------------------------------------------------------------- fractions


def test_a_position_in_an_equity_not_traded_in_fractions_is_cut_in_whole_shares_with_fractional(
    tmp_path: Path,
) -> None:
    """The risk desk's case: 230 AAPL (41 % of equity) against a target of 5 % and a 15 % cap, with
    ``--fractional``. The order cap (25 % of equity 60000 + 230 x 181.915 = 101840.45) is 139.956
    shares; AAPL is not fractionable, so the sale is the whole shares under it, 139 (it was 139.956,
    refused by Alpaca every cycle, and the position never came down)."""
    aapl = {"AAPL": {"fractionable": False}}
    targets = {"AAPL": (0.05, "aggressive")}
    with _paper(tmp_path, targets, cash=60_000, positions={"AAPL": 230}, assets=aapl, fractional=True) as (
        loop,
        trading,
        _,
    ):
        report = loop.cycle(T0)
        assert _refused(report) == []
        assert _sent(trading) == [("AAPL", "sell", Decimal(139))]
        assert trading.position_qty("AAPL") == 91


def test_a_buy_of_an_equity_not_traded_in_fractions_is_whole_shares_and_others_stay_fractional(
    tmp_path: Path,
) -> None:
    """5 % of 100000 in MSFT is 13.5888 shares at the mid 367.95: MSFT is not fractionable, so 13;
    AAPL, which is, still buys 10 % in fractions (54.9707 shares at 181.915, floored to 1e-4)."""
    targets = {"AAPL": (0.1, "aggressive"), "MSFT": (0.05, "aggressive")}
    msft = {"MSFT": {"fractionable": False}}
    with _paper(tmp_path, targets, assets=msft, fractional=True) as (loop, trading, _):
        report = loop.cycle(T0)
        assert _refused(report) == []
        assert sorted(_sent(trading)) == [("AAPL", "buy", Decimal("54.9707")), ("MSFT", "buy", Decimal(13))]


# ---------------------------------------------------------------------------------- shorts


@pytest.mark.parametrize(
    "flags", [{"shortable": False}, {"easy_to_borrow": False}], ids=["not-shortable", "hard-to-borrow"]
)
def test_no_short_opens_on_an_equity_alpaca_will_not_sell_short(
    tmp_path: Path, flags: dict[str, Any]
) -> None:
    """A target of -5 % in AAPL from flat: Alpaca refuses the short sale (not shortable, or not easy
    to borrow: it opens shorts only in easy-to-borrow assets). No order goes out; the note says why."""
    with _paper(tmp_path, {"AAPL": (-0.05, "aggressive")}, assets={"AAPL": flags}) as (loop, trading, _):
        report = loop.cycle(T0)
        assert _sent(trading) == [] and _refused(report) == []
        assert "no short opens or grows: target -0.0500 -> +0.0000" in report.notes["AAPL"]


def test_a_short_alpaca_will_not_lend_more_of_is_not_grown_but_is_still_covered(tmp_path: Path) -> None:
    """Short 20 AAPL (-3.78 % of equity 100000 - 20 x 181.915 = 96361.70), hard to borrow now: a
    target of -10 % sends no sale (it would add to the short); a target of -1 % (-0.01 x 96361.70 /
    181.915 = -5.297 shares) buys to cover, the 14.703 rounded up to whole shares: 15, short 5 left."""
    with _paper(
        tmp_path,
        {"AAPL": (-0.1, "aggressive")},
        positions={"AAPL": -20},
        assets={"AAPL": {"easy_to_borrow": False}},
    ) as (loop, trading, policy):
        report = loop.cycle(T0)
        assert _sent(trading) == [] and _refused(report) == []
        assert "no short opens or grows" in report.notes["AAPL"]
        policy.targets = {"AAPL": (-0.01, "aggressive")}
        report = loop.cycle(T0 + timedelta(minutes=10))
        assert _refused(report) == [] and _sent(trading) == [("AAPL", "buy", Decimal(15))]
        assert trading.position_qty("AAPL") == -5


# ---------------------------------------------------------------------------------- not tradable


@pytest.mark.parametrize("target", [0.1, 0.0], ids=["buy", "exit"])
def test_an_asset_alpaca_does_not_trade_gets_no_order_and_the_others_trade(
    tmp_path: Path, target: float
) -> None:
    """10 AAPL held, AAPL no longer tradable: neither a buy nor an exit goes out (Alpaca refuses any
    order on it), with a note; MSFT still buys 5 % (13 shares)."""
    targets = {"AAPL": (target, "aggressive"), "MSFT": (0.05, "aggressive")}
    with _paper(tmp_path, targets, positions={"AAPL": 10}, assets={"AAPL": {"tradable": False}}) as (
        loop,
        trading,
        _,
    ):
        report = loop.cycle(T0)
        assert _refused(report) == [] and _sent(trading) == [("MSFT", "buy", Decimal(13))]
        assert "the broker does not trade the asset" in report.notes["AAPL"]
        assert trading.position_qty("AAPL") == 10


# ---------------------------------------------------------------------------------- crypto


def test_a_crypto_order_is_in_the_pairs_increment(tmp_path: Path) -> None:
    """2 % of 100000 in BTC is 0.045259 coins at the mid 44190 (to the loop's 1e-6 step); BTC/USD
    trades in steps of 0.0001, so 0.0452 (0.045259 was refused)."""
    btc = {"BTC/USD": {"min_trade_increment": "0.0001"}}
    with _paper(tmp_path, {"BTCUSD": (0.02, "aggressive")}, assets=btc) as (loop, trading, _):
        report = loop.cycle(T0)
        assert _refused(report) == [] and _sent(trading) == [("BTC/USD", "buy", Decimal("0.0452"))]
        assert trading.position_qty("BTC/USD") == Decimal("0.0452")


def test_a_crypto_order_under_the_pairs_minimum_is_not_sent(tmp_path: Path) -> None:
    """The buy of 0.045259 BTC is under BTC/USD's minimum order of 0.1: not sent, noted."""
    btc = {"BTC/USD": {"min_order_size": "0.1"}}
    with _paper(tmp_path, {"BTCUSD": (0.02, "aggressive")}, assets=btc) as (loop, trading, _):
        report = loop.cycle(T0)
        assert _sent(trading) == [] and _refused(report) == []
        assert "below the broker's minimum order size (0.1)" in report.notes["BTCUSD"]


def test_a_crypto_position_under_the_pairs_minimum_is_still_closed_whole(tmp_path: Path) -> None:
    """0.012345 BTC held, under the minimum order of 0.1 and off the 0.0001 increment: a target of 0
    sells exactly what is held (a guard: the minimum must not strand a position it cannot close)."""
    btc = {"BTC/USD": {"min_order_size": "0.1", "min_trade_increment": "0.0001"}}
    with _paper(tmp_path, {"BTCUSD": (0.0, "flat")}, positions={"BTC/USD": 0.012345}, assets=btc) as (
        loop,
        trading,
        _,
    ):
        report = loop.cycle(T0)
        assert _refused(report) == [] and _sent(trading) == [("BTC/USD", "sell", Decimal("0.012345"))]
        assert trading.position_qty("BTC/USD") == 0


# ---------------------------------------------------------------------------------- fail closed


def test_flags_that_cannot_be_read_hold_the_symbol_but_let_a_full_exit_out(tmp_path: Path) -> None:
    """Every read of Alpaca's assets fails (HTTP 500): MSFT's buy is held, noted, never sized on a
    guess of its flags; AAPL's exit still sells exactly the 10 shares held."""
    targets = {"AAPL": (0.0, "flat"), "MSFT": (0.05, "aggressive")}
    with _paper(tmp_path, targets, positions={"AAPL": 10}) as (loop, trading, _):
        trading.fail("/v2/assets", 500, times=None, method="GET")
        report = loop.cycle(T0)
        assert _refused(report) == [] and _sent(trading) == [("AAPL", "sell", Decimal(10))]
        assert "asset flags could not be read" in report.notes["MSFT"]
        assert trading.position_qty("AAPL") == 0


@pytest.mark.parametrize("target", [0.0, 0.05])
def test_flags_that_cannot_be_read_still_let_a_reduction_out_in_whole_shares(
    tmp_path: Path, target: float
) -> None:
    """100 AAPL (18191.50 of equity 28191.50) to a target of 0 (or 5 %) while AAPL's asset cannot be
    read (a 404): the order cap (25 %: 38.7 shares) allows part of the way; that part goes out, in
    whole shares. As first written only an order closing the whole position went out, so a position
    larger than one order's cap (a kill-switch unwind) never came down while the flags failed."""
    with _paper(
        tmp_path, {"AAPL": (target, "flat")}, cash=10_000, positions={"AAPL": 100}, fractional=True
    ) as (
        loop,
        trading,
        _,
    ):
        trading.fail("/v2/assets/AAPL", 404, times=None, method="GET")
        loop.cycle(T0)
        assert _sent(trading) == [("AAPL", "sell", Decimal(38))] and trading.position_qty("AAPL") == 62


def test_flags_that_cannot_be_read_let_no_short_grow_nor_a_long_flip(tmp_path: Path) -> None:
    """AAPL held long to a short target, MSFT short to a larger short: unknown flags let the long
    close toward 0 (never past it) and the short not grow."""
    targets = {"AAPL": (-0.05, "flat"), "MSFT": (-0.2, "flat")}
    with _paper(tmp_path, targets, positions={"AAPL": 10, "MSFT": -10}) as (loop, trading, _):
        trading.fail("/v2/assets", 500, times=None, method="GET")
        trading.fail("/v2/assets/AAPL", 500, times=None, method="GET")
        trading.fail("/v2/assets/MSFT", 500, times=None, method="GET")
        report = loop.cycle(T0)
        assert _sent(trading) == [("AAPL", "sell", Decimal(10))]  # to flat, no short opened
        assert "asset flags could not be read" in report.notes["MSFT"]
        assert trading.position_qty("AAPL") == 0 and trading.position_qty("MSFT") == -10


def test_the_flags_are_read_once_then_again_after_their_age(tmp_path: Path) -> None:
    """Two cycles read AAPL's asset once and the crypto assets once (kept for ``asset_max_age_s``);
    past that age they are read again, so AAPL turned untradable holds the third cycle's buy."""
    targets = {"AAPL": (0.1, "passive"), "BTCUSD": (0.01, "passive")}
    with _paper(tmp_path, targets) as (loop, trading, _):
        loop.cycle(T0)
        loop.cycle(T0 + timedelta(minutes=10))
        reads = [f"{r.method} {r.path}" for r in trading.requests if r.path.startswith("/v2/assets")]
        assert reads == ["GET /v2/assets", "GET /v2/assets/AAPL"]
        listing = next(r for r in trading.requests if r.path == "/v2/assets")
        assert listing.query == {"asset_class": "crypto"}
        trading.set_asset("AAPL", tradable=False)
        loop.broker.asset_max_age_s = 0.0  # type: ignore[attr-defined]
        report = loop.cycle(T0 + timedelta(minutes=20))
        assert "the broker does not trade the asset" in report.notes["AAPL"]
        assert [p.symbol for p in report.plans] == ["BTCUSD"]


def test_a_large_book_reads_its_equities_flags_in_one_listing() -> None:
    """A 500-name book read one ``GET /v2/assets/{symbol}`` each passes Alpaca's 200 requests a minute
    on the first cycle (and every hour after); past ``ASSET_READS_ONE_BY_ONE`` equities it is one
    listing of the class, with each symbol's flags as read one by one."""
    from raytrade.serve.alpaca_broker import ASSET_READS_ONE_BY_ONE

    names = [f"S{i:03d}" for i in range(ASSET_READS_ONE_BY_ONE + 5)]
    book = {name: (10.0, 10.02) for name in names} | {"BTC/USD": (44189.5, 44190.5)}
    with FakeAlpacaTrading(quotes=book) as trading:
        trading.set_asset("S007", fractionable=False)
        trading.set_asset("S011", tradable=False)
        settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1])
        broker = AlpacaBroker(settings.alpaca_access(), trading_url=trading.url)
        few = broker.assets(names[:ASSET_READS_ONE_BY_ONE])
        flags = AlpacaBroker(settings.alpaca_access(), trading_url=trading.url).assets(
            [*names, "BTCUSD", "NOPE"]
        )
    assert set(flags) == {*names, "BTCUSD"}  # NOPE: no such asset, left out (held)
    assert {s: flags[s] for s in few} == few  # the same flags either way
    assert not flags["S007"].fractionable and not flags["S011"].tradable and flags["S000"].fractionable
    reads = [
        (r.path, r.query.get("asset_class")) for r in trading.requests if r.path.startswith("/v2/assets")
    ]
    assert len(reads) == ASSET_READS_ONE_BY_ONE + 2  # one by one, then one listing per class
    assert reads[-2:] in (
        [("/v2/assets", "crypto"), ("/v2/assets", "us_equity")],
        [("/v2/assets", "us_equity"), ("/v2/assets", "crypto")],
    )


def test_flags_that_cannot_be_read_hold_a_part_of_a_crypto_position(tmp_path: Path) -> None:
    """BTC/USD trades in steps of 0.0001; with its flags unreadable the increment is unknown, so a
    part of the position (0.589443 of 1.0) was sent off it and refused every cycle. Only a whole
    exit goes out for a pair whose flags cannot be read."""
    flags = {"BTC/USD": {"min_trade_increment": "0.0001", "min_order_size": "0.0001"}}
    with _paper(
        tmp_path, {"BTCUSD": (0.3, "aggressive")}, cash=60_000, positions={"BTC/USD": 1.0}, assets=flags
    ) as (loop, trading, _):
        trading.fail("/v2/assets", 500, times=None, method="GET")
        report = loop.cycle(T0)
        assert _sent(trading) == [] and _refused(report) == []
        assert "asset flags could not be read" in report.notes["BTCUSD"]
