"""Vectorised simulator: accounting identity, constraints, masking, kill switch, no look-ahead, seeds."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.kill_switch import KillSwitchConfig, init_kill_switch, update_kill_switch
from raytrade.envs.market_data import MarketData, carry_close_through_holes
from raytrade.envs.rewards import RewardConfig, compute_reward, init_reward_state
from raytrade.envs.simulator import MarketSimulator
from raytrade.envs.synthetic_market import synthetic_market_data

N_ASSETS = 6
DATA = synthetic_market_data(n_assets=N_ASSETS, n_steps=160, seed=3, n_crypto=2, ragged=True)
PROP_CFG = SimulatorConfig.model_validate(
    {
        "episode_len": 40,
        "constraints": {"gross_cap": 2.0, "crypto_gross_cap": 1.0, "per_asset_cap": 0.8},
        "kill_switch": {"trigger_drawdown": 0.03, "release_drawdown": 0.01, "release_after_bars": 5},
    }
)


def _actions(n_steps: int, b: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.float64, (n_steps, b, N_ASSETS), elements=st.floats(-3, 3, allow_nan=False, width=32))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_actions(40, 3), seed=st.integers(0, 2**16))
def test_invariants_hold_every_step(acts: np.ndarray, seed: int) -> None:
    sim = MarketSimulator(DATA, PROP_CFG, n_envs=3, seed=seed)
    con = PROP_CFG.constraints
    crypto = sim.is_crypto
    for a in acts:
        kill_before = sim.kill.active.copy()
        units_before = sim.units.copy()
        res = sim.step(a)
        w = res.target_weights
        # equity identity and finiteness
        assert sim.equity_identity_error().max() <= 1e-9
        for arr in (res.reward, res.equity, res.costs, w, sim.units, sim.cash):
            assert np.isfinite(arr).all()
        # constraints after projection
        assert (np.abs(w).sum(-1) <= con.gross_cap * (1 + 1e-12)).all()
        assert (np.abs(w[:, crypto]).sum(-1) <= con.crypto_gross_cap * (1 + 1e-12)).all()
        assert (np.abs(w) <= con.per_asset_cap * (1 + 1e-12)).all()
        # masked assets never hold anything
        listed_now = DATA.listed[sim.t]
        assert (sim.units[~listed_now] == 0).all()
        # kill switch: only shrink toward zero, never grow or flip
        k = kill_before
        assert (np.abs(sim.units[k]) <= np.abs(units_before[k]) * (1 + 1e-12)).all()
        assert (sim.units[k] * units_before[k] >= 0).all()
        assert (res.costs >= 0).all()
        if (res.terminated | res.truncated).any():
            break


def test_kill_switch_trips_in_property_setting() -> None:
    """The property test above must actually exercise the kill switch."""
    sim = MarketSimulator(DATA, PROP_CFG, n_envs=8, seed=0)
    rng = np.random.default_rng(0)
    tripped = False
    for _ in range(40):
        sim.step(rng.uniform(-3, 3, (8, N_ASSETS)))
        tripped |= bool(sim.kill.active.any())
    assert tripped


def _run(sim: MarketSimulator, acts: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    out: list[tuple[np.ndarray, ...]] = []
    for a in acts:
        ob = sim.observe()
        res = sim.step(a)
        out.append((ob.features, ob.weights, ob.cash_fraction, res.reward, res.costs, sim.start.copy()))
    return out


def test_same_seed_same_trajectory() -> None:
    acts = np.random.default_rng(1).uniform(-1, 1, (30, 4, N_ASSETS))
    a = _run(MarketSimulator(DATA, PROP_CFG, n_envs=4, seed=11), acts)
    b = _run(MarketSimulator(DATA, PROP_CFG, n_envs=4, seed=11), acts)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            assert np.array_equal(u, v)


def _perturb_after(data: MarketData, bar: int, rng: np.random.Generator) -> MarketData:
    """Change every datum after ``bar``'s open (keeps open[bar] and listed[bar]), except whether an
    asset has any bar after ``bar``: that is what tells a hole (kept) from a delisting (liquidated at
    its last close), the one fact about later bars the step uses. Hole prices stay flat."""

    def scaled(x: np.ndarray, first: int) -> np.ndarray:
        y = x.copy()
        y[first:] = y[first:] * rng.uniform(0.5, 1.5, y[first:].shape).astype(y.dtype)
        return y

    listed = data.listed.copy()
    alive = listed[bar + 1 :].any(axis=0)
    listed[bar + 1 :] = (rng.random(listed[bar + 1 :].shape) < 0.5) & alive
    listed[-1] |= alive
    open_, close = carry_close_through_holes(scaled(data.open, bar + 1), scaled(data.close, bar), listed)
    return dataclasses.replace(
        data,
        open=open_,
        close=close,
        spread_bps=scaled(data.spread_bps, bar),
        dollar_volume=scaled(data.dollar_volume, bar),
        features=scaled(data.features, bar),
        listed=listed,
    )


@pytest.mark.parametrize("k", [0, 7, 20])
def test_no_look_ahead(k: int) -> None:
    """Changing bars after t+1's open changes nothing observed up to t or earned by close t."""
    cfg = PROP_CFG.model_copy(update={"episode_len": 30})
    acts = np.random.default_rng(2).uniform(-1, 1, (30, 1, N_ASSETS))
    base = MarketSimulator(DATA, cfg, n_envs=1, seed=5)
    t0 = int(base.start[0])
    t = t0 + k  # decision bar; bars after open[t + 1] are perturbed
    other = MarketSimulator(_perturb_after(DATA, t + 1, np.random.default_rng(9)), cfg, n_envs=1, seed=5)
    assert int(other.start[0]) == t0
    ra, rb = _run(base, acts), _run(other, acts)
    for step in range(k + 1):  # observations at bars t0..t
        for u, v in zip(ra[step][:3], rb[step][:3], strict=True):
            assert np.array_equal(u, v)
    for step in range(k):  # rewards and costs realised by close t
        assert np.array_equal(ra[step][3], rb[step][3]) and np.array_equal(ra[step][4], rb[step][4])
    # the fill at open t + 1 (fee, spread, slippage of decision t) is unchanged too
    assert np.array_equal(ra[k][4][:, :3], rb[k][4][:, :3])
    # and the perturbation does matter afterwards
    assert not all(np.array_equal(ra[s][3], rb[s][3]) for s in range(k, 30))


