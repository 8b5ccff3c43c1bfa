"""Order planning for the live loop: hand-computed quantities, caps, dust, flips, crypto, holds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raytrade.replay.sources.alpaca import TopOfBook
from raytrade.serve.caps import ExposureCaps
from raytrade.serve.orders import LiveConfig, RestingOrder, plan_cycle, plan_orders, resting_exposure
from raytrade.serve.schemas import ActResponse, SymbolDecision

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
EQUITY = 100_000.0


def _book(bid: float, ask: float) -> TopOfBook:
    return TopOfBook(NOW, bid, ask, 100.0, 100.0)


def _answer(decisions: dict[str, tuple[float, float, str]], fallback: bool = False) -> ActResponse:
    """``decisions``: symbol -> (target, current, gate mode)."""
    return ActResponse(
        model="alpha@3",
        model_version=3,
        as_of=NOW,
        decisions={
            s: SymbolDecision(
                target_weight=t,
                current_weight=c,
                side="flat" if t == 0 else ("long" if t > 0 else "short"),
                gate_mode=m,  # type: ignore[arg-type]
                confidence=0.5,
                tradeable=m != "hold",
            )
            for s, (t, c, m) in decisions.items()
        },
        gross_exposure=sum(abs(t) for t, _, _ in decisions.values()),
        fallback=fallback,
    )


# Exposure caps that never bind here: tests of the other rules (trade-fraction cap, participation)
LOOSE = LiveConfig(caps=ExposureCaps(per_symbol_cap=1.0, gross_cap=2.0, leverage_cap=2.0, max_gross_add=4.0))
QUOTES = {"AAPL": _book(99.99, 100.01), "MSFT": _book(399.9, 400.1), "BTCUSD": _book(49_990.0, 50_010.0)}


def test_aggressive_buy_is_a_market_order_for_the_notional_at_the_mid() -> None:
    (plan,) = plan_orders(_answer({"AAPL": (0.1, 0.0, "aggressive")}), EQUITY, QUOTES, {}, "c1")
    assert (plan.side, plan.qty, plan.order_type, plan.time_in_force) == ("buy", 100.0, "market", "day")
    assert plan.limit_price is None and plan.decision_id == "c1:AAPL" and plan.client_order_id == "rt-c1-AAPL"


def test_passive_rests_at_the_near_touch() -> None:
    buy, sell = plan_orders(
        _answer({"AAPL": (0.05, 0.0, "passive"), "MSFT": (0.0, 0.04, "passive")}),
        EQUITY,
        QUOTES,
        {"MSFT": 10.0},
        "c1",
    )
    assert (buy.order_type, buy.limit_price, buy.qty) == ("limit", 99.99, 50.0)
    assert (sell.side, sell.order_type, sell.limit_price, sell.qty) == ("sell", "limit", 400.1, 10.0)


def test_whole_shares_unless_fractional_and_dust_is_skipped() -> None:
    answer = _answer({"AAPL": (0.0123, 0.0, "aggressive"), "MSFT": (0.0002, 0.0, "aggressive")})
    (plan,) = plan_orders(answer, EQUITY, QUOTES, {}, "c1")  # MSFT: $20 < $25 minimum
    assert plan.symbol == "AAPL" and plan.qty == 12.0
    (frac,) = plan_orders(answer, EQUITY, QUOTES, {}, "c1", LiveConfig(fractional=True))
    assert frac.qty == pytest.approx(12.3)


def test_a_short_sale_is_whole_shares_even_when_fractional() -> None:
    # 5 % of $100k at MSFT's $400 mid is 12.5 shares; Alpaca refuses a fractional short sale.
    frac = LiveConfig(fractional=True)
    (opens,) = plan_orders(_answer({"MSFT": (-0.05, 0.0, "aggressive")}), EQUITY, QUOTES, {}, "c1", frac)
    (adds,) = plan_orders(
        _answer({"MSFT": (-0.1, -0.05, "aggressive")}), EQUITY, QUOTES, {"MSFT": -12.0}, "c1", frac
    )
    (trims,) = plan_orders(
        _answer({"MSFT": (0.05, 0.1, "aggressive")}), EQUITY, QUOTES, {"MSFT": 25.0}, "c1", frac
    )
    assert [(p.side, p.qty) for p in (opens, adds, trims)] == [("sell", 12.0), ("sell", 13.0), ("sell", 12.5)]


def test_a_partial_cover_leaves_a_whole_share_short_even_when_fractional() -> None:
    # MSFT at a $400 mid, short 25: a -3 % target is -7.5 shares, a 17.5 cover; it buys 17 (short 8).
    # A fractional short of 12.3 covered to -7.5 buys 4.3 (short 8); under a $2,500 order cap (6.25
    # shares) a close of 25 buys 6 (short 19): never more than asked, never a fractional short.
    frac = LiveConfig(fractional=True)
    (whole,) = plan_orders(
        _answer({"MSFT": (-0.03, -0.1, "aggressive")}), EQUITY, QUOTES, {"MSFT": -25.0}, "c1", frac
    )
    (frac_short,) = plan_orders(
        _answer({"MSFT": (-0.03, -0.0492, "aggressive")}), EQUITY, QUOTES, {"MSFT": -12.3}, "c1", frac
    )
    capped_cfg = frac.model_copy(update={"max_trade_fraction": 0.025})
    (capped,) = plan_orders(
        _answer({"MSFT": (0.0, -0.1, "aggressive")}), EQUITY, QUOTES, {"MSFT": -25.0}, "c1", capped_cfg
    )
    assert [(p.side, p.qty) for p in (whole, frac_short, capped)] == [
        ("buy", 17.0),
        ("buy", 4.3),
        ("buy", 6.0),
    ]


def test_a_buy_from_short_to_long_covers_to_flat_first_even_when_fractional() -> None:
    # short 25 MSFT, target +5 % (12.5 shares): a 37.5-share buy would cross zero; it covers the 25
    frac = LiveConfig(fractional=True)
    (cover,) = plan_orders(
        _answer({"MSFT": (0.05, -0.1, "aggressive")}), EQUITY, QUOTES, {"MSFT": -25.0}, "c1", frac
    )
    assert (cover.side, cover.qty) == ("buy", 25.0)
    assert cover.note is not None and "long side opens next cycle" in cover.note


def test_one_order_is_capped_at_a_fraction_of_equity() -> None:
    (plan,) = plan_orders(_answer({"AAPL": (0.9, 0.0, "aggressive")}), EQUITY, QUOTES, {}, "c1", LOOSE)
    assert plan.qty == 250.0  # 0.25 x 100k / 100


def test_closing_sends_the_exact_held_quantity() -> None:
    (plan,) = plan_orders(_answer({"AAPL": (0.0, 0.00375, "flat")}), EQUITY, QUOTES, {"AAPL": 3.75}, "c1")
    assert (plan.side, plan.qty, plan.order_type) == ("sell", 3.75, "market")  # below $25 but a close


def test_a_flip_closes_first_and_opens_next_cycle() -> None:
    (close,) = plan_orders(
        _answer({"AAPL": (-0.1, 0.05, "aggressive")}), EQUITY, QUOTES, {"AAPL": 50.0}, "c1"
    )
    assert (close.side, close.qty, close.decision_id) == ("sell", 50.0, "c1:AAPL")
    assert close.note is not None and "short side opens next cycle" in close.note
    (open_,) = plan_orders(_answer({"AAPL": (-0.1, 0.0, "aggressive")}), EQUITY, QUOTES, {}, "c2")
    assert (open_.side, open_.qty) == ("sell", 100.0)


def test_crypto_is_never_shorted_and_trades_in_small_units() -> None:
    (close,) = plan_orders(
        _answer({"BTCUSD": (-0.05, 0.05, "aggressive")}), EQUITY, QUOTES, {"BTCUSD": 0.1}, "c1"
    )
    assert (close.side, close.qty, close.target_weight, close.time_in_force) == ("sell", 0.1, 0.0, "gtc")
    assert close.note is not None and "cannot be shorted" in close.note
    (buy,) = plan_orders(_answer({"BTCUSD": (0.0123457, 0.0, "aggressive")}), EQUITY, QUOTES, {}, "c1")
    assert buy.qty == 0.024691  # 1,234.57 / 50,000 = 0.0246914 -> floored to 1e-6


def test_a_pair_quoted_in_bitcoin_is_held_and_its_position_counts_as_crypto() -> None:
    """ETHBTC quotes ~0.05, in BTC: sized as dollars, +0.1 of $100k was a buy of 200,000 ETH. It is held
    (with the reason), and its position counts against the crypto cap at the answer's current weight
    (the broker's dollar value, as the request sent it; it was planned as a 6-letter equity: whole
    units, shorts allowed, no crypto cap)."""
    quotes = {**QUOTES, "ETHBTC": _book(0.0499, 0.0501)}
    answer = _answer({"ETHBTC": (0.1, 0.9, "aggressive"), "BTCUSD": (0.15, 0.0, "aggressive")})
    held = {"ETHBTC": 40.0}
    cycle = plan_cycle(answer, EQUITY, quotes, held, "c1")
    (plan,) = cycle.orders  # BTCUSD to 0.1, the crypto cap 1.0 less ETHBTC's 0.9: 10k / 50k = 0.2 BTC
    assert (plan.symbol, plan.side, plan.qty) == ("BTCUSD", "buy", pytest.approx(0.2))
    assert "a pair quoted in BTC" in cycle.notes["ETHBTC"]


def test_holds_fallbacks_and_missing_quotes_send_nothing() -> None:
    answer = _answer(
        {"AAPL": (0.0, 0.2, "hold"), "MSFT": (0.1, 0.0, "aggressive"), "XYZ": (0.1, 0.0, "aggressive")}
    )
    plans = plan_orders(answer, EQUITY, {**QUOTES, "MSFT": _book(0.0, 400.0)}, {"AAPL": 200.0}, "c1")
    assert plans == []  # AAPL held, MSFT without a bid, XYZ without a quote
    assert (
        plan_orders(_answer({"AAPL": (0.1, 0.0, "aggressive")}, fallback=True), EQUITY, QUOTES, {}, "c1")
        == []
    )


@settings(max_examples=200)
@given(
    target=st.floats(-1.5, 1.5),
    held_weight=st.floats(-0.6, 0.6),
    symbol=st.sampled_from(["AAPL", "BTCUSD"]),
    mode=st.sampled_from(["aggressive", "passive", "probe", "flat"]),
    fractional=st.booleans(),
)
def test_plan_invariants(target: float, held_weight: float, symbol: str, mode: str, fractional: bool) -> None:
    """Whatever the answer: at most one order per symbol, never above the cap (a close excepted),
    never through zero, never a crypto short, never an order for dust."""
    cfg = LOOSE.model_copy(update={"fractional": fractional})
    book = QUOTES[symbol]
    mid = 0.5 * (book.bid + book.ask)
    held = held_weight * EQUITY / mid
    if symbol == "BTCUSD":
        held = abs(held)
    plans = plan_orders(
        _answer({symbol: (target, held * mid / EQUITY, mode)}), EQUITY, QUOTES, {symbol: held}, "c", cfg
    )
    assert len(plans) <= 1
    for p in plans:
        signed = p.qty if p.side == "buy" else -p.qty
        after = held + signed
        closes = p.qty == abs(held) and after == pytest.approx(0.0, abs=1e-9)
        assert closes or p.qty * mid <= cfg.max_trade_fraction * EQUITY * (1 + 1e-9)
        assert closes or p.qty * mid >= cfg.min_trade_notional
        assert held == 0 or after == pytest.approx(0.0, abs=1e-9) or (after > 0) == (held > 0)
        if symbol == "BTCUSD":
            assert after >= -1e-12
        if fractional and symbol == "AAPL" and p.side == "buy" and after < -1e-9:  # a partial cover
            assert after == pytest.approx(round(after), abs=1e-6)
        assert (p.order_type == "limit") == (mode == "passive")
        wanted = (max(target, 0.0) if symbol == "BTCUSD" else target) * EQUITY / mid
        assert (p.side == "buy") == (wanted > held)  # always toward the target


def test_an_order_is_capped_at_the_participation_share_of_the_bar_dollar_volume() -> None:
    # target 20 % of $100k = $20k of AAPL at $100; the bar traded $50k, so 10 % of it: $5k = 50 shares
    answer = _answer({"AAPL": (0.2, 0.0, "aggressive")})
    (plan,) = plan_orders(answer, EQUITY, QUOTES, {}, "c1", dollar_volume={"AAPL": 50_000.0})
    assert plan.qty == 50.0 and plan.note is not None and "10% of the bar's dollar volume" in plan.note


def test_a_known_zero_dollar_volume_holds_the_symbol_both_ways() -> None:
    # nothing traded over the window: no capacity, as the simulator fills nothing there
    buy = _answer({"AAPL": (0.2, 0.0, "aggressive")})
    assert plan_orders(buy, EQUITY, QUOTES, {}, "c1", LOOSE, dollar_volume={"AAPL": 0.0}) == []
    sell = _answer({"AAPL": (0.0, 0.2, "flat")})
    held = {"AAPL": 200.0}
    assert plan_orders(sell, EQUITY, QUOTES, held, "c1", LOOSE, dollar_volume={"AAPL": 0.0}) == []
    (close,) = plan_orders(sell, EQUITY, QUOTES, held, "c1", LOOSE, dollar_volume={"AAPL": 1e9})
    assert (close.side, close.qty) == ("sell", 200.0)


def test_an_unknown_dollar_volume_leaves_only_the_equity_cap() -> None:
    answer = _answer({"AAPL": (0.2, 0.0, "aggressive")})
    (plan,) = plan_orders(answer, EQUITY, QUOTES, {}, "c1", LOOSE, dollar_volume={"AAPL": float("nan")})
    (same,) = plan_orders(answer, EQUITY, QUOTES, {}, "c1", LOOSE)
    assert plan.qty == same.qty == 200.0 and plan.note is None


# ------------------------------------------------------------------ one share above the order cap


@pytest.mark.parametrize(
    ("equity", "price", "held", "target", "volume"),
    [
        (EQUITY, 300.0, 40.0, 0.0, 2_000.0),  # participation cap 10 % x $2,000 = $200 < one $300 share
        (EQUITY, 300.0, 40.0, 0.05, 2_000.0),  # a partial reduction, same cap
        (3_000.0, 1_000.0, 1.0, 0.0, None),  # order cap 25 % x $3,000 = $750 < the one $1,000 share
    ],
    ids=["thin-close", "thin-trim", "small-account-close"],
)
def test_a_reduction_whose_cap_is_below_one_share_sells_one_share(
    equity: float, price: float, held: float, target: float, volume: float | None
) -> None:
    """Rounded down to whole shares under its cap, the reduction was 0 shares: nothing went out,
    every cycle, even for a target of 0 (the kill switch's unwind). A sale that only reduces cannot
    add exposure, so it sends one share (the whole position when that is one share)."""
    books = {"XYZ": _book(price - 0.1, price + 0.1)}
    answer = _answer({"XYZ": (target, held * price / equity, "flat" if target == 0 else "aggressive")})
    volumes = {} if volume is None else {"XYZ": volume}
    (plan,) = plan_orders(answer, equity, books, {"XYZ": held}, "c1", dollar_volume=volumes)
    assert (plan.side, plan.qty) == ("sell", 1.0)
    cap = "participation cap (10% of the bar's dollar volume 2,000" if volume else "order cap (25% of equity"
    assert plan.note is not None and plan.note.startswith("XYZ: one step") and cap in plan.note
    assert ("39 of the" in plan.note) == (held == 40.0 and target == 0.0)  # what is left, when any


@pytest.mark.parametrize("held", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("target", [-0.1, -0.3])
def test_a_position_one_share_of_which_exceeds_its_cap_reverses_by_reducing_first(
    held: float, target: float
) -> None:
    """The model wants the other side: the position goes out one share a cycle (each share above the
    $750 order cap, so only the one-step rule sends it), the flip closes before any short opens, and
    the short (an increase, $1,000 a share) never goes above the cap. It was held for ever once one
    share was left (a move through 0 took only the growth reach, 0 under this cap)."""
    equity, price = 3_000.0, 1_000.0
    books = {"XYZ": _book(price - 0.1, price + 0.1)}
    qty, sent = held, []
    for cycle in range(int(held) + 2):
        answer = _answer({"XYZ": (target, qty * price / equity, "aggressive")})
        plan = plan_cycle(answer, equity, books, {"XYZ": qty}, f"c{cycle}", LOOSE)
        for order in plan.orders:
            sent.append((order.side, order.qty))
            qty += order.qty if order.side == "buy" else -order.qty
        if not plan.orders:  # flat: the short waits (-0.3: $900 of a $1,000 share, above the cap;
            # -0.1: 0.3 of a share, and a short is whole shares)
            assert qty == 0.0
            assert ("order cap (25% of equity" in plan.notes["XYZ"]) == (target == -0.3)
            if target == -0.1:
                assert "less than 1 share (a short is whole shares): no order" in plan.notes["XYZ"]
    assert sent == [("sell", 1.0)] * int(held) and qty == 0.0


def test_a_partial_cover_whose_cap_is_below_one_share_buys_one_share_even_when_fractional() -> None:
    # short 3 MSFT at $400 under a $300 participation cap (0.75 share): no whole-share cover fits the
    # cap, so the least one, a share, goes out (a fractional cover would leave a fractional short)
    frac = LiveConfig(fractional=True)
    answer = _answer({"MSFT": (0.0, -0.012, "flat")})
    (cover,) = plan_orders(answer, EQUITY, QUOTES, {"MSFT": -3.0}, "c1", frac, {"MSFT": 3_000.0})
    assert (cover.side, cover.qty) == ("buy", 1.0)


@pytest.mark.parametrize(
    ("equity", "price", "held", "target", "volume"),
    [
        (EQUITY, 300.0, 40.0, 0.13, 2_000.0),  # adds 3.3 shares under a $200 participation cap
        (EQUITY, 300.0, -40.0, -0.13, 2_000.0),  # adds to a short under the same cap
        (3_000.0, 1_000.0, 0.0, 0.3, None),  # buys $900 under a $750 order cap
    ],
    ids=["thin-add", "thin-add-short", "small-account-open"],
)
def test_an_order_that_adds_exposure_never_exceeds_its_cap_and_says_why_it_sends_nothing(
    equity: float, price: float, held: float, target: float, volume: float | None
) -> None:
    books = {"XYZ": _book(price - 0.1, price + 0.1)}
    answer = _answer({"XYZ": (target, held * price / equity, "aggressive")})
    volumes = {} if volume is None else {"XYZ": volume}
    plan = plan_cycle(answer, equity, books, {"XYZ": held}, "c1", LOOSE, volumes)
    assert plan.orders == []
    cap = "participation cap (10% of the bar's dollar volume 2,000" if volume else "order cap (25% of equity"
    side = "buy" if target > 0 else "sell"
    assert cap in plan.notes["XYZ"] and plan.notes["XYZ"].startswith(f"XYZ: the {cap}")
    assert f"holds this cycle's {side} to 0 units" in plan.notes["XYZ"]


def test_a_known_zero_dollar_volume_is_noted_when_it_holds_a_symbol() -> None:
    plan = plan_cycle(
        _answer({"AAPL": (0.0, 0.2, "flat")}), EQUITY, QUOTES, {"AAPL": 200.0}, "c1", LOOSE, {"AAPL": 0.0}
    )
    assert plan.orders == [] and "AAPL: the participation cap" in plan.notes["AAPL"]


@settings(max_examples=300, deadline=None)
@given(
    price=st.floats(5.0, 3_000.0),
    held_weight=st.floats(-0.6, 0.6),
    target=st.floats(-0.6, 0.6),
    volume=st.one_of(st.none(), st.just(0.0), st.floats(10.0, 1e6)),
    equity=st.sampled_from([2_000.0, 20_000.0, EQUITY]),
    symbol=st.sampled_from(["XYZ", "BTCUSD"]),
    fractional=st.booleans(),
)
def test_an_order_above_its_cap_is_one_step_of_a_reduction_and_a_close_is_never_stuck(
    price: float,
    held_weight: float,
    target: float,
    volume: float | None,
    equity: float,
    symbol: str,
    fractional: bool,
) -> None:
    """Under any order cap: an order above it only reduces, never through zero, by at most one step
    (one share for a short cover, which must leave whole shares) or the whole position; a buy or sale
    that adds exposure never exceeds it; and a target of 0 with some capacity always sends an order
    toward it, unless its one step is dust."""
    cfg = LOOSE.model_copy(update={"fractional": fractional})
    books = {symbol: _book(price, price)}
    crypto = symbol == "BTCUSD"
    step = 1e-6 if crypto else (1e-4 if fractional else 1.0)
    held = held_weight * equity / price
    held = abs(held) if crypto else (held if fractional and held > 0 else float(round(held)))
    if crypto:
        target = abs(target)
    volumes = {} if volume is None else {symbol: volume}
    answer = _answer({symbol: (target, held * price / equity, "flat" if target == 0 else "aggressive")})
    plan = plan_cycle(answer, equity, books, {symbol: held}, "c1", cfg, volumes)
    cap = min(cfg.max_trade_fraction * equity, math.inf if volume is None else 0.1 * volume)
    for p in plan.orders:
        after = held + (p.qty if p.side == "buy" else -p.qty)
        if p.qty * price > cap * (1 + 1e-9):
            assert held != 0 and abs(after) < abs(held) and after * held >= -1e-12  # a reduction
            one = 1.0 if (held < 0 and not crypto) else step
            assert p.qty <= min(one, abs(held)) + 1e-9
    if target == 0 and held != 0 and cap > 0 and min(step, abs(held)) * price >= cfg.min_trade_notional:
        (p,) = plan.orders
        assert (p.side == "sell") == (held > 0)
    move = abs(target * equity / price - held) * price
    if not plan.orders and move > max(cap * (1 + 1e-9), cfg.min_trade_notional):
        assert symbol in plan.notes  # a cap that keeps it from its target is named


@pytest.mark.parametrize(
    "decisions",
    [
        {"AAPL": (float("nan"), 0.0, "aggressive")},
        {"AAPL": (0.1, 0.0, "aggressive"), "MSFT": (0.0, float("nan"), "hold")},
    ],
    ids=["nan-target", "nan-current"],
)
def test_an_answer_with_a_non_finite_weight_sends_nothing(
    decisions: dict[str, tuple[float, float, str]],
) -> None:
    # Unguarded, a NaN target bought 25 % of equity and a NaN current weight sold every other holding.
    quotes = {"AAPL": QUOTES["AAPL"]}
    assert plan_orders(_answer(decisions), EQUITY, quotes, {"AAPL": 100.0, "MSFT": 10.0}, "c1") == []


# ------------------------------------------------------------------ resting orders


def _resting(symbol: str, side: str, qty: float | None, **prices: float) -> RestingOrder:
    return RestingOrder(symbol=symbol, side=side, remaining_qty=qty, label=f"rt-{symbol}", **prices)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "side", "qty", "added"),
    [
        (0.0, "buy", 100.0, 0.10),  # from flat: the whole remainder
        (0.10, "sell", 50.0, 0.0),  # a sale that trims a long adds nothing
        (0.10, "sell", 150.0, 0.0),  # through zero to -0.05: |-0.05| < |0.10|
        (0.10, "sell", 300.0, 0.10),  # to -0.20: |-0.20| - |0.10|
        (-0.05, "buy", 100.0, 0.0),  # covers to +0.05
        (-0.05, "sell", 100.0, 0.10),  # adds to the short
    ],
)
def test_a_resting_orders_worst_case_is_what_it_adds_to_the_symbols_exposure(
    current: float, side: str, qty: float, added: float
) -> None:
    """max(0, |c + r| - |c|) of equity, r the remainder's signed notional at $100."""
    worst = resting_exposure(
        [_resting("AAPL", side, qty, reference_price=100.0)], EQUITY, {"AAPL": current}, {}
    )
    assert worst == (pytest.approx(added), ())


def test_resting_orders_on_both_sides_count_the_worse_side_at_the_highest_price() -> None:
    """Long 0.05 with resting buys of 100 and a resting sale of 200: partial fills keep the position
    between the two ends, and the worse end counts, each order at the highest price known for it."""
    orders = [
        _resting("AAPL", "buy", 60.0, limit_price=101.0, reference_price=100.0),
        _resting("AAPL", "buy", 40.0, limit_price=101.0),
        _resting("AAPL", "sell", 200.0, reference_price=100.0),
    ]
    # at the $102 mid: buys 0.102 -> 0.152 (+0.102); the sale 0.204 -> -0.154 (+0.104)
    assert resting_exposure(orders, EQUITY, {"AAPL": 0.05}, {"AAPL": 102.0}) == (pytest.approx(0.104), ())
    # no mid: buys at their $101 limit 0.101 -> 0.151 (+0.101); the sale at $100 -> -0.15 (+0.10)
    assert resting_exposure(orders, EQUITY, {"AAPL": 0.05}, {}) == (pytest.approx(0.101), ())
    # a symbol whose current weight is unknown is taken at the bound |r|
    assert resting_exposure(orders[2:], EQUITY, {}, {}).added_gross == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("order", "why"),
    [
        (RestingOrder(symbol=None, side="buy", remaining_qty=1.0, reference_price=1.0), "no symbol"),
        (RestingOrder(symbol="AAPL", side=None, remaining_qty=1.0, reference_price=1.0), "no side"),
        (RestingOrder(symbol="AAPL", side="buy", remaining_qty=None, reference_price=1.0), "no unfilled"),
        (
            RestingOrder(symbol="AAPL", side="buy", remaining_qty=float("nan"), reference_price=1.0),
            "no unfilled",
        ),
        (RestingOrder(symbol="AAPL", side="buy", remaining_qty=1.0), "no price"),
        # 40 ETH at 0.05 BTC read as $2 of notional: its dollar size is unknown
        (RestingOrder(symbol="ETHBTC", side="buy", remaining_qty=40.0, limit_price=0.05), "priced in BTC"),
    ],
)
def test_a_resting_order_whose_size_cannot_be_known_is_named(order: RestingOrder, why: str) -> None:
    assert why in (order.why_unknown() or "")
    assert resting_exposure([order], EQUITY, {}, {}).unknown == (
        order.label or order.symbol or "an order of unknown symbol",
    )


