"""``serve.answer_check``: the rules a caller holds an answer to, each broken once by an answer that
keeps the schema (exact messages), and kept by answers the service gives (``test_serve`` fuzzes
``/v1/act`` and ``test_serve_fast_path`` decides hostile batches, both asserting no breach)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from raytrade.serve.answer_check import answer_breach
from raytrade.serve.caps import ExposureCaps
from raytrade.serve.schemas import ActRequest, ActResponse

AS_OF = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
QUOTE = {"bid_price": 99.99, "ask_price": 100.01}
LOOSE = ExposureCaps(per_symbol_cap=1.0)  # per-symbol out of the way: the book-wide rules alone


def _request(**analysis: dict[str, Any]) -> ActRequest:
    return ActRequest.model_validate(
        {
            "account": {"equity": 1000.0},
            "drawdown_pct": 0.0,
            "positions": [{"symbol": "AAA", "qty": "2", "side": "long", "market_value": "200"}],
            "analysis": analysis or {"AAA": QUOTE, "BBB": QUOTE, "CCCUSD": QUOTE},
            "as_of": AS_OF.isoformat(),
        }
    )


def _answer(
    targets: dict[str, float], kill: bool = False, current: dict[str, float] | None = None
) -> ActResponse:
    current = {"AAA": 0.2} if current is None else current
    return ActResponse.model_validate(
        {
            "model": "m@1",
            "model_version": 1,
            "as_of": AS_OF,
            "decisions": {
                s: {
                    "target_weight": w,
                    "current_weight": current.get(s, 0.0),
                    "side": "flat" if w == 0 else ("long" if w > 0 else "short"),
                    "gate_mode": "aggressive",
                    "confidence": 0.5,
                    "tradeable": True,
                }
                for s, w in targets.items()
            },
            "gross_exposure": sum(abs(w) for w in targets.values()),
            "kill_switch_active": kill,
        }
    )


@pytest.mark.parametrize(
    ("targets", "caps", "kill", "breach"),
    [
        ({"AAA": 0.2, "BBB": 0.1, "CCCUSD": 0.0}, ExposureCaps(), False, None),
        (
            {"AAA": 0.9, "BBB": 0.5, "CCCUSD": 0.0},
            LOOSE,
            False,
            "gross 1.4 of the decisions is over the gross cap 1.2",
        ),
        (
            {"AAA": 0.2, "BBB": 0.2, "CCCUSD": 0.1},
            LOOSE,
            False,
            "the decisions add 0.3 of gross, over the basket throttle 0.25",
        ),
        # a flip's whole new side is new gross: 0.2 long -> 0.3 short adds 0.3, not 0.1
        ({"AAA": -0.3, "BBB": 0.0, "CCCUSD": 0.0}, LOOSE, False, "the decisions add 0.3 of gross"),
        (
            {"AAA": 0.2, "BBB": 0.0, "CCCUSD": -0.01},
            LOOSE,
            False,
            "decisions.CCCUSD.target_weight -0.01 opens or grows a crypto short",
        ),
        ({"AAA": 0.1, "BBB": 0.0, "CCCUSD": 0.0}, ExposureCaps(), True, None),
        (
            {"AAA": -0.1, "BBB": 0.0, "CCCUSD": 0.0},
            ExposureCaps(),
            True,
            "decisions.AAA.target_weight -0.1 grows or flips 0.2 under the kill switch",
        ),
        (
            {"AAA": 0.1, "BBB": 0.01, "CCCUSD": 0.0},
            ExposureCaps(),
            True,
            "decisions.BBB.target_weight 0.01 grows or flips 0 under",
        ),
        ({"AAA": 0.2, "BBB": 0.15 + 1e-10, "CCCUSD": 0.0}, ExposureCaps(), False, None),
    ],
    ids=[
        "kept",
        "gross",
        "throttle",
        "flip-adds-its-new-side",
        "crypto-short",
        "unwind",
        "kill-flip",
        "kill-grow",
        "rounding",
    ],
)
def test_each_book_rule(
    targets: dict[str, float], caps: ExposureCaps, kill: bool, breach: str | None
) -> None:
    got = answer_breach(_request(), _answer(targets, kill), caps)
    assert got is None if breach is None else got is not None and got.startswith(breach), got


def test_a_symbol_the_loops_gates_hold_keeps_its_weight_whatever_the_answer_says() -> None:
    """The answer calls BBB tradeable; the request's row says it is blocked (or quotes it 40 bps wide)."""
    for row, why in [
        ({**QUOTE, "trade_blocked": True, "block_reason": "halted"}, "blocked by the trading loop: halted"),
        ({"bid_price": 99.8, "ask_price": 100.2}, "spread 40.0 bps > cap 8 bps"),
        ({"last_close": 100.0}, "no two-sided quote"),
    ]:
        request = _request(AAA=QUOTE, BBB=row)
        got = answer_breach(request, _answer({"AAA": 0.2, "BBB": 0.05}), ExposureCaps())
        assert got == f"decisions.BBB.target_weight moves 0 -> 0.05 while the symbol is held ({why})"
        assert answer_breach(request, _answer({"AAA": 0.1, "BBB": 0.0}), ExposureCaps()) is None


