"""Replay a policy over a whole ``MarketData`` window through the simulator (evaluation, demo, serving
checks): one episode per seed, starting at the window's first bar and stepping to its last.

A policy is any callable ``Observation -> target weights [B, N]`` or ``-> Decision(weights, hold)``:
``hold [B, N]`` marks assets that send no order (their units are kept exactly and cost nothing, e.g.
buy-and-hold after its first bar); sending the current weights instead would re-trade at the next open.
Every policy goes through the same simulator and cost model, so their results are comparable. A
ruined episode (see ``envs.simulator``) stays flat: its returns after the ruin step are 0 and the ruin
step's return is at least -100 %.

Closing the book (``close_at_end``, what evaluation asks for): after the last step every episode's
book is traded to zero at the last bar's close with the simulator's own cost model
(``MarketSimulator.exit_costs``), and that cost is charged to the last step: its return, equity,
fee / spread / slippage and turnover include the exit, so every figure computed from the series is
net of what getting out costs. ``Rollout.exit_costs`` keeps the exit's own part. Off by default
(the demo replay marks to market); the evaluation and the tuning objective
(``tune_specs.objective.CLOSE_AT_END``: every validation score, ``select``, ``promote``) close.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import COST_COMPONENTS
from raytrade.envs.market_data import MarketData
from raytrade.envs.simulator import MarketSimulator, Observation, StepResult


class Decision(NamedTuple):
    """Target weights plus a per-asset hold mask (True: no order, units kept exactly)."""

    weights: np.ndarray  # [B, N]
    hold: np.ndarray  # [B, N] bool


Policy = Callable[[Observation], "np.ndarray | Decision"]


class AccountCarry(NamedTuple):
    """What one account carries from the end of one window into the next when windows are chained as
    one account (walk-forward folds pooled): its drawdown state, relative to its equity, since each
    window restarts the simulator from fresh equity. Without it each fold restarted the drawdown
    kill switch at its own start, so a drawdown across a fold boundary never tripped it."""

    peak_ratio: float  # the account's running peak / its equity (>= 1): the observed drawdown
    kill_peak_ratio: float  # the kill switch's peak / equity (a timed release restarts it lower)
    kill_active: bool
    kill_bars: int  # bars since the switch tripped (0 when off)


@dataclass(frozen=True)
class Rollout:
    """Per-step results of one replay (B episodes); step k is decided at bar k, earned at bar k + 1."""

    timestamps: np.ndarray  # [T-1] datetime64: the bar each step's return is earned at (k + 1)
    returns: np.ndarray  # [B, T-1] simple net returns
    equity: np.ndarray  # [B, T-1] equity at each step's close
    costs: np.ndarray  # [B, T-1, 4] currency, ordered as COST_COMPONENTS
    turnover: np.ndarray  # [B, T-1] traded notional / equity before the trade
    weights: np.ndarray  # [B, T-1, N] projected target weights sent to the market
    ruin_step: np.ndarray  # [B] int: the step whose bar ruined the episode (returns[b, k] = -1 or
    #                        what remained), -1 when it never was; after it returns are 0, equity flat
    exit_costs: np.ndarray | None = None  # [B, 3] currency: fee, spread, slippage of closing the book
    #                        at the end, included in the last step (None: marked to market, not closed)
    risk_free: np.ndarray | None = None  # [T-1] what idle cash earned over each step's bar (the
    #                        simulator's cash rate; None: 0), the Sharpe's risk-free return
    interest: np.ndarray | None = None  # [B, T-1] currency: what each step's idle cash earned (in
    #                        equity and returns, not in costs; None: not recorded)
    kill_active: np.ndarray | None = None  # [B, T-1] bool: the drawdown kill switch was on at step
    #                        k's decision, so the step could only shrink positions (None: not recorded)
    carry: tuple[AccountCarry, ...] | None = None  # per episode, its state at the end (None: ruined
    #                        or not recorded), for a next window of the same account

    @property
    def exit_bps(self) -> np.ndarray:
        """``[B]``: the exit's cost in bps of the equity it was charged to (the last close's, before
        the exit); 0 where nothing was closed or nothing was left."""
        if self.exit_costs is None:
            return np.zeros(self.returns.shape[0])
        paid = self.exit_costs.sum(-1)
        before = self.equity[:, -1] + paid
        return np.where(before > 0, paid / np.where(before > 0, before, 1.0) * 1e4, 0.0)

    def costs_by_component(self) -> dict[str, float]:
        """Total cost per component over the replay (mean over episodes), currency."""
        totals = self.costs.sum(axis=1).mean(axis=0)
        return {name: float(v) for name, v in zip(COST_COMPONENTS, totals, strict=True)}


def decision_step(simulator: MarketSimulator) -> Callable[[Any], StepResult]:
    """How a weight policy's output reaches the simulator: weights, or a ``Decision`` with holds."""

    def step(out: Any) -> StepResult:
        if isinstance(out, Decision):
            return simulator.step(out.weights, fill=~np.asarray(out.hold, dtype=bool))
        return simulator.step(out)

    return step


