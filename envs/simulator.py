"""Vectorised market simulator: B episodes x N assets stepped by one numpy call.

Timing contract (no look-ahead)
-------------------------------
A decision at bar ``t`` sees only data at bars ``<= t`` (features, listing, close, spread, volume).
``step`` then: projects the target weights onto the constraints (mask = ``listed[t]``), closes held
assets delisted after ``t`` (``t`` is their last real bar: none at ``t + 1`` or later) at their last
price ``close[t]``, paying what an exit at that bar costs (fee, spread, slippage and impact as
:meth:`MarketSimulator.exit_costs` prices the window-end exit: a forced close is no free trade), fills
the trades at ``open[t + 1]`` sized on the equity at that open, each fill taking at most
``costs.max_participation`` of the smaller of two dollar volumes, the one known at ``t`` and the fill
bar's own (``MarketData.bar_dollar_volume[t + 1]`` where known: the fill happens inside that bar; no
decision sees it; :func:`fill_dollar_volume`), the rest of the order being dropped; it charges fee /
spread / slippage with the spread and liquidity tier known at ``t`` and the impact of the fill's
participation of that same smaller dollar volume, marks to ``close[t + 1]``, charges one bar of carry
(financing on the long exposure above 1x equity, the borrow fee on the short exposure, per-bar rates
from the data's bar length), credits one bar of interest on idle cash (the equity not held long, at
``SimulatorConfig.cash_rate``: ``envs.cash_rate``; 0 % unless given), and computes the reward. So bars
after ``t + 1``'s open cannot change anything observed or earned up to ``t``. A bar where an asset
traded nothing is not a real bar of it (``listed`` False, a hole: see below).

Holes: a bar an asset lacks inside its life (a halt, a data gap; ``market_data.hole_bars``) is not a
delisting. No order for it fills when there is no real bar at ``t`` or at ``t + 1``: it is treated
as an unfilled order (``fill`` False: the units are kept, their exposure comes out of the gross
budget), so the position is carried through the hole at the last real close (the data's prices
there) and takes the whole gap from that close to the reopen. Only the bar after an asset's last
real bar (``market_data.last_listed_bar``, derived once from ``listed``) liquidates it; an asset
with a real bar after the data's end (``MarketData.listed_after``: a split or window cut from a
longer history) has no last bar inside the data, and missing bars at its end are a hole.

Exposure bound: the projection caps the *target* gross at ``gross_cap`` (on the equity at close
``t``). A partial fill leaves the gross at the open at most the larger of the gross before the fill
and the gross of the full fill (see ``envs.step_kernel._fill_into``). Between the open and the close
prices move, so the closing gross can exceed ``gross_cap``; what holds at every close is
``gross <= equity / maintenance_margin`` (4x at the default 25 %), because a book past that is
ruined and liquidated; the next decision projects back under ``gross_cap``.

Ruin: equity at the open or the close at or below ``max(min_equity_fraction * initial_equity,
maintenance_margin * gross)`` liquidates every position at that bar's price (no cost), floors equity
at 0, and ends the episode (``terminated``; ``ruined`` / ``ruin_bar`` record it). A ruined episode
stays flat (no trades, no costs, equity unchanged, reward 0) until it is reset, so a return series
never goes below -100 %.

Accounting
----------
State is ``cash [B]``, ``units [B, N]`` and ``equity [B]``. Equity is carried forward by P&L (gap P&L
close->open, intrabar P&L open->close, minus costs and financing, plus interest) while cash moves by
trade cash flows; ``cash + sum(units * close) == equity`` is therefore a real check of the bookkeeping,
which :meth:`MarketSimulator.equity_identity_error` exposes for tests.

Execution: the state is ``[B]`` / ``[B, N]`` arrays. Steps 1-4 (constraints and projection, fills,
costs, marking, financing) run as one compiled loop over episodes (``envs.step_kernel.step_rows``),
which reads each episode's bar from the data directly: at the few episodes per env runner that RL
uses, numpy's per-call overhead dominated them. Step 5's kill switch and bookkeeping are one more
compiled loop (``step_kernel.settle_rows``); the reward stays numpy. ``tests/step_reference.py``
keeps the step written in numpy as an oracle the tests compare against (and
``tests/test_settle_kernel.py`` the numpy step 5). B = 1 runs the same code (the live path).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from raytrade.envs.cash_rate import cash_return_per_bar
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import (
    COST_COMPONENTS,
    CostConfig,
    CostRates,
    borrow_rate_per_bar,
    cost_overrun,
    cost_rates,
    exit_costs_at_rates,
    fee_bps,
    financing_rate_per_bar,
    impact_at_cap,
)
from raytrade.envs.kill_switch import KillSwitchState, init_kill_switch
from raytrade.envs.market_data import MarketData, carry_close_through_holes, hole_bars, last_listed_bar
from raytrade.envs.projection import ConstraintConfig
from raytrade.envs.rewards import RewardState, compute_reward, init_reward_state, turnover_of
from raytrade.envs.step_kernel import settle_rows, step_rows, target_rows


class Observation(NamedTuple):
    """What a policy may see at bar ``t`` for every episode (all from data <= t)."""

    features: np.ndarray  # [B, N, F] float32
    weights: np.ndarray  # [B, N] current weights (position value / equity) at close t
    cash_fraction: np.ndarray  # [B] cash / equity
    drawdown: np.ndarray  # [B] 1 - equity / running peak
    kill_active: np.ndarray  # [B] bool
    kill_bars: np.ndarray  # [B] bars since the kill switch tripped (0 when off)
    mask: np.ndarray  # [B, N] bool, listed at t (tradeable)
    progress: np.ndarray  # [B] fraction of the episode elapsed
    missing: np.ndarray | None = None  # [B, N, F] bool: feature value absent in the store (None: none)


class StepResult(NamedTuple):
    """One step of every episode. Costs are in currency, ``[B, 4]`` ordered as ``COST_COMPONENTS``."""

    reward: np.ndarray  # [B]
    log_growth: np.ndarray  # [B] net log(equity_after / equity_before)
    equity: np.ndarray  # [B] at close t + 1
    costs: np.ndarray  # [B, 4] fee, spread, slippage, financing this step
    target_weights: np.ndarray  # [B, N] projected weights that were sent to the market
    traded_notional: np.ndarray  # [B, N] signed notional filled at open t + 1; a delisting's sale at t
    terminated: np.ndarray  # [B] ruined (at this step or earlier; the episode is over)
    truncated: np.ndarray  # [B] end of the episode window
    ruined: np.ndarray  # [B] ruined at this step: liquidated at bar t + 1
    interest: np.ndarray  # [B] currency: what idle cash earned this step (in equity, not in costs)


class Trade(NamedTuple):
    """Steps 1-4 of one step, before the reward and the bookkeeping."""

    target_weights: np.ndarray  # [B, N] projected weights sent to the market
    traded_notional: np.ndarray  # [B, N]
    units: np.ndarray  # [B, N] after the fill
    cash: np.ndarray  # [B] at close t + 1
    equity: np.ndarray  # [B] at close t + 1, after financing (0 or what remains after a ruin)
    costs: np.ndarray  # [B, 4] fee, spread, slippage, financing
    ruined: np.ndarray  # [B] ruined now or earlier (liquidated, flat)
    interest: np.ndarray  # [B] currency: what idle cash earned (already in equity and cash)


class ExitCost(NamedTuple):
    """What closing every episode's book at its current bar costs (:meth:`MarketSimulator.exit_costs`)."""

    costs: np.ndarray  # [B, 3] currency: fee, spread, slippage (COST_COMPONENTS[:3])
    notional: np.ndarray  # [B] currency: sum over assets of |units| x close, what the exit trades


