"""The simulator's step as two compiled loops over episodes (numba): what a decision can reach, then
what filling it does to the account.

The step is many small array operations on ``[B, N]`` arrays; at the batch sizes RL uses (a handful
of episodes per env runner) numpy's per-call overhead, not the arithmetic, dominated it. These loops
do the same arithmetic per element. The rules they apply are stated once each: the projection is
``envs.projection.project_row``, trade costs and financing are ``envs.costs.trade_cost_parts`` and
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
    fee_rate: np.ndarray,
    spread_rate: np.ndarray,
    slippage_base: np.ndarray,
    impact: np.ndarray,
    spread_mult: np.ndarray,
    slippage_mult: np.ndarray,
    financing_rate: float,
    free_leverage: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 2-4 of the simulator: liquidate delistings at ``close_t``, fill at ``open1`` sized on the
    equity at that open (locked assets keep their units; the kill switch clips to unwinds), charge
    costs, mark to ``close1`` and charge financing.

    Writes the final target weights into ``w_target`` (0 for delisted, the current weight for
    locked assets) and returns ``(new_units [B, N], traded notional [B, N], cash [B], equity [B],
    costs [B, 4])`` with costs as (fee, spread, slippage, financing).
    """
    b, n = units.shape
    new_units = np.empty((b, n))
    traded = np.empty((b, n))
    cash_out = np.empty(b)
    equity_out = np.empty(b)
    costs = np.zeros((b, 4))
    held = np.empty(n)
    gone = np.empty(n, dtype=np.bool_)
    for i in range(b):
        eq = equity[i]
        cash_i = cash[i]
        gap = 0.0
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
        equity_open = eq + gap
        fee, spread, slip, flow, gross, intrabar = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for j in range(n):
            u = held[j]
            keep = locked[i, j] and not gone[j]  # an unfilled order: the position stays as it is
            nu = u if keep else w_target[i, j] * equity_open / open1[i, j]
            if kill_active[i]:
                nu = min(max(nu, min(u, 0.0)), max(u, 0.0))
            tr = (nu - u) * open1[i, j]
            f, s, sl = trade_cost_parts(
                abs(tr),
                fee_rate[j],
                spread_rate[i, j],
                slippage_base[i, j],
                impact[i, j],
                spread_mult[i, j],
                slippage_mult[i, j],
            )
            fee += f
            spread += s
            slip += sl
            flow += tr
            gross += abs(nu * close1[i, j])
            intrabar += nu * (close1[i, j] - open1[i, j])
            new_units[i, j] = nu
            traded[i, j] = tr
        trade_cost = fee + spread + slip
        equity_close = equity_open - trade_cost + intrabar
        fin = financing_of(gross, equity_close, financing_rate, free_leverage)
        cash_out[i] = cash_i - flow - trade_cost - fin
        equity_out[i] = equity_close - fin
        costs[i, 0], costs[i, 1], costs[i, 2], costs[i, 3] = fee, spread, slip, fin
    return new_units, traded, cash_out, equity_out, costs
