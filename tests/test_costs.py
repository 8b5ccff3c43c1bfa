"""Cost model: hand-computed fee, spread, slippage and financing, to the cent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import (
    CostConfig,
    fee_bps,
    financing_cost,
    financing_rate_per_bar,
    liquidity_tier,
    max_cost_fraction,
    slippage_bps,
    trade_costs,
)
from raytrade.envs.market_data import MarketData
from raytrade.envs.simulator import MarketSimulator

CFG = CostConfig()


def test_one_equity_trade_fee_spread_slippage_to_the_cent() -> None:
    # $15,000 bought; spread 4 bps -> half 2 bps; dollar volume $1.5M -> tier 2 (20 bps) and
    # participation 1 % -> impact 100 * sqrt(0.01) = 10 bps; fee 5 bps.
    tc = trade_costs(
        np.array([15_000.0]), np.array([4.0]), np.array([1.5e6]), fee_bps(np.array([False]), CFG), CFG
    )
    assert round(float(tc.fee[0]), 2) == 7.50
    assert round(float(tc.spread[0]), 2) == 3.00
    assert round(float(tc.slippage[0]), 2) == 45.00


def test_one_night_financing_to_the_cent() -> None:
    # gross $15,000 on equity $9,944.50 -> borrowed $5,055.50 at 6.75 % / 252 = $1.3542 -> $1.35
    rate = financing_rate_per_bar(CFG, all_crypto=False)
    assert rate == pytest.approx(0.0675 / 252, rel=1e-15)
    fin = financing_cost(np.array([15_000.0]), np.array([9_944.50]), rate, CFG)
    assert round(float(fin[0]), 2) == 1.35
    assert float(fin[0]) == pytest.approx(5_055.50 * 0.0675 / 252, rel=1e-12)


def test_crypto_fee_and_calendar() -> None:
    assert fee_bps(np.array([True]), CFG)[0] == 15.0
    assert financing_rate_per_bar(CFG, all_crypto=True) == pytest.approx(0.0675 / 365, rel=1e-15)


def test_no_financing_at_or_below_one_x() -> None:
    fin = financing_cost(np.array([10_000.0, 9_000.0]), np.array([10_000.0, 10_000.0]), 0.01, CFG)
    assert np.array_equal(fin, [0.0, 0.0])


def test_liquidity_tiers_and_impact() -> None:
    dv = np.array([2e9, 1e9, 5e8, 1e7, 9.99e6])
    assert liquidity_tier(dv, CFG).tolist() == [0, 0, 1, 1, 2]
    assert slippage_bps(np.zeros(5), dv, CFG).tolist() == [3.0, 3.0, 8.0, 8.0, 20.0]
    # 0.01 % participation -> 100 * 0.01 = 1 bp of impact on top of tier 0
    assert slippage_bps(np.array([1e5]), np.array([1e9]), CFG)[0] == pytest.approx(4.0, rel=1e-12)


def test_zero_trade_costs_nothing() -> None:
    tc = trade_costs(np.zeros(3), np.full(3, 10.0), np.full(3, 1e6), np.full(3, 5.0), CFG)
    assert float(tc.fee.sum() + tc.spread.sum() + tc.slippage.sum()) == 0.0


def test_bad_tier_thresholds_rejected() -> None:
    with pytest.raises(ValidationError, match="tier_thresholds_usd"):
        CostConfig(tier_thresholds_usd=(1e7, 1e9))


def test_negative_fee_rejected_naming_field() -> None:
    with pytest.raises(ValidationError, match="fee_bps_equity"):
        CostConfig(fee_bps_equity=-1.0)


def _flat_market(n_steps: int, price: float, spread: float, dvol: float, asset_class: str) -> MarketData:
    t = n_steps
    return MarketData(
        ts=np.arange(t).astype("datetime64[D]").astype("datetime64[us]"),
        symbols=("AAA",),
        asset_class=(asset_class,),
        open=np.full((t, 1), price),
        close=np.full((t, 1), price),
        listed=np.ones((t, 1), dtype=bool),
        spread_bps=np.full((t, 1), spread),
        dollar_volume=np.full((t, 1), dvol),
        features=np.zeros((t, 1, 1), dtype=np.float32),
        feature_names=("x",),
        regime_code=np.zeros((t, 1), dtype=np.int8),
    )


def test_simulator_charges_one_trade_and_one_night_to_the_cent() -> None:
    data = _flat_market(3, 100.0, 4.0, 1.5e6, "equity")
    cfg = SimulatorConfig.model_validate(
        {"episode_len": 1, "initial_equity": 10_000.0, "constraints": {"per_asset_cap": 2.0}}
    )
    sim = MarketSimulator(data, cfg, n_envs=1, seed=0)
    res = sim.step(np.array([[1.5]]))
    fee, spread, slip, fin = res.costs[0]
    assert (round(fee, 2), round(spread, 2), round(slip, 2), round(fin, 2)) == (7.50, 3.00, 45.00, 1.35)
    assert round(float(res.equity[0]), 2) == 9_943.15
    assert sim.units[0, 0] == pytest.approx(150.0, rel=1e-15)
    assert sim.cash[0] == pytest.approx(10_000.0 - 15_000.0 - 55.5 - fin, rel=1e-15)
    assert np.allclose(sim.episode_costs[0], res.costs[0], rtol=0, atol=0)


def _fill_bar_step(
    bar_volume: float, dvol: float, spread: float, asset_class: str, weight: float
) -> np.ndarray:
    """``[fee, spread, slippage, financing, traded notional]`` of one step at price 100 on $10,000
    towards ``weight``: decided at bar 0 on the known ``dvol``, filled at bar 1's open, a bar that
    traded ``bar_volume``."""
    data = _flat_market(3, 100.0, spread, dvol, asset_class)
    data = replace(data, bar_dollar_volume=np.array([[dvol], [bar_volume], [dvol]]))
    cfg = SimulatorConfig.model_validate({"episode_len": 1, "initial_equity": 10_000.0})
    sim = MarketSimulator(data, cfg, n_envs=1, seed=0)
    sim.reset(starts=np.array([0]))
    res = sim.step(np.array([[weight]]))
    return np.array([*res.costs[0], res.traded_notional[0, 0]])


def test_a_thin_fill_bar_charges_the_impact_of_its_own_participation() -> None:
    # The reviewer's ALNY bar: the average is $220M (tier 1, 8 bps) but the fill bar traded $15,261;
    # a $798.65 fill is 5.233 % of it -> impact 100 * sqrt(798.65 / 15261) = 22.88 bps, slippage
    # 798.65 * (8 + 22.876) bps = $2.47 (on the average it was 0.19 bps, $0.65).
    fee, spread, slip, _, traded = _fill_bar_step(15_261.0, 2.2e8, 4.0, "equity", 0.079865)
    assert traded == pytest.approx(798.65, rel=1e-12)
    assert round(float(slip / traded * 1e4 - 8.0), 2) == 22.88
    assert round(float(slip), 2) == 2.47
    assert (round(float(fee), 2), round(float(spread), 2)) == (0.40, 0.16)


def test_a_fill_bar_that_traded_more_than_the_average_is_costed_on_the_average() -> None:
    # $15,000 on a $1.5M average (tier 2, 20 bps; 1 % -> 10 bps), the fill bar traded $3M: unchanged
    fee, spread, slip, _, traded = _fill_bar_step(3e6, 1.5e6, 4.0, "equity", 1.0)
    assert traded == pytest.approx(10_000.0, rel=1e-12)
    # 10,000 / 1.5e6 = 0.667 % -> 100 * sqrt(1/150) = 8.165 bps + 20 bps = $28.16
    assert round(float(slip), 2) == 28.16
    assert round(float(fee + spread), 2) == 7.00


@pytest.mark.parametrize(
    ("bar_volume", "slippage_rate_bps", "at_bound"),
    [(50.0, 20 + 100 * 0.1**0.5, True), (0.5, 20 + 100 * 0.05**0.5, False)],
)
def test_the_cost_bound_holds_on_a_fill_bar_of_tiny_volume(
    bar_volume: float, slippage_rate_bps: float, at_bound: bool
) -> None:
    # Crypto (15 bps fee), a spread at the 500 bps cap (250 paid), tier 2: a $50 fill bar caps the fill
    # at $5 = 10 % of it, impact at the cap: the costs reach the bound, 316.6 bps, and not beyond.
    # A $0.50 bar caps it at $0.05: under the $1 impact floor, 100 bps * sqrt(0.05 / 1) = 22.36 bps.
    fee, spread, slip, _, traded = _fill_bar_step(bar_volume, 1e6, 500.0, "crypto", 0.5)
    assert traded == pytest.approx(0.1 * bar_volume, rel=1e-12)
    assert slip == pytest.approx(traded * slippage_rate_bps * 1e-4, rel=1e-12)
    bound = max_cost_fraction(CFG) * traded
    assert fee + spread + slip <= bound * (1 + 1e-12)
    assert bool(fee + spread + slip == pytest.approx(bound, rel=1e-12)) is at_bound