def test_a_resting_order_of_unknown_size_lets_only_reductions_through() -> None:
    """AAPL's resting order may fill by any amount: MSFT's trim goes out, BTCUSD's buy does not (and
    a symbol with a resting order is never planned on top of it, even with a quote)."""
    answer = _answer(
        {
            "AAPL": (0.1, 0.0, "aggressive"),
            "MSFT": (0.02, 0.04, "aggressive"),
            "BTCUSD": (0.05, 0.0, "aggressive"),
        }
    )
    unknown = [_resting("AAPL", "buy", None, reference_price=100.0)]
    (trim,) = plan_orders(answer, EQUITY, QUOTES, {"MSFT": 10.0}, "c1", resting=unknown)
    assert (trim.symbol, trim.side, trim.qty) == ("MSFT", "sell", 5.0)
    assert trim.note is not None and "unknown size may still fill (rt-AAPL)" in trim.note
    known = [_resting("AAPL", "buy", 100.0, reference_price=100.0)]
    plans = plan_orders(answer, EQUITY, QUOTES, {"MSFT": 10.0}, "c1", resting=known)
    assert sorted(p.symbol for p in plans) == ["BTCUSD", "MSFT"]


def test_a_target_the_loop_holds_itself_is_noted_with_why() -> None:
    """The service cannot see the loop's own holds (no tradeable quote: a halt, a stale or crossed
    book; an earlier order that may still fill): their decision rows said 'flat, quantity 0' with no
    note, as if the policy had chosen to stay."""
    answer = _answer(
        {
            "AAPL": (0.0, 0.05, "aggressive"),  # wants out, no quote (halted)
            "MSFT": (0.0, 0.0, "aggressive"),  # flat and staying flat, but an order of it may fill
            "BTCUSD": (0.02, 0.0, "aggressive"),  # trades
            "NVDA": (0.0, 0.0, "aggressive"),  # flat, no quote, nothing to do: no note
            "AMD": (0.05, 0.0, "hold"),  # the service holds it (its reason says why): no loop note
        }
    )
    resting = [
        RestingOrder(symbol="MSFT", side="buy", remaining_qty=5.0, limit_price=400.0, label="rt-c0-MSFT")
    ]
    quotes = {"MSFT": QUOTES["MSFT"], "BTCUSD": QUOTES["BTCUSD"]}
    plan = plan_cycle(answer, EQUITY, quotes, {"AAPL": 50.0}, "c1", LOOSE, resting=resting)
    assert [o.symbol for o in plan.orders] == ["BTCUSD"]
    assert set(plan.notes) == {"AAPL", "MSFT"}
    assert plan.notes["AAPL"].endswith(
        "not pursued: no tradeable quote (missing, stale, crossed or one-sided)"
    )
    assert plan.notes["MSFT"].endswith("an earlier order (rt-c0-MSFT) may still fill")


def test_a_reduction_cut_short_next_to_an_unquoted_symbol_computes_no_nan() -> None:
    import warnings

    # AAPL at 4x the order cap must go to 0 (cut short: fixed at one order's reach); MSFT is held
    # with no quote, its reach unbounded: 0 x inf was computed (and discarded) with a RuntimeWarning
    answer = _answer({"AAPL": (0.0, 1.0, "aggressive"), "MSFT": (0.0, 0.04, "aggressive")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (plan,) = plan_orders(
            answer, EQUITY, {"AAPL": QUOTES["AAPL"]}, {"AAPL": 1_000.0, "MSFT": 10.0}, "c1", LOOSE
        )
    assert (plan.symbol, plan.side, plan.qty) == ("AAPL", "sell", 250.0)
