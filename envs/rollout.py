"""Replay a policy over a whole ``MarketData`` window through the simulator (evaluation, demo, serving
checks): one episode per seed, starting at the window's first bar and stepping to its last.

A policy is any callable ``Observation -> target weights [B, N]`` or ``-> Decision(weights, hold)``:
``hold [B, N]`` marks assets that send no order (their units are kept exactly and cost nothing, e.g.
buy-and-hold after its first bar); sending the current weights instead would re-trade at the next open.
Every policy goes through the same simulator and cost model, so their results are comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from envs.config import SimulatorConfig
from envs.costs import COST_COMPONENTS
from envs.market_data import MarketData
from envs.simulator import MarketSimulator, Observation


class Decision(NamedTuple):
    """Target weights plus a per-asset hold mask (True: no order, units kept exactly)."""

    weights: np.ndarray  # [B, N]
    hold: np.ndarray  # [B, N] bool


Policy = Callable[[Observation], "np.ndarray | Decision"]


@dataclass(frozen=True)
class Rollout:
    """Per-step results of one replay (B episodes); step k is decided at bar k, earned at bar k + 1."""

    timestamps: np.ndarray  # [T-1] datetime64: the bar each step's return is earned at (k + 1)
    returns: np.ndarray  # [B, T-1] simple net returns
    equity: np.ndarray  # [B, T-1] equity at each step's close
    costs: np.ndarray  # [B, T-1, 4] currency, ordered as COST_COMPONENTS
    turnover: np.ndarray  # [B, T-1] traded notional / equity before the trade
    weights: np.ndarray  # [B, T-1, N] projected target weights sent to the market

    def costs_by_component(self) -> dict[str, float]:
        """Total cost per component over the replay (mean over episodes), currency."""
        totals = self.costs.sum(axis=1).mean(axis=0)
        return {name: float(v) for name, v in zip(COST_COMPONENTS, totals, strict=True)}


def replay_policy(
    data: MarketData, policy: Policy, sim: SimulatorConfig | None = None, n_envs: int = 1
) -> Rollout:
    """Step ``policy`` from the first bar of ``data`` to its last, in ``n_envs`` parallel episodes."""
    steps = data.n_steps - 1
    base = sim or SimulatorConfig()
    cfg = base.model_copy(update={"episode_len": steps})
    simulator = MarketSimulator(data, cfg, n_envs=n_envs, seed=0)
    simulator.reset(starts=np.zeros(n_envs, dtype=np.int64))
    returns = np.zeros((n_envs, steps))
    equity = np.zeros((n_envs, steps))
    costs = np.zeros((n_envs, steps, len(COST_COMPONENTS)))
    turnover = np.zeros((n_envs, steps))
    weights = np.zeros((n_envs, steps, data.n_assets))
    previous = simulator.equity.copy()
    for k in range(steps):
        out = policy(simulator.observe())
        if isinstance(out, Decision):
            result = simulator.step(out.weights, fill=~np.asarray(out.hold, dtype=bool))
        else:
            result = simulator.step(out)
        returns[:, k] = result.equity / previous - 1.0
        turnover[:, k] = np.abs(result.traded_notional).sum(-1) / previous
        equity[:, k], costs[:, k], weights[:, k] = result.equity, result.costs, result.target_weights
        previous = result.equity.copy()
        if result.terminated.any():
            returns[:, k + 1 :] = 0.0
            equity[:, k + 1 :] = result.equity[:, None]
            break
    return Rollout(data.ts[1:], returns, equity, costs, turnover, weights)


def equal_weight(obs: Observation) -> np.ndarray:
    """1/n of equity in each listed asset, rebalanced every bar."""
    mask = obs.mask.astype(np.float64)
    return mask / np.maximum(mask.sum(-1, keepdims=True), 1.0)


def cash(obs: Observation) -> np.ndarray:
    """Hold nothing."""
    return np.zeros(obs.mask.shape)
