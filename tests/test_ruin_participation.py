"""Real-data stress: participation-capped fills, bounded costs, ruin, and carry per bar length.

Hand-computed examples (a capped fill, a basket fill, a ruin at the close, a gap through zero, an
hourly bar's financing and borrow fee) and property tests over random price paths with gaps of -90 %
to +300 % in a bar, assets listing mid-path and random policies.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import CostConfig, cost_rates, fee_bps, max_cost_fraction, slippage_bps
from raytrade.envs.evaluation.harness import RunSeries, pool, run_window
from raytrade.envs.evaluation.policies import PolicySpec
from raytrade.envs.gym_envs import PortfolioEnv
from raytrade.envs.market_data import MarketData, last_listed_bar
from raytrade.envs.metrics import summarize
from raytrade.envs.rollout import replay_policy
from raytrade.envs.simulator import MarketSimulator
from tests.step_reference import ReferenceSimulator

FREE = {
    "fee_bps_equity": 0.0,
    "fee_bps_crypto": 0.0,
    "tier_base_bps": (0.0, 0.0, 0.0),
    "impact_coef_bps": 0.0,
    "financing_rate_annual": 0.0,
    "borrow_fee_annual": 0.0,
}
"""A cost model that charges nothing, so hand-computed equity is exact."""


def _market(
    open_: np.ndarray,
    close: np.ndarray,
    dollar_volume: np.ndarray | float = 1e12,
    spread_bps: float = 0.0,
    listed: np.ndarray | None = None,
    days_per_bar: float = 1.0,
) -> MarketData:
    open_ = np.asarray(open_, dtype=np.float64).reshape(len(open_), -1)
    close = np.asarray(close, dtype=np.float64).reshape(open_.shape)
    t, n = close.shape
    return MarketData(
        ts=np.arange(t).astype("datetime64[D]").astype("datetime64[us]"),
        symbols=tuple(f"S{j}" for j in range(n)),
        asset_class=("equity",) * n,
        open=open_,
        close=close,
        listed=np.ones((t, n), dtype=bool) if listed is None else listed,
        spread_bps=np.full((t, n), spread_bps),
        dollar_volume=np.broadcast_to(np.asarray(dollar_volume, dtype=np.float64), (t, n)).copy(),
        features=np.zeros((t, n, 1), dtype=np.float32),
        feature_names=("x",),
        regime_code=np.zeros((t, n), dtype=np.int8),
        days_per_bar=days_per_bar,
    )


def _cfg(episode_len: int, costs: dict[str, Any] | None = None, **extra: Any) -> SimulatorConfig:
    return SimulatorConfig.model_validate(
        {
            "episode_len": episode_len,
            "initial_equity": 10_000.0,
            "costs": costs if costs is not None else FREE,
            "constraints": {"gross_cap": 2.0, "per_asset_cap": 2.0},
            "kill_switch": {"enabled": False},
            **extra,
        }
    )


# ------------------------------------------------------------------------------- the cost bound


def test_max_cost_fraction_is_fee_plus_half_spread_cap_plus_slippage_cap() -> None:
    # crypto fee 15 + 0.5 * 500 spread cap + tier 2 base 20 + 100 * sqrt(0.1) impact = 316.62 bps
    assert max_cost_fraction(CostConfig()) == pytest.approx((15 + 250 + 20 + 100 * math.sqrt(0.1)) * 1e-4)


def test_impact_stops_growing_at_the_participation_cap() -> None:
    dv = np.array([1e6, 1e6])
    # 10 % and 1000 % of the bar's volume: both cost the cap's impact, 100 * sqrt(0.1) = 31.62 bps
    assert slippage_bps(np.array([1e5, 1e7]), dv, CostConfig()).tolist() == pytest.approx(
        [20 + 100 * math.sqrt(0.1)] * 2, rel=1e-12
    )


def test_a_spread_wider_than_the_cap_is_costed_at_the_cap() -> None:
    rates = cost_rates(
        np.array([2_000.0]), np.array([1e9]), fee_bps(np.array([False]), CostConfig()), CostConfig()
    )
    assert rates.spread[0] == pytest.approx(0.5 * 500 * 1e-4, rel=1e-15)


# ------------------------------------------------------------------------------- participation


def test_a_fill_takes_at_most_the_participation_cap_and_the_rest_is_replanned() -> None:
    # $1M account, target 50 % of AAA at $100 = $500k; the bar traded $1M, so the fill is capped at
    # 10 % of it: $100k = 1,000 shares. Costs: fee 5 bps = $50, half of 4 bps = $20, slippage tier 2
    # (20 bps) + impact 100 * sqrt(0.1) = 31.62 bps on $100k = $516.23.
    data = _market(np.full(4, 100.0), np.full(4, 100.0), dollar_volume=1e6, spread_bps=4.0)
    cfg = _cfg(3, costs={}).model_copy(update={"initial_equity": 1e6})
    sim = MarketSimulator(data, cfg, n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    res = sim.step(np.array([[0.5]]))
    assert res.traded_notional[0, 0] == pytest.approx(1e5, rel=1e-12)
    assert sim.units[0, 0] == pytest.approx(1_000.0, rel=1e-12)
    fee, spread, slip, fin = res.costs[0]
    assert (round(fee, 2), round(spread, 2), round(slip, 2), fin) == (50.00, 20.00, 516.23, 0.0)
    assert round(float(res.equity[0]), 2) == 999_413.77
    sim.step(np.array([[0.5]]))  # the dropped rest is not carried over: the next decision re-plans
    assert sim.units[0, 0] == pytest.approx(2_000.0, rel=1e-12)


def test_partial_fills_that_would_lever_the_book_fill_as_one_basket() -> None:
    # All $100k in A (cap $10k a bar); the policy switches to B (liquid). Filled per asset, A would
    # sell $10k while B buys $100k: gross $190k. Instead both legs fill 10 %: A 900 shares, B 100.
    close = np.full((3, 2), 100.0)
    data = _market(close, close, dollar_volume=np.array([1e5, 1e12]))
    cfg = _cfg(2).model_copy(update={"initial_equity": 1e5})
    sim = MarketSimulator(data, cfg, n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    sim.units[0], sim.cash[0] = [1_000.0, 0.0], 0.0
    res = sim.step(np.array([[0.0, 1.0]]))
    assert sim.units[0].tolist() == pytest.approx([900.0, 100.0], rel=1e-12)
    assert res.traded_notional[0].tolist() == pytest.approx([-1e4, 1e4], rel=1e-12)


# ------------------------------------------------------------------------------- ruin


def _crash_market(open2: float, close2: float) -> MarketData:
    """Flat at $100, then bar 2 opens at ``open2`` and closes at ``close2``; flat afterwards."""
    open_ = np.array([100.0, 100.0, open2, close2, close2, close2])
    close = np.array([100.0, 100.0, close2, close2, close2, close2])
    return _market(open_, close)


def test_ruin_at_the_close_liquidates_and_keeps_what_remains() -> None:
    # 2x long: 200 shares on $10k. Bar 2 falls 40 % intrabar: equity 10,000 - 200 * 40 = $2,000 and
    # gross 200 * 60 = $12,000; 2,000 <= 25 % * 12,000, so the book is liquidated at the close.
    sim = MarketSimulator(_crash_market(100.0, 60.0), _cfg(4, min_equity_fraction=0.0), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    sim.step(np.array([[2.0]]))
    assert sim.units[0, 0] == pytest.approx(200.0, rel=1e-15)
    res = sim.step(np.array([[2.0]]), fill=np.array([[False]]))  # hold through the crash
    assert bool(res.ruined[0]) and bool(res.terminated[0]) and not bool(res.truncated[0])
    assert float(res.equity[0]) == pytest.approx(2_000.0, rel=1e-12)
    assert float(res.reward[0]) == pytest.approx(math.log(0.2), rel=1e-12)
    assert sim.units[0, 0] == 0.0 and sim.cash[0] == pytest.approx(2_000.0, rel=1e-12)
    assert int(sim.ruin_bar[0]) == 2


@pytest.mark.parametrize(
    ("open2", "close2", "liquidated"),
    [(100.0, 60.0, 200 * 60.0), (65.0, 65.0, 200 * 65.0)],  # ruin at the close; ruin at the open
)
def test_a_ruined_books_forced_sale_pays_a_full_exit(open2: float, close2: float, liquidated: float) -> None:
    """The liquidation of a ruined account is a sale of the whole book in one bar: it pays the fee and
    half the spread like any exit (it was free, flattering a levered book's ruin in a stress run),
    in ``costs`` and not in the traded notional (a forced sale, not a fill). Fee 5 bps, spread 20 bps
    (half paid), no slippage or impact."""
    costs = {**FREE, "fee_bps_equity": 5.0}
    data = dataclasses.replace(_crash_market(open2, close2), spread_bps=np.full((6, 1), 20.0))
    sim = MarketSimulator(data, _cfg(4, costs, min_equity_fraction=0.0), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    sim.step(np.array([[2.0]]))  # 200 shares at 100, paying 20,000 x 15 bps = 30
    assert float(sim.equity[0]) == pytest.approx(9_970.0, rel=1e-12)
    res = sim.step(np.array([[2.0]]), fill=np.array([[False]]))
    marked = 9_970.0 - 200 * (100.0 - min(open2, close2))  # the account at the ruin's price
    assert bool(res.ruined[0]) and marked <= 0.25 * liquidated  # under the maintenance margin: ruin
    assert float(res.equity[0]) == pytest.approx(marked - liquidated * 15e-4, rel=1e-12)
    assert res.costs[0, :3].tolist() == pytest.approx([liquidated * 5e-4, liquidated * 10e-4, 0.0], rel=1e-12)
    assert res.traded_notional[0, 0] == 0.0 and sim.units[0, 0] == 0.0
    assert float(res.reward[0]) == pytest.approx(math.log(float(res.equity[0]) / 9_970.0), rel=1e-12)


def test_a_ruined_episode_stays_flat_until_reset() -> None:
    sim = MarketSimulator(_crash_market(100.0, 60.0), _cfg(4, min_equity_fraction=0.0), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    sim.step(np.array([[2.0]]))
    sim.step(np.array([[2.0]]), fill=np.array([[False]]))
    res = sim.step(np.array([[2.0]]))
    assert float(res.equity[0]) == pytest.approx(2_000.0, rel=1e-12)
    assert res.traded_notional[0, 0] == 0.0 and res.costs[0].sum() == 0.0 and sim.units[0, 0] == 0.0
    assert bool(res.terminated[0]) and not bool(res.ruined[0]) and float(res.reward[0]) == 0.0


def test_a_gap_through_zero_is_ruin_at_the_open_and_a_minus_100_percent_return() -> None:
    # 2x long over a 60 % gap down: equity at the open 10,000 - 200 * 60 = -$2,000: liquidated at the
    # open, equity floored at 0, the step's return is exactly -100 % and the run stays flat.
    data = _crash_market(40.0, 45.0)
    rollout = replay_policy(data, lambda obs: np.full((1, 1), 2.0), _cfg(5, min_equity_fraction=0.0))
    assert rollout.returns[0].tolist() == [0.0, -1.0, 0.0, 0.0, 0.0]
    assert rollout.equity[0, 1:].tolist() == [0.0] * 4
    assert int(rollout.ruin_step[0]) == 1
    summary = summarize(rollout.returns[0], 252)
    assert (summary["total_return"], summary["max_drawdown"], summary["annual_return"]) == (-1.0, -1.0, -1.0)


def test_the_evaluation_run_reports_ruin_and_its_bar() -> None:
    spec = PolicySpec("levered", "baseline", make=lambda data, seed: lambda obs: np.full((1, 1), 2.0))
    sim = _cfg(5, min_equity_fraction=0.0)
    ruined = run_window(spec, _crash_market(40.0, 45.0), 0, sim)
    rising = run_window(spec, _market(np.linspace(100, 150, 6), np.linspace(100, 150, 6)), 0, sim)
    assert (ruined.ruined, ruined.ruin_bar) == (True, 1)
    assert (rising.ruined, rising.ruin_bar) == (False, None) and (rising.returns[1:] > 0).all()
    pooled = pool([rising, ruined, rising])
    assert (pooled.ruined, pooled.ruin_bar) == (True, 6)
    assert pooled.returns[6] == -1.0
    assert pooled.returns[7:].tolist() == [0.0] * 8  # one account: ruined, it stays ruined


def test_pooled_runs_without_ruin_are_not_ruined() -> None:
    one = RunSeries(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros((2, 4)), np.zeros(2, dtype=int))
    assert (pool([one, one]).ruined, pool([one, one]).ruin_bar) == (False, None)


def test_the_gym_env_ends_a_ruined_episode_with_the_loss_as_reward() -> None:
    open_ = np.array([[100.0, 100.0]] * 2 + [[100.0, 100.0]] + [[60.0, 60.0]])
    close = np.array([[100.0, 100.0]] * 2 + [[60.0, 60.0]] * 2)
    data = _market(open_, close)
    env_config = {"sim": _cfg(3, min_equity_fraction=0.0).model_dump()}
    env = PortfolioEnv(env_config, data=data)
    env.reset(seed=0)
    _, _, term, _, info = env.step(np.ones(2, dtype=np.float32))
    assert not term and info["equity"] == pytest.approx(10_000.0)
    _, reward, term, trunc, info = env.step(np.ones(2, dtype=np.float32))
    assert term and not trunc
    assert info["equity"] == pytest.approx(2_000.0, rel=1e-12)
    assert reward == pytest.approx(math.log(0.2), rel=1e-12)


# ------------------------------------------------------------------------------- carry per bar


def test_an_hourly_bar_finances_borrowed_notional_for_a_seventh_of_a_day() -> None:
    # 1.5x long on $10k: $5,000 borrowed at 6.75 % / 252 days / 7 bars a day = $0.19133 per bar.
    costs = {**FREE, "financing_rate_annual": 0.0675, "borrow_fee_annual": 0.0025}
    data = _market(np.full(3, 100.0), np.full(3, 100.0), days_per_bar=1 / 7)
    sim = MarketSimulator(data, _cfg(2, costs=costs), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    fin = sim.step(np.array([[1.5]])).costs[0, 3]
    assert fin == pytest.approx(5_000.0 * 0.0675 / 252 / 7, rel=1e-12)
    assert round(float(fin), 4) == 0.1913


def test_an_hourly_short_pays_the_borrow_fee_for_a_seventh_of_a_day() -> None:
    # 0.5x short on $10k: $5,000 short at 0.25 % / 252 / 7 = $0.0070862 per bar; nothing borrowed.
    costs = {**FREE, "financing_rate_annual": 0.0675, "borrow_fee_annual": 0.0025}
    data = _market(np.full(3, 100.0), np.full(3, 100.0), days_per_bar=1 / 7)
    sim = MarketSimulator(data, _cfg(2, costs=costs), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    fin = sim.step(np.array([[-0.5]])).costs[0, 3]
    assert fin == pytest.approx(5_000.0 * 0.0025 / 252 / 7, rel=1e-12)


def test_a_configured_bar_length_overrides_the_data() -> None:
    costs = {**FREE, "financing_rate_annual": 0.0675}
    data = _market(np.full(3, 100.0), np.full(3, 100.0), days_per_bar=1 / 7)
    sim = MarketSimulator(data, _cfg(2, costs=costs, days_per_bar=1.0), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 0
    assert sim.step(np.array([[1.5]])).costs[0, 3] == pytest.approx(5_000.0 * 0.0675 / 252, rel=1e-12)


def test_the_loader_reads_the_bar_length_from_the_store(tmp_path: Path, synthetic_store: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    assert load_market_data(synthetic_store, "all").days_per_bar == 1.0
    market = generate(n_symbols=2, years=0.1, seed=1, n_crypto=0, freq="1h")
    ingest_frames(tmp_path / "store", market.bars, market.macro, show_progress=False)
    hourly = load_market_data(tmp_path / "store", "all")
    assert hourly.days_per_bar == pytest.approx(1 / 7, rel=1e-15)
    assert hourly.periods_per_year == 252 * 7


def test_a_bad_bar_length_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="days_per_bar"):
        _market(np.full(3, 100.0), np.full(3, 100.0), days_per_bar=0.0)


# ------------------------------------------------------------------------------- properties

N_PROP, T_PROP, B_PROP = 4, 24, 3


def _wild_market(seed: int, gap_prob: float) -> MarketData:
    """Random walk with gaps of -90 % to +300 % (overnight or intrabar), late listings, delistings and
    dollar volumes from $10k to $100M per bar (so the participation cap often binds)."""
    rng = np.random.default_rng(seed)
    t, n = T_PROP + 1, N_PROP
    factor = np.exp(rng.normal(0, 0.03, (2 * t, n)))
    gaps = rng.random((2 * t, n)) < gap_prob
    factor = np.where(gaps, 1.0 + rng.uniform(-0.9, 3.0, (2 * t, n)), factor)
    path = 100.0 * np.cumprod(factor, axis=0)
    open_, close = path[0::2], path[1::2]
    first = rng.integers(0, t // 2, n)
    first[0] = 0
    last = np.where(rng.random(n) < 0.3, rng.integers(t // 2, t, n), t - 1)
    rows = np.arange(t)[:, None]
    listed = (rows >= first) & (rows <= last)
    dv = np.exp(rng.uniform(np.log(1e4), np.log(1e8), n)) * np.ones((t, 1))
    spread = rng.uniform(0, 3_000, (t, n))
    return dataclasses.replace(_market(open_, close, dollar_volume=dv, listed=listed), spread_bps=spread)


def _policy(kind: int, rng: np.random.Generator, b: int) -> np.ndarray:
    if kind == 0:  # long-only, unlevered
        return rng.uniform(0, 1, (b, N_PROP))
    return rng.uniform(-3, 3, (b, N_PROP))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), gap_prob=st.floats(0.0, 0.5), kind=st.integers(0, 1))
def test_returns_costs_fills_and_ruin_on_wild_paths(seed: int, gap_prob: float, kind: int) -> None:
    data = _wild_market(seed, gap_prob)
    constraints = (
        {"long_only": True, "gross_cap": 1.0, "per_asset_cap": 1.0}
        if kind == 0
        else {"gross_cap": 2.0, "per_asset_cap": 1.5}
    )
    cfg = SimulatorConfig.model_validate(
        {"episode_len": T_PROP, "initial_equity": 1e6, "constraints": constraints, "min_equity_fraction": 0.0}
    )
    sim = MarketSimulator(data, cfg, n_envs=B_PROP, seed=seed)
    ref = ReferenceSimulator(data, cfg, n_envs=B_PROP, seed=seed)
    sim.reset(starts=np.zeros(B_PROP, dtype=np.int64))
    ref.reset(starts=np.zeros(B_PROP, dtype=np.int64))
    bound = max_cost_fraction(cfg.costs)
    rates = cost_rates(
        data.spread_bps, data.dollar_volume, fee_bps(np.zeros(N_PROP, bool), cfg.costs), cfg.costs
    )
    rng = np.random.default_rng(seed)
    for _ in range(T_PROP):
        t, before, was_ruined = sim.t.copy(), sim.equity.copy(), sim.ruined.copy()
        units_before = sim.units.copy()
        target = _policy(kind, rng, B_PROP)
        res, want = sim.step(target), ref.step(target)
        # the compiled step is the numpy statement of the rules, also on these paths
        for name in ("equity", "costs", "traded_notional", "reward"):
            np.testing.assert_allclose(getattr(res, name), getattr(want, name), rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(sim.units, ref.units, rtol=1e-9, atol=1e-9)
        assert (sim.ruined == ref.ruined).all()
        returns = res.equity / np.where(before > 0, before, 1.0) - 1.0
        live = ~was_ruined
        # returns > -1 unless the step ruined the account; never below -1
        assert ((returns > -1.0) | res.ruined)[live].all()
        assert (returns[live] >= -1.0).all() and (res.equity >= 0).all()
        # costs <= the stated multiple of what was traded; fills <= the participation cap
        traded = np.abs(res.traded_notional)
        # (a ruined account's forced sale of its whole book pays a full exit: costed, not a fill)
        sold = traded.sum(-1) + ref.liquidated
        assert (res.costs[:, :3].sum(-1) <= bound * sold * (1 + 1e-9) + 1e-9).all()
        held_value = np.abs(units_before * data.open[t + 1])  # the fill's units are u + (fill - u)
        fills = np.where(t[:, None] == last_listed_bar(data.listed), 0.0, traded)  # not a forced close
        assert (fills <= rates.fill_cap[t] * (1 + 1e-9) + 1e-12 * held_value).all()
        # after ruin: flat, nothing traded, nothing charged, equity unchanged
        if was_ruined.any():
            assert (res.equity[was_ruined] == before[was_ruined]).all()
            assert (res.costs[was_ruined] == 0).all() and (traded[was_ruined] == 0).all()
            assert (units_before[was_ruined] == 0).all() and (sim.units[was_ruined] == 0).all()
        # what holds at every close: gross <= equity / maintenance margin, or the book is liquidated
        gross = np.abs(sim.units * data.close[sim.t]).sum(-1)
        assert (gross <= sim.equity / cfg.maintenance_margin * (1 + 1e-9)).all()
        if kind == 0:  # long-only unlevered: it can lose what it holds, never more
            assert not sim.ruined.any() and (sim.equity > 0).all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16))
def test_a_partial_fill_never_levers_the_book_beyond_where_it_was_or_was_going(seed: int) -> None:
    data = _wild_market(seed, 0.2)
    cfg = SimulatorConfig.model_validate(
        {
            "episode_len": T_PROP,
            "initial_equity": 1e6,
            "constraints": {"gross_cap": 2.0, "per_asset_cap": 1.5},
        }
    )
    sim = MarketSimulator(data, cfg, n_envs=B_PROP, seed=seed)
    sim.reset(starts=np.zeros(B_PROP, dtype=np.int64))
    rng = np.random.default_rng(seed)
    for _ in range(T_PROP):
        t1 = sim.t + 1
        open1 = data.open[t1]
        gone = data.listed[sim.t] & ~data.listed[t1]
        held = np.where(gone, 0.0, sim.units)
        equity_open = sim.equity + (held * (open1 - data.close[sim.t])).sum(-1)
        res = sim.step(rng.uniform(-3, 3, (B_PROP, N_PROP)))
        filled = held + np.where(gone, 0.0, res.traded_notional) / open1  # a forced close is no fill
        gross_after = np.abs(filled * open1).sum(-1)
        bound = np.maximum(np.abs(held * open1).sum(-1), np.abs(res.target_weights).sum(-1) * equity_open)
        ok = ~res.terminated
        assert (gross_after[ok] <= bound[ok] * (1 + 1e-9) + 1e-6).all()
        if res.terminated.all():
            break


def test_the_wild_setting_exercises_ruin_and_the_participation_cap() -> None:
    """The property test above must actually ruin accounts and cap fills."""
    ruins, capped = 0, 0
    cfg = SimulatorConfig.model_validate(
        {
            "episode_len": T_PROP,
            "initial_equity": 1e6,
            "constraints": {"gross_cap": 2.0, "per_asset_cap": 1.5},
        }
    )
    for seed in range(4):
        data = _wild_market(seed, 0.3)
        rates = cost_rates(data.spread_bps, data.dollar_volume, np.full(N_PROP, 5.0), cfg.costs)
        sim = MarketSimulator(data, cfg, n_envs=B_PROP, seed=seed)
        sim.reset(starts=np.zeros(B_PROP, dtype=np.int64))
        rng = np.random.default_rng(seed)
        for _ in range(T_PROP):
            t = sim.t.copy()
            res = sim.step(_policy(1, rng, B_PROP))
            ruins += int(res.ruined.sum())
            capped += int((np.abs(res.traded_notional) >= rates.fill_cap[t] * (1 - 1e-9)).sum())
    assert ruins > 0 and capped > 0


def test_the_report_names_ruined_runs_and_the_ruin_date() -> None:
    from raytrade.envs.evaluation.document import run_report
    from raytrade.envs.evaluation.harness import PolicyResult
    from raytrade.envs.evaluation.render import _ruin

    spec = PolicySpec("levered", "baseline", make=lambda data, seed: lambda obs: np.full((1, 1), 2.0))
    sim = _cfg(5, min_equity_fraction=0.0)
    data = _crash_market(40.0, 45.0)
    ruined = run_window(spec, data, 0, sim)
    rising = run_window(spec, _market(np.linspace(100, 150, 6), np.linspace(100, 150, 6)), 0, sim)
    doc = run_report(ruined, 252)
    assert doc.ruined and doc.metrics.total_return == -1.0
    assert doc.ruin_date == str(ruined.timestamps[1].astype("datetime64[D]"))
    assert (run_report(rising, 252).ruined, run_report(rising, 252).ruin_date) == (False, None)

    result = PolicyResult(
        spec, (0, 1), rising, (), {0: rising, 1: ruined}, {"flash_crash": (rising, ruined, rising)}
    )
    assert result.ruined and result.ruined_runs == ("seed 1", "stress flash_crash draw 1")
    clean = PolicyResult(spec, (0,), rising, (), {0: rising}, {"flash_crash": (rising,)})
    assert not clean.ruined and clean.ruined_runs == ()

    # _ruin reads three fields of each policy's report
    report = SimpleNamespace(
        policies={
            "levered": SimpleNamespace(ruined=True, ruin_date=doc.ruin_date, ruined_runs=result.ruined_runs),
            "cash": SimpleNamespace(ruined=False, ruin_date=None, ruined_runs=()),
        }
    )
    lines = [b.text for b in _ruin(report, ["cash", "levered"])]  # type: ignore[arg-type]
    assert lines[0] == f"RUINED: levered (main series on {doc.ruin_date}): seed 1, stress flash_crash draw 1"
    assert len(lines) == 2 and "floored at -100 %" in lines[1]
