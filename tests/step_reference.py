"""The simulator's step written in plain numpy, as an independent statement of its rules.

``envs.simulator.MarketSimulator`` runs steps 1-4 as compiled loops (``envs.step_kernel``); this
subclass runs them in numpy and shares everything else (validation, reward, bookkeeping): the
participation cap (and the fill bar's dollar volume it and the impact are taken from), carry and ruin
rules are restated here array by array.
``tests/test_simulator.py`` steps both side by side over random episodes (fills, delistings, the kill
switch, partial commits, every reward) and requires the same state to 1e-9. This is the numpy step
the simulator had before it was compiled, kept here as the oracle.
"""

from __future__ import annotations

import numpy as np

from raytrade.envs.costs import cost_rates, costs_at_rates, exit_costs_at_rates, fee_bps, financing_cost
from raytrade.envs.kill_switch import unwind_bounds
from raytrade.envs.projection import project_box_l1, weight_bounds
from raytrade.envs.simulator import ExposureLimits, MarketSimulator, Trade, exit_dollar_volume


def constrained_targets_numpy(
    target: np.ndarray,
    w_now: np.ndarray,
    listed: np.ndarray,
    kill_active: np.ndarray,
    limits: ExposureLimits,
    fill: np.ndarray | None = None,
    held: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The box / unwind / locked rules and the projection, in numpy. ``held [B, N]`` (the
    simulator's step: no real bar at t or t + 1 inside the asset's life) is locked whatever ``fill``."""
    con = limits.constraints
    lower, upper = weight_bounds(listed, con.per_asset_cap, con.long_only)
    lower = np.where(limits.shortable, lower, 0.0)
    if kill_active.any():
        lower, upper = unwind_bounds(w_now, lower, upper, kill_active)
    budget: np.ndarray | float = limits.gross_cap
    group_budget: np.ndarray | float = con.crypto_gross_cap
    locked = None
    if fill is not None or held is not None:
        locked = ~np.asarray(fill if fill is not None else listed, dtype=bool) & listed
        if held is not None:
            locked = locked | held
        lower = np.where(locked, 0.0, lower)
        upper = np.where(locked, 0.0, upper)
        locked_abs = np.abs(w_now) * locked
        budget = np.maximum(limits.gross_cap - locked_abs.sum(-1), 0.0)
        if limits.group is not None:
            group_budget = np.maximum(con.crypto_gross_cap - (locked_abs * limits.group).sum(-1), 0.0)
    return project_box_l1(target, lower, upper, budget, limits.group, group_budget), locked


def _gross(units: np.ndarray, price: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    value = np.abs(units * price)
    return (value if members is None else value * members).sum(-1)


def participation_fill(
    units: np.ndarray, wanted: np.ndarray, open1: np.ndarray, fill_cap: np.ndarray, group: np.ndarray | None
) -> np.ndarray:
    """Units after the participation cap: each order fills ``min(1, cap / |order|)``; where those
    partial fills would lever the book (or the crypto sleeve) beyond both the book before and the
    full fill, every order of the episode fills the smallest of those fractions."""
    order = np.abs(wanted - units) * open1
    lam = np.where(order > 0, np.minimum(1.0, fill_cap / np.where(order > 0, order, 1.0)), 1.0)
    partial = units + lam * (wanted - units)
    tol = 1.0 + 1e-9

    def over(members: np.ndarray | None) -> np.ndarray:
        bound = np.maximum(_gross(units, open1, members), _gross(wanted, open1, members))
        return _gross(partial, open1, members) > bound * tol

    basket = over(None) if group is None else over(None) | over(group)
    common = units + lam.min(-1, keepdims=True) * (wanted - units)
    return np.where(basket[:, None], common, partial)


class ReferenceSimulator(MarketSimulator):
    """``MarketSimulator`` with steps 1-4 in numpy, one array operation at a time (see the module doc);
    validation, the reward and the bookkeeping are the simulator's own. ``liquidated`` [B]: the
    notional a ruin sold in the last step (costed, not in the traded notional)."""

    liquidated: np.ndarray

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
        dead = self.ruined
        floor = cfg.min_equity_fraction * cfg.initial_equity
        margin = cfg.maintenance_margin

        # 1. project the decision onto the constraints (data <= t only)
        w_now = units * close_t / np.maximum(equity, 1e-12 * cfg.initial_equity)[:, None]
        kill = self.kill.active
        last = self._last_bar
        held = (t[:, None] < last) & ~(listed_t & listed_t1)  # a hole at t or t + 1 (or not yet listed)
        w_target, locked = constrained_targets_numpy(target, w_now, listed_t, kill, self.limits, fill, held)

        # 2. close assets whose last real bar is t (none at t + 1 or later) at that price, paying what
        # a full exit there costs (the window-end exit's rule, at that bar's rates)
        gone = t[:, None] == last
        sold = -units * close_t * gone
        exit_parts = np.zeros((3, len(t)))
        if gone.any():
            data = self.data
            exit_volume = exit_dollar_volume(data.dollar_volume, data.bar_dollar_volume)[t]
            exit_rates = cost_rates(
                data.spread_bps[t],
                data.dollar_volume[t],
                fee_bps(self.is_crypto, cfg.costs),
                cfg.costs,
                exit_volume,
            )
            parts = exit_costs_at_rates(np.abs(sold), exit_rates, cfg.costs)
            exit_parts = np.stack([parts.fee.sum(-1), parts.spread.sum(-1), parts.slippage.sum(-1)])
            cash = cash - sold.sum(-1) - exit_parts.sum(0)
            equity = equity - exit_parts.sum(0)
            units = np.where(gone, 0.0, units)
            w_target = np.where(gone, 0.0, w_target)
        if locked is not None:
            w_target = np.where(locked & ~gone, w_now, w_target)

        # 3. fill at open t + 1, sized on the equity at that open; a bust account is liquidated there
        gap_pnl = (units * (open1 - close_t)).sum(-1)
        equity_open = equity + gap_pnl
        bust_open = ~dead & (equity_open <= np.maximum(floor, margin * _gross(units, open1)))
        wanted = w_target * equity_open[:, None] / open1
        if locked is not None:
            wanted = np.where(locked & ~gone, units, wanted)
        if kill.any():
            clipped = np.clip(wanted, np.minimum(units, 0.0), np.maximum(units, 0.0))
            wanted = np.where(kill[:, None], clipped, wanted)
        # the fill's dollar volume: the smaller of the one known at t and what the fill bar traded;
        # it caps the fill and prices its impact (the tier and the spread are those known at t)
        data = self.data
        volume = data.dollar_volume[t]
        if data.bar_dollar_volume is not None:
            volume = np.minimum(volume, data.bar_dollar_volume[t1])
        fees = fee_bps(self.is_crypto, cfg.costs)
        rates_t = cost_rates(data.spread_bps[t], data.dollar_volume[t], fees, cfg.costs, volume)
        new_units = participation_fill(units, wanted, open1, rates_t.fill_cap, self.limits.group)
        new_units = np.where((dead | bust_open)[:, None], np.where(dead[:, None], units, 0.0), new_units)
        traded = (new_units - units) * open1 * ~(dead | bust_open)[:, None]
        tc = costs_at_rates(np.abs(traded), rates_t, spread_mult, slippage_mult)
        fee, spread, slip = tc.fee.sum(-1), tc.spread.sum(-1), tc.slippage.sum(-1)
        trade_cost = fee + spread + slip
        cash = cash - traded.sum(-1) - trade_cost
        # a bust at the open sells everything there, each sale paying a full exit at the fill's rates
        liquidated = -units * open1 * bust_open[:, None]
        liq = exit_costs_at_rates(np.abs(liquidated), rates_t, cfg.costs)
        liq_parts = np.stack([liq.fee.sum(-1), liq.spread.sum(-1), liq.slippage.sum(-1)])
        exit_parts = exit_parts + liq_parts
        equity_open = equity_open - liq_parts.sum(0)
        traded = traded + sold  # a liquidation is costed, not a fill: not in the traded notional
        self.liquidated = np.abs(liquidated).sum(-1)

        # 4. mark to close t + 1, then one bar of carry on the closing exposure
        intrabar_pnl = (new_units * (close1 - open1)).sum(-1)
        equity_close = equity_open - trade_cost + intrabar_pnl
        value = new_units * close1
        long, short = np.maximum(value, 0.0).sum(-1), np.maximum(-value, 0.0).sum(-1)
        fin = financing_cost(long, equity_close, self._carry[0], cfg.costs, short, self._carry[1])
        fin = np.where(dead | bust_open, 0.0, fin)
        # idle cash (the equity not held long) earns bar t + 1's rate; short proceeds earn nothing
        interest = np.maximum(equity_close - long, 0.0) * self.cash_return[t1]
        interest = np.where(dead | bust_open, 0.0, interest)
        equity_end = equity_close - fin + interest
        cash = cash - fin + interest

        # 5. ruin at the close: liquidate at close t + 1 paying a full exit at the fill's rates, floor
        # equity at 0; dead episodes stay as they were
        bust_close = ~dead & ~bust_open & (equity_end <= np.maximum(floor, margin * (long + short)))
        bust = bust_open | bust_close
        sale = -new_units * close1 * bust_close[:, None]
        liq = exit_costs_at_rates(np.abs(sale), rates_t, cfg.costs)
        exit_parts = exit_parts + np.stack([liq.fee.sum(-1), liq.spread.sum(-1), liq.slippage.sum(-1)])
        equity_end = equity_end - (liq.fee + liq.spread + liq.slippage).sum(-1)
        self.liquidated = self.liquidated + np.abs(sale).sum(-1)
        new_units = np.where(bust[:, None], 0.0, new_units)
        equity_end = np.where(bust, np.maximum(equity_end, 0.0), equity_end)
        cash = np.where(bust, equity_end, cash)
        equity_end = np.where(dead, equity, equity_end)
        cash = np.where(dead, self.cash, cash)
        w_target = np.where(dead[:, None], 0.0, w_target)
        costs = np.stack([fee + exit_parts[0], spread + exit_parts[1], slip + exit_parts[2], fin], axis=-1)
        costs = costs * ~dead[:, None]
        return Trade(w_target, traded, new_units, cash, equity_end, costs, bust | dead, interest * ~dead)
