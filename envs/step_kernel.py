"""The simulator's step as one compiled loop over episodes (numba): what a decision can reach, then
what filling it does to the account, row by row.

The step is many small array operations on ``[B, N]`` arrays; at the batch sizes RL uses (a handful
of episodes per env runner) numpy's per-call overhead, not the arithmetic, dominated it. These loops
do the same arithmetic per element, and read each episode's bar straight from the ``[T, N]`` data
(no gathered ``[B, N]`` copies, no intermediate arrays between the steps). The rules they apply are
stated once each: the projection is ``envs.projection.project_row``, trade costs and carry are
``envs.costs.trade_cost_parts`` and ``financing_of``; the box rules (per-asset cap, no shorts where
not shortable, unlisted = 0, unwind-only while the kill switch is on, locked = unfilled) are
:func:`_target_row`'s and are checked against ``projection.weight_bounds`` and
``kill_switch.unwind_bounds`` in the tests. The contract of each argument is
:meth:`envs.simulator.MarketSimulator.step`'s. :func:`settle_rows` is step 5's bookkeeping (growth,
drawdown, kill switch through ``kill_switch._advance``, counters, costs) for the same reason; the
reward itself stays ``rewards.compute_reward``'s.

The compiled kernels are cached under a digest of every kernel module (``envs.kernel_cache``), so an
edit of a helper in another module (``projection``, ``costs``, ``kill_switch``) recompiles them.
"""

from __future__ import annotations

import numba
import numpy as np

from raytrade.envs.costs import financing_of, trade_cost_parts
from raytrade.envs.kernel_cache import use_kernel_cache
from raytrade.envs.kill_switch import _advance
from raytrade.envs.projection import project_row, project_row_grouped

use_kernel_cache()  # before any kernel compiles: the cache is keyed on every kernel module


@numba.njit(cache=True, nogil=True, inline="always")
def _target_row(  # pragma: no cover (compiled; covered through target_rows and step_rows)
    target: np.ndarray,
    w_now: np.ndarray,
    listed: np.ndarray,
    kill_active: bool,
    fill: np.ndarray,
    has_fill: bool,
    per_asset_cap: float,
    shortable: np.ndarray,
    gross_cap: float,
    group: np.ndarray,
    has_group: bool,
    crypto_gross_cap: float,
    external_gross: float,
    w: np.ndarray,
    locked: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    floor: np.ndarray,
    work: np.ndarray,
) -> None:
    """One episode's projected target weights into ``w [N]`` and its locked mask into ``locked [N]``
    (``lower``, ``upper``, ``floor``: scratch of ``N``; ``work``: the projection's, ``4 N``)."""
    n = target.shape[0]
    locked_gross, locked_group = 0.0, 0.0
    for j in range(n):
        hi = per_asset_cap if listed[j] else 0.0
        lo = -hi if shortable[j] else 0.0
        if kill_active:  # unwind only: |w| may shrink toward 0, never grow or change sign
            lo = max(lo, min(w_now[j], 0.0))
            hi = min(hi, max(w_now[j], 0.0))
        lock = has_fill and not fill[j] and listed[j]
        locked[j] = lock
        if lock:
            lo, hi = 0.0, 0.0
            locked_gross += abs(w_now[j])
            if has_group and group[j]:
                locked_group += abs(w_now[j])
        lower[j], upper[j] = lo, hi
    budget = max(gross_cap - locked_gross - external_gross, 0.0)
    group_budget = max(crypto_gross_cap - locked_group, 0.0) if has_fill else crypto_gross_cap
    if has_group:
        project_row_grouped(target, lower, upper, budget, group, group_budget, w, floor, work)
    else:
        project_row(target, lower, upper, budget, floor, w, work)


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
    """Projected target weights ``[B, N]`` and the locked mask (``~fill & listed``): step 1 alone,
    what the serving path decides with."""
    b, n = target.shape
    w = np.zeros((b, n))
    locked = np.zeros((b, n), dtype=np.bool_)
    lower, upper, floor, work = np.empty(n), np.empty(n), np.zeros(n), np.empty(4 * n)
    for i in range(b):
        _target_row(
            target[i],
            w_now[i],
            listed[i],
            kill_active[i],
            fill[i],
            has_fill,
            per_asset_cap,
            shortable,
            gross_cap,
            group,
            has_group,
            crypto_gross_cap,
            external_gross[i],
            w[i],
            locked[i],
            lower,
            upper,
            floor,
            work,
        )
    return w, locked


