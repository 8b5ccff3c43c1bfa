"""The loop's gates and the hard exposure caps after the model (``serve.caps``), in serving and in order
planning: hand-computed caps, the contract's UNIUSD row, and property tests of the invariants."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from raytrade.replay.loop_rules import LoopRules
from raytrade.replay.sources.alpaca import TopOfBook, is_crypto_symbol
from raytrade.serve.caps import ExposureCaps, added_gross, cap_targets, gate_reason
from raytrade.serve.client import request_from_loop
from raytrade.serve.fallback import hold_everything
from raytrade.serve.orders import LiveConfig, RestingOrder, plan_cycle, plan_orders
from raytrade.serve.schemas import (
    Account,
    ActRequest,
    ActResponse,
    CallerKillSwitch,
    Position,
    SymbolDecision,
    SymbolSnapshot,
)

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "contracts" / "trade_loop_decision.json"
NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
EQUITY = 100_000.0
TOL = 1e-9


def _contract() -> dict:  # type: ignore[type-arg]
    if not CONTRACT.is_file():
        pytest.skip(f"the trading-loop contract {CONTRACT} is not checked out next to this repository")
    data: dict = json.loads(CONTRACT.read_text())  # type: ignore[type-arg]
    return data


# ------------------------------------------------------------------------------------------ gates


@pytest.mark.parametrize("is_crypto", [np.zeros(0, bool), np.zeros(5, bool), np.array([True, False])])
def test_a_crypto_flag_per_symbol_of_another_length_is_refused(is_crypto: np.ndarray) -> None:
    """All False or not, a mask that does not match the targets is a caller's bug, named (skipping
    the crypto step where no symbol is crypto once let an all-False one of any length through)."""
    with pytest.raises(
        ValueError, match=rf"is_crypto has shape \({len(is_crypto)},\); the targets have \(3,\)"
    ):
        cap_targets(
            np.array([0.1, 0.1, 0.1]), np.zeros(3), np.ones(3, bool), ExposureCaps(), is_crypto=is_crypto
        )


def test_the_contracts_uniusd_row_is_held() -> None:
    request = request_from_loop(_contract(), as_of=NOW)
    row = request.analysis["UNIUSD"]
    reason = gate_reason(row, is_crypto_symbol("UNIUSD"))
    assert reason == "blocked by the trading loop: spread 50.8bps > cap 35.0bps; consensus"
    assert gate_reason(request.analysis["NVDA"], is_crypto_symbol("NVDA")) is None


def test_the_contracts_uniusd_spread_alone_holds_it() -> None:
    row = (
        request_from_loop(_contract(), as_of=NOW)
        .analysis["UNIUSD"]
        .model_copy(update={"trade_blocked": False})
    )
    # (9.86 - 9.81) / 9.835 = 50.84 bps > the 35 bps crypto cap
    assert gate_reason(row, True) == "spread 50.8 bps > cap 35 bps"


@pytest.mark.parametrize(
    ("row", "crypto", "reason"),
    [
        (
            {"bid_price": 100.0, "ask_price": 100.09, "avg_dollar_vol": 2e9},
            False,
            "spread 9.0 bps > cap 8 bps",
        ),
        ({"bid_price": 100.0, "ask_price": 100.09, "avg_dollar_vol": 5e8}, False, None),
        (
            {"bid_price": 100.0, "ask_price": 100.26, "avg_dollar_vol": 5e8},
            False,
            "spread 26.0 bps > cap 25 bps",
        ),
        # volume unknown: it may be a mega cap, so the strictest equity cap (fail closed)
        ({"bid_price": 100.0, "ask_price": 100.2}, False, "spread 20.0 bps > cap 8 bps"),
        ({"bid_price": 100.0, "ask_price": 100.07}, False, None),
        ({"bid_price": 100.0, "ask_price": 100.34}, True, None),  # crypto keeps its own cap
        # the row's own cap: the stricter of it and the service's applies
        (
            {"bid_price": 100.0, "ask_price": 100.06, "avg_dollar_vol": 5e8, "spread_cap_bps": 5.0},
            False,
            "spread 6.0 bps > cap 5 bps",
        ),
        (
            {"bid_price": 100.0, "ask_price": 100.26, "avg_dollar_vol": 5e8, "spread_cap_bps": 30.0},
            False,
            "spread 26.0 bps > cap 25 bps",
        ),
        (
            {"bid_price": 100.0, "ask_price": 100.2, "spread_cap_bps": 25.0},
            False,
            "spread 20.0 bps > cap 8 bps",
        ),
        ({"bid_price": 0.0, "ask_price": 100.0}, False, "no two-sided quote"),
        ({"bid_price": 100.0, "ask_price": -1.0}, False, "no two-sided quote"),
        ({"bid_price": 100.0}, False, "no two-sided quote"),
    ],
    ids=[
        "mega-over-8",
        "other-under-25",
        "other-over-25",
        "unknown-volume-over-8",
        "unknown-volume-under-8",
        "crypto-under-35",
        "row-cap-stricter",
        "row-cap-looser",
        "row-cap-unknown-volume",
        "zero-bid",
        "neg-ask",
        "no-ask",
    ],
)
def test_the_spread_gate_follows_the_loop_rules(row: dict, crypto: bool, reason: str | None) -> None:  # type: ignore[type-arg]
    assert gate_reason(SymbolSnapshot.model_validate(row), crypto) == reason


def test_a_spread_exactly_at_the_cap_is_not_over_it() -> None:
    """99.96 / 100.04 is 8 bps, computed as 8.00000000000125: it was held as "spread 8.0 bps > cap 8"."""
    at = SymbolSnapshot(bid_price=99.96, ask_price=100.04, avg_dollar_vol=5e9)  # a mega cap: cap 8 bps
    assert at.quoted_spread_bps() > 8.0  # the rounding
    assert gate_reason(at, False) is None
    over = SymbolSnapshot(bid_price=99.96, ask_price=100.0401, avg_dollar_vol=5e9)
    assert gate_reason(over, False) == "spread 8.0 bps > cap 8 bps"


def test_a_null_trade_blocked_holds_the_symbol_instead_of_refusing_the_request() -> None:
    """It was a 422, which stops the loop's cycle; unknown gates fail closed."""
    row = SymbolSnapshot.model_validate({"bid_price": 100.0, "ask_price": 100.01, "trade_blocked": None})
    assert row.blocked()
    assert gate_reason(row, False) == "blocked by the trading loop: trade_blocked sent as null (unknown)"
    kept = SymbolSnapshot.model_validate({"trade_blocked": None, "block_reason": "halted"})
    assert kept.blocked() and gate_reason(kept, False) == "blocked by the trading loop: halted"
    # in a request the null is rewritten: whoever reads the row's flag sees a block
    body = {"account": {"equity": 1e5}, "drawdown_pct": 0.0}
    rows = {"A": {"trade_blocked": None}, "B": {"trade_blocked": None, "block_reason": "halted"}, "C": {}}
    request = ActRequest.model_validate_json(json.dumps({**body, "analysis": rows}))
    assert [(r.trade_blocked, r.block_reason) for r in request.analysis.values()] == [
        (True, "trade_blocked sent as null (unknown)"),
        (True, "halted"),
        (False, None),
    ]


