"""A baseline holding an asset it cannot trade (not listed at ``t``: a halt, a data hole) keeps that
weight inside its budget (``envs.budget``): ``equal_weight`` / ``inverse_vol`` stay long-only with
gross <= 1 and never borrow, ``kelly_lite`` stays inside its caps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import COST_COMPONENTS, CostConfig
from raytrade.envs.evaluation.kelly_lite import AssetFlags, KellyInputs, KellyLiteConfig, kelly_lite_decision
from raytrade.envs.evaluation.policies import baseline_factory
from raytrade.envs.market_data import MarketData, carry_close_through_holes
from raytrade.envs.simulator import MarketSimulator
from raytrade.envs.synthetic_market import synthetic_market_data

N_STEPS = 80  # 2020-01-01 .. 2020-03-20, daily: month starts at bars 0, 31 and 60
HALTED = 3
FINANCING = COST_COMPONENTS.index("financing")
NO_COSTS = CostConfig(fee_bps_equity=0, spread_fraction=0, tier_base_bps=(0, 0, 0), impact_coef_bps=0)


def _halted_on_a_month_start() -> MarketData:
    """Four equities, all listed throughout except asset 3, which has no bars on 2020-02-01..03
    (bars 31-33: the first bars of February) and is held into that hole. Asset 3 is made the winner
    of January so that it is the largest holding when it halts."""
    data = synthetic_market_data(n_assets=4, n_steps=N_STEPS, seed=0, ragged=False)
    listed = data.listed.copy()
    listed[31:34, HALTED] = False
    close, open_ = data.close.copy(), data.open.copy()
    drift = np.exp(np.minimum(np.arange(N_STEPS), 31) * 0.01)  # +1 %/bar through January
    close[:, HALTED] *= drift
    open_[:, HALTED] *= drift
    open_, close = carry_close_through_holes(open_, close, listed, None)
    return replace(data, listed=listed, close=close, open=open_)


def _run(name: str, data: MarketData) -> tuple[np.ndarray, float, np.ndarray]:
    """One frictionless episode of baseline ``name`` over all of ``data``: (gross after each bar,
    financing paid, the halted asset's weight on its first unlisted bar)."""
    sim_cfg = SimulatorConfig(costs=NO_COSTS, episode_len=data.n_steps - 1)
    sim = MarketSimulator(data, sim_cfg, n_envs=1)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    policy = baseline_factory(name)(data, 0)
    gross, financing, held = [], 0.0, np.zeros(0)
    for k in range(data.n_steps - 1):
        if k == 31:
            held = sim.weights()[0].copy()
        out = policy(sim.observe())
        result = sim.step(out.weights, fill=~out.hold)
        financing += float(result.costs[0, FINANCING])
        gross.append(float(np.abs(sim.weights()[0]).sum()))
    return np.array(gross), financing, held


def test_equal_weight_holding_a_halted_stock_on_a_month_start_does_not_borrow() -> None:
    data = _halted_on_a_month_start()
    gross, financing, held = _run("equal_weight", data)
    assert held[HALTED] > 0.3  # the halted stock is the largest holding (1/4 before January's run-up)
    # no costs: a book that never borrows ends every bar with cash >= 0, i.e. gross <= 1
    assert gross.max() <= 1.0 + 1e-9, f"gross {gross.max():.4f} on bar {gross.argmax() + 1}"
    assert financing < 1e-6  # float rounding of a zero borrow (the bug paid dollars)


def test_inverse_vol_holding_a_halted_stock_on_a_month_start_does_not_borrow() -> None:
    gross, financing, _ = _run("inverse_vol", _halted_on_a_month_start())
    assert gross.max() <= 1.0 + 1e-9 and financing < 1e-6


def test_equal_weight_shares_what_the_halted_stock_leaves() -> None:
    """On the halted month start the halted stock keeps its weight and the three listed share the rest."""
    data = _halted_on_a_month_start()
    ctx = baseline_context("equal_weight", data)
    w_now = np.array([[0.2, 0.2, 0.2, 0.4]])
    decided = baseline_decision(ctx, np.array([31]), np.array([False]), data.listed[[31]], w_now)
    np.testing.assert_allclose(decided.allocation, [[0.2, 0.2, 0.2, 0.4]], rtol=0, atol=1e-15)
    assert not decided.hold.any()
    w_now = np.array([[0.1, 0.1, 0.1, 1.3]])  # a kept weight above the budget: nothing to buy
    decided = baseline_decision(ctx, np.array([31]), np.array([False]), data.listed[[31]], w_now)
    np.testing.assert_array_equal(decided.allocation, [[0.0, 0.0, 0.0, 1.3]])


def _data_with_consensus() -> MarketData:
    data = synthetic_market_data(n_assets=6, n_steps=N_STEPS, seed=1, ragged=False)
    ok = np.ones((*data.features.shape[:2], 1), dtype=np.float32)
    return replace(
        data,
        features=np.concatenate([data.features, ok], axis=-1),
        feature_names=(*data.feature_names, "fc_consensus_ok"),
    )


CONTEXTS = {name: baseline_context(name, _data_with_consensus()) for name in ("equal_weight", "inverse_vol")}
N = 6


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(sorted(CONTEXTS)),
    t=st.integers(0, N_STEPS - 1),
    mask=arrays(np.bool_, (N,)),
    w_now=arrays(np.float64, (N,), elements=st.floats(0.0, 0.8)),
)
def test_unlisted_held_weights_are_kept_inside_the_budget(
    name: str, t: int, mask: np.ndarray, w_now: np.ndarray
) -> None:
    ctx = CONTEXTS[name]
    allocation = baseline_decision(ctx, np.array([t]), np.array([False]), mask[None], w_now[None]).allocation[
        0
    ]
    kept = np.abs(w_now[~mask]).sum()
    np.testing.assert_array_equal(allocation[~mask], w_now[~mask])  # it cannot trade: kept
    assert (allocation >= 0).all()  # long-only
    assert np.abs(allocation).sum() <= max(1.0, kept) + 1e-12
    traded = allocation[mask]
    if kept >= 1.0:
        assert (traded == 0).all()
    elif traded.sum() > 0:  # invested: fully, in the listed assets, with what the kept ones leave
        assert abs(allocation.sum() - 1.0) < 1e-12
        if name == "equal_weight":
            np.testing.assert_allclose(traded, (1.0 - kept) / mask.sum(), rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    mask=arrays(np.bool_, (N,)),
    crypto=arrays(np.bool_, (N,)),
    w_now=arrays(np.float64, (N,), elements=st.floats(-0.8, 0.8)),
    fc=arrays(np.float64, (N,), elements=st.floats(-0.02, 0.02)),
)
def test_kelly_lite_keeps_unlisted_weights_inside_every_cap(
    mask: np.ndarray, crypto: np.ndarray, w_now: np.ndarray, fc: np.ndarray
) -> None:
    cfg = KellyLiteConfig()
    inputs = KellyInputs(
        fc_mean=fc,
        consensus_ok=np.ones(N, dtype=bool),
        spread_bps=np.full(N, 5.0),
        dollar_volume=np.full(N, 1e8),
        sigma=np.full(N, 0.005),
        listed=mask,
        w_now=w_now,
    )
    flags = AssetFlags(is_crypto=crypto, illiquid=np.zeros(N, dtype=bool), probe=np.zeros(N, dtype=bool))
    traded = kelly_lite_decision(inputs, flags, cfg).weights
    assert (traded[~mask] == 0).all()
    book = np.where(mask, traded, w_now)
    for members, cap in (
        (crypto, cfg.leverage_cap_crypto),
        (~crypto, cfg.leverage_cap_equity),
        (np.ones(N, dtype=bool), cfg.gross_cap),
    ):
        kept = np.abs(w_now[members & ~mask]).sum()
        assert np.abs(book[members]).sum() <= max(cap, kept) + 1e-12


