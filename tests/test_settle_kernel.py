"""The compiled settle (``step_kernel.settle_rows``) against the numpy ``_settle`` it replaced: the
same rewards, results and state, bit for bit, through ruin, the kill switch and partial commits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import cost_overrun
from raytrade.envs.kill_switch import KillSwitchState, update_kill_switch
from raytrade.envs.rewards import RewardState, compute_reward, turnover_of
from raytrade.envs.simulator import MarketSimulator, StepResult, Trade
from raytrade.envs.synthetic_market import synthetic_market_data


class NumpySettle(MarketSimulator):
    """The simulator with step 5 as it was written in numpy before it was compiled (the oracle)."""

    def _settle(self, trade: Trade, active: np.ndarray | None) -> StepResult:
        cfg = self.cfg
        new_units, cash, new_equity, costs = trade.units, trade.cash, trade.equity, trade.costs
        equity, t1 = self.equity, self.t + 1
        ruined, was_ruined = trade.ruined, self.ruined
        now_ruined = ruined & ~was_ruined
        any_ruin = bool(ruined.any())
        if any_ruin:
            tiny = 1e-12 * cfg.initial_equity
            log_growth = np.log(np.maximum(new_equity, tiny) / np.maximum(equity, tiny))
        else:
            log_growth = np.log(new_equity / equity)
        old_peak = self.peak
        self.peak = np.maximum(self.peak, new_equity)
        dd = np.maximum(1.0 - new_equity / self.peak, 0.0)
        old_reward_state = self.reward_state
        turnover = turnover_of(trade.traded_notional, equity) if cfg.reward.turnover_penalty else None
        reward, self.reward_state = compute_reward(cfg.reward, log_growth, dd, self.reward_state, turnover)
        if cfg.reward.cost_overrun_lambda > 0:
            overrun = cost_overrun(trade.traded_notional, costs[:, :3].sum(-1), self._envelope_bps)
            weight = cfg.reward.scale * cfg.reward.cost_overrun_lambda
            reward = reward - weight * overrun / np.maximum(equity, 1e-12 * cfg.initial_equity)
        if any_ruin:
            reward = np.where(was_ruined, 0.0, reward)
        old_kill = self.kill
        self.kill = update_kill_switch(self.kill, new_equity, cfg.kill_switch)
        steps = self.steps + 1
        ruin_bar = np.where(now_ruined, t1, self.ruin_bar) if any_ruin else self.ruin_bar
        if active is None:
            self.episode_costs = self.episode_costs + costs
            self.units, self.cash, self.equity, self.t, self.steps = new_units, cash, new_equity, t1, steps
            self.ruined, self.ruin_bar = ruined, ruin_bar
        else:
            a1, a2 = np.asarray(active, dtype=bool), np.asarray(active, dtype=bool)[:, None]
            self.episode_costs = np.where(a2, self.episode_costs + costs, self.episode_costs)
            self.units = np.where(a2, new_units, self.units)
            self.cash = np.where(a1, cash, self.cash)
            self.equity = np.where(a1, new_equity, self.equity)
            self.t = np.where(a1, self.t + 1, self.t)
            self.steps = np.where(a1, self.steps + 1, self.steps)
            self.peak = np.where(a1, self.peak, old_peak)
            self.kill = KillSwitchState(
                *(np.where(a1, n, o) for n, o in zip(self.kill, old_kill, strict=True))
            )
            self.reward_state = RewardState(
                *(np.where(a1, n, o) for n, o in zip(self.reward_state, old_reward_state, strict=True))
            )
            self.ruined = np.where(a1, ruined, self.ruined)
            self.ruin_bar = np.where(a1, ruin_bar, self.ruin_bar)
        self._any_ruined = any_ruin and bool(self.ruined.any())
        truncated = (self.steps >= cfg.episode_len) & ~ruined
        return StepResult(
            reward=reward,
            log_growth=log_growth,
            equity=new_equity.copy(),
            costs=costs,
            target_weights=trade.target_weights,
            traded_notional=trade.traded_notional,
            terminated=ruined,
            truncated=truncated,
            ruined=now_ruined,
            interest=trade.interest,
        )


STATE = ("units", "cash", "equity", "peak", "t", "steps", "ruined", "ruin_bar", "episode_costs")

CONFIGS: list[dict[str, Any]] = [
    {"reward": {"kind": "log_growth"}, "kill_switch": {"trigger_drawdown": 0.05, "release_after_bars": 4}},
    {"reward": {"kind": "cvar", "turnover_penalty": 0.01}, "kill_switch": {"trigger_drawdown": 0.05}},
    {
        "reward": {"kind": "drawdown", "cost_overrun_lambda": 2.0},
        "kill_switch": {"trigger_drawdown": 0.05, "release_drawdown": None, "reset_peak_on_release": False},
    },
    {"reward": {"kind": "diff_sharpe"}, "kill_switch": {"enabled": False}},
]


@pytest.mark.parametrize("extra", CONFIGS, ids=[c["reward"]["kind"] for c in CONFIGS])
def test_the_compiled_settle_equals_the_numpy_one_bit_for_bit(extra: dict[str, Any]) -> None:
    # Levered long books through -55 % gaps every 13 bars ruin some episodes (and leave the others
    # in drawdowns that trip the switch); every third step commits only some episodes.
    md = synthetic_market_data(n_assets=6, n_steps=120, seed=3)
    gap = np.ones(md.n_steps)
    gap[13::13] = 0.45
    scale = np.cumprod(gap)[:, None]
    md = replace(md, open=md.open * scale, close=md.close * scale)
    cfg = SimulatorConfig.model_validate({"episode_len": 60, "constraints": {"per_asset_cap": 1.0}, **extra})
    ref, sim = NumpySettle(md, cfg, n_envs=5, seed=1), MarketSimulator(md, cfg, n_envs=5, seed=1)
    rng = np.random.default_rng(7)
    seen = {"ruin": 0, "kill": 0, "partial": 0}
    for k in range(100):
        target = rng.uniform(-0.2, 1.0, (5, 6))
        active = rng.random(5) < 0.6 if k % 3 == 0 else None
        a, b = ref.step(target, active=active), sim.step(target, active=active)
        for name in StepResult._fields:
            assert np.array_equal(getattr(a, name), getattr(b, name)), (k, name)
        for name in STATE:
            assert np.array_equal(getattr(ref, name), getattr(sim, name)), (k, name)
        for x, y in zip((*ref.kill, *ref.reward_state), (*sim.kill, *sim.reward_state), strict=True):
            assert np.array_equal(x, y) and x.dtype == y.dtype, k
        seen["ruin"] += int(b.ruined.sum())
        seen["kill"] += int(sim.kill.active.sum())
        seen["partial"] += active is not None and not active.all()
        done = a.truncated | a.terminated
        if done.any():
            ref.reset_envs(done)
            sim.reset_envs(done)
    assert seen["ruin"] > 0 and seen["partial"] > 0, seen
    assert (seen["kill"] > 0) == cfg.kill_switch.enabled, seen
