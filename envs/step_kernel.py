"""The simulator's step as two compiled loops over episodes (numba): what a decision can reach, then
what filling it does to the account.

The step is many small array operations on ``[B, N]`` arrays; at the batch sizes RL uses (a handful
of episodes per env runner) numpy's per-call overhead, not the arithmetic, dominated it. These loops
do the same arithmetic per element. The rules they apply are stated once each: the projection is
``envs.projection.project_row``, trade costs and carry are ``envs.costs.trade_cost_parts`` and
``financing_of``; the box rules (per-asset cap, no shorts where not shortable, unlisted = 0,
unwind-only while the kill switch is on, locked = unfilled) are here and are checked against
``projection.weight_bounds`` and ``kill_switch.unwind_bounds`` in the tests. The contract of each argument is
:meth:`envs.simulator.MarketSimulator.step`'s.
"""

from __future__ import annotations

import numba
import numpy as np

from raytrade.envs.costs import financing_of, trade_cost_parts
from raytrade.envs.projection import project_row, project_row_grouped


@numba.njit(cache=True, nogil=True)
def target_rows(  # pragma: no cover (compiled; covered through the simulator and constrained_targets)
    target: np.ndarray,
    w_now: np.ndarray,
    listed: np.ndarray,
    kill_active: np.ndarray,
    fill: np.ndarray,
    has_fill: bool,
    per_asset_cap: float,
    shortable: np.ndarray,
    gross_cap: float,
    group: np.ndarray,
    has_group: bool,
    crypto_gross_cap: float,
    external_gross: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected target weights ``[B, N]`` and the locked mask (``~fill & listed``)."""
    b, n = target.shape
    w = np.zeros((b, n))
    locked = np.zeros((b, n), dtype=np.bool_)
    lower, upper, floor = np.empty(n), np.empty(n), np.zeros(n)
    for i in range(b):
        locked_gross, locked_group = 0.0, 0.0
        for j in range(n):
            hi = per_asset_cap if listed[i, j] else 0.0
            lo = -hi if shortable[j] else 0.0
            if kill_active[i]:  # unwind only: |w| may shrink toward 0, never grow or change sign
                lo = max(lo, min(w_now[i, j], 0.0))
                hi = min(hi, max(w_now[i, j], 0.0))
            if has_fill and not fill[i, j] and listed[i, j]:
                locked[i, j] = True
                lo, hi = 0.0, 0.0
                locked_gross += abs(w_now[i, j])
                if has_group and group[j]:
                    locked_group += abs(w_now[i, j])
            lower[j], upper[j] = lo, hi
        budget = max(gross_cap - locked_gross - external_gross[i], 0.0)
        group_budget = max(crypto_gross_cap - locked_group, 0.0) if has_fill else crypto_gross_cap
        if has_group:
            project_row_grouped(target[i], lower, upper, budget, group, group_budget, w[i], floor)
        else:
            project_row(target[i], lower, upper, budget, floor, w[i])
    return w, locked


@numba.njit(cache=True, nogil=True)
def fill_rows(  # pragma: no cover (compiled; covered through the simulator)
    w_target: np.ndarray,
    locked: np.ndarray,
    units: np.ndarray,
    cash: np.ndarray,
    equity: np.ndarray,
    close_t: np.ndarray,
    open1: np.ndarray,
    close1: np.ndarray,
    listed_t: np.ndarray,
    listed_t1: np.ndarray,
    kill_active: np.ndarray,
    dead: np.ndarray,
    t: np.ndarray,
    fee_rate: np.ndarray,
    spread_rate: np.ndarray,
    slippage_base: np.ndarray,
    impact: np.ndarray,
    fill_cap: np.ndarray,
    spread_mult: np.ndarray,
    slippage_mult: np.ndarray,
    group: np.ndarray,
    has_group: bool,
    carry: np.ndarray,
    ruin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 2-4 of the simulator: liquidate delistings at ``close_t``, fill at ``open1`` sized on the
    equity at that open (locked assets keep their units; the kill switch clips to unwinds; each fill
    takes at most ``fill_cap``), charge costs, mark to ``close1``, charge carry, and liquidate a
    ruined account.

    ``carry`` is (financing rate per bar, borrow rate per bar, free leverage); ``ruin`` is (equity
    floor in currency, maintenance margin). ``dead [B]`` marks episodes ruined earlier: they stay
    exactly as they are. The per-bar rates (``spread_rate``, ``slippage_base``, ``impact``,
    ``fill_cap``) are ``[T, N]`` arrays of every bar, read at episode ``i``'s bar ``t[i]``.
    Participation: asset ``j`` fills ``lam_j = min(1, fill_cap / |order|)`` of
    its order; when those partial fills would leave the gross (or the crypto sleeve's gross, where
    ``has_group``) above both the gross before the fill and the gross of the full fill, every order
    fills the common ``min_j lam_j`` instead, so the book is a convex combination of where it was and
    where it was going. Ruin: equity at the open or at the close at or below
    ``max(floor, margin * gross)`` liquidates every position at that price without cost; equity is
    floored at 0 and the episode is flagged.

    Writes the final target weights into ``w_target`` (0 for delisted, the current weight for
    locked assets) and returns ``(new_units [B, N], traded notional [B, N], cash [B], equity [B],
    costs [B, 4], ruined [B])`` with costs as (fee, spread, slippage, financing).
    """
    b, n = units.shape
    new_units = np.empty((b, n))
    traded = np.zeros((b, n))
    cash_out = np.empty(b)
    equity_out = np.empty(b)
    costs = np.zeros((b, 4))
    ruined = np.zeros(b, dtype=np.bool_)
    held = np.empty(n)
    want = np.empty(n)
    lam = np.empty(n)
    gone = np.empty(n, dtype=np.bool_)
    fin_rate, borrow_rate, free_leverage = carry[0], carry[1], carry[2]
    floor, margin = ruin[0], ruin[1]
    for i in range(b):
        ti = t[i]
        if dead[i]:  # ruined earlier: flat, nothing happens until a reset
            for j in range(n):
                new_units[i, j] = units[i, j]
                w_target[i, j] = 0.0
            cash_out[i], equity_out[i], ruined[i] = cash[i], equity[i], True
            continue
        eq = equity[i]
        cash_i = cash[i]
        gap, gross_open = 0.0, 0.0
        for j in range(n):
            held[j] = units[i, j]
            gone[j] = listed_t[i, j] and not listed_t1[i, j]
            if gone[j]:  # delisted: sold at its last price, no cost
                cash_i += held[j] * close_t[i, j]
                held[j] = 0.0
                w_target[i, j] = 0.0
            elif locked[i, j]:
                w_target[i, j] = held[j] * close_t[i, j] / eq
            gap += held[j] * (open1[i, j] - close_t[i, j])
            gross_open += abs(held[j] * open1[i, j])
        equity_open = eq + gap
        if equity_open <= max(floor, margin * gross_open):  # bust at the open: liquidate there
            for j in range(n):
                cash_i += held[j] * open1[i, j]
                new_units[i, j] = 0.0
            cash_out[i] = equity_out[i] = max(equity_open, 0.0)
            ruined[i] = True
            continue
        before, target, partial = 0.0, 0.0, 0.0
        before_g, target_g, partial_g = 0.0, 0.0, 0.0
        lam_min = 1.0
        for j in range(n):
            u = held[j]
            keep = locked[i, j] and not gone[j]  # an unfilled order: the position stays as it is
            nu = u if keep else w_target[i, j] * equity_open / open1[i, j]
            if kill_active[i]:
                nu = min(max(nu, min(u, 0.0)), max(u, 0.0))
            want[j] = nu
            order = abs(nu - u) * open1[i, j]
            lam[j] = min(1.0, fill_cap[ti, j] / order) if order > 0.0 else 1.0
            lam_min = min(lam_min, lam[j])
            a, z = abs(u * open1[i, j]), abs(nu * open1[i, j])
            p = abs((u + lam[j] * (nu - u)) * open1[i, j])
            before += a
            target += z
            partial += p
            if has_group and group[j]:
                before_g += a
                target_g += z
                partial_g += p
        over = partial > max(before, target) * (1.0 + 1e-9)
        over_g = has_group and partial_g > max(before_g, target_g) * (1.0 + 1e-9)
        basket = over or over_g
        fee, spread, slip, flow, long, short, intrabar = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for j in range(n):
            u = held[j]
            nu = u + (lam_min if basket else lam[j]) * (want[j] - u)
            tr = (nu - u) * open1[i, j]
            f, s, sl = trade_cost_parts(
                abs(tr),
                fee_rate[j],
                spread_rate[ti, j],
                slippage_base[ti, j],
                impact[ti, j],
                fill_cap[ti, j],
                spread_mult[i, j],
                slippage_mult[i, j],
            )
            fee += f
            spread += s
            slip += sl
            flow += tr
            value = nu * close1[i, j]
            if value > 0.0:
                long += value
            else:
                short -= value
            intrabar += nu * (close1[i, j] - open1[i, j])
            new_units[i, j] = nu
            traded[i, j] = tr
        trade_cost = fee + spread + slip
        equity_close = equity_open - trade_cost + intrabar
        fin = financing_of(long, short, equity_close, fin_rate, borrow_rate, free_leverage)
        costs[i, 0], costs[i, 1], costs[i, 2], costs[i, 3] = fee, spread, slip, fin
        equity_end = equity_close - fin
        if equity_end <= max(floor, margin * (long + short)):  # ruin at the close: liquidate there
            for j in range(n):
                new_units[i, j] = 0.0
            cash_out[i] = equity_out[i] = max(equity_end, 0.0)
            ruined[i] = True
        else:
            cash_out[i] = cash_i - flow - trade_cost - fin
            equity_out[i] = equity_end
    return new_units, traded, cash_out, equity_out, costs, ruined