def test_the_spread_caps_come_from_loop_rules() -> None:
    rules = LoopRules(spread_cap_bps_equity=30.0)
    row = SymbolSnapshot(bid_price=100.0, ask_price=100.26, avg_dollar_vol=5e8)
    assert gate_reason(row, False, rules) is None
    # unknown volume: the strictest equity cap of these rules, whichever tier it is
    unknown = SymbolSnapshot(bid_price=100.0, ask_price=100.1)
    assert gate_reason(unknown, False, LoopRules(spread_cap_bps_mega=9.0)) == "spread 10.0 bps > cap 9 bps"
    assert gate_reason(unknown, False, LoopRules(spread_cap_bps_mega=30.0, spread_cap_bps_equity=9.0)) == (
        "spread 10.0 bps > cap 9 bps"
    )


# ------------------------------------------------------------------------------------------- caps


def test_default_caps_are_the_loops_limits() -> None:
    caps = ExposureCaps()
    assert (
        caps.per_symbol_cap,
        caps.gross_cap,
        caps.leverage_cap,
        caps.max_gross_add,
        caps.crypto_gross_cap,
    ) == (0.15, 1.2, 2.0, 0.25, 1.0)


def test_per_symbol_cap_then_basket_throttle() -> None:
    # clipped to [0.15, 0.1, -0.15]: adds 0.4 > 0.25, so every added part is scaled by 0.625
    out = cap_targets(np.array([0.3, 0.1, -0.2]), np.zeros(3), np.ones(3, bool), ExposureCaps())
    np.testing.assert_allclose(out.weights, [0.09375, 0.0625, -0.09375], rtol=0, atol=1e-15)
    assert out.binding == ("per_symbol_cap", "max_gross_add")


def test_held_and_external_gross_shrink_the_gross_budget() -> None:
    # held 1.0 + external 0.1: budget 0.1 for [0.15, 0.15] -> scaled by 1/3; nothing added over current
    out = cap_targets(
        np.array([0.5, 0.15, 0.15]),
        np.array([1.0, 0.15, 0.05]),
        np.array([False, True, True]),
        ExposureCaps(),
        0.1,
    )
    np.testing.assert_allclose(out.weights, [1.0, 0.05, 0.05], rtol=0, atol=1e-15)
    assert out.binding == ("gross_cap",)


def test_crypto_held_outside_the_universe_shrinks_the_crypto_budget() -> None:
    # BTCUSD outside, 0.9: the crypto budget is 1.0 - 0.9 = 0.1 for crypto targets of 0.25 -> scaled by
    # 0.4; the equity keeps its 0.1 (gross 0.9 + 0.2 = 1.1 is within 2.0)
    caps = ExposureCaps(gross_cap=2.0, max_gross_add=1.0)
    crypto = np.array([True, True, False])
    out = cap_targets(np.array([0.15, 0.1, 0.1]), np.zeros(3), np.ones(3, bool), caps, 0.9, crypto, 0.9)
    np.testing.assert_allclose(out.weights, [0.06, 0.04, 0.1], rtol=0, atol=1e-15)
    assert out.binding == ("crypto_gross_cap",)


def test_no_crypto_target_opens_or_grows_a_short_whatever_the_model_allows() -> None:
    """A model trained with crypto_long_only off answered crypto shorts (-0.15, side short); an outside
    loop ordering target_qty - qty would try to short crypto. A short it finds may shrink, never grow."""
    caps = ExposureCaps(gross_cap=2.0, max_gross_add=1.0)
    crypto = np.array([True, True, True, False])
    current = np.array([0.0, -0.1, -0.1, 0.0])
    out = cap_targets(
        np.array([-0.15, -0.05, -0.12, -0.1]), current, np.ones(4, bool), caps, 0.0, crypto, 0.0
    )
    np.testing.assert_allclose(out.weights, [0.0, -0.05, -0.1, -0.1], rtol=0, atol=1e-15)  # equity short kept
    assert out.binding == ("crypto_gross_cap",)