def _two_asset_market(listed1_until: int) -> MarketData:
    t = 8
    close = np.column_stack([np.full(t, 50.0), 100.0 + np.arange(t, dtype=float)])
    listed = np.ones((t, 2), dtype=bool)
    listed[listed1_until + 1 :, 1] = False
    close[listed1_until + 1 :, 1] = close[listed1_until, 1]
    return MarketData(
        ts=np.arange(t).astype("datetime64[D]").astype("datetime64[us]"),
        symbols=("A", "B"),
        asset_class=("equity", "equity"),
        open=close.copy(),
        close=close,
        listed=listed,
        spread_bps=np.full((t, 2), 2.0),
        dollar_volume=np.full((t, 2), 1e10),
        features=np.zeros((t, 2, 1), dtype=np.float32),
        feature_names=("x",),
        regime_code=np.zeros((t, 2), dtype=np.int8),
    )


def _held_into_delisting(data: MarketData) -> tuple[MarketSimulator, float, float, float]:
    """A book of B alone stepped to bar 3, B's last real bar: (simulator, B's units, cash, equity)."""
    cfg = SimulatorConfig(episode_len=6, initial_equity=10_000.0)
    sim = MarketSimulator(data, cfg, n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 1
    sim.step(np.array([[0.0, 0.5]]))  # bar 1 -> 2: buy B
    sim.step(np.array([[0.0, 0.5]]))  # bar 2 -> 3: rebalance
    return sim, float(sim.units[0, 1]), float(sim.cash[0]), float(sim.equity[0])


def test_a_delisted_asset_is_closed_at_its_last_price_paying_what_an_exit_there_costs() -> None:
    """The forced close is no free trade: fee, half the spread, the tier base and the impact of the
    sale on that bar, the rule the window-end exit pays (``exit_costs`` at the same bar)."""
    data = _two_asset_market(listed1_until=3)
    sim, units_b, cash, equity = _held_into_delisting(data)
    exit_now = sim.exit_costs()  # the book is B alone: its exit at bar 3 is exactly the forced close
    notional = units_b * data.close[3, 1]
    c = sim.cfg.costs
    rate_bps = c.fee_bps_equity + c.spread_fraction * 2.0 + c.tier_base_bps[0]
    by_hand = notional * (rate_bps + c.impact_coef_bps * np.sqrt(notional / 1e10)) * 1e-4
    np.testing.assert_allclose(exit_now.costs.sum(), by_hand, rtol=1e-12)
    res = sim.step(np.array([[0.0, 0.5]]))  # bar 3 -> 4: B is gone at 4
    assert sim.units[0, 1] == 0.0 and res.target_weights[0, 1] == 0.0
    np.testing.assert_allclose(res.costs[0, :3], exit_now.costs[0], rtol=1e-12)
    assert res.costs[0, 3] == 0.0
    assert res.traded_notional[0].tolist() == [0.0, -notional]
    assert sim.cash[0] == pytest.approx(cash + notional - by_hand, rel=1e-14)
    assert sim.equity[0] == pytest.approx(equity - by_hand, rel=1e-14)  # A flat, B sold at close[3]
    assert sim.equity_identity_error()[0] < 1e-12
    assert sim.observe().mask[0].tolist() == [True, False]


def test_a_delisting_on_a_bar_that_traded_nothing_pays_the_impact_at_the_participation_cap() -> None:
    data = _two_asset_market(listed1_until=3)
    data = dataclasses.replace(
        data, bar_dollar_volume=np.where(np.arange(8)[:, None] == 3, 0.0, 1e10) * np.ones((8, 2))
    )
    sim, units_b, _, equity = _held_into_delisting(data)
    notional = units_b * data.close[3, 1]
    c = sim.cfg.costs
    rate_bps = (
        c.fee_bps_equity + c.spread_fraction * 2.0 + c.tier_base_bps[0] + c.impact_coef_bps * np.sqrt(0.1)
    )
    res = sim.step(np.array([[0.0, 0.5]]))
    assert res.costs[0, :3].sum() == pytest.approx(notional * rate_bps * 1e-4, rel=1e-12)
    assert sim.equity[0] == pytest.approx(equity - notional * rate_bps * 1e-4, rel=1e-14)


def test_a_flat_book_pays_nothing_when_an_asset_delists() -> None:
    data = _two_asset_market(listed1_until=3)
    sim = MarketSimulator(data, SimulatorConfig(episode_len=6, initial_equity=10_000.0), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 1
    for _ in range(3):
        res = sim.step(np.array([[0.0, 0.0]]))
    assert not res.traded_notional.any() and not res.costs.any() and sim.equity[0] == 10_000.0
    assert sim.equity_identity_error()[0] < 1e-12


def test_unlisted_asset_gets_no_weight_and_no_cost() -> None:
    data = _two_asset_market(listed1_until=1)
    sim = MarketSimulator(data, SimulatorConfig(episode_len=4), n_envs=1, seed=0)
    sim.start[:] = sim.t[:] = 3
    res = sim.step(np.array([[0.0, 1.0]]))
    assert res.target_weights[0, 1] == 0.0 and sim.units[0, 1] == 0.0 and res.costs[0].sum() == 0.0


def test_batch_rows_match_single_episode() -> None:
    acts = np.random.default_rng(4).uniform(-1, 1, (20, 1, N_ASSETS))
    one = MarketSimulator(DATA, PROP_CFG, n_envs=1, seed=0)
    many = MarketSimulator(DATA, PROP_CFG, n_envs=3, seed=0)
    many.start[:] = many.t[:] = one.t[0]
    for a in acts:
        r1, r3 = one.step(a), many.step(np.repeat(a, 3, axis=0))
        assert np.allclose(r3.reward, r1.reward[0], rtol=0, atol=0)
    assert np.array_equal(many.units, np.repeat(one.units, 3, axis=0))


def test_inactive_rows_are_untouched() -> None:
    sim = MarketSimulator(DATA, PROP_CFG, n_envs=2, seed=0)
    sim.step(np.full((2, N_ASSETS), 0.2))
    before = (sim.units.copy(), sim.cash.copy(), sim.t.copy(), sim.kill.peak.copy())
    sim.step(np.full((2, N_ASSETS), -0.3), active=np.array([True, False]))
    assert np.array_equal(sim.units[1], before[0][1]) and sim.cash[1] == before[1][1]
    assert sim.t[1] == before[2][1] and sim.t[0] == before[2][0] + 1
    assert not np.array_equal(sim.units[0], before[0][0])


def test_episode_longer_than_data_is_refused() -> None:
    with pytest.raises(ValueError, match="episode_len"):
        MarketSimulator(DATA, SimulatorConfig(episode_len=160), n_envs=1)


def test_non_finite_action_is_refused() -> None:
    sim = MarketSimulator(DATA, PROP_CFG, n_envs=1, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        sim.step(np.full((1, N_ASSETS), np.nan))


def test_truncates_after_episode_len() -> None:
    sim = MarketSimulator(DATA, SimulatorConfig(episode_len=5), n_envs=2, seed=0)
    flags = [bool(sim.step(np.zeros((2, N_ASSETS))).truncated.all()) for _ in range(5)]
    assert flags == [False, False, False, False, True]


# ------------------------------------------------------------------------------- kill switch, rewards


def test_kill_switch_trips_and_releases_on_recovery() -> None:
    cfg = KillSwitchConfig(trigger_drawdown=0.1, release_drawdown=0.02, release_after_bars=None)
    s = init_kill_switch(np.array([100.0]))
    seen = []
    for eq in [105.0, 95.0, 94.0, 100.0, 103.0, 90.0]:
        s = update_kill_switch(s, np.array([eq]), cfg)
        seen.append(bool(s.active[0]))
    # dd: 0, .095, .105 (trip), .048, .019 (release), .143 (trip)
    assert seen == [False, False, True, True, False, True]


def test_kill_switch_trips_at_exactly_its_trigger_despite_float_rounding() -> None:
    """60,000 after a 75,000 peak is a 20 % drawdown, computed as 0.19999999999999996: it trips."""
    assert 1.0 - 60_000.0 / 75_000.0 < 0.2  # the rounding the rule must not be fooled by
    cfg = KillSwitchConfig(trigger_drawdown=0.2, release_drawdown=0.05, release_after_bars=None)
    s = update_kill_switch(init_kill_switch(np.array([75_000.0])), np.array([60_000.0]), cfg)
    assert bool(s.active[0])
    calm = update_kill_switch(init_kill_switch(np.array([75_000.0])), np.array([60_000.01]), cfg)
    assert not bool(calm.active[0])  # a cent above the threshold stays off


def test_kill_switch_releases_after_k_bars_and_resets_peak() -> None:
    cfg = KillSwitchConfig(trigger_drawdown=0.1, release_drawdown=None, release_after_bars=2)
    s = init_kill_switch(np.array([100.0]))
    seen = []
    for eq in [80.0, 80.0, 80.0, 80.0]:
        s = update_kill_switch(s, np.array([eq]), cfg)
        seen.append(bool(s.active[0]))
    assert seen == [True, True, False, False] and s.peak[0] == 80.0


def test_log_growth_reward_sums_to_log_wealth() -> None:
    sim = MarketSimulator(
        DATA, PROP_CFG.model_copy(update={"kill_switch": KillSwitchConfig(enabled=False)}), 2, 0
    )
    rng = np.random.default_rng(6)
    total = np.zeros(2)
    for _ in range(20):
        total += sim.step(rng.uniform(-1, 1, (2, N_ASSETS))).reward
    assert np.allclose(total, np.log(sim.equity / PROP_CFG.initial_equity), rtol=0, atol=1e-12)


def test_cvar_and_drawdown_penalties_exact() -> None:
    g, dd = np.array([-0.02, 0.01]), np.array([0.05, 0.0])
    cv = RewardConfig(kind="cvar", cvar_alpha=0.9, cvar_lambda=0.5)
    r, st_ = compute_reward(cv, g, dd, init_reward_state(2))
    # z = 0: penalty = 0 + max(0, loss) / 0.1 -> [0.2, 0]
    assert np.allclose(r, [-0.02 - 0.5 * 0.2, 0.01], rtol=0, atol=1e-15)
    assert np.allclose(st_.var_z, [0.01 * 0.9, -0.01 * 0.1], rtol=0, atol=1e-15)
    dr = RewardConfig(kind="drawdown", drawdown_lambda=2.0)
    r2, _ = compute_reward(dr, g, dd, init_reward_state(2))
    assert np.allclose(r2, [-0.02 - 2 * 0.05, 0.01], rtol=0, atol=1e-15)


def test_differential_sharpe_matches_moody_saffell() -> None:
    cfg = RewardConfig(kind="diff_sharpe", sharpe_eta=0.1)
    s = init_reward_state(1)
    r0, s = compute_reward(cfg, np.array([0.01]), np.zeros(1), s)
    assert r0[0] == 0.0  # no variance yet
    a, b = s.ema_a[0], s.ema_b[0]
    assert (a, b) == pytest.approx((0.001, 0.00001), rel=1e-12)
    r1, _ = compute_reward(cfg, np.array([-0.02]), np.zeros(1), s)
    da, db = -0.02 - a, 0.0004 - b
    assert r1[0] == pytest.approx((b * da - 0.5 * a * db) / (b - a * a) ** 1.5, rel=1e-12)


def test_stepping_past_the_episode_end_is_refused() -> None:
    sim = MarketSimulator(DATA, SimulatorConfig(episode_len=2), n_envs=1, seed=0)
    sim.step(np.zeros((1, N_ASSETS)))
    sim.step(np.zeros((1, N_ASSETS)))
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(np.zeros((1, N_ASSETS)))


def test_episode_costs_are_the_sum_of_step_costs() -> None:
    sim = MarketSimulator(DATA, PROP_CFG, n_envs=2, seed=1)
    rng = np.random.default_rng(8)
    total = np.zeros((2, 4))
    for _ in range(15):
        total += sim.step(rng.uniform(-1, 1, (2, N_ASSETS))).costs
    assert np.allclose(sim.episode_costs, total, rtol=1e-14, atol=0) and (total[:, :3] > 0).all()


@pytest.mark.parametrize("seed", range(8))
def test_the_compiled_step_equals_the_numpy_statement_of_the_rules(seed: int) -> None:
    """Fills, execution multipliers, partial commits, delistings, late listings, holes, a tight kill switch,
    long-only, the crypto sleeve, every reward kind and interest on idle cash (constant, or a schedule):
    same state as the numpy step to 1e-9."""
    from dataclasses import replace

    from raytrade.envs.synthetic_market import synthetic_market_data
    from tests.step_reference import ReferenceSimulator

    rng = np.random.default_rng(seed)
    md = synthetic_market_data(n_assets=12, n_steps=400, seed=seed, n_crypto=3)
    listed = md.listed.copy()
    listed[150:, 2] = False
    listed[:50, 5] = False
    listed[100:103, 7] = False  # a three-bar halt
    listed[120, :] = False  # a bar where nothing trades
    open_, close = carry_close_through_holes(md.open, md.close, listed)
    md = replace(md, listed=listed, open=open_, close=close)
    kind = ("log_growth", "cvar", "drawdown", "diff_sharpe")[seed % 4]
    days = [str(d) for d in md.ts[[0, 180, 300]].astype("datetime64[D]")]
    cash_rate = (  # large rates, so a wrong base or bar would show
        {"annual": 0.2}
        if seed % 2
        else {
            "schedule": [
                {"start": days[0], "annual": 0.1},
                {"start": days[1], "annual": 0.0},
                {"start": days[2], "annual": 0.3},
            ]
        }
    )
    cfg = SimulatorConfig.model_validate(
        {
            "episode_len": 200,
            "cash_rate": cash_rate,
            "constraints": {"per_asset_cap": 0.6, "long_only": seed % 3 == 0},
            "kill_switch": {"trigger_drawdown": 0.05, "release_after_bars": 7},
            "reward": {"kind": kind},
        }
    )
    ref, sim = ReferenceSimulator(md, cfg, n_envs=6, seed=seed), MarketSimulator(md, cfg, n_envs=6, seed=seed)
    kill_bars = 0
    for k in range(190):
        target = rng.normal(0, 0.8, (6, 12))
        kw: dict[str, Any] = {}
        if seed % 2:
            kw = {
                "fill": rng.random((6, 12)) < 0.7,
                "spread_mult": np.where(rng.random((6, 12)) < 0.5, -0.5, 1.0),
                "slippage_mult": 0.3,
            }
        active = rng.random(6) < 0.9 if k % 5 == 0 else None
        a, b = ref.step(target, active=active, **kw), sim.step(target, active=active, **kw)
        for name in (
            "reward",
            "equity",
            "costs",
            "target_weights",
            "traded_notional",
            "log_growth",
            "interest",
        ):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-9, err_msg=name)
        for name in ("units", "cash", "equity", "episode_costs", "peak", "t", "steps"):
            got, want = getattr(sim, name), getattr(ref, name)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=name)
        assert (sim.kill.active == ref.kill.active).all()
        kill_bars += int(sim.kill.active.sum())
        if (a.truncated | a.terminated).any():
            break
    assert kill_bars > 0  # the unwind-only path was exercised