def replay_policy(
    data: MarketData,
    policy: Callable[[Observation], Any],
    sim: SimulatorConfig | None = None,
    n_envs: int = 1,
    make_step: Callable[[MarketSimulator], Callable[[Any], StepResult]] = decision_step,
    close_at_end: bool = False,
    carry: AccountCarry | None = None,
) -> Rollout:
    """Step ``policy`` from the first bar of ``data`` to its last, in ``n_envs`` parallel episodes.

    ``make_step`` turns the policy's output into a simulator step: weights or ``Decision`` by
    default; the gated env's action decoder for gate actions. ``close_at_end``: close every book at
    the last bar and charge it to the last step (module docstring). ``carry``: the account's
    drawdown and kill-switch state from the window before (:class:`AccountCarry`), set at the start;
    the rollout's own end state is :attr:`Rollout.carry`.
    """
    steps = data.n_steps - 1
    base = sim or SimulatorConfig()
    cfg = base.model_copy(update={"episode_len": steps})
    simulator = MarketSimulator(data, cfg, n_envs=n_envs, seed=0)
    simulator.reset(starts=np.zeros(n_envs, dtype=np.int64))
    if carry is not None:
        simulator.peak[:] = simulator.equity * carry.peak_ratio
        simulator.kill.peak[:] = simulator.equity * carry.kill_peak_ratio
        simulator.kill.active[:] = carry.kill_active
        simulator.kill.bars_active[:] = carry.kill_bars
    step = make_step(simulator)
    returns = np.zeros((n_envs, steps))
    equity = np.zeros((n_envs, steps))
    costs = np.zeros((n_envs, steps, len(COST_COMPONENTS)))
    turnover = np.zeros((n_envs, steps))
    weights = np.zeros((n_envs, steps, data.n_assets))
    ruin_step = np.full(n_envs, -1, dtype=np.int64)
    interest = np.zeros((n_envs, steps))
    kill_active = np.zeros((n_envs, steps), dtype=bool)
    previous = simulator.equity.copy()
    for k in range(steps):
        kill_active[:, k] = simulator.kill.active
        result = step(policy(simulator.observe()))
        live = previous > 0  # a ruined account with nothing left stays at 0: its return is 0
        safe = np.where(live, previous, 1.0)
        returns[:, k] = np.where(live, result.equity / safe - 1.0, 0.0)
        turnover[:, k] = np.where(live, np.abs(result.traded_notional).sum(-1) / safe, 0.0)
        equity[:, k], costs[:, k], weights[:, k] = result.equity, result.costs, result.target_weights
        interest[:, k] = result.interest
        ruin_step = np.where(result.ruined, k, ruin_step)
        previous = result.equity.copy()
        if result.terminated.all():  # every episode ruined: the rest is flat
            equity[:, k + 1 :] = result.equity[:, None]
            break
    exit_costs = _close_books(simulator, returns, equity, costs, turnover) if close_at_end else None
    return Rollout(
        data.ts[1:],
        returns,
        equity,
        costs,
        turnover,
        weights,
        ruin_step,
        exit_costs,
        simulator.cash_return[1:],
        interest,
        kill_active,
        _end_state(simulator, equity[:, -1] if steps else simulator.equity),
    )


def _end_state(simulator: MarketSimulator, equity: np.ndarray) -> tuple[AccountCarry, ...] | None:
    """Each episode's :class:`AccountCarry` at ``equity [B]`` (after the exit, where the books were
    closed: its cost is part of the drawdown the next window starts from); None when any episode
    has nothing left (a ruined account is not carried on)."""
    if not (equity > 0).all():
        return None
    kill = simulator.kill
    return tuple(
        AccountCarry(
            peak_ratio=max(float(simulator.peak[b] / equity[b]), 1.0),
            kill_peak_ratio=max(float(kill.peak[b] / equity[b]), 1.0),
            kill_active=bool(kill.active[b]),
            kill_bars=int(kill.bars_active[b]),
        )
        for b in range(len(equity))
    )


def _close_books(
    simulator: MarketSimulator,
    returns: np.ndarray,
    equity: np.ndarray,
    costs: np.ndarray,
    turnover: np.ndarray,
) -> np.ndarray:
    """Charge closing every book (``simulator.exit_costs``) to the last step of the series, in place;
    returns the exit's fee / spread / slippage ``[B, 3]``. The last return becomes
    ``(equity_last - exit) / equity_before_last - 1``. An exit can never cost more than the equity
    left (capped there, scaled pro rata: with the default costs it is at most 3.2 % of a book
    the maintenance margin keeps within 4x equity)."""
    out = simulator.exit_costs()
    paid = out.costs.sum(-1)
    left = equity[:, -1].copy()
    scale = np.where(paid > left, np.maximum(left, 0.0) / np.where(paid > 0, paid, 1.0), 1.0)
    parts, paid = out.costs * scale[:, None], paid * scale
    steps = returns.shape[1]
    before = equity[:, -2] if steps > 1 else np.full(left.shape, simulator.cfg.initial_equity)
    live = before > 0
    safe = np.where(live, before, 1.0)
    returns[:, -1] = np.where(live, (left - paid) / safe - 1.0, 0.0)  # as replay_policy computes it
    turnover[:, -1] += np.where(live, out.notional / safe, 0.0)
    equity[:, -1] = left - paid
    costs[:, -1, :3] += parts
    return parts


def equal_weight(obs: Observation) -> np.ndarray:
    """1/n of equity in each listed asset, rebalanced every bar."""
    mask = obs.mask.astype(np.float64)
    return mask / np.maximum(mask.sum(-1, keepdims=True), 1.0)


def cash(obs: Observation) -> np.ndarray:
    """Hold nothing."""
    return np.zeros(obs.mask.shape)