def test_held_crypto_counts_and_an_account_over_the_crypto_cap_only_reduces_it() -> None:
    # held crypto 0.3 (not movable) + 0.75 outside = 1.05 > 1.0: the movable crypto goes to 0, from 0.1
    caps = ExposureCaps(gross_cap=2.0, max_gross_add=1.0)
    out = cap_targets(
        np.array([0.3, 0.15, 0.1]),
        np.array([0.3, 0.1, 0.0]),
        np.array([False, True, True]),
        caps,
        0.75,
        np.array([True, True, False]),
        0.75,
    )
    np.testing.assert_allclose(out.weights, [0.3, 0.0, 0.1], rtol=0, atol=1e-15)
    assert out.binding == ("crypto_gross_cap",)


def test_the_leverage_cap_binds_when_it_is_the_lower() -> None:
    caps = ExposureCaps(gross_cap=3.0, leverage_cap=0.2, max_gross_add=1.0)
    out = cap_targets(np.array([0.15, -0.15]), np.zeros(2), np.ones(2, bool), caps)
    np.testing.assert_allclose(out.weights, [0.1, -0.1], rtol=0, atol=1e-15)
    assert out.binding == ("leverage_cap",)


def test_a_flip_counts_its_whole_new_side_against_the_throttle() -> None:
    out = cap_targets(np.array([-0.15]), np.array([0.1]), np.ones(1, bool), ExposureCaps(max_gross_add=0.05))
    np.testing.assert_allclose(out.weights, [-0.05], rtol=0, atol=1e-15)
    assert added_gross(out.weights, np.array([0.1]))[0] == pytest.approx(0.05)


def test_reductions_are_never_throttled() -> None:
    out = cap_targets(
        np.array([0.0, 0.05]), np.array([0.15, 0.15]), np.ones(2, bool), ExposureCaps(max_gross_add=0.0)
    )
    np.testing.assert_array_equal(out.weights, [0.0, 0.05])
    assert out.binding == ()


@pytest.mark.parametrize(
    "name", ["per_symbol_cap", "gross_cap", "leverage_cap", "max_gross_add", "crypto_gross_cap"]
)
@pytest.mark.parametrize("value", [math.inf, math.nan, "inf", "nan"])
def test_a_cap_that_is_not_a_finite_number_is_refused(name: str, value: float | str) -> None:
    with pytest.raises(ValidationError) as info:
        ExposureCaps.model_validate({name: value})
    ((error,),) = [info.value.errors()]
    assert (error["loc"], error["type"]) == ((name,), "finite_number")


@pytest.mark.parametrize(
    ("name", "ceiling"),
    [
        ("per_symbol_cap", 1.0),
        ("gross_cap", 4.0),
        ("leverage_cap", 4.0),
        ("max_gross_add", 4.0),
        ("crypto_gross_cap", 1.0),  # crypto is unlevered
    ],
)
def test_a_cap_above_its_ceiling_is_refused(name: str, ceiling: float) -> None:
    assert getattr(ExposureCaps(**{name: ceiling}), name) == ceiling
    with pytest.raises(ValidationError) as info:
        ExposureCaps(**{name: ceiling * 1.01})
    ((error,),) = [info.value.errors()]
    assert (error["loc"], error["type"], error["ctx"]["le"]) == ((name,), "less_than_equal", ceiling)


@pytest.mark.parametrize("config", ["serve", "live", "serve_app"])
def test_every_config_carrying_caps_refuses_an_infinite_one(config: str) -> None:
    from raytrade.cluster.serve_app import BuilderArgs
    from raytrade.serve.decide import ServeConfig

    caps = {"gross_cap": "inf"}  # as a config file or serveConfigV2's args spell it
    with pytest.raises(ValidationError, match="finite number"):
        if config == "serve":
            ServeConfig.model_validate({"caps": caps})
        elif config == "live":
            LiveConfig.model_validate({"caps": caps})
        else:
            BuilderArgs.model_validate({"model": "m", "registry": "r", "caps": caps})


weights = st.floats(-2.0, 2.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 8),
    per_symbol=st.floats(0.01, 1.0),
    gross=st.floats(0.05, 3.0),
    leverage=st.floats(0.05, 3.0),
    throttle=st.floats(0.0, 1.0),
    external=st.floats(0.0, 1.5),
    crypto_cap=st.floats(0.05, 1.0),
    crypto_share=st.floats(0.0, 1.0),
)
def test_capped_targets_never_exceed_the_caps(
    data: st.DataObject,
    n: int,
    per_symbol: float,
    gross: float,
    leverage: float,
    throttle: float,
    external: float,
    crypto_cap: float,
    crypto_share: float,
) -> None:
    target = np.array(data.draw(st.lists(weights, min_size=n, max_size=n)))
    current = np.array(data.draw(st.lists(weights, min_size=n, max_size=n)))
    movable = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    crypto = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    caps = ExposureCaps(
        per_symbol_cap=per_symbol,
        gross_cap=gross,
        leverage_cap=leverage,
        max_gross_add=throttle,
        crypto_gross_cap=crypto_cap,
    )
    external_crypto = external * crypto_share  # the crypto part of what is held outside
    w = cap_targets(target, current, movable, caps, external, crypto, external_crypto).weights

    np.testing.assert_array_equal(w[~movable], current[~movable])  # held: no new risk
    assert np.all(np.abs(w[movable]) <= per_symbol + TOL)
    locked = float(np.abs(current[~movable]).sum()) + external
    if locked <= caps.gross_limit:
        assert float(np.abs(w).sum()) + external <= caps.gross_limit + TOL
    else:
        assert np.all(w[movable] == 0.0)
    locked_crypto = float(np.abs(current[~movable & crypto]).sum()) + external_crypto
    if locked_crypto <= crypto_cap:
        assert float(np.abs(w[crypto]).sum()) + external_crypto <= crypto_cap + TOL
    else:  # already over: no crypto added, every movable crypto weight to 0
        assert np.all(w[movable & crypto] == 0.0)
    assert float(added_gross(w, current).sum()) <= throttle + TOL
    # the caps only ever take risk away from the model's target: never larger, never the other side
    assert np.all(np.abs(w[movable]) <= np.abs(target[movable]) + TOL)
    assert np.all(w[movable] * target[movable] >= 0.0)


