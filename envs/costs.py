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
* spread: the full spread is believed up to ``max_spread_bps`` (500 bps); a wider figure (a high/low
  estimator on a gap day, a stale quote) is costed at the cap;
* slippage: a liquidity-tier base (3 / 8 / 20 bps for dollar volume >= the loop's mega-cap threshold
  1e9 / >= 1e7 / below, the tier from the dollar volume per bar known at the decision, the features'
  ``dollar_volume_20``) plus square-root market impact ``impact_coef_bps * sqrt(participation)`` bps
  with participation = traded notional / the fill's dollar volume, clipped at ``max_participation``.
  The fill's dollar volume is the one the fill cap uses (``fill_dollar_volume`` of
  :func:`cost_rates`): in the simulator the smaller of ``dollar_volume_20`` and the fill bar's own
  (``envs.simulator.fill_dollar_volume``), so a thin fill bar both caps the fill and prices its
  impact: a fill of 5 % of what its bar traded pays ``100 * sqrt(0.05)`` = 22.4 bps whatever the
  average. With the default 100 bps a trade of 1 % of the dollar volume costs 10 bps of impact, 0.01 %
  costs 1 bp. A decision-time estimate (before the fill bar trades) has only the average: it passes
  no ``fill_dollar_volume``;
* financing: ``financing_rate_annual`` (the loop's 6.75 %) on borrowed notional, the long exposure
  above ``financing_free_leverage`` (1x) equity, plus ``borrow_fee_annual`` (0.25 %) on short
  notional; per trading day ``annual / 252`` for equities and ``annual / 365`` for crypto (crypto
  trades 7 days a week), scaled by the bar length in days (1 for daily bars, 1/7 for hourly equity
  bars of a 7-bar session).

Participation and the cost bound
--------------------------------
A fill takes at most ``max_participation`` (10 %) of the fill's dollar volume (the simulator drops the
rest of the order; the next decision re-plans from the holdings it got). A dollar volume of 0 (an asset
that did not trade) is no capacity: the fill cap is 0 and nothing fills. Impact is evaluated on the
participation of that same dollar volume, clipped at the cap, so the slippage rate is at most
``max(tier_base_bps) + impact_coef_bps * sqrt(max_participation)``, and a trade's fee + spread +
slippage is at most :func:`max_cost_fraction` of its notional (multipliers <= 1): with the defaults
``15 + 0.5 * 500 + 20 + 100 * sqrt(0.1) = 316.6`` bps, 3.17 % of the notional traded.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raytrade.envs.kernel_cache import use_kernel_cache
from raytrade.replay.loop_rules import LoopRules

use_kernel_cache()  # before any kernel compiles: the cache is keyed on every kernel module

BPS = 1e-4
_LOOP = LoopRules()
_IMPACT_VOLUME_FLOOR = 1.0
"""Dollar volume (currency) under which the impact rate stops growing, so a zero volume gives a finite
rate: its fill cap is 0, so no trade ever pays that rate (it only keeps ``0 * rate`` finite)."""


