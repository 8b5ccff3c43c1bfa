"""The simulator's step as one compiled loop over episodes (numba): what a decision can reach, then
what filling it does to the account, row by row.

The step is many small array operations on ``[B, N]`` arrays; at the batch sizes RL uses (a handful of
episodes per env runner) numpy's per-call overhead, not the arithmetic, dominated it. These loops do the
same arithmetic per element, and read each episode's bar straight from the ``[T, N]`` data (no gathered
``[B, N]`` copies, no intermediate arrays between the steps). The rules they apply are stated once each:
the projection is ``envs.projection.project_row``, trade costs, a delisting's forced close and carry are
``envs.costs.trade_cost_parts``, ``exit_cost_parts``, ``financing_of`` and ``cash_interest_of``; the box
rules (per-asset cap, no shorts where not shortable, unlisted = 0, unwind-only while the kill switch is
on, locked = unfilled, no real bar at ``t`` or ``t + 1`` inside the asset's life = held) are
:func:`_project_into`'s and are checked against ``projection.weight_bounds`` and
``kill_switch.unwind_bounds`` in the tests. The contract of each argument is
:meth:`envs.simulator.MarketSimulator.step`'s. :func:`settle_rows` is step 5's bookkeeping (growth,
drawdown, kill switch through ``kill_switch._advance``, counters, costs) for the same reason; the reward
itself stays ``rewards.compute_reward``'s.

The compiled kernels are cached under a digest of every kernel module (``envs.kernel_cache``), so an
edit of a helper in another module (``projection``, ``costs``, ``kill_switch``) recompiles them.
"""

from __future__ import annotations

import numba
import numpy as np

from raytrade.envs.costs import cash_interest_of, exit_cost_parts, financing_of, trade_cost_parts
from raytrade.envs.kernel_cache import use_kernel_cache
from raytrade.envs.kill_switch import _advance
from raytrade.envs.projection import project_row, project_row_grouped

use_kernel_cache()  # before any kernel compiles: the cache is keyed on every kernel module