# -------------------------------------------------------------------------------------- responses


def test_every_answer_has_its_own_decision_id_and_target_quantities() -> None:
    request = ActRequest.model_validate(
        {
            "account": {"equity": 100_000.0},
            "positions": [
                {
                    "symbol": "AAPL",
                    "qty": "50",
                    "side": "long",
                    "market_value": "10000",
                    "current_price": "200",
                },
                {
                    "symbol": "ETHUSD",
                    "qty": "2",
                    "side": "short",
                    "market_value": "-5000",
                    "current_price": "2500",
                },
            ],
            "drawdown_pct": 0.0,
            "analysis": {
                "AAPL": {"bid_price": 249.0, "ask_price": 251.0},
                "MSFT": {"last_close": 400.0},
                "X": {},
            },
        }
    )
    one, two = hold_everything(request, "m", 1, "test"), hold_everything(request, "m", 1, "test")
    assert one.decision_id != two.decision_id and len(one.decision_id) == 32
    int(one.decision_id, 16)  # hex
    qty = {s: d.target_qty for s, d in one.decisions.items()}
    # every position at the units held, not its weight at the mid (0.1 x 100k / 250 = 40 would sell 10
    # on a loop ordering target_qty - qty); a short's units are negative; flat symbols 0, priced or not
    assert qty == {"AAPL": 50.0, "ETHUSD": -2.0, "MSFT": 0.0, "X": 0.0}
    assert ActResponse.model_validate_json(one.model_dump_json()).decision_id == one.decision_id


# ---------------------------------------------------------------------------------- order planning


def _book(bid: float, ask: float) -> TopOfBook:
    return TopOfBook(NOW, bid, ask, 100.0, 100.0)


def _answer(decisions: dict[str, tuple[float, str]], current: dict[str, float] | None = None) -> ActResponse:
    """``decisions``: symbol -> (target, gate mode); ``current``: symbol -> the service's current
    weight (default 0). The planner sends nothing for a symbol whose target is its current weight
    (``serve.orders.moves``), and otherwise sizes from its own holdings at the mid."""
    return ActResponse(
        model="alpha@3",
        model_version=3,
        as_of=NOW,
        decisions={
            s: SymbolDecision(
                target_weight=t,
                current_weight=(current or {}).get(s, 0.0),
                side="flat" if t == 0 else ("long" if t > 0 else "short"),
                gate_mode=m,  # type: ignore[arg-type]
                confidence=0.5,
                tradeable=m != "hold",
            )
            for s, (t, m) in decisions.items()
        },
        gross_exposure=sum(abs(t) for t, _ in decisions.values()),
    )


QUOTES = {"AAPL": _book(99.99, 100.01), "MSFT": _book(399.9, 400.1), "BTCUSD": _book(49_990.0, 50_010.0)}


def test_plan_orders_clamps_a_target_to_the_per_symbol_cap() -> None:
    (plan,) = plan_orders(_answer({"AAPL": (0.2, "aggressive")}), EQUITY, QUOTES, {}, "c1")
    assert (plan.qty, plan.target_weight) == (150.0, pytest.approx(0.15))
    assert plan.note == "caps (per_symbol_cap): target +0.2000 -> +0.1500"


def test_plan_orders_throttles_the_basket() -> None:
    # 0.15 + 0.15 from flat adds 0.30 > 0.25: each scaled to 0.125 -> 125 AAPL at 100, 31.25 -> 31 MSFT at 400
    aapl, msft = plan_orders(
        _answer({"AAPL": (0.15, "aggressive"), "MSFT": (0.15, "aggressive")}), EQUITY, QUOTES, {}, "c1"
    )
    assert (aapl.qty, msft.qty) == (125.0, 31.0)


def test_plan_orders_counts_held_positions_against_the_gross_cap() -> None:
    # MSFT held (1.1 of equity) + AAPL bought: the gross budget left is 0.1 -> 100 shares
    answer = _answer({"AAPL": (0.15, "aggressive"), "MSFT": (0.0, "hold")})
    (plan,) = plan_orders(answer, EQUITY, QUOTES, {"MSFT": 275.0}, "c1")
    assert (plan.symbol, plan.qty) == ("AAPL", 100.0)


def test_plan_orders_counts_crypto_held_outside_the_answer_against_the_crypto_cap() -> None:
    # ETHUSD held outside the answer, 0.9 of equity at the broker's value (no quote): BTCUSD may
    # reach 0.1 (the crypto cap 1.0 - 0.9), not its per-symbol 0.15 -> 10k / 50k = 0.2 BTC
    answer = _answer({"BTCUSD": (0.15, "aggressive")})
    (plan,) = plan_orders(answer, EQUITY, QUOTES, {"ETHUSD": 30.0}, "c1", held_value={"ETHUSD": 90_000.0})
    assert (plan.symbol, plan.side, plan.qty) == ("BTCUSD", "buy", pytest.approx(0.2))
    assert plan.note == "caps (crypto_gross_cap): target +0.1500 -> +0.1000"


