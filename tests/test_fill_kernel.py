"""The compiled step (``step_kernel.step_rows``) reuses one set of scratch rows for every episode of a
batch: no episode's result may depend on the episodes stepped before it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.simulator import MarketSimulator, StepResult
from raytrade.envs.synthetic_market import synthetic_market_data


def test_each_episode_steps_the_same_whatever_the_episodes_before_it_in_the_batch() -> None:
    # Four episodes in two orders: a crypto sleeve (the grouped projection writes its scratch floor),
    # a delisting, locked orders, participation caps, -55 % gaps that ruin levered books and trip
    # the kill switch. Every result of episode k is the same, bit for bit, in both batches.
    md = synthetic_market_data(n_assets=6, n_steps=90, seed=4, n_crypto=2)
    gap = np.ones(md.n_steps)
    gap[11::11] = 0.45
    listed = md.listed.copy()
    listed[30:, 3] = False
    md = replace(
        md,
        open=md.open * np.cumprod(gap)[:, None],
        close=md.close * np.cumprod(gap)[:, None],
        listed=listed,
        dollar_volume=md.dollar_volume * 1e-2,
    )
    cfg = SimulatorConfig.model_validate(
        {
            "episode_len": 60,
            "constraints": {"per_asset_cap": 1.0, "gross_cap": 2.0, "crypto_gross_cap": 0.3},
            "kill_switch": {"trigger_drawdown": 0.2},
        }
    )
    order, flipped = np.arange(4), np.array([3, 2, 1, 0])
    starts = np.array([2, 5, 9, 20])
    sims = [MarketSimulator(md, cfg, n_envs=4, seed=0) for _ in range(2)]
    for sim, perm in zip(sims, (order, flipped), strict=True):
        sim.reset(starts=starts[perm])
    rng = np.random.default_rng(5)
    seen = {"ruin": 0, "kill": 0, "capped": 0}
    for _ in range(55):
        target = rng.uniform(-0.5, 1.5, (4, 6))
        fill = rng.random((4, 6)) < 0.8
        a, b = (sim.step(target[p], fill=fill[p]) for sim, p in zip(sims, (order, flipped), strict=True))
        for name in StepResult._fields:
            assert np.array_equal(getattr(a, name)[flipped], getattr(b, name)), name
        seen["ruin"] += int(a.ruined.sum())
        seen["kill"] += int(sims[0].kill.active.sum())
        seen["capped"] += int((np.abs(a.traded_notional) >= sims[0]._rates.fill_cap[sims[0].t - 1]).sum())
    assert min(seen.values()) > 0, seen