@numba.njit(cache=True, nogil=True, inline="always")
def _scratch(  # pragma: no cover (compiled)
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Five zeroed rows of ``n`` floats and the projection's ``4 n``, as views of one allocation
    (at B = 1 each allocation is a measurable share of the step)."""
    block = np.zeros(9 * n)
    return (
        block[:n],
        block[n : 2 * n],
        block[2 * n : 3 * n],
        block[3 * n : 4 * n],
        block[4 * n : 5 * n],
        block[5 * n :],
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _project_into(  # pragma: no cover (compiled; covered through target_rows and step_rows)
    target: np.ndarray,
    w_now: np.ndarray,
    listed: np.ndarray,
    bar: np.ndarray,
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
    external_group: np.ndarray,
    skip: np.ndarray,
    last_bar: np.ndarray,
    has_next: bool,
    w: np.ndarray,
    locked: np.ndarray,
) -> None:
    """Every episode ``i`` not ``skip[i]``: its projected target weights into ``w[i]`` and its locked
    mask into ``locked[i]``, the box at bar ``bar[i]`` of ``listed`` (rows left as they were where
    skipped).

    Where ``has_next`` (the simulator's step: ``listed`` is the data's ``[T, N]`` and the fill is at
    ``bar[i] + 1``), an asset before its last real bar ``last_bar [N]`` without a real bar at
    ``bar[i]`` or at ``bar[i] + 1`` (a hole, or not listed yet) is locked too: no order can fill on
    a bar that has none, so the position (0 before the listing) is held, as an unfilled order is.

    ``external_gross [B]`` is each episode's exposure held outside the universe and
    ``external_group [B]`` its crypto part: they come out of the gross budget and (with a crypto
    group) the crypto group's budget, as locked assets' exposure does (0 in the simulator's step).

    The loop over episodes is inside, and rows are read and written by index, never as
    ``target[i]``-style views: numba takes and drops a reference on every array an inlined helper
    is handed and on every view, each an atomic operation, and per row those were about a third of
    the step's time at B = 256."""
    b, n = target.shape
    lower, upper, floor, row, out, work = _scratch(n)
    for i in range(b):
        if skip[i]:
            continue
        ti, kill = bar[i], kill_active[i]
        locked_gross, locked_group = 0.0, 0.0
        for j in range(n):
            row[j] = target[i, j]
            listed_j = listed[ti, j]
            hi = per_asset_cap if listed_j else 0.0
            lo = -hi if shortable[j] else 0.0
            if kill:  # unwind only: |w| may shrink toward 0, never grow or change sign
                lo = max(lo, min(w_now[i, j], 0.0))
                hi = min(hi, max(w_now[i, j], 0.0))
            lock = has_fill and not fill[i, j] and listed_j
            if has_next and ti < last_bar[j] and not (listed_j and listed[ti + 1, j]):
                lock = True  # no real bar to decide on or to fill at, inside the life: held
            locked[i, j] = lock
            if lock:
                lo, hi = 0.0, 0.0
                locked_gross += abs(w_now[i, j])
                if has_group and group[j]:
                    locked_group += abs(w_now[i, j])
            lower[j], upper[j] = lo, hi
        budget = max(gross_cap - locked_gross - external_gross[i], 0.0)
        group_budget = max(crypto_gross_cap - locked_group - external_group[i], 0.0)
        if has_group:
            project_row_grouped(row, lower, upper, budget, group, group_budget, out, floor, work)
        else:
            project_row(row, lower, upper, budget, floor, out, work)
        for j in range(n):
            w[i, j] = out[j]


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
    external_group: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected target weights ``[B, N]`` and the locked mask (``~fill & listed``): step 1 alone,
    what the serving path decides with (``listed [B, N]``: each episode's own bar)."""
    b, n = target.shape
    w = np.zeros((b, n))
    locked = np.zeros((b, n), dtype=np.bool_)
    _project_into(
        target,
        w_now,
        listed,
        np.arange(b),
        kill_active,
        fill,
        has_fill,
        per_asset_cap,
        shortable,
        gross_cap,
        group,
        has_group,
        crypto_gross_cap,
        external_gross,
        external_group,
        np.zeros(b, dtype=np.bool_),
        np.full(n, -1, dtype=np.int64),  # no next bar here: only the fill mask locks
        False,
        w,
        locked,
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
    t: np.ndarray,
    kill_active: np.ndarray,
    dead: np.ndarray,
    mult: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    listed: np.ndarray,
    rates: np.ndarray,
    fee_rate: np.ndarray,
    asset_flags: np.ndarray,
    consts: np.ndarray,
    has_group: bool,
    last_bar: np.ndarray,
    delisting_rates: np.ndarray,
    cash_return: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-4 of the simulator for every episode ``i`` at its bar ``t[i]``: the current weights
    (``units * close[t] / equity``, the equity floored at ``tiny`` where ``floor_divisor``), the
    projected targets (:func:`_project_into`, with the locked mask where ``has_fill``), then
    :func:`_fill_into`. ``dead [B]`` marks episodes ruined earlier: they stay exactly as they are
    (target weights 0). ``mult [2, B, N]`` is the (spread, slippage) cost multipliers.

    The simulator's constants come packed, once per simulator (``MarketSimulator.__init__``), so a call
    converts 21 arguments rather than 30 (numba checks each one on every call, about 0.1 us each):
    ``open_``, ``close``, ``listed`` (the data's ``[T, N]``), ``rates [4, T, N]`` (spread, slippage
    base, impact, fill cap: ``costs.CostRates``' per-bar rates), ``fee_rate [N]``, ``asset_flags [2,
    N]`` (shortable, in the crypto group) and ``consts`` (tiny, per-asset cap, gross cap, crypto gross
    cap, financing rate per bar, borrow rate per bar, free leverage, equity floor in currency,
    maintenance margin, impact at the participation cap), then ``last_bar [N]`` (each asset's last real
    bar, ``market_data.last_listed_bar``: a position held there is delisted) and ``delisting_rates [4,
    N]`` (``simulator.delisting_rates``: what closing it there costs), and ``cash_return [T]`` (what
    idle cash earns over each bar, ``envs.cash_rate.cash_return_per_bar``). Returns ``(target weights [B, N],
    new_units [B, N], traded notional [B, N], cash [B], equity [B], costs [B, 4], ruined [B], interest
    [B])`` with costs as (fee, spread, slippage, financing) and interest what idle cash earned."""
    b, n = units.shape
    w = np.zeros((b, n))
    locked = np.zeros((b, n), dtype=np.bool_)
    w_now = np.zeros((b, n))
    tiny = consts[0]
    for i in range(b):
        if not dead[i]:
            ti = t[i]
            divisor = max(equity[i], tiny) if floor_divisor else equity[i]
            for j in range(n):
                w_now[i, j] = units[i, j] * close[ti, j] / divisor
    _project_into(
        target,
        w_now,
        listed,
        t,
        kill_active,
        fill,
        has_fill,
        consts[1],
        asset_flags[0],
        consts[2],
        asset_flags[1],
        has_group,
        consts[3],
        np.zeros(b),
        np.zeros(b),
        dead,
        last_bar,
        True,
        w,
        locked,
    )
    return _fill_into(
        t,
        w,
        locked,
        units,
        cash,
        equity,
        open_,
        close,
        last_bar,
        delisting_rates,
        kill_active,
        dead,
        fee_rate,
        rates,
        mult,
        asset_flags[1],
        has_group,
        consts,
        cash_return,
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _liquidation_costs(  # pragma: no cover (compiled; covered through the simulator)
    units: np.ndarray,
    prices: np.ndarray,
    fee_rate: np.ndarray,
    rates: np.ndarray,
    ti: int,
    impact_cap: float,
) -> tuple[float, float, float]:
    """(fee, spread, slippage) of a ruined account's forced sale of ``units [N]`` at ``prices [N]``:
    each position all at once, :func:`envs.costs.exit_cost_parts` at the fill's rates of bar ``ti``."""
    fee, spread, slip = 0.0, 0.0, 0.0
    for j in range(units.shape[0]):
        sale = abs(units[j] * prices[j])
        if sale != 0.0:
            r = rates[:, ti, j]  # spread, slippage base, impact, fill cap
            f, s, sl = exit_cost_parts(sale, fee_rate[j], r[0], r[1], r[2], r[3], impact_cap)
            fee, spread, slip = fee + f, spread + s, slip + sl
    return fee, spread, slip


@numba.njit(cache=True, nogil=True, inline="always")
def _fill_into(  # pragma: no cover (compiled; covered through the simulator)
    t: np.ndarray,
    w: np.ndarray,
    locked: np.ndarray,
    units: np.ndarray,
    cash: np.ndarray,
    equity: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    last_bar: np.ndarray,
    delisting_rates: np.ndarray,
    kill_active: np.ndarray,
    dead: np.ndarray,
    fee_rate: np.ndarray,
    rates: np.ndarray,
    mult: np.ndarray,
    group: np.ndarray,
    has_group: bool,
    consts: np.ndarray,
    cash_return: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 2-4 of every live episode ``i`` at bar ``ti = t[i]``: close delistings (``ti`` is the
    asset's last real bar, ``last_bar [N]``: no bar at ``ti + 1`` or after) at ``close[ti]``, paying
    :func:`envs.costs.exit_cost_parts` at ``delisting_rates [4, N]`` (their sale counts in the traded
    notional and its costs in ``costs``), fill at ``open[ti + 1]`` sized on the equity at that open
    (locked assets keep their units; the kill switch clips to unwinds; each fill takes at most
    ``fill_cap``), charge costs, mark to ``close[ti + 1]``, charge carry, credit idle cash
    ``cash_return[ti + 1]`` (:func:`envs.costs.cash_interest_of`; income, not in ``costs``), and
    liquidate a ruined account. Episodes ruined earlier (``dead``) keep their units, cash and equity and
    are flagged ruined.

    ``w [B, N]`` holds the projected targets on entry and the final target weights on return (0 for
    delisted, the current weight for locked assets); the carry (financing rate per bar, borrow rate
    per bar, free leverage) and the ruin rule (equity floor in currency, maintenance margin) are
    ``consts[4:9]`` (:func:`step_rows`). Participation: asset ``j`` fills ``lam_j = min(1, fill_cap
    / |order|)`` of its order; when those partial fills would leave the gross (or the crypto
    sleeve's gross, where ``has_group``) above both the gross before the fill and the gross of the
    full fill, every order fills the common ``min_j lam_j`` instead, so the book is a convex
    combination of where it was and where it was going. Ruin: equity at the open or at the close at
    or below ``max(floor, margin * gross)`` liquidates every position at that price, each sale paying
    what a full exit costs at the fill's rates (:func:`envs.costs.exit_cost_parts`; in ``costs``, not
    in the traded notional: a forced sale, not a fill); equity is floored at 0 and the episode is
    flagged.

    The loop over episodes is inside and every array is read by index (see :func:`_project_into`).
    Returns ``(w, new_units, traded notional, cash, equity, costs [B, 4], ruined, interest [B])``,
    costs as (fee, spread, slippage, financing), interest what idle cash earned (0 where ruined at the
    open or earlier)."""
    b, n = units.shape
    new_units = np.empty((b, n))
    traded = np.zeros((b, n))
    cash_out = np.empty(b)
    equity_out = np.empty(b)
    costs = np.zeros((b, 4))
    ruined = np.zeros(b, dtype=np.bool_)
    earned = np.zeros(b)
    held, want, lam, _, _, _ = _scratch(n)
    gone = np.empty(n, dtype=np.bool_)
    fin_rate, borrow_rate, free_leverage = consts[4], consts[5], consts[6]
    floor, margin, impact_cap = consts[7], consts[8], consts[9]
    for i in range(b):
        if dead[i]:  # ruined earlier: flat, nothing happens until a reset
            for j in range(n):
                new_units[i, j] = units[i, j]
            cash_out[i], equity_out[i], ruined[i] = cash[i], equity[i], True
            continue
        ti = t[i]
        t1 = ti + 1
        eq = equity[i]
        cash_i = cash[i]
        gap, gross_open = 0.0, 0.0
        exit_fee, exit_spread, exit_slip = 0.0, 0.0, 0.0
        for j in range(n):
            u, c0, o1 = units[i, j], close[ti, j], open_[t1, j]
            gone_j = ti == last_bar[j]  # no bar after ti; a missing bar before the last is a hole
            gone[j] = gone_j
            if gone_j:  # delisted: closed at its last price, paying what that exit costs
                if u != 0.0:
                    f, s, sl = exit_cost_parts(
                        abs(u * c0),
                        fee_rate[j],
                        delisting_rates[0, j],
                        delisting_rates[1, j],
                        delisting_rates[2, j],
                        delisting_rates[3, j],
                        impact_cap,
                    )
                    exit_fee += f
                    exit_spread += s
                    exit_slip += sl
                    traded[i, j] = -u * c0
                    cash_i += u * c0
                u = 0.0
                w[i, j] = 0.0
            elif locked[i, j]:
                w[i, j] = u * c0 / eq
            held[j] = u
            gap += u * (o1 - c0)
            gross_open += abs(u * o1)
        exit_cost = exit_fee + exit_spread + exit_slip
        cash_i -= exit_cost
        equity_open = eq - exit_cost + gap
        if equity_open <= max(floor, margin * gross_open):  # bust at the open: liquidate there
            f, s, sl = _liquidation_costs(held, open_[t1], fee_rate, rates, ti, impact_cap)
            exit_fee, exit_spread, exit_slip = exit_fee + f, exit_spread + s, exit_slip + sl
            for j in range(n):
                cash_i += held[j] * open_[t1, j]
                new_units[i, j] = 0.0
            out = max(eq + gap - exit_fee - exit_spread - exit_slip, 0.0)
            costs[i, 0], costs[i, 1], costs[i, 2] = exit_fee, exit_spread, exit_slip
            cash_out[i], equity_out[i], ruined[i] = out, out, True
            continue
        before, target, partial = 0.0, 0.0, 0.0
        before_g, target_g, partial_g = 0.0, 0.0, 0.0
        lam_min = 1.0
        kill = kill_active[i]
        for j in range(n):
            u, o1, cap = held[j], open_[t1, j], rates[3, ti, j]
            keep = locked[i, j] and not gone[j]  # an unfilled order: the position stays as it is
            nu = u if keep else w[i, j] * equity_open / o1
            if kill:
                nu = min(max(nu, min(u, 0.0)), max(u, 0.0))
            want[j] = nu
            order = abs(nu - u) * o1
            # min(1, cap / order) without the division when the order fits (the common case)
            lam_j = 1.0 if order <= cap else cap / order
            lam[j] = lam_j
            lam_min = min(lam_min, lam_j)
            a, z = abs(u * o1), abs(nu * o1)
            p = abs((u + lam_j * (nu - u)) * o1)
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
            u, o1, c1 = held[j], open_[t1, j], close[t1, j]
            nu = u + (lam_min if basket else lam[j]) * (want[j] - u)
            tr = (nu - u) * o1
            f, s, sl = trade_cost_parts(
                abs(tr),
                fee_rate[j],
                rates[0, ti, j],
                rates[1, ti, j],
                rates[2, ti, j],
                rates[3, ti, j],
                mult[0, i, j],
                mult[1, i, j],
            )
            fee += f
            spread += s
            slip += sl
            flow += tr
            value = nu * c1
            if value > 0.0:
                long += value
            else:
                short -= value
            intrabar += nu * (c1 - o1)
            new_units[i, j] = nu
            traded[i, j] += tr
        trade_cost = fee + spread + slip
        equity_close = equity_open - trade_cost + intrabar
        fin = financing_of(long, short, equity_close, fin_rate, borrow_rate, free_leverage)
        interest = cash_interest_of(long, equity_close, cash_return[t1])
        earned[i] = interest
        costs[i, 0], costs[i, 1], costs[i, 2] = exit_fee + fee, exit_spread + spread, exit_slip + slip
        costs[i, 3] = fin
        equity_end = equity_close - fin + interest
        if equity_end <= max(floor, margin * (long + short)):  # ruin at the close: liquidate there
            f, s, sl = _liquidation_costs(new_units[i], close[t1], fee_rate, rates, ti, impact_cap)
            costs[i, 0], costs[i, 1], costs[i, 2] = costs[i, 0] + f, costs[i, 1] + s, costs[i, 2] + sl
            for j in range(n):
                new_units[i, j] = 0.0
            out = max(equity_end - (f + s + sl), 0.0)
            cash_out[i], equity_out[i], ruined[i] = out, out, True
            continue
        cash_out[i], equity_out[i] = cash_i - flow - trade_cost - fin + interest, equity_end
    return w, new_units, traded, cash_out, equity_out, costs, ruined, earned


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