def test_repeated_cycles_never_take_crypto_past_its_cap() -> None:
    """The reviewer's loop: each cycle the answer wants 0.15 of BTCUSD while 0.9 of ETH/USD sits
    outside it; fills at the mid. Crypto gross ends at the cap, never past it; from over the cap
    (BTCUSD 0.2 + 0.9 = 1.1) the plan only sells."""
    answer = _answer({"BTCUSD": (0.15, "aggressive")})
    for start, end in [(0.0, 0.1), (0.2, 0.1)]:
        held = {"BTCUSD": start * EQUITY / 50_000.0, "ETH/USD": 30.0}
        for cycle in range(4):
            before = held["BTCUSD"]
            for plan in plan_orders(
                answer, EQUITY, QUOTES, held, f"c{cycle}", held_value={"ETH/USD": 90_000.0}
            ):
                held[plan.symbol] += plan.qty if plan.side == "buy" else -plan.qty
            crypto = 0.9 + held["BTCUSD"] * 50_000.0 / EQUITY
            assert crypto <= max(1.0, 0.9 + before * 50_000.0 / EQUITY) + TOL
            assert start <= 0.1 or held["BTCUSD"] <= before  # over the cap: only reductions
        assert held["BTCUSD"] * 50_000.0 / EQUITY == pytest.approx(end)


symbols = ["AAPL", "MSFT", "BTCUSD", "NVDA"]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), cycles=st.integers(2, 6), fractional=st.booleans())
def test_repeated_cycles_never_walk_past_the_caps(data: st.DataObject, cycles: int, fractional: bool) -> None:
    """Fill every planned order at the mid, cycle after cycle, with random answers and random books:
    an order never takes a symbol past the per-symbol cap nor the account past the gross cap (unless
    it was already past it, and then only toward it), and no cycle adds more gross than the throttle."""
    caps = ExposureCaps()
    cfg = LiveConfig(fractional=fractional, caps=caps)
    held: dict[str, float] = {}
    for cycle in range(cycles):
        books = {
            s: _book(p * (1 - h), p * (1 + h))
            for s in symbols
            for p, h in [(data.draw(st.floats(10.0, 500.0)), data.draw(st.floats(0.0, 0.002)))]
        }
        modes = st.sampled_from(["aggressive", "passive", "probe", "flat", "hold"])
        answer = _answer({s: (data.draw(weights), data.draw(modes)) for s in symbols})
        mid = {s: 0.5 * (b.bid + b.ask) for s, b in books.items()}
        before = {s: held.get(s, 0.0) * mid[s] / EQUITY for s in symbols}
        # the broker's marks: a book wider than the loop's spread cap is held, valued at them
        values = {s: q * mid[s] for s, q in held.items()}
        for plan in plan_orders(answer, EQUITY, books, held, f"c{cycle}", cfg, held_value=values):
            held[plan.symbol] = held.get(plan.symbol, 0.0) + (plan.qty if plan.side == "buy" else -plan.qty)
        after = {s: held.get(s, 0.0) * mid[s] / EQUITY for s in symbols}
        w_before, w_after = np.array(list(before.values())), np.array(list(after.values()))
        assert np.all(np.abs(w_after) <= np.maximum(caps.per_symbol_cap, np.abs(w_before)) + TOL)
        gross_before, gross_after = np.abs(w_before).sum(), np.abs(w_after).sum()
        assert gross_after <= max(caps.gross_limit, gross_before) + TOL
        assert float(added_gross(w_after, w_before).sum()) <= caps.max_gross_add + TOL


@settings(max_examples=100, deadline=None)
@given(data=st.data(), cycles=st.integers(2, 6), fractional=st.booleans())
def test_one_share_above_the_order_cap_never_walks_past_the_exposure_caps(
    data: st.DataObject, cycles: int, fractional: bool
) -> None:
    """As above, on a small account ($3,000) holding positions up to 2.5x its caps, with prices up to
    $2,000 and thin bars (10 % of the dollar volume can be less than one share): a reduction may then
    send one share above its order cap, and still no order takes a symbol past the per-symbol cap,
    the account past the gross cap (unless already past it, and then only toward it) nor adds more
    gross in a cycle than the throttle; and a symbol told to close (target 0) with some capacity
    sends an order every cycle until it is closed."""
    caps, equity = ExposureCaps(), 3_000.0
    cfg = LiveConfig(fractional=fractional, caps=caps)
    prices = {s: data.draw(st.floats(10.0, 2_000.0)) for s in symbols}
    books = {s: _book(p, p) for s, p in prices.items()}
    held = {  # shorts are whole shares (Alpaca sells short no fraction)
        s: w * equity / p if fractional and w > 0 else float(round(w * equity / p))
        for s, p in prices.items()
        for w in [data.draw(st.floats(-0.375, 0.375))]
    }
    held["BTCUSD"] = abs(held["BTCUSD"])
    volumes = {s: data.draw(st.sampled_from([0.0, 500.0, 2_000.0, 20_000.0, 1e9])) for s in symbols}
    for cycle in range(cycles):
        modes = st.sampled_from(["aggressive", "flat", "hold"])
        targets = st.one_of(st.just(0.0), weights)  # often a close (the kill switch's unwind)
        before = {s: held[s] * prices[s] / equity for s in symbols}
        answer = _answer({s: (data.draw(targets), data.draw(modes)) for s in symbols}, before)
        plans = plan_orders(answer, equity, books, held, f"c{cycle}", cfg, dollar_volume=volumes)
        for plan in plans:
            held[plan.symbol] += plan.qty if plan.side == "buy" else -plan.qty
        after = {s: held[s] * prices[s] / equity for s in symbols}
        w_before, w_after = np.array(list(before.values())), np.array(list(after.values()))
        assert np.all(np.abs(w_after) <= np.maximum(caps.per_symbol_cap, np.abs(w_before)) + TOL)
        gross_before, gross_after = np.abs(w_before).sum(), np.abs(w_after).sum()
        assert gross_after <= max(caps.gross_limit, gross_before) + TOL
        assert float(added_gross(w_after, w_before).sum()) <= caps.max_gross_add + TOL
        for s, d in answer.decisions.items():  # a close with capacity always moves (crypto: dust)
            h = before[s] * equity / prices[s]
            one_step = min(1e-4 if fractional and h > 0 else 1.0, abs(h))
            closes = s != "BTCUSD" and d.target_weight == 0 and d.gate_mode != "hold" and h != 0
            if closes and volumes[s] > 0 and one_step * prices[s] >= cfg.min_trade_notional:
                assert s in {p.symbol for p in plans}, (s, h, volumes[s])