def test_kelly_lite_gross_cap_leaves_room_for_the_unlisted_holding() -> None:
    """Ten capped sizes of 0.15 (1.5 gross) with a 0.5 holding that cannot trade: the nine others
    share 1.2 - 0.5 = 0.7."""
    n = 10
    listed = np.arange(n) != 0
    inputs = KellyInputs(
        fc_mean=np.full(n, 0.01),
        consensus_ok=np.ones(n, dtype=bool),
        spread_bps=np.full(n, 5.0),
        dollar_volume=np.full(n, 1e8),
        sigma=np.full(n, 0.02),
        listed=listed,
        w_now=np.where(listed, 0.05, 0.5),
    )
    flags = AssetFlags(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    weights = kelly_lite_decision(inputs, flags, KellyLiteConfig()).weights
    np.testing.assert_allclose(weights, np.where(listed, 0.7 / 9, 0.0), rtol=0, atol=1e-15)


def test_inverse_vol_takes_a_rounding_level_volatility_for_no_estimate() -> None:
    """A price that never moved, or a stress path's deterministic decline, has a ``vol_20`` of rounding
    (1e-17): its inverse put 85-100 % of a reviewer's crisis book in such an asset. It gets nothing;
    a quiet but real asset (1e-4 a bar) keeps its large inverse-vol share."""
    from raytrade.envs.baseline_weights import VOL_FLOOR, inverse_vol_weights

    mask = np.ones(3, dtype=bool)
    w = inverse_vol_weights(np.array([1.3e-17, 0.02, 0.01]), mask)
    assert w[0] == 0.0 and w[1:] == pytest.approx([1 / 3, 2 / 3])
    quiet = inverse_vol_weights(np.array([1e-4, 0.02, 0.01]), mask)
    assert quiet[0] == pytest.approx(1e4 / (1e4 + 50 + 100)) and VOL_FLOOR < 1e-4