class ExposureLimits(NamedTuple):
    """Gross budgets of a universe: its constraints, the cap on ``sum |w|`` and the crypto sleeve."""

    constraints: ConstraintConfig
    gross_cap: float  # the crypto cap when every asset is crypto
    group: np.ndarray | None  # [N] crypto membership when crypto has its own, tighter cap; else None
    shortable: np.ndarray  # [N] bool: the asset may be held short


def exposure_limits(is_crypto: np.ndarray, constraints: ConstraintConfig) -> ExposureLimits:
    """The limits of a universe with asset classes ``is_crypto [N]``."""
    con = constraints
    all_crypto = bool(is_crypto.all())
    gross = min(con.gross_cap, con.crypto_gross_cap) if all_crypto else con.gross_cap
    mixed = bool(is_crypto.any()) and not all_crypto
    group = is_crypto if mixed and con.crypto_gross_cap < con.gross_cap else None
    shortable = ~is_crypto if con.crypto_long_only else np.ones_like(is_crypto)
    return ExposureLimits(con, gross, group, shortable & (not con.long_only))


def constrained_targets(
    target: np.ndarray,
    w_now: np.ndarray,
    listed: np.ndarray,
    kill_active: np.ndarray,
    limits: ExposureLimits,
    fill: np.ndarray | None = None,
    external_gross: np.ndarray | float = 0.0,
    external_crypto: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The weights a decision can actually reach: ``target [B, N]`` projected onto the constraints.

    The box is the per-asset cap (no shorts where not ``limits.shortable``: long-only, or crypto),
    zero for assets not ``listed``, unwind-only where
    the kill switch is ``active [B]``. Assets where ``fill`` is False are *locked*: they keep their
    current weight ``w_now`` and their exposure comes out of the gross budgets, as does
    ``external_gross [B]`` (exposure held outside this universe, or one number for every row);
    ``external_crypto [B]``, the crypto part of it, also comes out of the crypto sleeve's budget
    (with a universe of crypto only, the gross cap is the crypto cap and ``external_gross`` comes out
    of it already). Returns the weights, with locked
    assets at 0 (the caller keeps their units), and the locked mask (None without ``fill``). This
    is the simulator's step 1, and what the serving path decides with.
    """
    con = limits.constraints
    b, n = target.shape
    has_group = limits.group is not None
    listed = np.ascontiguousarray(listed, dtype=bool)
    external, external_group = (
        _rows(np.broadcast_to(np.asarray(x, dtype=np.float64), (b,)))
        for x in (external_gross, external_crypto)
    )
    w, locked = target_rows(
        _rows(target),
        _rows(w_now),
        listed,
        np.ascontiguousarray(kill_active, dtype=bool),
        np.ascontiguousarray(fill, dtype=bool) if fill is not None else listed,  # ignored without fill
        fill is not None,
        float(con.per_asset_cap),
        limits.shortable,
        float(limits.gross_cap),
        limits.group if limits.group is not None else np.zeros(n, dtype=bool),
        has_group,
        float(con.crypto_gross_cap),
        external,
        external_group,
    )
    return w, (locked if fill is not None else None)


def _rows(x: np.ndarray) -> np.ndarray:
    """``x`` as C-contiguous float64 (no copy when it already is)."""
    return np.ascontiguousarray(x, dtype=np.float64)


class MarketSimulator:
    """Steps ``n_envs`` episodes sampled as windows of ``data`` (seeded ``numpy.random.Generator``)."""

    def __init__(self, data: MarketData, cfg: SimulatorConfig, n_envs: int = 1, seed: int | None = None):
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if cfg.episode_len >= data.n_steps:
            raise ValueError(
                f"episode_len ({cfg.episode_len}) must be smaller than the data's number of bars "
                f"({data.n_steps}): an episode needs episode_len + 1 bars"
            )
        _validate_data(data)
        self.data = data
        self.cfg = cfg
        self.n_envs = n_envs
        self.n_assets = data.n_assets
        self._open = np.ascontiguousarray(data.open, dtype=np.float64)
        self._close = np.ascontiguousarray(data.close, dtype=np.float64)
        self._listed = np.ascontiguousarray(data.listed, dtype=bool)
        self._last_bar = last_listed_bar(self._listed, data.listed_after)
        self._features = np.ascontiguousarray(data.features, dtype=np.float32)
        self._missing = data.feature_missing
        is_crypto = np.array([c == "crypto" for c in data.asset_class], dtype=bool)
        self.is_crypto = is_crypto
        fees = fee_bps(is_crypto, cfg.costs)
        volume = fill_dollar_volume(data.dollar_volume, data.bar_dollar_volume)
        self._fees, self._exit_volume = fees, exit_dollar_volume(data.dollar_volume, data.bar_dollar_volume)
        rates = cost_rates(data.spread_bps, data.dollar_volume, fees, cfg.costs, volume)  # every bar, once
        self._bar_rates = np.stack([rates.spread, rates.slippage_base, rates.impact, rates.fill_cap])
        self._delisting_rates = delisting_rates(data, self._last_bar, self._exit_volume, fees, cfg.costs)
        self._rates = CostRates(rates.fee, *self._bar_rates)  # views of the one packed copy
        self.limits = exposure_limits(is_crypto, cfg.constraints)
        reward = cfg.reward
        self._envelope_bps = np.where(
            is_crypto, reward.cost_envelope_bps_crypto, reward.cost_envelope_bps_equity
        )
        self._no_lock = np.zeros((n_envs, data.n_assets), dtype=bool)
        self._full_cost = np.ones((2, n_envs, data.n_assets))  # read-only by contract: multipliers of 1
        self.days_per_bar = cfg.days_per_bar if cfg.days_per_bar is not None else data.days_per_bar
        all_crypto = bool(is_crypto.all())
        self._carry = np.array(
            [
                financing_rate_per_bar(cfg.costs, all_crypto, self.days_per_bar),
                borrow_rate_per_bar(cfg.costs, all_crypto, self.days_per_bar),
                cfg.costs.financing_free_leverage,
            ]
        )
        self.cash_return = cash_return_per_bar(data.ts, cfg.cash_rate, data.periods_per_year)  # [T]
        self._cash_earns = bool(self.cash_return.any())
        self._ruin = np.array([cfg.min_equity_fraction * cfg.initial_equity, cfg.maintenance_margin])
        group = self.limits.group if self.limits.group is not None else np.zeros(data.n_assets, bool)
        self._asset_flags = np.stack([self.limits.shortable, group]).astype(bool)  # [2, N]
        con = self.limits.constraints
        self._consts = np.array(  # step_rows' consts, in its order
            [
                1e-12 * cfg.initial_equity,
                con.per_asset_cap,
                self.limits.gross_cap,
                con.crypto_gross_cap,
                *self._carry,
                *self._ruin,
                impact_at_cap(cfg.costs),
            ],
            dtype=np.float64,
        )
        ks = cfg.kill_switch
        self._kill_rule = np.array(  # (trigger, release drawdown, release after bars; 0: never)
            [ks.trigger_drawdown, ks.release_drawdown or 0.0, float(ks.release_after_bars or 0)]
        )
        self._kill_flags = np.array([ks.enabled, ks.release_drawdown is not None, ks.reset_peak_on_release])
        self._all_active = np.ones(n_envs, dtype=bool)  # read-only by contract
        self.rng = np.random.default_rng(seed)
        self.reset()

    # ------------------------------------------------------------------------------------- episodes

    def reset(self, seed: int | None = None, starts: np.ndarray | None = None) -> None:
        """Start fresh episodes in every slot (reseeding the sampler when ``seed`` is given).

        ``starts [B]`` pins each episode's first bar (evaluation replays a split from its start);
        otherwise windows are sampled.
        """
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        b, n = self.n_envs, self.n_assets
        self.start = np.zeros(b, dtype=np.int64)
        self.t = np.zeros(b, dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self.cash = np.zeros(b)
        self.units = np.zeros((b, n))
        self.equity = np.zeros(b)
        self.peak = np.zeros(b)
        self.ruined = np.zeros(b, dtype=bool)
        self.ruin_bar = np.full(b, -1, dtype=np.int64)
        self.episode_costs = np.zeros((b, len(COST_COMPONENTS)))
        self.kill = init_kill_switch(np.ones(b))
        self.reward_state = init_reward_state(b)
        self.reset_envs(np.ones(b, dtype=bool), starts)

    def reset_envs(self, which: np.ndarray, starts: np.ndarray | None = None) -> None:
        """Restart the episodes where ``which [B]`` is True, on sampled windows or at ``starts``."""
        idx = np.flatnonzero(which)
        if idx.size == 0:
            return
        e0 = self.cfg.initial_equity
        last_start = self.data.n_steps - self.cfg.episode_len
        if starts is None:
            starts = self.rng.integers(0, last_start, size=idx.size)
        else:
            starts = (
                np.asarray(starts, dtype=np.int64)[idx] if len(starts) == self.n_envs else np.asarray(starts)
            )
            if starts.shape != idx.shape or (starts < 0).any() or (starts >= last_start).any():
                raise ValueError(
                    f"starts must be {idx.size} bars in [0, {last_start}), got {starts.tolist()}"
                )
        self.start[idx] = starts
        self.t[idx] = starts
        self.steps[idx] = 0
        self.cash[idx] = e0
        self.units[idx] = 0.0
        self.equity[idx] = e0
        self.peak[idx] = e0
        self.ruined[idx] = False
        self.ruin_bar[idx] = -1
        self._any_ruined = bool(self.ruined.any())
        self.episode_costs[idx] = 0.0
        self.kill.peak[idx] = e0
        self.kill.active[idx] = False
        self.kill.bars_active[idx] = 0
        for arr in self.reward_state:
            arr[idx] = 0.0

    # ------------------------------------------------------------------------------------- views

    def weights(self) -> np.ndarray:
        """Current weights ``units * close[t] / equity`` ``[B, N]`` (0 for a ruined, flat account)."""
        return self.units * self._close[self.t] / self._live_equity()[:, None]

    def _live_equity(self) -> np.ndarray:
        """Equity as a divisor: a ruined account holds nothing, so 0 / tiny = 0 instead of 0 / 0 (every
        other account has equity > 0: ruin is declared at or above 0)."""
        if not self._any_ruined:
            return self.equity
        return np.maximum(self.equity, 1e-12 * self.cfg.initial_equity)

    def observe(self) -> Observation:
        """Observation at bar ``t`` of every episode."""
        t = self.t
        dd = np.maximum(1.0 - self.equity / self.peak, 0.0)
        return Observation(
            features=self._features[t],
            weights=self.weights(),
            cash_fraction=self.cash / self._live_equity(),
            drawdown=dd,
            kill_active=self.kill.active.copy(),
            kill_bars=self.kill.bars_active.copy(),
            mask=self._listed[t],
            progress=self.steps / self.cfg.episode_len,
            missing=None if self._missing is None else self._missing[t],
        )

    def equity_identity_error(self) -> np.ndarray:
        """``|cash + sum(units * close) - equity| / |equity|`` per episode (0 up to rounding)."""
        value = self.cash + (self.units * self._close[self.t]).sum(-1)
        return np.abs(value - self.equity) / np.abs(self._live_equity())

    def exit_costs(self) -> ExitCost:
        """The cost of trading every episode's book to zero at its current bar ``t``, at ``close[t]``:
        nothing is changed (evaluation charges it to a window's final equity: ``envs.rollout``).

        Each held position pays :func:`envs.costs.exit_cost_parts` (``trade_cost_parts``, the
        formulas every fill pays, for an exit that must be done in full) on its notional
        ``|units| * close[t]`` at the rates a trade at ``t`` pays (:func:`envs.costs.cost_rates` of
        bar ``t``'s spread, dollar volume and fee), its impact on :func:`exit_dollar_volume` (the
        smaller of the dollar volume known at ``t`` and what bar ``t`` itself traded: the exit fills
        in that bar's close, so a thin last bar prices a thin exit, as a thin fill bar prices an
        in-window fill), as a marketable order (cost multipliers 1), all of it: nothing is dropped
        for participation, a position at or above the cap pays the impact at ``max_participation``
        (the cost model's bound). Where bar ``t`` gives no capacity (a zero dollar volume, a hole
        at the end of a window cut from a longer history) the impact is the one at
        ``max_participation`` too, never the free trade a zero cap would price. A ruined account
        holds nothing and pays 0; a position delisted earlier was closed by ``step`` at its last
        bar, paying the same (:func:`delisting_rates`).
        """
        t = self.t
        notional = np.abs(self.units * self._close[t])  # [B, N]
        notional[self.ruined] = 0.0
        rows, cols = t[:, None], np.arange(self.n_assets)[None, :]
        rates = exit_rates(self.data, self._exit_volume, rows, cols, self._fees, self.cfg.costs)
        parts = exit_costs_at_rates(notional, rates, self.cfg.costs)
        return ExitCost(np.stack([p.sum(-1) for p in parts], axis=-1), notional.sum(-1))

    # ------------------------------------------------------------------------------------- step

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
        entries in the result are meaningless. A ruined episode may be stepped: it stays flat and
        reports ``terminated`` until it is reset.
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
        return self._settle(self._trade(target, fill, spread_mult, slippage_mult), active)

    def _trade(
        self,
        target: np.ndarray,
        fill: np.ndarray | None,
        spread_mult: np.ndarray | float,
        slippage_mult: np.ndarray | float,
    ) -> Trade:
        """Steps 1-4 for every episode (compiled): project onto the constraints (data <= t only;
        assets without a real bar at t or t + 1 inside their life are held), liquidate delistings,
        fill at open t + 1, charge costs, mark to close t + 1, finance, ruin."""
        w_target, new_units, traded, cash, new_equity, costs, ruined, interest = step_rows(
            np.ascontiguousarray(target),
            np.ascontiguousarray(fill, dtype=bool) if fill is not None else self._no_lock,
            fill is not None,
            self.units,
            self.cash,
            self.equity,
            self._any_ruined,  # the divisor of the current weights is _live_equity's
            self.t,
            self.kill.active,
            self.ruined,
            self._multipliers(spread_mult, slippage_mult),
            self._open,
            self._close,
            self._listed,
            self._bar_rates,
            self._rates.fee,
            self._asset_flags,
            self._consts,
            self.limits.group is not None,
            self._last_bar,
            self._delisting_rates,
            self.cash_return,
        )
        return Trade(w_target, traded, new_units, cash, new_equity, costs, ruined, interest)

    def _settle(self, trade: Trade, active: np.ndarray | None) -> StepResult:
        """Step 5: reward, kill switch, bookkeeping (only where ``active``, when given). The
        bookkeeping is one compiled loop (``step_kernel.settle_rows``); the reward stays
        ``rewards.compute_reward``'s."""
        cfg = self.cfg
        new_units, cash, new_equity, costs = trade.units, trade.cash, trade.equity, trade.costs
        equity, ruined = self.equity, trade.ruined
        kill = self.kill
        (
            growth,
            dd,
            peak,
            k_peak,
            k_active,
            k_bars,
            t,
            steps,
            ruin_bar,
            episode_costs,
            now_ruined,
            any_ruin,
        ) = settle_rows(
            equity,
            new_equity,
            1e-12 * cfg.initial_equity,
            ruined,
            self.ruined,
            self.peak,
            kill.peak,
            kill.active,
            kill.bars_active,
            self._kill_rule,
            self._kill_flags,
            self.t,
            self.steps,
            self.ruin_bar,
            self.episode_costs,
            costs,
            self._all_active if active is None else np.ascontiguousarray(active, dtype=bool),
            active is not None,
        )
        log_growth = np.log(growth)
        turnover = turnover_of(trade.traded_notional, equity) if cfg.reward.turnover_penalty else None
        cash_growth = self._cash_log_growth() if cfg.reward.kind == "diff_sharpe" else 0.0
        reward, reward_state = compute_reward(
            cfg.reward, log_growth, dd, self.reward_state, turnover, cash_growth
        )
        if cfg.reward.cost_overrun_lambda > 0:
            overrun = cost_overrun(trade.traded_notional, costs[:, :3].sum(-1), self._envelope_bps)
            weight = cfg.reward.scale * cfg.reward.cost_overrun_lambda
            reward = reward - weight * overrun / np.maximum(equity, 1e-12 * cfg.initial_equity)
        if any_ruin:
            reward = np.where(self.ruined, 0.0, reward)
        self.peak, self.kill, self.t, self.steps = peak, KillSwitchState(k_peak, k_active, k_bars), t, steps
        self.ruin_bar, self.episode_costs = ruin_bar, episode_costs
        if active is None:
            self.units, self.cash, self.equity, self.ruined = new_units, cash, new_equity, ruined
            self.reward_state = reward_state
        else:
            a1, old = np.asarray(active, dtype=bool), self.reward_state
            self.units = np.where(a1[:, None], new_units, self.units)
            self.cash = np.where(a1, cash, self.cash)
            self.equity = np.where(a1, new_equity, self.equity)
            self.ruined = np.where(a1, ruined, self.ruined)
            self.reward_state = RewardState(
                *(np.where(a1, n, o) for n, o in zip(reward_state, old, strict=True))
            )
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

    def _cash_log_growth(self) -> np.ndarray | float:
        """``[B]``: the log growth cash earned over each episode's step (bar ``t + 1``'s rate), 0 at a
        zero rate."""
        if not self._cash_earns:
            return 0.0
        bar = np.minimum(self.t + 1, len(self.cash_return) - 1)
        out: np.ndarray = np.log1p(self.cash_return[bar])
        return out

    def _multipliers(self, spread_mult: np.ndarray | float, slippage_mult: np.ndarray | float) -> np.ndarray:
        """The (spread, slippage) cost multipliers (scalars or broadcastable to ``[B, N]``) as one
        ``[2, B, N]`` float64 array."""
        if all(isinstance(m, float | int) and m == 1 for m in (spread_mult, slippage_mult)):
            return self._full_cost
        shape = self._full_cost.shape[1:]
        return np.stack(
            [np.broadcast_to(np.asarray(m, dtype=np.float64), shape) for m in (spread_mult, slippage_mult)]
        )

    def kill_state(self) -> KillSwitchState:
        """Current kill-switch state (read-only view for observers)."""
        return self.kill

    def rewards_state(self) -> RewardState:
        """Current reward state (read-only view for observers)."""
        return self.reward_state


def exit_rates(
    data: MarketData,
    exit_volume: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    fees: np.ndarray,
    cfg: CostConfig,
) -> CostRates:
    """The rates of an exit of asset ``cols`` at bar ``rows`` (index arrays, broadcast together): that
    bar's spread, liquidity tier and fee (``fees [N]``), its impact and cap on ``exit_volume [T, N]``
    (:func:`exit_dollar_volume`). The window-end exit (:meth:`MarketSimulator.exit_costs`) and a
    delisting's forced close (:func:`delisting_rates`) are priced at these."""
    return cost_rates(
        data.spread_bps[rows, cols],
        data.dollar_volume[rows, cols],
        fees[cols],
        cfg,
        exit_volume[rows, cols],
    )


def delisting_rates(
    data: MarketData, last_bar: np.ndarray, exit_volume: np.ndarray, fees: np.ndarray, cfg: CostConfig
) -> np.ndarray:
    """``[4, N]``: the (spread, slippage base, impact, exit cap) :func:`exit_rates` of each asset at
    its last real bar (``last_bar [N]``). A position still held there is closed at that close and
    pays :func:`envs.costs.exit_cost_parts` at these rates (``step_kernel._fill_into``). Zero for an
    asset without a last bar inside the data."""
    inside = (last_bar >= 0) & (last_bar < data.n_steps)
    cols = np.arange(data.n_assets)
    rates = exit_rates(data, exit_volume, np.where(inside, last_bar, 0), cols, fees, cfg)
    packed = np.stack([rates.spread, rates.slippage_base, rates.impact, rates.fill_cap])
    return np.ascontiguousarray(np.where(inside, packed, 0.0))


def fill_dollar_volume(known: np.ndarray, bar_dollar_volume: np.ndarray | None) -> np.ndarray:
    """``[T, N]``: the dollar volume a fill decided at bar ``t`` is measured against at ``open[t + 1]``:
    the smaller of ``known[t]`` (the dollar volume known at ``t``, ``MarketData.dollar_volume``) and
    ``bar_dollar_volume[t + 1]`` (what the fill bar itself traded; not applied where it is None). The
    last bar has no next one: it keeps ``known``.

    The one statement of that volume: ``envs.costs.cost_rates`` takes both the fill cap
    (``max_participation`` of it) and the impact (participation of it) from it, so a thin fill bar
    that caps a fill also prices it. Only the realised cost of a fill uses it; a decision-time
    estimate cannot see the fill bar and stays on ``known``."""
    volume = np.array(known, dtype=np.float64)
    if bar_dollar_volume is not None:
        volume[:-1] = np.minimum(volume[:-1], np.asarray(bar_dollar_volume, dtype=np.float64)[1:])
    return volume


def exit_dollar_volume(known: np.ndarray, bar_dollar_volume: np.ndarray | None) -> np.ndarray:
    """``[T, N]``: the dollar volume an exit at bar ``t``'s close (``MarketSimulator.exit_costs``) is
    measured against: the smaller of ``known[t]`` (``MarketData.dollar_volume``, the 20-bar average)
    and ``bar_dollar_volume[t]`` (what bar ``t`` itself traded; not applied where it is None).

    The exit's counterpart of :func:`fill_dollar_volume`: an exit fills inside bar ``t``, as a fill
    decided at ``t`` does inside ``t + 1``, so a last bar that traded 1 % of its average prices the
    exit's impact on that 1 % (the average alone would call it as liquid as any other day). Bar ``t``
    is past at the exit, so nothing later is read."""
    volume = np.array(known, dtype=np.float64)
    if bar_dollar_volume is not None:
        volume = np.minimum(volume, np.asarray(bar_dollar_volume, dtype=np.float64))
    return volume


def _validate_data(data: MarketData) -> None:
    """Refuse data the simulator cannot price, naming the field (cheap, once per construction)."""
    for name in ("open", "close"):
        arr = getattr(data, name)
        if not np.isfinite(arr).all() or (arr <= 0).any():
            raise ValueError(f"MarketData.{name} must be finite and > 0 everywhere (fill unlisted bars)")
    hole = hole_bars(data.listed, data.listed_after)
    if hole.any():  # a held position is carried through a hole at these prices: they must not move
        want_open, want_close = carry_close_through_holes(
            data.open, data.close, data.listed, data.listed_after
        )
        bad = hole & ((data.open != want_open) | (data.close != want_close))
        if bad.any():
            t, n = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"MarketData.open/close of {data.symbols[n]!r} at bar {t} (a hole: no bar there, bars "
                f"before and after) are {data.open[t, n]!r}/{data.close[t, n]!r}; both must be the last "
                f"real close {want_close[t, n]!r} (market_data.carry_close_through_holes)"
            )
    if not np.isfinite(data.spread_bps).all() or (data.spread_bps < 0).any():
        raise ValueError("MarketData.spread_bps must be finite and >= 0")
    if not np.isfinite(data.dollar_volume).all() or (data.dollar_volume < 0).any():
        raise ValueError("MarketData.dollar_volume must be finite and >= 0 (0: no fill capacity)")
    bar_volume = data.bar_dollar_volume
    if bar_volume is not None and (not np.isfinite(bar_volume).all() or (bar_volume < 0).any()):
        raise ValueError("MarketData.bar_dollar_volume must be finite and >= 0 (0: no fill capacity)")
    if not np.isfinite(data.features).all():
        raise ValueError("MarketData.features must be finite (NaN replaced by 0)")
    bad = sorted(set(data.asset_class) - {"equity", "crypto"})
    if bad:
        raise ValueError(f"MarketData.asset_class has unknown classes {bad}; expected equity or crypto")