def test_plan_orders_counts_a_position_it_cannot_quote_at_the_brokers_value() -> None:
    """A position outside the loop's symbols has no quote here; at the broker's market value (1.1 of
    equity) it leaves a gross budget of 0.1 -> 100 AAPL (without it AAPL would get its full 0.15)."""
    answer = _answer({"AAPL": (0.15, "aggressive")})
    held = {"OTHER": 1_000.0}
    (plan,) = plan_orders(answer, EQUITY, QUOTES, held, "c1", held_value={"OTHER": 110_000.0})
    assert (plan.symbol, plan.qty) == ("AAPL", 100.0)
    (unvalued,) = plan_orders(answer, EQUITY, QUOTES, held, "c1")
    assert unvalued.qty == 150.0


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_resting_orders_filling_after_the_plan_never_take_gross_past_the_cap(data: st.DataObject) -> None:
    """Random holdings near the gross cap, random resting orders (buy or sell, on any symbol) and a
    random answer: after the planned orders fill at the mid, any subset of the resting orders filling
    too (at the mid) leaves gross within the cap, or no higher than that subset's fills alone would
    have taken it."""
    caps = ExposureCaps()
    names = [f"S{i}" for i in range(8)]
    books = {s: _book(p, p) for s in names for p in [data.draw(st.floats(10.0, 500.0))]}
    mid = {s: b.bid for s, b in books.items()}
    held = {s: data.draw(st.floats(-0.15, 0.15)) * EQUITY / mid[s] for s in names}
    resting = [
        RestingOrder(
            symbol=s,
            side=side,
            remaining_qty=w * EQUITY / mid[s],
            reference_price=mid[s],
            label=f"{s}-{side}",
        )
        for s in data.draw(st.lists(st.sampled_from(names), max_size=4))
        for side, w in [(data.draw(st.sampled_from(["buy", "sell"])), data.draw(st.floats(0.0, 0.4)))]
    ]
    modes = st.sampled_from(["aggressive", "passive", "flat", "hold"])
    answer = _answer({s: (data.draw(weights), data.draw(modes)) for s in names})
    planned = dict(held)
    for plan in plan_orders(answer, EQUITY, books, held, "c1", LiveConfig(fractional=True), resting=resting):
        assert plan.symbol not in {o.symbol for o in resting}  # a symbol with a resting order is held
        planned[plan.symbol] += plan.qty if plan.side == "buy" else -plan.qty
    for fills in data.draw(st.lists(st.sets(st.integers(0, max(len(resting) - 1, 0))), min_size=1)):

        def gross(qty: dict[str, float], fills: set[int] = fills) -> float:
            after = dict(qty)
            for i in fills & set(range(len(resting))):
                o = resting[i]
                assert o.symbol is not None and o.remaining_qty is not None
                after[o.symbol] += o.remaining_qty if o.side == "buy" else -o.remaining_qty
            return sum(abs(q * mid[s]) for s, q in after.items()) / EQUITY

        assert gross(planned) <= max(caps.gross_limit, gross(held)) + TOL


@pytest.mark.parametrize(
    ("volume", "sold"),
    [(None, 312.0), (100_000.0, 125.0)],
    ids=["trade-fraction-cap", "thin-volume-participation"],
)
def test_a_reduction_its_order_cap_cuts_short_frees_only_the_gross_it_frees(
    volume: float | None, sold: float
) -> None:
    """AAPL at 1.2 of equity is told to close, but one order may move at most a quarter of equity (or
    10 % of a thin bar's dollar volume): the buys must fit the gross the sale really frees. Sized as
    if AAPL closed, they took gross to 1.2004 (and 1.35 on the thin bar)."""
    books = {s: _book(10.0, 10.0) for s in ("MSFT", "BTCUSD", "NVDA")} | {"AAPL": _book(80.0, 80.0)}
    answer = _answer(
        {
            "AAPL": (0.0, "aggressive"),
            "MSFT": (0.0, "flat"),
            "BTCUSD": (1.0, "aggressive"),
            "NVDA": (1.0, "aggressive"),
        },
        {"AAPL": 1500.0 * 80.0 / EQUITY},
    )
    held = {"AAPL": 1500.0}
    volumes = {} if volume is None else {"AAPL": volume}
    plans = plan_orders(
        answer, EQUITY, books, held, "c1", LiveConfig(fractional=False), dollar_volume=volumes
    )
    after = dict(held)
    for plan in plans:
        after[plan.symbol] = after.get(plan.symbol, 0.0) + (plan.qty if plan.side == "buy" else -plan.qty)
    assert after["AAPL"] == 1500.0 - sold  # the capped sale goes out in full
    mids = {s: 0.5 * (b.bid + b.ask) for s, b in books.items()}
    gross = sum(abs(q) * mids[s] for s, q in after.items()) / EQUITY
    assert gross <= ExposureCaps().gross_limit + TOL
    assert after.get("BTCUSD", 0.0) > 0  # the rest of the freed room is still used


