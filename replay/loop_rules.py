"""The live trading loop's gate and sizing constants: one source of truth for every replica of them.

The feature builders (forecast gate, kelly_lite, leverage caps, financing), the ``kelly_lite``
evaluation baseline and the serving gate all read these numbers from a ``LoopRules`` (their configs
extend it), so changing a rule changes it everywhere. Defaults are the loop's (DESIGN §4,
``shared/contracts/README.md``); units are basis points of notional unless a field says otherwise.
:func:`is_crypto_symbol` is the loop's rule for telling a crypto pair by its (Alpaca) symbol.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

SPREAD_CAP_TOLERANCE_BPS: Final = 1e-6
"""A spread within this of a cap is at the cap, not over it (float rounding: 99.96 / 100.04 computes
to 8.00000000000125 bps against a cap of 8); every spread gate compares through :func:`over_cap`."""


def over_cap(spread_bps: Any, cap_bps: Any) -> Any:
    """Whether a spread (scalar or array, bps) exceeds its cap, float rounding aside."""
    return spread_bps > cap_bps + SPREAD_CAP_TOLERANCE_BPS


class LoopRules(BaseModel):
    """Spread gate, edge threshold, consensus move, kelly_lite sizing, exposure caps, financing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spread_cap_bps_mega: float = Field(8.0, gt=0.0, description="spread gate for the largest liquid stocks")
    spread_cap_bps_equity: float = Field(25.0, gt=0.0, description="spread gate for other stocks")
    spread_cap_bps_crypto: float = Field(35.0, gt=0.0, description="spread gate for crypto pairs")
    mega_cap_dollar_volume: float = Field(
        1e9, gt=0.0, description="average dollar volume per bar of a mega cap"
    )
    expected_cost_bps_equity: float = Field(6.0, ge=0.0, description="the loop's expected cost, stocks")
    expected_cost_bps_crypto: float = Field(20.0, ge=0.0, description="the loop's expected cost, crypto")
    edge_cost_margin_bps: float = Field(10.0, ge=0.0, description="edge threshold = expected cost + this")
    edge_floor_bps_equity: float = Field(15.0, ge=0.0, description="minimum edge threshold, stocks")
    edge_floor_bps_crypto: float = Field(40.0, ge=0.0, description="minimum edge threshold, crypto")
    min_move: float = Field(0.001, ge=0.0, description="a forecast move below this (fraction) is no move")
    kelly_scale: float = Field(
        0.2, gt=0.0, description="kelly_lite = min(cap, max(0, scale * edge / sigma^2))"
    )
    kelly_cap: float = Field(0.15, gt=0.0, le=1.0, description="cap of one symbol's kelly_lite fraction")
    kelly_sigma_closes: int = Field(7, ge=3, description="closes whose simple returns give kelly's sigma")
    leverage_cap_equity: float = Field(2.0, gt=0.0, description="gross leverage cap at end of day, stocks")
    gross_cap: float = Field(
        1.2, gt=0.0, description="gross exposure cap of the loop's own sizing (x equity)"
    )
    leverage_cap_crypto: float = Field(1.0, gt=0.0, description="gross leverage cap, crypto (unlevered)")
    financing_annual: float = Field(0.0675, ge=0.0, description="annual financing rate on borrowed notional")

    def spread_cap_for(self, is_crypto: ArrayLike, dollar_volume: ArrayLike) -> np.ndarray:
        """The spread gate in bps per symbol: crypto, else mega cap (average dollar volume per bar
        ``>= mega_cap_dollar_volume``), else other stock. A stock of unknown (NaN) volume gets the
        strictest equity cap (``min(mega, equity)``: fail closed, a wide mega cap is held rather than
        traded at the other stocks' cap); crypto keeps its own cap whatever its volume."""
        volume = np.asarray(dollar_volume, dtype=np.float64)
        equity_cap = np.where(
            volume >= self.mega_cap_dollar_volume, self.spread_cap_bps_mega, self.spread_cap_bps_equity
        )
        strictest = min(self.spread_cap_bps_mega, self.spread_cap_bps_equity)
        equity_cap = np.where(np.isnan(volume), strictest, equity_cap)
        return np.where(np.asarray(is_crypto, dtype=bool), self.spread_cap_bps_crypto, equity_cap)


def is_crypto_symbol(symbol: str) -> bool:
    """True for a crypto pair as the loop and Alpaca spell it: ``BTC/USD`` and ``BTCUSD`` (contains
    ``/``, or ends in ``USD``, ``USDT`` or ``USDC`` after at least one more character; the contract's
    "symbols ending in USD", and the stablecoin quotes of crypto exports: ``SUIUSDT``), and a pair
    quoted in a coin, ``ETHBTC`` (ends in ``BTC`` or ``ETH`` and is longer than any US listed ticker,
    :data:`MAX_EQUITY_TICKER`, so the trust ``GBTC`` stays an equity; a pair of five letters or fewer,
    ``OPBTC``, reads as an equity too: nothing in such a name tells it from a ticker). The one rule
    for a symbol whose asset class nothing else gives: CSV ingest, the live loop's quotes and orders,
    and serving's positions outside the model's universe (the crypto cap, ``serve.caps``)."""
    return "/" in symbol or pair_quote(symbol) is not None


def pair_quote(symbol: str) -> str | None:
    """The quote currency of a crypto pair spelled without a slash (``BTCUSDT`` -> ``USDT``,
    ``ETHBTC`` -> ``BTC``), None for a symbol that is no such pair (:func:`is_crypto_symbol`'s rule)."""
    name = symbol.upper()
    for quote in _QUOTES_LONGEST_FIRST:  # USDT before USD
        if name.endswith(quote) and len(name) > len(quote):
            return quote
    if len(name) > MAX_EQUITY_TICKER:
        return next((q for q in COIN_QUOTES if name.endswith(q)), None)
    return None


def coin_quote(symbol: str) -> str | None:
    """The coin a crypto pair is quoted in (``ETHBTC``, ``ETH/BTC`` -> ``BTC``), None for a pair
    quoted in dollars or a stablecoin, and for anything not a pair. Such a pair's prices are in that
    coin, not in the account's dollars: a quantity computed from them as dollars is off by the coin's
    price (the live loop refuses to trade one, serving gives it no ``target_qty``)."""
    name = symbol.upper()
    quote = name.rpartition("/")[2] if "/" in name else pair_quote(name)
    return quote if quote in COIN_QUOTES else None


CRYPTO_QUOTES: Final = ("USD", "USDT", "USDC")
"""Quote currencies that mark a symbol as a crypto pair (:func:`is_crypto_symbol`)."""
_QUOTES_LONGEST_FIRST: Final = tuple(sorted(CRYPTO_QUOTES, key=len, reverse=True))

COIN_QUOTES: Final = ("BTC", "ETH")
"""Coins a crypto pair may be quoted in (Alpaca's ``ETH/BTC``); a symbol ending in one is a pair only
when longer than :data:`MAX_EQUITY_TICKER` (``GBTC`` is a listed trust)."""

MAX_EQUITY_TICKER: Final = 5
"""The longest US listed ticker, in letters (NYSE and Nasdaq allow up to five)."""
