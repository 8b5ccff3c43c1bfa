"""The simulator's step written in plain numpy, as an independent statement of its rules.

``envs.simulator.MarketSimulator`` runs steps 1-4 as compiled loops (``envs.step_kernel``); this
subclass runs them in numpy and shares everything else (validation, reward, bookkeeping).
``tests/test_simulator.py`` steps both side by side over random episodes (fills, delistings, the kill
switch, partial commits, every reward) and requires the same state to 1e-9. This is the numpy step
the simulator had before it was compiled, kept here as the oracle.
"""

from __future__ import annotations

import numpy as np

from raytrade.envs.costs import CostRates, costs_at_rates, financing_cost
from raytrade.envs.kill_switch import unwind_bounds
from raytrade.envs.projection import project_box_l1, weight_bounds
from raytrade.envs.simulator import ExposureLimits, MarketSimulator, Trade


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
    """``MarketSimulator`` with steps 1-4 in numpy, one array operation at a time (see the module doc);
    validation, the reward and the bookkeeping are the simulator's own."""

    def _trade(
        self,
        target: np.ndarray,
        fill: np.ndarray | None,
        spread_mult: np.ndarray | float,
        slippage_mult: np.ndarray | float,
    ) -> Trade:
        cfg, t = self.cfg, self.t
        t1 = t + 1
        listed_t, listed_t1 = self._listed[t], self._listed[t1]
        close_t, open1, close1 = self._close[t], self._open[t1], self._close[t1]
        units, cash, equity = self.units, self.cash, self.equity

        # 1. project the decision onto the constraints (data <= t only)
        w_now = units * close_t / equity[:, None]
        kill = self.kill.active
        w_target, locked = constrained_targets_numpy(target, w_now, listed_t, kill, self.limits, fill)

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
        if kill.any():
            clipped = np.clip(new_units, np.minimum(units, 0.0), np.maximum(units, 0.0))
            new_units = np.where(kill[:, None], clipped, new_units)
        traded = (new_units - units) * open1
        r = self._rates
        rates_t = CostRates(r.fee, r.spread[t], r.slippage_base[t], r.impact[t])
        tc = costs_at_rates(np.abs(traded), rates_t, spread_mult, slippage_mult)
        fee, spread, slip = tc.fee.sum(-1), tc.spread.sum(-1), tc.slippage.sum(-1)
        trade_cost = fee + spread + slip
        cash = cash - traded.sum(-1) - trade_cost

        # 4. mark to close t + 1, then one bar of financing on the closing exposure
        intrabar_pnl = (new_units * (close1 - open1)).sum(-1)
        equity_close = equity_open - trade_cost + intrabar_pnl
        fin = financing_cost(np.abs(new_units * close1).sum(-1), equity_close, self._fin_rate, cfg.costs)
        costs = np.stack([fee, spread, slip, fin], axis=-1)
        return Trade(w_target, traded, new_units, cash - fin, equity_close - fin, costs)
