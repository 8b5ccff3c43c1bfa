"""Transaction and carry costs: pure functions of arrays, one frozen config.

Contract
--------
Every function takes numpy arrays (any shape, broadcastable) and returns costs in the account
currency, never negative unless a config factor says so (a negative ``spread_mult`` models a passive
order that earns part of the spread). Nothing here keeps state, so the simulator, evaluation and
serving charge exactly the same amounts for the same trade.

Components (defaults are the live trading loop's, see DESIGN.md §4):

* fee: ``fee_bps`` of traded notional by asset class (equity 5 bps, crypto 15 bps);
* spread: ``spread_fraction`` (1/2) of the full quoted or estimated spread per side;
* slippage: a liquidity-tier base (3 / 8 / 20 bps for dollar volume >= 1e9 / >= 1e7 / below) plus
  square-root market impact ``impact_coef_bps * sqrt(traded notional / dollar volume)`` bps. The
  square-root law is the standard empirical shape of impact; with the default 100 bps a trade of 1 %
  of a bar's dollar volume costs 10 bps of impact, 0.01 % costs 1 bp;
* financing: ``financing_rate_annual`` (6.75 %) on gross exposure above ``financing_free_leverage``
  (1x) equity, per day ``annual / 252`` for equities and ``annual / 365`` for crypto (crypto trades
  7 days a week), scaled by the bar length in days.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

BPS = 1e-4


class CostConfig(BaseModel):
    """Cost model parameters; all rates in basis points of traded notional unless stated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fee_bps_equity: float = Field(5.0, ge=0, description="fee, bps of traded notional, equities")
    fee_bps_crypto: float = Field(15.0, ge=0, description="fee, bps of traded notional, crypto")
    spread_fraction: float = Field(0.5, ge=0, description="fraction of the full spread paid per side")
    tier_thresholds_usd: tuple[float, float] = Field(
        (1e9, 1e7), description="dollar volume per bar at or above which an asset is tier 0 / tier 1"
    )
    tier_base_bps: tuple[float, float, float] = Field(
        (3.0, 8.0, 20.0), description="slippage base bps for liquidity tiers 0 (most liquid), 1, 2"
    )
    impact_coef_bps: float = Field(
        100.0, ge=0, description="impact bps = coef * sqrt(traded notional / dollar volume)"
    )
    financing_rate_annual: float = Field(0.0675, ge=0, description="annual rate on borrowed notional")
    financing_free_leverage: float = Field(1.0, ge=0, description="gross/equity financed for free")
    financing_days_equity: float = Field(252.0, gt=0, description="financing days per year, equities")
    financing_days_crypto: float = Field(365.0, gt=0, description="financing days per year, crypto")

    @model_validator(mode="after")
    def _check_tiers(self) -> CostConfig:
        hi, lo = self.tier_thresholds_usd
        if not (hi > lo > 0):
            raise ValueError(f"tier_thresholds_usd must be decreasing and positive, got {(hi, lo)}")
        if any(b < 0 for b in self.tier_base_bps):
            raise ValueError(f"tier_base_bps must be >= 0, got {self.tier_base_bps}")
        return self


class TradeCosts(NamedTuple):
    """Per-trade cost components in currency, same shape as the traded notional."""

    fee: np.ndarray
    spread: np.ndarray
    slippage: np.ndarray


COST_COMPONENTS: tuple[str, ...] = ("fee", "spread", "slippage", "financing")


def fee_bps(is_crypto: np.ndarray, cfg: CostConfig) -> np.ndarray:
    """Fee in bps for each asset (``is_crypto`` boolean array)."""
    return np.where(is_crypto, cfg.fee_bps_crypto, cfg.fee_bps_equity)


def liquidity_tier(dollar_volume: np.ndarray, cfg: CostConfig) -> np.ndarray:
    """Tier 0 (most liquid), 1 or 2 from dollar volume per bar."""
    hi, lo = cfg.tier_thresholds_usd
    return np.where(dollar_volume >= hi, 0, np.where(dollar_volume >= lo, 1, 2))


def tier_base_bps(dollar_volume: np.ndarray, cfg: CostConfig) -> np.ndarray:
    """Slippage base bps of each asset's liquidity tier."""
    return np.asarray(cfg.tier_base_bps)[liquidity_tier(dollar_volume, cfg)]


