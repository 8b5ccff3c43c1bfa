"""The simulator's step written in plain numpy, as an independent statement of its rules.

``envs.simulator.MarketSimulator`` runs the same step as compiled loops (``envs.step_kernel``);
``tests/test_simulator.py`` steps both side by side over random episodes (fills, delistings, the kill
switch, partial commits, every reward) and requires the same state to 1e-9. This is the numpy step
the simulator had before it was compiled, kept here as the oracle.
"""

from __future__ import annotations

import numpy as np

from envs.costs import COST_COMPONENTS, CostRates, costs_at_rates, financing_cost
from envs.kill_switch import unwind_bounds, update_kill_switch
from envs.projection import project_box_l1, weight_bounds
from envs.rewards import compute_reward
from envs.simulator import ExposureLimits, MarketSimulator, StepResult


def constrained_targets_numpy(
    target: np.ndarray,
    w_now: np.ndarray,
    listed: np.ndarray,
    kill_active: np.ndarray,
    limits: ExposureLimits,
    fill: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The box / unwind / locked rules and the projection, in numpy."""
    con = limits.constraints
    lower, upper = weight_bounds(listed, con.per_asset_cap, con.long_only)
    lower = np.where(limits.shortable, lower, 0.0)
    if kill_active.any():
        lower, upper = unwind_bounds(w_now, lower, upper, kill_active)
    budget: np.ndarray | float = limits.gross_cap
    group_budget: np.ndarray | float = con.crypto_gross_cap
    locked = None
    if fill is not None:
        locked = ~np.asarray(fill, dtype=bool) & listed
        lower = np.where(locked, 0.0, lower)
        upper = np.where(locked, 0.0, upper)
        locked_abs = np.abs(w_now) * locked
        budget = np.maximum(limits.gross_cap - locked_abs.sum(-1), 0.0)
        if limits.group is not None:
            group_budget = np.maximum(con.crypto_gross_cap - (locked_abs * limits.group).sum(-1), 0.0)
    return project_box_l1(target, lower, upper, budget, limits.group, group_budget), locked


class ReferenceSimulator(MarketSimulator):
    """``MarketSimulator`` with its step in numpy, one array operation at a time (see the module doc)."""

    def step(
        self,
        target_weights: np.ndarray,
        fill: np.ndarray | None = None,
        spread_mult: np.ndarray | float = 1.0,
        slippage_mult: np.ndarray | float = 1.0,
        active: np.ndarray | None = None,
    ) -> StepResult:
        """Advance every episode one bar towards ``target_weights [B, N]`` (any finite values).

        ``fill [B, N]`` (optional) marks which assets' orders execute; an unfilled asset keeps its
        units, and the others share what is left of the gross budget. ``spread_mult`` /
        ``slippage_mult`` scale those cost components per asset (execution modes). Episodes where
        ``active [B]`` is False are left exactly as they were (a vector env's autoreset step); their
        entries in the result are meaningless.
        """
        cfg = self.cfg
        b = self.n_envs
        target = np.asarray(target_weights, dtype=np.float64)
        if target.shape != (b, self.n_assets):
            raise ValueError(f"target_weights has shape {target.shape}, expected {(b, self.n_assets)}")
        if not np.isfinite(target).all():
            raise ValueError("target_weights contains NaN or inf")
        over = self.steps >= cfg.episode_len
        if over.any() and (active is None or (over & np.asarray(active, dtype=bool)).any()):
            raise RuntimeError("an episode has ended (truncated); reset it before stepping again")
        t = self.t
        t1 = t + 1
        listed_t, listed_t1 = self._listed[t], self._listed[t1]
        close_t, open1, close1 = self._close[t], self._open[t1], self._close[t1]
        units, cash, equity = self.units, self.cash, self.equity

        # 1. project the decision onto the constraints (data <= t only)
        w_now = units * close_t / equity[:, None]
        w_target, locked = constrained_targets_numpy(
            target, w_now, listed_t, self.kill.active, self.limits, fill
        )

        # 2. liquidate assets that are not listed at t + 1 at their last price, no cost
        gone = listed_t & ~listed_t1
        if gone.any():
            cash = cash + (units * close_t * gone).sum(-1)
            units = np.where(gone, 0.0, units)
            w_target = np.where(gone, 0.0, w_target)
        if locked is not None:
            w_target = np.where(locked & ~gone, w_now, w_target)

        # 3. fill at open t + 1, sized on the equity at that open
        gap_pnl = (units * (open1 - close_t)).sum(-1)
        equity_open = equity + gap_pnl
        new_units = w_target * equity_open[:, None] / open1
        if locked is not None:
            new_units = np.where(locked & ~gone, units, new_units)
        if self.kill.active.any():
            act = self.kill.active[:, None]
            clipped = np.clip(new_units, np.minimum(units, 0.0), np.maximum(units, 0.0))
            new_units = np.where(act, clipped, new_units)
        traded = (new_units - units) * open1
        traded_abs = np.abs(traded)
        r = self._rates
        rates_t = CostRates(r.fee, r.spread[t], r.slippage_base[t], r.impact[t])
        tc = costs_at_rates(traded_abs, rates_t, spread_mult, slippage_mult)
        fee, spread, slip = tc.fee.sum(-1), tc.spread.sum(-1), tc.slippage.sum(-1)
        trade_cost = fee + spread + slip
        cash = cash - traded.sum(-1) - trade_cost

        # 4. mark to close t + 1, then one bar of financing on the closing exposure
        pos1 = new_units * close1
        intrabar_pnl = (new_units * (close1 - open1)).sum(-1)
        equity_close = equity_open - trade_cost + intrabar_pnl
        fin = financing_cost(np.abs(pos1).sum(-1), equity_close, self._fin_rate, cfg.costs)
        cash = cash - fin
        new_equity = equity_close - fin

        # 5. reward, kill switch, bookkeeping
        floor = cfg.min_equity_fraction * cfg.initial_equity
        ruined = new_equity <= floor
        ratio = np.maximum(new_equity, 1e-12 * cfg.initial_equity) / equity
        log_growth = np.log(ratio)
        old_peak = self.peak
        self.peak = np.maximum(self.peak, new_equity)
        dd = np.maximum(1.0 - new_equity / self.peak, 0.0)
        old_reward_state = self.reward_state
        reward, self.reward_state = compute_reward(cfg.reward, log_growth, dd, self.reward_state)
        old_kill = self.kill
        self.kill = update_kill_switch(self.kill, new_equity, cfg.kill_switch)
        costs = np.empty((b, len(COST_COMPONENTS)))
        costs[:, 0], costs[:, 1], costs[:, 2], costs[:, 3] = fee, spread, slip, fin
        steps = self.steps + 1
        if active is None:
            self.episode_costs = self.episode_costs + costs
            self.units, self.cash, self.equity, self.t, self.steps = new_units, cash, new_equity, t1, steps
        else:
            previous = (old_kill, old_reward_state, old_peak)
            self._commit_partial(np.asarray(active, dtype=bool), previous, costs, new_units, cash, new_equity)
        truncated = (self.steps >= cfg.episode_len) & ~ruined
        return StepResult(
            reward=reward,
            log_growth=log_growth,
            equity=new_equity.copy(),
            costs=costs,
            target_weights=w_target,
            traded_notional=traded,
            terminated=ruined,
            truncated=truncated,
        )