@numba.njit(cache=True, nogil=True)
def step_rows(  # pragma: no cover (compiled; covered through the simulator)
    target: np.ndarray,
    fill: np.ndarray,
    has_fill: bool,
    units: np.ndarray,
    cash: np.ndarray,
    equity: np.ndarray,
    floor_divisor: bool,
    tiny: float,
    open_: np.ndarray,
    close: np.ndarray,
    listed: np.ndarray,
    t: np.ndarray,
    kill_active: np.ndarray,
    dead: np.ndarray,
    fee_rate: np.ndarray,
    spread_rate: np.ndarray,
    slippage_base: np.ndarray,
    impact: np.ndarray,
    fill_cap: np.ndarray,
    spread_mult: np.ndarray,
    slippage_mult: np.ndarray,
    per_asset_cap: float,
    shortable: np.ndarray,
    gross_cap: float,
    group: np.ndarray,
    has_group: bool,
    crypto_gross_cap: float,
    carry: np.ndarray,
    ruin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-4 of the simulator for every episode ``i`` at its bar ``t[i]``: the current weights
    (``units * close[t] / equity``, the equity floored at ``tiny`` where ``floor_divisor``), the
    projected targets (:func:`_target_row`, with the locked mask where ``has_fill``), then
    :func:`_fill_row`. ``open_``, ``close``, ``listed`` and the per-bar rates are the data's ``[T,
    N]`` arrays; ``dead [B]`` marks episodes ruined earlier: they stay exactly as they are (target
    weights 0). Returns ``(target weights [B, N], new_units [B, N], traded notional [B, N], cash [B],
    equity [B], costs [B, 4], ruined [B])`` with costs as (fee, spread, slippage, financing)."""
    b, n = units.shape
    w = np.zeros((b, n))
    new_units = np.empty((b, n))
    traded = np.zeros((b, n))
    cash_out = np.empty(b)
    equity_out = np.empty(b)
    costs = np.zeros((b, 4))
    ruined = np.zeros(b, dtype=np.bool_)
    scratch = np.empty((5, n))
    w_now, lower, upper, held, want = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    lam, floor, work = np.empty(n), np.zeros(n), np.empty(4 * n)
    locked = np.zeros(n, dtype=np.bool_)
    gone = np.empty(n, dtype=np.bool_)
    for i in range(b):
        if dead[i]:  # ruined earlier: flat, nothing happens until a reset
            for j in range(n):
                new_units[i, j] = units[i, j]
            cash_out[i], equity_out[i], ruined[i] = cash[i], equity[i], True
            continue
        ti = t[i]
        close_t = close[ti]
        divisor = max(equity[i], tiny) if floor_divisor else equity[i]
        for j in range(n):
            w_now[j] = units[i, j] * close_t[j] / divisor
        _target_row(
            target[i],
            w_now,
            listed[ti],
            kill_active[i],
            fill[i],
            has_fill,
            per_asset_cap,
            shortable,
            gross_cap,
            group,
            has_group,
            crypto_gross_cap,
            0.0,
            w[i],
            locked,
            lower,
            upper,
            floor,
            work,
        )
        cash_out[i], equity_out[i], ruined[i] = _fill_row(
            w[i],
            locked,
            units[i],
            cash[i],
            equity[i],
            close_t,
            open_[ti + 1],
            close[ti + 1],
            listed[ti],
            listed[ti + 1],
            kill_active[i],
            fee_rate,
            spread_rate[ti],
            slippage_base[ti],
            impact[ti],
            fill_cap[ti],
            spread_mult[i],
            slippage_mult[i],
            group,
            has_group,
            carry,
            ruin,
            new_units[i],
            traded[i],
            costs[i],
            held,
            want,
            lam,
            gone,
        )
    return w, new_units, traded, cash_out, equity_out, costs, ruined


@numba.njit(cache=True, nogil=True, inline="always")
def _fill_row(  # pragma: no cover (compiled; covered through the simulator)
    w_target: np.ndarray,
    locked: np.ndarray,
    units: np.ndarray,
    cash: float,
    equity: float,
    close_t: np.ndarray,
    open1: np.ndarray,
    close1: np.ndarray,
    listed_t: np.ndarray,
    listed_t1: np.ndarray,
    kill_active: bool,
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
    new_units: np.ndarray,
    traded: np.ndarray,
    costs: np.ndarray,
    held: np.ndarray,
    want: np.ndarray,
    lam: np.ndarray,
    gone: np.ndarray,
) -> tuple[float, float, bool]:
    """Steps 2-4 of one live episode: liquidate delistings at ``close_t``, fill at ``open1`` sized on
    the equity at that open (locked assets keep their units; the kill switch clips to unwinds; each
    fill takes at most ``fill_cap``), charge costs, mark to ``close1``, charge carry, and liquidate a
    ruined account.

    ``carry`` is (financing rate per bar, borrow rate per bar, free leverage); ``ruin`` is (equity
    floor in currency, maintenance margin); the rates are the bar's rows ``[N]``. Participation:
    asset ``j`` fills ``lam_j = min(1, fill_cap / |order|)`` of its order; when those partial fills
    would leave the gross (or the crypto sleeve's gross, where ``has_group``) above both the gross
    before the fill and the gross of the full fill, every order fills the common ``min_j lam_j``
    instead, so the book is a convex combination of where it was and where it was going. Ruin:
    equity at the open or at the close at or below ``max(floor, margin * gross)`` liquidates every
    position at that price without cost; equity is floored at 0 and the episode is flagged.

    Writes the final target weights into ``w_target`` (0 for delisted, the current weight for locked
    assets), the units after the fill into ``new_units``, the signed traded notional into ``traded``
    (zeros on entry), (fee, spread, slippage, financing) into ``costs`` (zeros on entry); ``held``,
    ``want``, ``lam``, ``gone`` are scratch. Returns ``(cash, equity, ruined)``.
    """
    n = units.shape[0]
    fin_rate, borrow_rate, free_leverage = carry[0], carry[1], carry[2]
    floor, margin = ruin[0], ruin[1]
    eq = equity
    cash_i = cash
    gap, gross_open = 0.0, 0.0
    for j in range(n):
        held[j] = units[j]
        gone[j] = listed_t[j] and not listed_t1[j]
        if gone[j]:  # delisted: sold at its last price, no cost
            cash_i += held[j] * close_t[j]
            held[j] = 0.0
            w_target[j] = 0.0
        elif locked[j]:
            w_target[j] = held[j] * close_t[j] / eq
        gap += held[j] * (open1[j] - close_t[j])
        gross_open += abs(held[j] * open1[j])
    equity_open = eq + gap
    if equity_open <= max(floor, margin * gross_open):  # bust at the open: liquidate there
        for j in range(n):
            cash_i += held[j] * open1[j]
            new_units[j] = 0.0
        out = max(equity_open, 0.0)
        return out, out, True
    before, target, partial = 0.0, 0.0, 0.0
    before_g, target_g, partial_g = 0.0, 0.0, 0.0
    lam_min = 1.0
    for j in range(n):
        u = held[j]
        keep = locked[j] and not gone[j]  # an unfilled order: the position stays as it is
        nu = u if keep else w_target[j] * equity_open / open1[j]
        if kill_active:
            nu = min(max(nu, min(u, 0.0)), max(u, 0.0))
        want[j] = nu
        order = abs(nu - u) * open1[j]
        # min(1, cap / order) without the division when the order fits (the common case)
        lam[j] = 1.0 if order <= fill_cap[j] else fill_cap[j] / order
        lam_min = min(lam_min, lam[j])
        a, z = abs(u * open1[j]), abs(nu * open1[j])
        p = abs((u + lam[j] * (nu - u)) * open1[j])
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
        tr = (nu - u) * open1[j]
        f, s, sl = trade_cost_parts(
            abs(tr),
            fee_rate[j],
            spread_rate[j],
            slippage_base[j],
            impact[j],
            fill_cap[j],
            spread_mult[j],
            slippage_mult[j],
        )
        fee += f
        spread += s
        slip += sl
        flow += tr
        value = nu * close1[j]
        if value > 0.0:
            long += value
        else:
            short -= value
        intrabar += nu * (close1[j] - open1[j])
        new_units[j] = nu
        traded[j] = tr
    trade_cost = fee + spread + slip
    equity_close = equity_open - trade_cost + intrabar
    fin = financing_of(long, short, equity_close, fin_rate, borrow_rate, free_leverage)
    costs[0], costs[1], costs[2], costs[3] = fee, spread, slip, fin
    equity_end = equity_close - fin
    if equity_end <= max(floor, margin * (long + short)):  # ruin at the close: liquidate there
        for j in range(n):
            new_units[j] = 0.0
        out = max(equity_end, 0.0)
        return out, out, True
    return cash_i - flow - trade_cost - fin, equity_end, False


@numba.njit(cache=True, nogil=True)
def settle_rows(  # pragma: no cover (compiled; covered through the simulator)
    equity: np.ndarray,
    new_equity: np.ndarray,
    tiny: float,
    ruined: np.ndarray,
    was_ruined: np.ndarray,
    peak: np.ndarray,
    kill_peak: np.ndarray,
    kill_active: np.ndarray,
    kill_bars: np.ndarray,
    kill_rule: np.ndarray,
    kill_flags: np.ndarray,
    t: np.ndarray,
    steps: np.ndarray,
    ruin_bar: np.ndarray,
    episode_costs: np.ndarray,
    costs: np.ndarray,
    active: np.ndarray,
    has_active: bool,
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    bool,
]:
    """Step 5's bookkeeping for every episode, the reward aside: what ``MarketSimulator._settle``
    did in numpy, as one loop that returns new arrays (the old ones are left as they were).

    The growth ``new_equity / equity``, both floored at ``tiny`` when any episode is ruined (ruined
    now or earlier: ``ruined``; earlier: ``was_ruined``), whose log the caller takes in numpy (so
    the log growth stays numpy's to the last bit: numba's ``log`` can differ by an ulp); the
    running ``peak`` and the drawdown against it; the kill switch advanced on the closing equity
    (``kill_switch._advance``, the rule's one statement: ``kill_rule`` is (trigger, release
    drawdown, release after bars), ``kill_flags`` (enabled, has a release drawdown, resets the peak
    on release); disabled, it is off and only tracks the peak); the step counter, the bar,
    ``ruin_bar`` for episodes ruined now, and the episode's costs. Where ``has_active`` and
    ``active [B]`` is False every state array keeps its old value. Returns ``(growth, dd, peak,
    kill_peak, kill_active, kill_bars, t, steps, ruin_bar, episode_costs, now_ruined, any_ruin)``."""
    b = equity.shape[0]
    any_ruin = False
    for i in range(b):
        any_ruin = any_ruin or ruined[i]
    growth, dd = np.empty(b), np.empty(b)
    peak_out = np.empty(b)
    now_ruined = np.empty(b, dtype=np.bool_)
    enabled, has_release_drawdown, reset_peak = kill_flags[0], kill_flags[1], kill_flags[2]
    if enabled:
        k_peak, k_active, k_bars = _advance(
            kill_peak,
            kill_active,
            kill_bars,
            new_equity,
            kill_rule[0],
            has_release_drawdown,
            kill_rule[1],
            int(kill_rule[2]),
            reset_peak,
        )
    else:
        k_peak, k_active, k_bars = (
            np.maximum(kill_peak, new_equity),
            np.zeros(b, np.bool_),
            np.zeros(b, np.int64),
        )
    t_out, steps_out, ruin_bar_out = np.empty_like(t), np.empty_like(steps), np.empty_like(ruin_bar)
    costs_out = np.empty_like(episode_costs)
    for i in range(b):
        e, ne = equity[i], new_equity[i]
        growth[i] = max(ne, tiny) / max(e, tiny) if any_ruin else ne / e
        p = max(peak[i], ne)
        dd[i] = max(1.0 - ne / p, 0.0)
        now_ruined[i] = ruined[i] and not was_ruined[i]
        if has_active and not active[i]:
            peak_out[i], t_out[i], steps_out[i], ruin_bar_out[i] = peak[i], t[i], steps[i], ruin_bar[i]
            k_peak[i], k_active[i], k_bars[i] = kill_peak[i], kill_active[i], kill_bars[i]
            for c in range(costs.shape[1]):
                costs_out[i, c] = episode_costs[i, c]
            continue
        peak_out[i], t_out[i], steps_out[i] = p, t[i] + 1, steps[i] + 1
        ruin_bar_out[i] = t[i] + 1 if now_ruined[i] else ruin_bar[i]
        for c in range(costs.shape[1]):
            costs_out[i, c] = episode_costs[i, c] + costs[i, c]
    return (
        growth,
        dd,
        peak_out,
        k_peak,
        k_active,
        k_bars,
        t_out,
        steps_out,
        ruin_bar_out,
        costs_out,
        now_ruined,
        any_ruin,
    )