class CostConfig(BaseModel):
    """Cost model parameters; all rates in basis points of traded notional unless stated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fee_bps_equity: float = Field(5.0, ge=0, description="fee, bps of traded notional, equities")
    fee_bps_crypto: float = Field(15.0, ge=0, description="fee, bps of traded notional, crypto")
    spread_fraction: float = Field(0.5, ge=0, description="fraction of the full spread paid per side")
    max_spread_bps: float = Field(
        500.0,
        gt=0,
        description="widest full spread costed, bps; a wider estimate (gap-day high/low estimator, stale "
        "quote) is costed at this",
    )
    tier_thresholds_usd: tuple[float, float] = Field(
        (_LOOP.mega_cap_dollar_volume, 1e7),
        description="dollar volume per bar at or above which an asset is tier 0 (loop's mega caps) / 1",
    )
    tier_base_bps: tuple[float, float, float] = Field(
        (3.0, 8.0, 20.0), description="slippage base bps for liquidity tiers 0 (most liquid), 1, 2"
    )
    impact_coef_bps: float = Field(
        100.0, ge=0, description="impact bps = coef * sqrt(traded notional / dollar volume)"
    )
    max_participation: float = Field(
        0.1,
        gt=0,
        le=1,
        description="most of a bar's dollar volume one fill may take (10 %: the common rule of thumb "
        "that an order above ~10 % of volume moves the price against itself; execution desks cap "
        "percent-of-volume algos at 10-20 %); the rest of the order is dropped",
    )
    financing_rate_annual: float = Field(
        _LOOP.financing_annual, ge=0, description="annual rate on borrowed notional (the loop's)"
    )
    borrow_fee_annual: float = Field(
        0.0025,
        ge=0,
        description="annual fee on short notional (0.25 %: the general-collateral rate of easy-to-borrow "
        "US names; hard-to-borrow names cost far more)",
    )
    financing_free_leverage: float = Field(
        1.0, ge=0, description="long exposure / equity financed for free (above it is borrowed)"
    )
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
    """Tier base bps plus square-root impact of participation ``traded_abs / dollar_volume`` (clipped
    at ``max_participation``; a zero dollar volume counts as participation at the clip)."""
    traded = np.asarray(traded_abs, dtype=np.float64)
    volume = np.asarray(dollar_volume, dtype=np.float64)
    traded, volume = np.broadcast_arrays(traded, volume)
    ratio = np.divide(traded, volume, out=np.full(traded.shape, np.inf), where=volume > 0)
    participation = np.minimum(ratio, cfg.max_participation)
    return tier_base_bps(dollar_volume, cfg) + cfg.impact_coef_bps * np.sqrt(participation)


def max_cost_fraction(cfg: CostConfig) -> float:
    """The most fee + spread + slippage one trade can cost, as a fraction of its notional (execution
    multipliers <= 1): the larger fee, plus ``spread_fraction * max_spread_bps``, plus the widest
    tier base and the impact at ``max_participation``. A bar's trade costs never exceed this times
    the notional traded in it."""
    fee = max(cfg.fee_bps_equity, cfg.fee_bps_crypto)
    spread = cfg.spread_fraction * cfg.max_spread_bps
    return (fee + spread + max(cfg.tier_base_bps)) * BPS + impact_at_cap(cfg)


def impact_at_cap(cfg: CostConfig) -> float:
    """The impact of a trade at ``max_participation`` of its bar, as a fraction of its notional
    (``impact_coef_bps * sqrt(max_participation)`` bps): the most impact any trade pays, and what an
    exit pays on a bar that gives no capacity (:func:`exit_cost_parts`)."""
    return cfg.impact_coef_bps * math.sqrt(cfg.max_participation) * BPS


class CostRates(NamedTuple):
    """Per-asset cost rates, fractions of traded notional; they depend on data known at the bar only.

    ``impact`` is per square root of notional: the impact fraction of a trade ``x`` is
    ``impact * sqrt(min(x, fill_cap))`` (that is ``impact_coef_bps * sqrt(participation)`` bps with
    participation clipped at ``max_participation``). ``fill_cap`` is the most notional one fill may
    take, ``max_participation * fill_dollar_volume`` (0 for a zero dollar volume: nothing fills);
    impact and cap come from that one dollar volume, so the participation that caps a fill is the
    one that prices it. The simulator computes the rates of every bar once and indexes them per step.
    """

    fee: np.ndarray
    spread: np.ndarray
    slippage_base: np.ndarray
    impact: np.ndarray
    fill_cap: np.ndarray


def cost_rates(
    spread_bps: np.ndarray,
    dollar_volume: np.ndarray,
    fee_rate_bps: np.ndarray,
    cfg: CostConfig,
    fill_dollar_volume: np.ndarray | None = None,
) -> CostRates:
    """Rates from the full spread (bps, capped at ``max_spread_bps``), the dollar volume per bar known
    at the decision (``dollar_volume``: sets the liquidity tier), the fee (bps, :func:`fee_bps`) and
    the fill's dollar volume (``fill_dollar_volume``: sets both the impact and the fill cap).

    ``fill_dollar_volume`` None uses ``dollar_volume``: that is the rate of a decision-time estimate,
    made before the fill bar trades, which cannot know that bar's volume (a cost forecast, a cost
    envelope). The realised cost of a fill in the simulator passes what its bar traded
    (``envs.simulator.fill_dollar_volume``): a thin bar caps the fill and charges its impact on the
    same, smaller, volume."""
    dollar_volume = np.asarray(dollar_volume, dtype=np.float64)
    volume = dollar_volume if fill_dollar_volume is None else np.asarray(fill_dollar_volume, dtype=np.float64)
    spread = np.minimum(np.asarray(spread_bps, dtype=np.float64), cfg.max_spread_bps)
    return CostRates(
        fee=np.asarray(fee_rate_bps, dtype=np.float64) * BPS,
        spread=cfg.spread_fraction * spread * BPS,
        slippage_base=tier_base_bps(dollar_volume, cfg) * BPS,
        impact=cfg.impact_coef_bps * BPS / np.sqrt(np.maximum(volume, _IMPACT_VOLUME_FLOOR)),
        fill_cap=cfg.max_participation * volume,
    )


@numba.njit(cache=True, nogil=True)
def trade_cost_parts(  # pragma: no cover (compiled)
    traded_abs: float,
    fee_rate: float,
    spread_rate: float,
    slippage_base: float,
    impact: float,
    fill_cap: float,
    spread_mult: float,
    slippage_mult: float,
) -> tuple[float, float, float]:
    """(fee, spread, slippage) in currency of one trade of ``traded_abs`` notional: the one statement
    of the formulas, used by :func:`costs_at_rates` and by the simulator's compiled step. Impact is
    evaluated at most at ``fill_cap`` (participation clipped at the cap), so it stays bounded."""
    fee = traded_abs * fee_rate
    spread = traded_abs * spread_rate * spread_mult
    slippage = traded_abs * (slippage_base + impact * math.sqrt(min(traded_abs, fill_cap))) * slippage_mult
    return fee, spread, slippage


@numba.njit(cache=True, nogil=True)
def exit_cost_parts(  # pragma: no cover (compiled)
    notional: float,
    fee_rate: float,
    spread_rate: float,
    slippage_base: float,
    impact: float,
    exit_cap: float,
    impact_cap: float,
) -> tuple[float, float, float]:
    """(fee, spread, slippage) in currency of closing a position of ``notional`` in one bar, all of it,
    as a marketable order (multipliers 1): :func:`trade_cost_parts` at the exit bar's rates
    (``exit_cap`` and ``impact`` from the dollar volume that bar gives an exit). Nothing is dropped for
    participation: a position at or above the cap pays the impact at ``max_participation``
    (``impact_cap`` = :func:`impact_at_cap`), and so does one on a bar with no capacity (``exit_cap``
    0), never the free trade a zero cap would price (nor, on a bar under $1 of volume, less: the
    impact's volume floor). The window-end exit (``MarketSimulator.exit_costs``) and a delisting's
    forced close in the simulator's step both pay this."""
    if 0.0 < notional < exit_cap:
        return trade_cost_parts(notional, fee_rate, spread_rate, slippage_base, impact, exit_cap, 1.0, 1.0)
    return notional * fee_rate, notional * spread_rate, notional * (slippage_base + impact_cap)


@numba.njit(cache=True, nogil=True)
def financing_of(  # pragma: no cover (compiled)
    long_exposure: float,
    short_exposure: float,
    equity: float,
    rate_per_bar: float,
    borrow_rate_per_bar: float,
    free_leverage: float,
) -> float:
    """One bar of carry (scalar form): financing on the borrowed notional, the long exposure above
    ``free_leverage`` x equity, plus the borrow fee on the short exposure (both >= 0)."""
    borrowed = max(long_exposure - free_leverage * max(equity, 0.0), 0.0)
    return borrowed * rate_per_bar + short_exposure * borrow_rate_per_bar


@numba.njit(cache=True, nogil=True)
def cash_interest_of(  # pragma: no cover (compiled)
    long_exposure: float, equity: float, cash_return: float
) -> float:
    """One bar of interest on idle cash (scalar form): the equity not held long, ``max(equity - long
    exposure, 0)``, times ``cash_return`` (that bar's rate, ``envs.cash_rate``). Short proceeds earn
    nothing; the mirror of :func:`financing_of`'s borrowed notional."""
    return max(equity - long_exposure, 0.0) * cash_return


@numba.njit(cache=True, nogil=True)
def _costs_kernel(  # pragma: no cover (compiled)
    x: np.ndarray,
    fee: np.ndarray,
    spread: np.ndarray,
    base: np.ndarray,
    impact: np.ndarray,
    cap: np.ndarray,
    smult: np.ndarray,
    slmult: np.ndarray,
    exit: bool,
    impact_cap: float,
) -> np.ndarray:
    """``[3, K]`` (fee, spread, slippage) of each trade ``x[k]``: :func:`trade_cost_parts`, or, for an
    ``exit``, :func:`exit_cost_parts` (no multipliers; ``impact_cap`` :func:`impact_at_cap`)."""
    out = np.empty((3, x.size))
    for k in range(x.size):
        if exit:
            out[0, k], out[1, k], out[2, k] = exit_cost_parts(
                x[k], fee[k], spread[k], base[k], impact[k], cap[k], impact_cap
            )
        else:
            out[0, k], out[1, k], out[2, k] = trade_cost_parts(
                x[k], fee[k], spread[k], base[k], impact[k], cap[k], smult[k], slmult[k]
            )
    return out


def _costs_of(
    amount: np.ndarray,
    rates: CostRates,
    spread_mult: np.ndarray | float,
    slippage_mult: np.ndarray | float,
    exit_impact_cap: float | None,
) -> TradeCosts:
    """:func:`_costs_kernel` over ``amount`` and ``rates`` broadcast together, in their shape: an exit's
    costs where ``exit_impact_cap`` is given, else a fill's."""
    parts = np.broadcast_arrays(
        np.asarray(amount, dtype=np.float64),
        *(np.asarray(a, dtype=np.float64) for a in (*rates, spread_mult, slippage_mult)),
    )
    shape = parts[0].shape
    flat = [np.array(a, dtype=np.float64).reshape(-1) for a in parts]  # copies: kernels want owned arrays
    x, fee, spread, base, impact, cap, smult, slmult = flat
    exit = exit_impact_cap is not None
    out = _costs_kernel(x, fee, spread, base, impact, cap, smult, slmult, exit, exit_impact_cap or 0.0)
    return TradeCosts(fee=out[0].reshape(shape), spread=out[1].reshape(shape), slippage=out[2].reshape(shape))


def costs_at_rates(
    traded_abs: np.ndarray,
    rates: CostRates,
    spread_mult: np.ndarray | float = 1.0,
    slippage_mult: np.ndarray | float = 1.0,
) -> TradeCosts:
    """Costs of trading ``traded_abs`` (>= 0) notional per asset at ``rates`` (broadcast together).

    The multipliers let an execution mode pay less than a marketable order (a passive order:
    spread_mult 0, no impact). A zero trade costs exactly zero (the slippage base is charged on
    notional, not per order).
    """
    return _costs_of(traded_abs, rates, spread_mult, slippage_mult, None)


def exit_costs_at_rates(notional: np.ndarray, rates: CostRates, cfg: CostConfig) -> TradeCosts:
    """Costs of closing positions of ``notional`` (>= 0) in one bar at ``rates`` (the exit bar's
    :func:`cost_rates`, broadcast together): :func:`exit_cost_parts` elementwise."""
    return _costs_of(notional, rates, 1.0, 1.0, impact_at_cap(cfg))


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
    equities. ``days_per_bar`` is the bar length in trading days (``MarketData.days_per_bar``).
    """
    return cfg.financing_rate_annual / _days_per_year(cfg, all_crypto) * days_per_bar


def borrow_rate_per_bar(cfg: CostConfig, all_crypto: bool, days_per_bar: float = 1.0) -> float:
    """Fraction of short notional charged per bar: ``borrow_fee_annual / days_per_year * days_per_bar``
    (the calendar as :func:`financing_rate_per_bar`)."""
    return cfg.borrow_fee_annual / _days_per_year(cfg, all_crypto) * days_per_bar


def _days_per_year(cfg: CostConfig, all_crypto: bool) -> float:
    return cfg.financing_days_crypto if all_crypto else cfg.financing_days_equity


def financing_cost(
    long_exposure: np.ndarray,
    equity: np.ndarray,
    rate_per_bar: float,
    cfg: CostConfig,
    short_exposure: np.ndarray | float = 0.0,
    borrow_rate_per_bar: float = 0.0,
) -> np.ndarray:
    """Carry for one bar (:func:`financing_of` per element): financing on the long exposure above
    ``financing_free_leverage`` x equity plus the borrow fee on ``short_exposure`` (absolute value)."""
    long, short, eq = np.broadcast_arrays(
        np.asarray(long_exposure, np.float64),
        np.asarray(short_exposure, np.float64),
        np.asarray(equity, np.float64),
    )
    out = [
        financing_of(g, s, e, rate_per_bar, borrow_rate_per_bar, cfg.financing_free_leverage)
        for g, s, e in zip(long.ravel(), short.ravel(), eq.ravel(), strict=True)
    ]
    return np.array(out, dtype=np.float64).reshape(long.shape)


def cost_overrun(traded_notional: np.ndarray, trade_cost: np.ndarray, envelope_bps: np.ndarray) -> np.ndarray:
    """Trade cost above its projected envelope, currency, ``>= 0``, per row:
    ``max(0, trade_cost - sum_j |traded_notional_j| * envelope_bps_j * 1e-4)``.

    ``traded_notional [..., N]`` (signed), ``trade_cost [...]`` (fee + spread + slippage charged for
    those trades), ``envelope_bps [N]`` (the cost per unit traded the decision projected). The reward's
    cost-overrun term (``RewardConfig.cost_overrun_lambda``) penalises this amount.
    """
    envelope = (np.abs(traded_notional) * np.asarray(envelope_bps, dtype=np.float64) * BPS).sum(-1)
    return np.maximum(np.asarray(trade_cost, dtype=np.float64) - envelope, 0.0)