def test_a_held_symbols_quantity_is_the_units_held_and_a_moved_ones_its_weight_at_the_mid() -> None:
    request = _request(AAA=QUOTE, BBB=QUOTE)
    answer = _answer({"AAA": 0.2, "BBB": 0.1})
    ok = {"AAA": 2.0, "BBB": 0.1 * 1000.0 / 100.0}
    for symbol, qty in [("AAA", 2.0), ("BBB", 1.0)]:
        decisions = {s: d.model_copy(update={"target_qty": ok[s]}) for s, d in answer.decisions.items()}
        assert (
            answer_breach(request, answer.model_copy(update={"decisions": decisions}), ExposureCaps()) is None
        )
        decisions[symbol] = decisions[symbol].model_copy(update={"target_qty": qty * 3})
        got = answer_breach(request, answer.model_copy(update={"decisions": decisions}), ExposureCaps())
        assert (
            got
            == f"decisions.{symbol}.target_qty is {qty * 3:g}; the request's book and prices make it {qty:g}"
        )


def test_a_weight_a_gross_rescale_moved_by_an_ulp_is_quoted_at_the_mid_as_the_service_does() -> None:
    """The service keeps the units held only where the target is exactly the current weight; a gross
    cap's rescale moves a weight left in place by about 1e-16, and the service then quotes it at the
    mid. The client expected the units held and held the whole answer."""
    request = _request(AAA=QUOTE, BBB=QUOTE)
    nudged = 0.2 - 1.1e-16
    answer = _answer({"AAA": nudged, "BBB": 0.0})
    decisions = {
        "AAA": answer.decisions["AAA"].model_copy(update={"target_qty": nudged * 1000.0 / 100.0}),
        "BBB": answer.decisions["BBB"].model_copy(update={"target_qty": 0.0}),
    }
    assert answer_breach(request, answer.model_copy(update={"decisions": decisions}), ExposureCaps()) is None


def test_a_loop_with_tighter_caps_checks_answers_against_the_looser_of_its_own_and_the_services() -> None:
    """Checked against `raytrade live --per-symbol-cap 0.1`, every answer of a service at its default
    0.15 would be held (its reductions too): the loop's planner trims to its own caps, and the answer
    is checked against the wider of the two."""
    from raytrade.serve.caps import widest

    tight = ExposureCaps(per_symbol_cap=0.1, max_gross_add=0.5)
    checked = widest(tight, ExposureCaps())
    assert (checked.per_symbol_cap, checked.max_gross_add, checked.gross_cap) == (0.15, 0.5, 1.2)
    answer = _answer({"AAA": 0.15, "BBB": 0.15, "CCCUSD": 0.0})
    assert answer_breach(_request(), answer, checked) is None
    assert answer_breach(_request(), answer, tight) is not None


def _book(positions: list[tuple[str, float]], symbols: tuple[str, ...]) -> ActRequest:
    """A 1,000 equity request holding ``positions`` (symbol, value), quoting ``symbols``."""
    return ActRequest.model_validate(
        {
            "account": {"equity": 1000.0},
            "drawdown_pct": 0.0,
            "positions": [
                {"symbol": s, "qty": "1", "side": "long", "market_value": str(v)} for s, v in positions
            ],
            "analysis": dict.fromkeys(symbols, QUOTE),
            "as_of": AS_OF.isoformat(),
        }
    )


WIDE = ExposureCaps(per_symbol_cap=1.0, gross_cap=2.0, leverage_cap=2.0, max_gross_add=2.0)
"""Every cap but the one under test out of the way."""
GROSS = ExposureCaps(per_symbol_cap=1.0, max_gross_add=2.0)
"""The gross cap (1.2) alone."""


@pytest.mark.parametrize(
    ("positions", "targets", "caps", "breach"),
    [
        # the decisions alone are within 1.2; with the 0.9 held outside them they are not
        (
            [("ZZZ", 900.0)],
            {"AAA": 0.2, "BBB": 0.3},
            GROSS,
            "gross 0.5 of the decisions and 0.9 held outside them is over the gross cap 1.2",
        ),
        ([("ZZZ", 900.0)], {"AAA": 0.2, "BBB": 0.1}, GROSS, None),
        # crypto unlevered: 1.2 of coins, within every other cap
        (
            [],
            {"CCCUSD": 0.6, "DDDUSD": 0.6},
            WIDE,
            "crypto gross 1.2 of the decisions is over the crypto gross cap 1",
        ),
        ([], {"CCCUSD": 0.5, "DDDUSD": 0.5}, WIDE, None),
        # a coin held outside the decisions takes its share of the crypto budget
        (
            [("BTC/USD", 950.0)],
            {"CCCUSD": 0.1},
            WIDE,
            "crypto gross 0.1 of the decisions and 0.95 held outside them is over the crypto gross cap 1",
        ),
        ([("BTC/USD", 950.0)], {"CCCUSD": 0.05}, WIDE, None),
        # an account already over the cap may keep what it has, never add
        ([("BTC/USD", 1100.0)], {"CCCUSD": 0.0}, WIDE, None),
    ],
    ids=[
        "outside-gross",
        "outside-gross-ok",
        "crypto",
        "crypto-ok",
        "outside-crypto",
        "outside-crypto-ok",
        "over-keeps",
    ],
)
def test_positions_outside_the_decisions_and_crypto_count_toward_the_caps(
    positions: list[tuple[str, float]], targets: dict[str, float], caps: ExposureCaps, breach: str | None
) -> None:
    """Before, a service's answer that spent the gross budget the positions outside its decisions
    already used, or put 1.2 of equity in coins, passed the client's check (the service itself keeps
    both rules: ``serve.caps.cap_targets``)."""
    request = _book(positions, tuple(targets))
    answer = _answer(targets, current={})
    got = answer_breach(request, answer, caps)
    assert got is None if breach is None else got is not None and got.startswith(breach), got