@pytest.mark.parametrize(
    "text", ["40", "-61.70", " 7 ", "\t7\n", "+5", "1e3", "1E-3", ".5", "5.", "0001", "1_000", "-0"]
)
def test_a_broker_number_sent_as_a_string_reads_as_float_reads_it(text: str) -> None:
    """Alpaca sends quantities and values as strings: pydantic-core's parsing must agree with float()."""
    side = "short" if float(text.strip()) < 0 else "long"  # a long's signs are >= 0 (ActRequest refuses)
    position = {"symbol": "A", "qty": text, "side": side, "market_value": text, "current_price": "1"}
    body = {"account": {"equity": "1000", "cash": text}, "positions": [position], "drawdown_pct": "0"}
    body["analysis"] = {"A": {"bid_price": text, "last_close": "2"}}
    request = ActRequest.model_validate_json(json.dumps(body))
    expected = float(text.strip())
    assert request.account.cash == expected and request.account.equity == 1000.0
    assert (request.positions[0].qty, request.positions[0].market_value) == (expected, expected)
    assert request.analysis["A"].bid_price == expected


@pytest.mark.parametrize(
    "text", ["ten", "", " ", "nan", "NaN", "inf", "-Infinity", "1e400", "0x10", "1,5", "١٢", "１２"]
)
def test_a_string_that_is_not_a_finite_number_is_a_422_naming_the_field(text: str) -> None:
    body = {"account": {"equity": 1e5}, "drawdown_pct": 0.0, "analysis": {"A": {"ask_price": text}}}
    with pytest.raises(ValidationError) as info:
        ActRequest.model_validate_json(json.dumps(body))
    assert [e["loc"] for e in info.value.errors()] == [("analysis", "A", "ask_price")]


_BOUNDED = [  # (model, field, a value just outside the field's own bound)
    (Account, "equity", 0.99),
    (Account, "buying_power", -0.01),
    (Position, "current_price", 0.0),
    (SymbolSnapshot, "spread_bps", -0.01),
    (SymbolSnapshot, "last_close", 0.0),
    (SymbolSnapshot, "kelly_fraction", -0.01),
    (SymbolSnapshot, "kelly_sigma_pct", -0.01),
    (SymbolSnapshot, "avg_dollar_vol", -0.01),
    (SymbolSnapshot, "spread_cap_bps", -0.01),
    (ActRequest, "drawdown_pct", 0.01),
    (ActRequest, "drawdown_pct", -1.01),
]


def _valid(model: type) -> dict[str, object]:
    return {
        Account: {"equity": 1e5},
        Position: {"symbol": "A", "qty": 1, "side": "long", "market_value": 1},
        SymbolSnapshot: {},
        ActRequest: {"account": {"equity": 1e5}, "drawdown_pct": 0.0, "analysis": {"A": {}}},
        CallerKillSwitch: {"active": True, "bars_active": 1, "peak_equity": 1e5},
    }[model]


@pytest.mark.parametrize(("model", "field", "value"), _BOUNDED)
def test_a_number_outside_its_fields_own_bound_is_refused(model: type, field: str, value: float) -> None:
    """Each field's own bound holds next to the +-1e12 bound every number has (two bounds on one
    field must not override each other), sent as a number or as a broker's string."""
    for sent in (value, str(value)):
        with pytest.raises(ValidationError) as info:
            model.model_validate_json(json.dumps({**_valid(model), field: sent}))
        assert [e["loc"] for e in info.value.errors()] == [(field,)]


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (m, f)
        for m in (Account, Position, SymbolSnapshot, ActRequest)
        for f, i in m.model_fields.items()
        if "float" in str(i.annotation)
    ],
)
def test_every_number_is_within_the_absolute_bound(model: type, field: str) -> None:
    for sent in (2e12, -2e12, "2e12"):
        with pytest.raises(ValidationError) as info:
            model.model_validate_json(json.dumps({**_valid(model), field: sent}))
        assert [e["loc"] for e in info.value.errors()] == [(field,)]


_NUMBERS = [  # every number a request carries
    (m, f)
    for m in (Account, Position, SymbolSnapshot, ActRequest, CallerKillSwitch)
    for f, i in m.model_fields.items()
    if re.search(r"\b(float|int)\b", str(i.annotation))  # bare, Optional or Annotated
]


def test_the_numbers_listed_are_every_number_of_a_request() -> None:
    assert len(_NUMBERS) == 20 and (CallerKillSwitch, "bars_active") in _NUMBERS


@pytest.mark.parametrize(("model", "field"), _NUMBERS)
def test_a_boolean_is_not_a_number(model: type, field: str) -> None:
    """pydantic's lax float reads true as 1.0 and false as 0.0: ``"qty": true`` was one unit held,
    ``"equity": true`` an account of 1. Refused, as JSON and as Python, one error naming the field."""
    valid = {
        **_valid(model),
        **({"active": True, "bars_active": 1, "peak_equity": 1e5} if model is CallerKillSwitch else {}),
    }
    model.model_validate_json(json.dumps(valid))  # the body is valid without the boolean
    for sent in (True, False):
        for parse in (lambda b: model.model_validate_json(json.dumps(b)), model.model_validate):
            with pytest.raises(ValidationError) as info:
                parse({**valid, field: sent})
            (error,) = info.value.errors()
            assert error["loc"] == (field,) and "not a boolean" in error["msg"], error


@pytest.mark.parametrize(
    ("sent", "read"), [(3, 3), (3.0, 3), ("3", 3), (" 3 ", 3), (np.int64(3), 3), (0, 0), (10**9, 10**9)]
)
def test_bars_active_reads_integers_sent_as_numbers_or_strings(sent: object, read: int) -> None:
    state = CallerKillSwitch.model_validate({"active": True, "bars_active": sent, "peak_equity": 1e5})
    assert state.bars_active == read and type(state.bars_active) is int


@pytest.mark.parametrize("sent", [3.5, "3.5", "1e3", -1, 10**9 + 1, True, None, "three"])
def test_bars_active_refuses_what_is_not_an_integer_in_range(sent: object) -> None:
    with pytest.raises(ValidationError) as info:
        CallerKillSwitch.model_validate({"active": True, "bars_active": sent, "peak_equity": 1e5})
    assert [e["loc"] for e in info.value.errors()] == [("bars_active",)]


