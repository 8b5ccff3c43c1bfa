"""A quote far from the observed bar's close holds its symbol (``ServeConfig.max_quote_move``): a bad
or stale quote (1.00 for a $100 stock) passed every gate and sized ``target_qty`` at about 100 times
the intended units. Real -40 % and +20 % days stay tradeable. No Ray (the fixed-action service of
``tests/test_serve_crypto_cap.py``, which wants all of its equity in ``SYN000``)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from raytrade.cluster.serve_app import BuilderArgs
from raytrade.serve.decide import DecisionService, ServeConfig
from raytrade.serve.schemas import ActResponse
from tests.test_serve_crypto_cap import EQUITY, _every_symbol_listed, _request, _service

WANTS_SYN000 = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def _quoted(service: DecisionService, factor: float) -> ActResponse:
    """The answer when SYN000 is quoted at ``factor`` times its close, every other symbol at its own."""
    close = service.data.close[_every_symbol_listed(service)]
    rows = {
        s: {
            "bid_price": 0.9999 * c * (factor if s == "SYN000" else 1.0),
            "ask_price": 1.0001 * c * (factor if s == "SYN000" else 1.0),
        }
        for s, c in zip(service.data.symbols, close, strict=True)
    }
    return service.decide([_request(service, [], **rows)])[0]


@pytest.fixture(scope="module")
def service() -> DecisionService:
    return _service(action=WANTS_SYN000)


@pytest.mark.parametrize("factor", [0.01, 0.2, 5.0, 100.0])
def test_a_quote_far_from_the_close_holds_the_symbol(service: DecisionService, factor: float) -> None:
    d = _quoted(service, factor).decisions["SYN000"]
    assert not d.tradeable and d.target_weight == 0.0 and d.target_qty == 0.0  # held: nothing held
    assert d.reason is not None and "outside the 3x band: held as a bad or stale quote" in d.reason


@pytest.mark.parametrize("factor", [0.6, 0.4, 1.0, 1.2, 2.9])
def test_real_moves_inside_the_band_are_traded(service: DecisionService, factor: float) -> None:
    answer = _quoted(service, factor)
    d = answer.decisions["SYN000"]
    close = float(service.data.close[_every_symbol_listed(service), 0])
    assert d.tradeable and d.target_weight == pytest.approx(0.15)  # the per-symbol cap
    assert d.target_qty == pytest.approx(0.15 * EQUITY / (factor * close))


def test_without_a_band_a_bad_quote_sizes_the_order_by_it() -> None:
    """What the band prevents: the same answer at 1 % of the close, band off, asks for 100x the units."""
    off = _service(action=WANTS_SYN000, config=ServeConfig(max_feature_age_hours=None, max_quote_move=None))
    d = _quoted(off, 0.01).decisions["SYN000"]
    close = float(off.data.close[_every_symbol_listed(off), 0])
    assert d.tradeable and d.target_qty == pytest.approx(100 * 0.15 * EQUITY / close)


@pytest.mark.parametrize("band", [1.0, 0.5, -3.0, float("nan")])
def test_a_band_of_one_or_less_is_refused_naming_it(band: float) -> None:
    with pytest.raises(ValidationError, match="max_quote_move"):
        ServeConfig(max_quote_move=band)


def test_the_config_file_deploy_reads_zero_as_no_band() -> None:
    assert (
        BuilderArgs.model_validate({"model": "m", "registry": "r", "max_quote_move": "0"}).max_quote_move
        == 0.0
    )
    assert BuilderArgs.model_validate({"model": "m", "registry": "r"}).max_quote_move == 3.0