def slippage_bps(traded_abs: np.ndarray, dollar_volume: np.ndarray, cfg: CostConfig) -> np.ndarray:
    """Tier base bps plus square-root impact of participation ``traded_abs / dollar_volume``."""
    return tier_base_bps(dollar_volume, cfg) + cfg.impact_coef_bps * np.sqrt(traded_abs / dollar_volume)


class CostRates(NamedTuple):
    """Per-asset cost rates, fractions of traded notional; they depend on data known at the bar only.

    ``impact`` is per square root of notional: the impact fraction of a trade ``x`` is
    ``impact * sqrt(x)`` (that is ``impact_coef_bps * sqrt(x / dollar_volume)`` bps). The simulator
    computes the rates of every bar once and indexes them per step.
    """

    fee: np.ndarray
    spread: np.ndarray
    slippage_base: np.ndarray
    impact: np.ndarray


def cost_rates(
    spread_bps: np.ndarray, dollar_volume: np.ndarray, fee_rate_bps: np.ndarray, cfg: CostConfig
) -> CostRates:
    """Rates from the full spread (bps), dollar volume per bar and the fee (bps, :func:`fee_bps`)."""
    return CostRates(
        fee=np.asarray(fee_rate_bps, dtype=np.float64) * BPS,
        spread=cfg.spread_fraction * np.asarray(spread_bps, dtype=np.float64) * BPS,
        slippage_base=tier_base_bps(dollar_volume, cfg) * BPS,
        impact=cfg.impact_coef_bps * BPS / np.sqrt(dollar_volume),
    )


def costs_at_rates(
    traded_abs: np.ndarray,
    rates: CostRates,
    spread_mult: np.ndarray | float = 1.0,
    slippage_mult: np.ndarray | float = 1.0,
) -> TradeCosts:
    """Costs of trading ``traded_abs`` (>= 0) notional per asset at ``rates``.

    The multipliers let an execution mode pay less than a marketable order (a passive order:
    spread_mult 0, no impact). A zero trade costs exactly zero (the slippage base is charged on
    notional, not per order).
    """
    spread = traded_abs * rates.spread
    slip = traded_abs * (rates.slippage_base + rates.impact * np.sqrt(traded_abs))
    return TradeCosts(
        fee=traded_abs * rates.fee,
        spread=spread if _is_one(spread_mult) else spread * spread_mult,
        slippage=slip if _is_one(slippage_mult) else slip * slippage_mult,
    )


def _is_one(mult: np.ndarray | float) -> bool:
    return isinstance(mult, float | int) and mult == 1


def trade_costs(
    traded_abs: np.ndarray,
    spread_bps: np.ndarray,
    dollar_volume: np.ndarray,
    fee_rate_bps: np.ndarray,
    cfg: CostConfig,
    spread_mult: np.ndarray | float = 1.0,
    slippage_mult: np.ndarray | float = 1.0,
) -> TradeCosts:
    """Costs of trading ``traded_abs`` (>= 0) notional per asset (:func:`costs_at_rates` of the data's
    :func:`cost_rates`); ``spread_bps`` is the full spread, ``fee_rate_bps`` comes from :func:`fee_bps`."""
    rates = cost_rates(spread_bps, dollar_volume, fee_rate_bps, cfg)
    return costs_at_rates(traded_abs, rates, spread_mult, slippage_mult)


def financing_rate_per_bar(cfg: CostConfig, all_crypto: bool, days_per_bar: float = 1.0) -> float:
    """Fraction of borrowed notional charged per bar: ``annual / days_per_year * days_per_bar``.

    A universe is financed on the crypto calendar (/365) only when every asset is crypto; any equity
    makes it the equity calendar (/252): crypto is unlevered by default, so borrowing comes from
    equities.
    """
    days = cfg.financing_days_crypto if all_crypto else cfg.financing_days_equity
    return cfg.financing_rate_annual / days * days_per_bar


def financing_cost(
    gross_exposure: np.ndarray, equity: np.ndarray, rate_per_bar: float, cfg: CostConfig
) -> np.ndarray:
    """Financing for one bar on gross exposure above ``financing_free_leverage`` x equity."""
    borrowed = np.maximum(gross_exposure - cfg.financing_free_leverage * np.maximum(equity, 0.0), 0.0)
    return borrowed * rate_per_bar