def test_a_number_error_states_the_fields_range() -> None:
    body = {"account": {"equity": 0.5}, "drawdown_pct": "0.2", "analysis": {"A": {"last_close": -1}}}
    with pytest.raises(ValidationError) as info:
        ActRequest.model_validate_json(json.dumps(body))
    messages = {e["loc"]: e["msg"] for e in info.value.errors()}
    assert messages == {
        ("account", "equity"): "Input should be a finite number in [1, 1e+12], as a JSON number or a "
        "string of one (not a boolean)",
        ("drawdown_pct",): "Input should be a finite number in [-1, 0], as a JSON number or a string of "
        "one (not a boolean)",
        ("analysis", "A", "last_close"): "Input should be a finite number in (0, 1e+12], as a JSON number "
        "or a string of one (not a boolean)",
    }


_PROBES = [-2e12, -1e12, -1.01, -1.0, -0.01, 0.0, 0.5, 0.99, 1.0, 2.5, 3.0, 1e9, 1e9 + 1, 1e12, 2e12, 1e17]


@pytest.mark.parametrize(("model", "field"), _NUMBERS)
def test_the_published_schema_bounds_each_number_as_validation_does(model: type, field: str) -> None:
    """``/openapi.json`` and the request's JSON schema say what a number may be: a JSON number sent
    to the service is valid by the schema exactly when the service accepts it (the schema listed the
    union's unbounded branches, and a bars_active of -5, 2.5 or 1e15 passed it)."""
    import jsonschema

    prop = model.model_json_schema()["properties"][field]
    assert {"type": "string"} in [{"type": b.get("type")} for b in prop["anyOf"]]  # broker strings
    for value in _PROBES:
        sent = {**_valid(model), field: value}
        try:
            model.model_validate_json(json.dumps(sent))
            accepted = True
        except ValidationError:
            accepted = False
        assert jsonschema.Draft202012Validator(prop).is_valid(value) == accepted, (field, value)


@pytest.mark.parametrize("kill", [False, True])
def test_a_symbol_the_answer_keeps_gets_no_order_whatever_the_mid(kill: bool) -> None:
    """The service weighs 100 AAPL at the broker's $101 (0.101 of equity) and keeps it there
    (target = current); the loop's mid is $100. It bought 1 share to make up the price gap (under the
    kill switch too: a buy while unwinding). A symbol the answer moves still trades."""
    answer = _answer({"AAPL": (0.101, "aggressive"), "MSFT": (0.2, "aggressive")}, {"AAPL": 0.101})
    answer = answer.model_copy(update={"kill_switch_active": kill})
    plan = plan_cycle(answer, EQUITY, QUOTES, {"AAPL": 100.0}, "c1", LiveConfig(fractional=False))
    assert [p.symbol for p in plan.orders] == ([] if kill else ["MSFT"])
    assert "AAPL" not in plan.notes  # nothing to say: the answer does not move it


def test_under_the_kill_switch_no_order_adds_to_a_position() -> None:
    """The answer unwinds AAPL from 0.0999 to 0.099 of equity at the broker's price ($101.94 for 98
    shares), but at the loop's mid of $100 the 99-share target is a buy of 1: under the kill switch
    an order that adds to a position, or opens one, is refused with a note; reductions go out."""
    answer = _answer(
        {"AAPL": (0.099, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.01, "aggressive")},
        {"AAPL": 0.0999, "MSFT": 0.08},
    ).model_copy(update={"kill_switch_active": True})
    held = {"AAPL": 98.0, "MSFT": 20.0}
    plan = plan_cycle(answer, EQUITY, QUOTES, held, "c1", LiveConfig(fractional=False))
    assert [(p.symbol, p.side, p.qty) for p in plan.orders] == [("MSFT", "sell", 20.0)]
    assert plan.notes["AAPL"] == "AAPL: kill switch on: unwind only, a buy of 1 from +98 would add to it"
    assert plan.notes["BTCUSD"].startswith("BTCUSD: kill switch on: unwind only, a buy of")
    off = plan_cycle(answer.model_copy(update={"kill_switch_active": False}), EQUITY, QUOTES, held, "c1")
    assert {p.symbol for p in off.orders} == {"AAPL", "MSFT", "BTCUSD"}  # the same answer, switch off


def test_a_kept_symbol_is_still_held_to_the_loops_own_caps() -> None:
    """The loop runs with a stricter per-symbol cap (0.10) than the service it asks: a position the
    answer keeps at 0.15 is cut to the loop's cap (it was left alone, silently, once kept symbols were
    not planned at all); a kept one within the caps is still not traded."""
    answer = _answer(
        {"AAPL": (0.15, "aggressive"), "MSFT": (0.08, "aggressive")}, {"AAPL": 0.15, "MSFT": 0.08}
    )
    caps = ExposureCaps(per_symbol_cap=0.10)
    plan = plan_cycle(
        answer, EQUITY, QUOTES, {"AAPL": 150.0, "MSFT": 20.0}, "c1", LiveConfig(fractional=False, caps=caps)
    )
    assert [(p.symbol, p.side, p.qty) for p in plan.orders] == [("AAPL", "sell", 50.0)]


def test_a_close_goes_out_even_when_the_service_valued_the_position_at_zero() -> None:
    """Alpaca reported the position's market value as 0, so the service's current weight is 0 and its
    target 0 looks like "keep": a target of 0 still closes what the loop holds."""
    answer = _answer({"AAPL": (0.0, "flat")}, {"AAPL": 0.0})
    plan = plan_cycle(answer, EQUITY, QUOTES, {"AAPL": 150.0}, "c1", LiveConfig(fractional=False))
    assert [(p.symbol, p.side, p.qty) for p in plan.orders] == [("AAPL", "sell", 150.0)]
