"""Positions the service cannot read as the loop means them are refused (422), never guessed: a held
symbol spelled otherwise than the universe spells it (it would count as a position outside the
universe, and the per-symbol cap would let the same name be bought again beside it), a long whose
signs say short, a symbol with spaces or invisible characters; and a price too small to size with
gives no quantity instead of an infinite one. No Ray (the fixed-action service of
``tests/test_serve_crypto_cap.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from raytrade.serve.decide import DecisionService, RequestError
from raytrade.serve.schemas import ActRequest, target_quantity
from tests.test_serve_crypto_cap import EQUITY, _position, _request, _service

WANTS_SYN000 = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def service() -> DecisionService:
    import numpy as np

    return _service(action=np.array(WANTS_SYN000))


def test_the_universes_spelling_counts_toward_its_cap(service: DecisionService) -> None:
    answer = service.decide([_request(service, [_position("SYN000", 0.15, 150)])])[0]
    d = answer.decisions["SYN000"]
    assert answer.unmanaged == [] and d.current_weight == pytest.approx(0.15)
    assert abs(d.target_weight) <= 0.15 + 1e-12


@pytest.mark.parametrize("symbol", ["syn000", "Syn000", "syn/000"])
def test_a_held_symbol_spelled_otherwise_is_refused_naming_it(service: DecisionService, symbol: str) -> None:
    """Before: listed as unmanaged, SYN000's current weight read 0 and the service bought another
    0.15 of it beside the 0.15 held (0.30 in one name, past the 0.15 cap)."""
    request = _request(service, [_position(symbol, 0.15, 150)])
    with pytest.raises(
        RequestError, match=rf"{symbol!r} is the universe's 'SYN000' spelled otherwise"
    ) as err:
        service.decide([request])
    assert err.value.loc == ("positions", 0, "symbol")


def test_a_symbol_outside_the_universe_stays_unmanaged(service: DecisionService) -> None:
    answer = service.decide([_request(service, [_position("AAPL", 0.1, 10)])])[0]
    assert answer.unmanaged == ["AAPL"]


def _body(**position: Any) -> dict[str, Any]:
    return {
        "account": {"equity": EQUITY},
        "positions": [{"symbol": "SYN001", "qty": "150", "side": "long", "market_value": "15000"} | position],
        "drawdown_pct": 0.0,
        "analysis": {"SYN001": {"bid_price": 99.99, "ask_price": 100.01}},
    }


@pytest.mark.parametrize("symbol", ["SYN000 ", " SYN000", "SYN\u200b000", "SYN\t000", "SŸN000", "SYN 000"])
def test_a_symbol_with_spaces_or_invisible_characters_is_refused(symbol: str) -> None:
    with pytest.raises(ValidationError, match="symbol"):
        ActRequest.model_validate(_body(symbol=symbol))
    with pytest.raises(ValidationError, match="analysis"):
        ActRequest.model_validate(_body() | {"analysis": {symbol: {"bid_price": 1.0, "ask_price": 1.01}}})


@pytest.mark.parametrize("symbol", ["BTC/USD", "BRK.B", "BF-B", "SUIUSDT", "X"])
def test_real_tickers_are_accepted(symbol: str) -> None:
    assert ActRequest.model_validate(_body(symbol=symbol)).positions[0].symbol == symbol


@pytest.mark.parametrize("fields", [{"qty": "-150"}, {"market_value": "-15000"}])
def test_a_long_with_a_short_sign_is_refused(fields: dict[str, str]) -> None:
    """Before: read with absolute values, a short of 0.15 became a long of 0.15, and a kept symbol's
    target_qty (+150) told a loop holding -150 to buy 300."""
    with pytest.raises(ValidationError, match=r"positions\[0\] \('SYN001'\) has side 'long'"):
        ActRequest.model_validate(_body(**fields))


@pytest.mark.parametrize("fields", [{"qty": "-150", "market_value": "-15000"}, {}])
def test_a_short_in_either_sign_convention_is_a_short(fields: dict[str, str]) -> None:
    position = ActRequest.model_validate(_body(side="short", **fields)).positions[0]
    assert position.signed_qty() == -150.0 and position.signed_value() == -15000.0


def test_a_price_too_small_to_size_with_gives_no_quantity() -> None:
    assert target_quantity(0.15, 1e12, 1e-300) is None
    assert target_quantity(0.15, 1e5, 100.0) == pytest.approx(150.0)
    assert target_quantity(0.15, 1e5, None) is None
