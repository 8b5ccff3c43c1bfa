"""Scenario generators for stress evaluation and adversarial training (pure numpy, seeded).

Design decisions
----------------
* Every generator takes a ``numpy.random.Generator`` and nothing else random: same seed, same output.
  Inputs are never mutated; new arrays are returned.
* ``regime_block_bootstrap`` resamples whole cross-sections (rows ``[t, :]``) so cross-asset
  correlation inside a row is kept; blocks are contiguous runs of source rows, which keeps
  short-range autocorrelation. A regime pool too small for its block length is refused (never
  widened): replaying a handful of rows compounds the same bar again and again.
* A halt is not dropped from a bootstrap (``simple_returns``): the bar that reopens an asset after a
  hole carries the whole move from its last real close, and one draw of that row is that one move,
  as it happened: a holder cannot trade inside a halt, so spreading the gap over the hole's bars (or
  scaling it to one bar) would let a path exit half-way and understate the loss of exactly the
  halted, thin names stress is for. The row counts as one row of its pool, as every row does: rows
  are whole cross-sections (one bar for every other asset on it), and the hole's own rows stay in
  the pool with the asset unlisted, so a block walking through the halt replays it bar by bar.
  A listing bar (no real bar before it) has no move and stays out.
* ``inject_crisis`` shocks close-to-close *log* returns inside a window and rebuilds prices from
  them with ``exp``, so prices stay positive; after the window, returns are the original ones (the
  level shift the crisis caused persists). A named crisis states its move (``loss`` over ``length``
  bars at ``vol_mult`` volatility) and the trend is built so that every draw reaches it.
* ``apply_scenario`` works on ``MarketData``: prices, spreads, the listing mask, the regime label,
  the price-derived features and the baseline forecaster's forecasts (with the gate and sizing read
  from them), rebuilt from the new prices by the ingest feature functions
  (``envs.stress_features``) so a policy and the ``kelly_lite`` baseline see the stressed market
  they are scored on. The volatility index and sector momentum move with the rebuilt
  volatility and returns; imported forecasts and high/low based features keep their values.
* ``scenario_draws`` returns ``ScenarioConfig.draws`` draws with distinct seeds, a crisis with
  ``start_jitter`` at distinct starts while it has that many (``crisis_starts``): stress results are
  reported as a spread over draws.
* A scenario this data cannot carry (a regime pool too small or empty, a window longer than the
  data) raises ``ScenarioDataError``, an ``InputError``: a refusal about the data, which an
  evaluation reports as the scenario's result and moves on. Other ``ValueError``s are bad arguments.

Regime codes: 0 calm, 1 choppy, 2 crisis (as in ``MarketData.regime_code``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raytrade.envs.market_data import (
    MarketData,
    bars_before_slice,
    carry_close_through_holes,
    last_listed_bar,
)
from raytrade.envs.stress_features import with_stressed_features
from raytrade.replay.errors import InputError
from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.regime import REGIME_LABELS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

N_REGIMES = 3
MIN_POOL_BLOCKS = 2
"""A regime pool must hold at least this many blocks' worth of rows (see ``regime_block_bootstrap``):
two is the fewest in which two different full blocks fit, so consecutive blocks can always differ."""
NO_REGIME = -1
"""Per-row regime of a row with no finite return: such rows are never drawn."""


class ScenarioDataError(InputError):
    """The data cannot carry the scenario (too few bars for its window, a regime pool too small or
    empty for its blocks); the message names the scenario's parameter and the data's size. Not a bug
    and not a bad argument: another store or split may carry it."""


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapDraw:
    """One bootstrap path of ``n_steps`` rows.

    ``returns[i] == source_returns[index[i]]`` (whole rows, NaN where the source row is NaN) and
    ``regime[i]`` is the per-row regime of ``index[i]``.
    """

    returns: FloatArray  # [n_steps, N]
    index: IntArray  # [n_steps] source rows
    regime: IntArray  # [n_steps]
    block_start: BoolArray  # [n_steps] True where a new block starts


def row_regimes(regime_code: npt.ArrayLike, returns: npt.ArrayLike) -> IntArray:
    """One regime per row from ``regime_code`` ``[T]`` or ``[T, N]``.

    For ``[T, N]`` the row's regime is the most frequent code among assets whose return is finite
    (ties go to the more severe regime); codes of NaN (unlisted) entries are ignored. A row with no
    finite return gets ``NO_REGIME`` (-1) in both cases.
    """
    r = np.asarray(returns, dtype=np.float64)
    codes = np.asarray(regime_code)
    finite = np.isfinite(r)
    has_data = finite.any(axis=1)
    if codes.ndim == 1:
        if codes.shape != (r.shape[0],):
            raise ValueError(f"regime_code has shape {codes.shape}, expected ({r.shape[0]},) or {r.shape}")
        _check_codes(codes)
        out = codes.astype(np.int64)
    elif codes.shape == r.shape:
        _check_codes(codes[finite])
        counts = np.stack([((codes == k) & finite).sum(axis=1) for k in range(N_REGIMES)], axis=1)
        out = (N_REGIMES - 1 - np.argmax(counts[:, ::-1], axis=1)).astype(np.int64)
    else:
        raise ValueError(f"regime_code has shape {codes.shape}, expected ({r.shape[0]},) or {r.shape}")
    return np.where(has_data, out, NO_REGIME).astype(np.int64)


def _check_codes(codes: np.ndarray) -> None:
    bad = (codes < 0) | (codes >= N_REGIMES)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"regime_code contains {int(codes.ravel()[i])}; codes are 0 calm, 1 choppy, 2 crisis"
        )


def _transition_matrix(path: IntArray) -> tuple[FloatArray, FloatArray]:
    """Empirical first-order transition matrix and regime frequencies of ``path`` (``-1`` skipped)."""
    counts = np.zeros((N_REGIMES, N_REGIMES))
    valid = (path[:-1] >= 0) & (path[1:] >= 0)
    np.add.at(counts, (path[:-1][valid], path[1:][valid]), 1.0)
    freq = np.bincount(path[path >= 0], minlength=N_REGIMES).astype(np.float64)
    for k in range(N_REGIMES):
        if counts[k].sum() == 0.0:
            counts[k, k] = 1.0  # never left (or only seen last): stay
    return counts / counts.sum(axis=1, keepdims=True), freq / freq.sum()


def _simulate_regimes(path: IntArray, n_steps: int, rng: np.random.Generator) -> IntArray:
    trans, freq = _transition_matrix(path)
    out = np.empty(n_steps, dtype=np.int64)
    if n_steps == 0:
        return out
    out[0] = rng.choice(N_REGIMES, p=freq)
    for i in range(1, n_steps):
        out[i] = rng.choice(N_REGIMES, p=trans[out[i - 1]])
    return out


def regime_block_bootstrap(
    returns: npt.ArrayLike,
    regime_code: npt.ArrayLike,
    block_len: int,
    n_steps: int,
    rng: np.random.Generator,
    regime: int | None = None,
    stationary: bool = True,
    min_pool_blocks: int = MIN_POOL_BLOCKS,
) -> BootstrapDraw:
    """Block-bootstrap whole cross-sections of ``returns`` ``[T, N]``, conditioned on regime.

    Pools: for each regime ``k`` the rows whose per-row regime (``row_regimes``) is ``k``, in time
    order. A pool splits into *runs*: maximal stretches of consecutive source rows. A block is a
    contiguous source run: it starts at a drawn pool position and walks forward one source row per
    step until its length is reached or its run ends (it never jumps a gap and never wraps). With
    ``stationary=True`` block lengths are geometric with mean ``block_len`` (Politis-Romano) and a
    block may start at any pool position; otherwise blocks have exactly ``block_len`` rows and start
    only where a run still holds ``block_len`` rows.

    A new block's start is uniform over the allowed starts except two: the row just drawn (so no row
    is ever drawn twice in a row) and the previous block's start in the same regime (so a block is
    never repeated back-to-back). Hence ``index[i] != index[i - 1]`` for every ``i``, and inside a
    block ``index[i] == index[i - 1] + 1``.

    Small pools are refused, not widened: a pool with fewer than ``min_pool_blocks * block_len`` rows
    (or, with fixed blocks, fewer than 2 allowed starts) raises ``ScenarioDataError`` naming the
    regime, the pool size and the block length. A tiny pool would replay the same few rows over and
    over (one +20 % bar compounding every few steps), and widening it to other regimes would silently
    turn a crisis path into a mostly calm one; the caller should pass a longer history or a shorter
    block.

    * ``regime=k``: every drawn row comes from regime ``k``'s pool. ``ScenarioDataError`` if it is
      empty or too small.
    * ``regime=None``: a regime path is simulated from the empirical first-order transition matrix of
      the per-row regimes (first state from their empirical frequencies); each step draws from its
      regime's pool and a regime change starts a new block. Every regime that has rows must pass the
      pool-size check.

    Each drawn row is a whole source row, so every asset's return on the path is one of its own
    source returns (inside its source min/max), and NaN entries (unlisted assets) travel with their
    row: ``out.returns[i]`` is NaN exactly where ``returns[out.index[i]]`` is NaN, so the listing mask
    of the path is the source rows' mask. Rows with no finite return are never drawn.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be 2-D [T, N], got shape {r.shape}")
    inf = np.isinf(r)
    if inf.any():
        t, n = (int(i) for i in np.argwhere(inf)[0])
        raise ValueError(
            f"returns[{t}, {n}] = {float(r[t, n])!r} is infinite (NaN marks unlisted, inf is an error)"
        )
    if block_len < 1:
        raise ValueError(f"block_len must be >= 1, got {block_len!r}")
    if min_pool_blocks < 1:
        raise ValueError(f"min_pool_blocks must be >= 1, got {min_pool_blocks!r}")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps!r}")
    if regime is not None and regime not in range(N_REGIMES):
        raise ValueError(f"regime must be 0, 1, 2 or None, got {regime!r}")
    per_row = row_regimes(regime_code, r)
    pools = [np.flatnonzero(per_row == k) for k in range(N_REGIMES)]
    if regime is not None:
        if pools[regime].size == 0:
            raise ScenarioDataError(f"regime={regime}: no row of returns is in that regime")
        used = [regime]
        path = np.full(n_steps, regime, dtype=np.int64)
    else:
        if not (per_row >= 0).any():
            raise ScenarioDataError("returns has no row with a finite value to draw from")
        used = [k for k in range(N_REGIMES) if pools[k].size > 0]
        path = _simulate_regimes(per_row, n_steps, rng)
    run_end = [_run_ends(pool) for pool in pools]
    starts = {k: _allowed_starts(run_end[k], block_len, stationary) for k in used}
    for k in used:
        _check_pool(k, pools[k].size, starts[k].size, block_len, min_pool_blocks)

    index = np.empty(n_steps, dtype=np.int64)
    is_start = np.zeros(n_steps, dtype=bool)
    pos, remaining, current = 0, 0, NO_REGIME
    last_start = dict.fromkeys(range(N_REGIMES), -1)
    for i in range(n_steps):
        k = int(path[i])
        if remaining == 0 or k != current or pos == run_end[k][pos]:
            last_pos = pos if k == current else -1
            pos = _draw_start(starts[k], (last_pos, last_start[k]), last_pos, rng)
            last_start[k] = pos
            remaining = int(rng.geometric(1.0 / block_len)) if stationary else block_len
            current = k
            is_start[i] = True
        else:
            pos += 1
        index[i] = pools[k][pos]
        remaining -= 1
    return BootstrapDraw(returns=r[index].copy(), index=index, regime=per_row[index], block_start=is_start)


def _run_ends(pool: IntArray) -> IntArray:
    """For each pool position, the position of the last row of its run of consecutive source rows."""
    if pool.size == 0:
        return np.empty(0, dtype=np.int64)
    last = np.flatnonzero(np.append(np.diff(pool) != 1, True))  # positions that end a run
    return last[np.searchsorted(last, np.arange(pool.size))].astype(np.int64)


def _allowed_starts(run_end: IntArray, block_len: int, stationary: bool) -> IntArray:
    positions = np.arange(run_end.size)
    if stationary:
        return positions
    return positions[run_end - positions + 1 >= block_len]


def _check_pool(regime: int, size: int, n_starts: int, block_len: int, min_pool_blocks: int) -> None:
    need = min_pool_blocks * block_len
    if size < need or n_starts < 2:
        why = (
            f"fewer than min_pool_blocks={min_pool_blocks} blocks of block_len={block_len} ({need} rows)"
            if size < need
            else f"its runs of consecutive rows allow {n_starts} start(s) of a block of block_len={block_len}"
        )
        raise ScenarioDataError(
            f"regime {regime} ({REGIME_LABELS[regime]}) pool has {size} rows, {why}: a path drawn from it "
            "would repeat the same rows; pass a longer history or a shorter block_len"
        )


def _draw_start(starts: IntArray, avoid: tuple[int, int], must_avoid: int, rng: np.random.Generator) -> int:
    """A uniform start outside ``avoid``; only ``must_avoid`` (the row just drawn) when that empties it."""
    candidates = starts[~np.isin(starts, avoid)]
    if candidates.size == 0:
        candidates = starts[starts != must_avoid]
    return int(candidates[rng.integers(candidates.size)])


# --------------------------------------------------------------------------- crisis injection


@dataclass(frozen=True)
class CrisisPrices:
    """Prices and spreads after ``inject_crisis``; ``high``/``low`` are ``None`` when not given."""

    open: FloatArray  # [T, N]
    close: FloatArray  # [T, N]
    spread_bps: FloatArray  # [T, N]
    high: FloatArray | None
    low: FloatArray | None


def _positive_2d(values: npt.ArrayLike, name: str, shape: tuple[int, ...] | None) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected 2-D {shape or '[T, N]'}")
    bad = ~(np.isfinite(arr) & (arr > 0.0))
    if bad.any():
        t, n = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{t}, {n}] = {float(arr[t, n])!r} must be finite and > 0")
    return arr


def inject_crisis(
    open: npt.ArrayLike,
    close: npt.ArrayLike,
    spread_bps: npt.ArrayLike,
    *,
    start: int,
    length: int,
    vol_mult: float,
    corr_target: float | None,
    spread_mult: float,
    drift: float,
    rng: np.random.Generator,
    high: npt.ArrayLike | None = None,
    low: npt.ArrayLike | None = None,
    listed: npt.ArrayLike | None = None,
    loss: float | None = None,
    listed_after: npt.ArrayLike | None = None,
    max_bar_vol: float | None = None,
) -> CrisisPrices:
    """Shock rows ``start .. start + length - 1`` of ``[T, N]`` price arrays.

    Window returns are close-to-close log returns ``x[t, n] = log(close[t, n] / close[t - 1, n])``,
    so ``start >= 1``. Each asset is shocked over its *span*: the window rows after its eve and up to
    its last real bar (every window row when ``listed`` is None):

    * eve: row ``start - 1``, or, for an asset whose first real bar ``f`` is inside the window (it
      lists there), ``f``: its listing price is kept (there is no earlier close to shock it from)
      and the rows after it are its span, so it is not spared;
    * end: the window's last row, or the asset's last real bar when it delists inside the window
      (``market_data.last_listed_bar``, with ``listed_after`` for data cut from a longer history):
      its last price, at which the simulator liquidates a holding, is shocked, and the prices filled
      after it stay flat at that shocked price;
    * a hole inside the span (a halt, a data gap: ``listed`` False between real bars) is part of it:
      the shock path goes on through the halted rows, the hole's prices are then carried at the last
      real shocked close (``market_data.carry_close_through_holes``, as ``MarketData`` requires), and
      the reopen bar's open carries the whole shock accumulated while halted.

    With ``mu`` and ``sigma`` (``ddof=1``; 0 for a span of one row) the mean and standard deviation
    of an asset's returns over its span:

    1. standardise ``z = (x - mu) / sigma`` (``z = 0`` for an asset with ``sigma == 0``);
    2. correlation shock: with ``c0`` the average pairwise correlation of ``z`` (see below),
       ``w = (corr_target - c0) / (1 - c0)`` and a common factor ``f`` per row (``length`` draws of
       ``N(0, 1)`` from ``rng``, standardised to sample mean 0 and standard deviation 1),
       ``z' = sqrt(1 - w) z + sqrt(w) f``, which has unit variance and average pairwise correlation
       ``c0 + w (1 - c0) = corr_target`` in expectation, and a window sum of exactly 0. ``c0`` is
       measured over the assets whose span is the whole window; an asset with a shorter span gets
       ``f`` minus its mean over the span, so its ``z'`` sums to 0 over its span. Skipped
       (``w = 0``) when ``corr_target`` is None, below ``c0``, or fewer than 2 assets span the window;
    3. volatility shock and trend: ``x' = m + g * sigma * z'``, so the window's standard deviation
       becomes ``g`` times the original (in expectation when the factor is blended, exactly
       otherwise) and, as ``z'`` sums to 0, the span's total log return is exactly
       ``span length * m``. ``g`` is ``vol_mult``, or, with ``max_bar_vol`` (a ceiling on a bar's
       standard deviation), ``min(vol_mult, max_bar_vol / sigma)`` but never below
       ``min(vol_mult, 1)``: the shock raises no asset's volatility past the ceiling, and lowers none
       that is already above it (a 6 % a day stock at 3x would be 18 % a day, and its window's
       random-walk excursions, ±100 % and more, were rallies of the whole index inside a crash);

       * ``loss=None``: ``m = mu + drift`` (the span's own trend plus ``drift``, an extra log return
         per bar, ``-0.01`` ~ -1 %/bar);
       * ``loss=D``: ``m = min(sum(x), log(1 - D)) / span length`` (sums over the span; ``drift``
         must be 0). Every asset ends its span at most ``1 - D`` times its close on its eve, and never
         above its own unshocked price there. So the equal-weight index of the assets listed through
         the window (mean of ``close' / close'[start - 1]``) loses at least ``D`` from its peak (it
         starts at 1 and ends at most ``1 - D``), whatever the draw, and every price from the window's
         end on is at most the unshocked one, so buy-and-hold ends no higher than on the unshocked path.

    Prices are rebuilt with ``k[t] = exp(cumsum(x' - x))``, ``x' - x`` taken as 0 outside the span
    (so ``k`` is 1 up to the eve and constant after the span's end):
    ``close' = close * k[t]``, ``open' = open * k[t - 1]``, i.e. the overnight gap
    ``open[t] / close[t - 1]`` is kept and the shock lands between open and close. ``high``/``low``
    keep their distance from the bar body: ``high' = max(open', close') * high / max(open, close)``
    (and ``min`` for ``low``). An asset that never has a real bar in the window is untouched; the
    listing mask is not changed. ``spread_bps`` is multiplied by
    ``spread_mult`` on every window row for every asset and untouched elsewhere.
    """
    o = _positive_2d(open, "open", None)
    c = _positive_2d(close, "close", o.shape)
    s = np.asarray(spread_bps, dtype=np.float64)
    if s.shape != o.shape:
        raise ValueError(f"spread_bps has shape {s.shape}, expected {o.shape}")
    t_total, n_assets = o.shape
    if start < 1 or length < 2 or start + length > t_total:
        raise ValueError(
            f"window start={start!r}, length={length!r} must satisfy 1 <= start, length >= 2, "
            f"start + length <= T={t_total}"
        )
    for name, value in (("vol_mult", vol_mult), ("spread_mult", spread_mult)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if not math.isfinite(drift):
        raise ValueError(f"drift must be finite, got {drift!r}")
    if loss is not None and not 0.0 < loss < 1.0:
        raise ValueError(f"loss must be in (0, 1) or None, got {loss!r}")
    if loss is not None and drift != 0.0:
        raise ValueError(f"drift={drift!r} and loss={loss!r} are exclusive: loss sets the window's trend")
    if corr_target is not None and not -1.0 < corr_target < 1.0:
        raise ValueError(f"corr_target must be in (-1, 1) or None, got {corr_target!r}")
    if max_bar_vol is not None and not (math.isfinite(max_bar_vol) and max_bar_vol > 0.0):
        raise ValueError(f"max_bar_vol must be finite and > 0 or None, got {max_bar_vol!r}")
    lst = np.ones(o.shape, dtype=bool) if listed is None else np.asarray(listed, dtype=bool)
    if lst.shape != o.shape:
        raise ValueError(f"listed has shape {lst.shape}, expected {o.shape}")
    after = None if listed_after is None else np.asarray(listed_after, dtype=bool)
    if after is not None and after.shape != (n_assets,):
        raise ValueError(f"listed_after has shape {after.shape}, expected ({n_assets},)")

    window = slice(start, start + length)
    span = _shock_span(lst, after, start, length)  # [L, N]
    n_span = span.sum(axis=0)
    full = n_span == length
    x = np.log(c[window] / c[start - 1 : start + length - 1])  # [L, N]
    count = np.maximum(n_span, 1)
    mu = np.where(span, x, 0.0).sum(axis=0) / count
    dev = np.where(span, x - mu, 0.0)
    sigma = np.where(n_span >= 2, np.sqrt((dev**2).sum(axis=0) / np.maximum(n_span - 1, 1)), 0.0)
    safe_sigma = np.where(sigma > 0.0, sigma, 1.0)
    z = np.where(span & (sigma > 0.0), dev / safe_sigma, 0.0)

    weight = 0.0
    factor = rng.standard_normal(length)  # drawn even when unused: the rng stream stays stable
    factor = (factor - factor.mean()) / factor.std(ddof=1)
    span_factor_mean = np.where(span, factor[:, None], 0.0).sum(axis=0) / count
    span_factor = np.where(span, factor[:, None] - np.where(full, 0.0, span_factor_mean), 0.0)
    active = full & (sigma > 0.0)
    if corr_target is not None and active.sum() >= 2:
        c0 = _mean_pairwise_corr(z[:, active])
        if corr_target > c0:
            weight = (corr_target - c0) / (1.0 - c0)
    z_new = math.sqrt(1.0 - weight) * z + math.sqrt(weight) * span_factor * (sigma > 0.0)
    span_sum = np.where(span, x, 0.0).sum(axis=0)
    trend = mu + drift if loss is None else np.minimum(span_sum, math.log1p(-loss)) / count
    x_new = trend + _vol_gain(sigma, vol_mult, max_bar_vol) * sigma * z_new
    delta = np.where(span, x_new - x, 0.0)

    k = np.ones((t_total, n_assets))
    k[window] = np.exp(np.cumsum(delta, axis=0))
    k[start + length :] = k[start + length - 1]
    k_prev = np.vstack([np.ones((1, n_assets)), k[:-1]])
    new_open = o * k_prev
    new_close = c * k
    if listed is not None:  # a hole stays priced at its last real close: the reopen takes the shock
        new_open, new_close = carry_close_through_holes(new_open, new_close, lst, after)
    new_spread = s.copy()
    new_spread[window] *= spread_mult

    new_high = new_low = None
    if high is not None:
        h = _positive_2d(high, "high", o.shape)
        new_high = np.maximum(new_open, new_close) * h / np.maximum(o, c)
    if low is not None:
        lo = _positive_2d(low, "low", o.shape)
        new_low = np.minimum(new_open, new_close) * lo / np.minimum(o, c)
    return CrisisPrices(open=new_open, close=new_close, spread_bps=new_spread, high=new_high, low=new_low)


def _vol_gain(sigma: FloatArray, vol_mult: float, max_bar_vol: float | None) -> FloatArray:
    """``[N]``: the factor each asset's window volatility is multiplied by (``inject_crisis`` step 3)."""
    gain = np.full(sigma.shape, vol_mult)
    if max_bar_vol is None:
        return gain
    to_ceiling = max_bar_vol / np.where(sigma > 0.0, sigma, np.inf)  # sigma 0: z' is 0, any gain
    return np.maximum(np.minimum(gain, to_ceiling), min(vol_mult, 1.0))


def _shock_span(listed: BoolArray, listed_after: BoolArray | None, start: int, length: int) -> BoolArray:
    """``[length, N]``: the window rows ``start ..`` on which each asset is shocked (``inject_crisis``):
    after its eve (``start - 1``, or its first real bar when it lists inside the window) up to its
    last real bar (``market_data.last_listed_bar``) or the window's end; holes inside count."""
    has_bar = listed.any(axis=0)
    first = np.where(has_bar, listed.argmax(axis=0), listed.shape[0])
    eve = np.maximum(first, start - 1)
    end = np.minimum(last_listed_bar(listed, listed_after), start + length - 1)
    rows = np.arange(start, start + length)[:, None]
    return np.asarray((rows > eve) & (rows <= end), dtype=bool)


def _mean_pairwise_corr(values: FloatArray) -> float:
    """Average off-diagonal correlation of the columns of ``values`` ``[L, N]``, ``N >= 2``."""
    corr = np.atleast_2d(np.corrcoef(values, rowvar=False))
    n = corr.shape[0]
    return float((corr.sum() - np.trace(corr)) / (n * (n - 1)))


def mean_pairwise_corr(values: npt.ArrayLike) -> float:
    """Average pairwise correlation of the columns of a 2-D array (``nan`` with < 2 columns)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"values must be 2-D, got shape {arr.shape}")
    return math.nan if arr.shape[1] < 2 else _mean_pairwise_corr(arr)


# --------------------------------------------------------------------------- named scenarios


class CrisisScenario(BaseModel):
    """A window of ``inject_crisis`` placed on the data: the market move it stands for, as fields.

    ``loss`` over ``length`` bars with volatility times ``vol_mult`` is the move: every draw's
    equal-weight index of the assets listed through the window falls at least ``loss`` from its peak
    inside the window (``inject_crisis`` builds the trend instead of hoping a random draw finds it),
    and an asset that halts, lists or delists inside the window loses ``loss`` over the part of the
    window it is listed in (``inject_crisis``: its span).
    ``loss=None`` keeps the window's own trend plus ``drift`` (a volatility shock, not a crash).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["crisis"] = "crisis"
    start_frac: float = Field(0.5, ge=0.0, lt=1.0, description="window start as a fraction of T")
    start_jitter: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="each draw starts the window uniformly within ±j of T around start_frac, among the "
        "starts that fit (crisis_starts; 0: every draw at start_frac)",
    )
    length: int = Field(ge=2, description="window length in bars")
    loss: float | None = Field(
        None, gt=0.0, lt=1.0, description="equal-weight peak-to-trough loss (fraction) the window reaches"
    )
    vol_mult: float = Field(ge=0.0, description="window volatility multiplier")
    max_vol: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description="annualised ceiling on an asset's window volatility: vol_mult raises none past it "
        "and lowers none already above it, in expectation where corr_target blends in the common factor "
        "(None: vol_mult for every asset)",
    )
    corr_target: float | None = Field(None, gt=-1.0, lt=1.0, description="average pairwise corr")
    spread_mult: float = Field(1.0, ge=0.0, description="spread multiplier inside the window")
    drift: float = Field(0.0, description="extra log return per bar inside the window (loss=None only)")
    regime_label: int | None = Field(2, ge=0, le=2, description="regime_code written in the window")

    @model_validator(mode="after")
    def _loss_or_drift(self) -> CrisisScenario:
        if self.loss is not None and self.drift != 0.0:
            raise ValueError(
                f"drift={self.drift!r} and loss={self.loss!r} are exclusive: loss sets the window's trend"
            )
        return self


class BootstrapScenario(BaseModel):
    """A ``regime_block_bootstrap`` path replacing the data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["bootstrap"] = "bootstrap"
    regime: int | None = Field(2, ge=0, le=2, description="regime to draw from; None follows transitions")
    block_len: int = Field(10, ge=1, description="mean block length in bars")
    n_steps: int | None = Field(None, ge=2, description="path length in bars; None keeps T")
    min_pool_blocks: int = Field(
        MIN_POOL_BLOCKS, ge=1, description="blocks' worth of rows a regime pool needs, else refused"
    )


Scenario = Annotated[CrisisScenario | BootstrapScenario, Field(discriminator="kind")]


def _default_scenarios() -> dict[str, Scenario]:
    return {
        # Months of high, correlated volatility with a steady decline and wide spreads: the equal-weight
        # index loses at least 30 % over 120 bars (about half a year) at 3x volatility, capped at 80 % a
        # year per stock (the VIX's 2008 peak, an index's: single names, financials first, ran higher, so
        # this is a stylised ceiling, not 2008's worst): uncapped, a 6 %-a-day stock ran at 18 % a day
        # and its random walk lifted the whole index +47 % above the window's eve in the median draw
        # before the crash, +631 % in one (../shared/data/yahoo, 2026-12-05). Each draw starts it
        # elsewhere: the correlation factor is its only other randomness, and where the data's own
        # correlation already exceeds the target there is none, so without a moving window its draws
        # were one path.
        "crisis_2008_like": CrisisScenario(
            length=120,
            loss=0.30,
            vol_mult=3.0,
            max_vol=0.8,
            corr_target=0.7,
            spread_mult=3.0,
            start_jitter=0.25,
        ),
        # A sharp, highly correlated drop with very wide spreads: at least 10 % in 3 bars, no rebound,
        # on a different day of the window in each draw (as above); volatility capped at 150 % a year.
        "flash_crash": CrisisScenario(
            length=3,
            loss=0.10,
            vol_mult=4.0,
            max_vol=1.5,
            corr_target=0.9,
            spread_mult=10.0,
            start_jitter=0.25,
        ),
        # A month of doubled-plus volatility up to 150 % a year, correlation and trend unchanged (no
        # stated loss). Nothing in the shock itself is random, so each draw places the month elsewhere.
        "vol_spike": CrisisScenario(
            length=20, vol_mult=2.5, max_vol=1.5, spread_mult=2.0, regime_label=1, start_jitter=0.3
        ),
        # A path made only of historical crisis-regime rows.
        "bootstrap_crisis": BootstrapScenario(regime=2, block_len=10),
    }


class ScenarioConfig(BaseModel):
    """Named stress scenarios; ``model_validate`` a dict to override or add entries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenarios: dict[str, Scenario] = Field(default_factory=_default_scenarios)
    draws: int = Field(5, ge=1, description="draws per scenario (distinct seeds) that stress results pool")
    feature_config: FeatureConfig = Field(
        default_factory=FeatureConfig, description="feature windows the store was built with"
    )

    def get(self, name: str) -> CrisisScenario | BootstrapScenario:
        try:
            return self.scenarios[name]
        except KeyError:
            raise ValueError(f"unknown scenario {name!r}; known: {sorted(self.scenarios)}") from None


def last_real_close(market_data: MarketData) -> FloatArray:
    """``[T, N]``: each asset's close on its last real bar (``listed``) strictly before each bar, from
    the data's own bars or its ``close_before``/``listed_before``; NaN where it has none (on and before
    its first real bar: a listing)."""
    close = np.asarray(market_data.close, dtype=np.float64)
    listed = np.asarray(market_data.listed, dtype=bool)
    k = 0
    if market_data.close_before is not None and market_data.listed_before is not None:
        k = market_data.close_before.shape[0]
        close = np.vstack([market_data.close_before, close])
        listed = np.vstack([market_data.listed_before, listed])
    if close.shape[0] == 0:
        return np.full(close.shape, np.nan)
    rows = np.where(listed, np.arange(close.shape[0])[:, None], -1)
    last = np.maximum.accumulate(rows, axis=0)  # the last real bar up to and including each bar
    prev = np.vstack([np.full((1, close.shape[1]), -1), last[:-1]])  # strictly before
    values = np.take_along_axis(close, np.maximum(prev, 0), axis=0)
    return np.where(prev >= 0, values, np.nan)[k:]


def simple_returns(market_data: MarketData) -> FloatArray:
    """Close-to-close simple returns ``[T, N]``: ``close[t] / c - 1`` with ``c`` the asset's close on
    its last real bar before ``t`` (``last_real_close``), on every bar ``t >= 1`` that is listed.

    A bar right after a hole (a halt, a data gap) carries the whole move from the last real close
    before the hole to its own close, assigned to that reopen bar, as a holder lives it (a stock
    halted on bad news that reopens -40 % is one -40 % bar). NaN on row 0 (a bootstrap needs the bar
    before a drawn row), where ``t`` is unlisted and on an asset's listing bar (no real bar before it).
    """
    out = np.full(market_data.close.shape, np.nan)
    prev = last_real_close(market_data)[1:]
    ok = np.asarray(market_data.listed[1:], dtype=bool) & np.isfinite(prev)
    out[1:] = np.where(ok, market_data.close[1:] / np.where(ok, prev, 1.0) - 1.0, np.nan)
    return out


def apply_scenario(
    name: str,
    market_data: MarketData,
    rng: np.random.Generator,
    config: ScenarioConfig | None = None,
    history: MarketData | None = None,
    start: int | None = None,
) -> MarketData:
    """Return a new ``MarketData`` with scenario ``name`` of ``config`` (defaults when None) applied.

    Crisis: the window starts at ``start`` (``scenario_draws`` places its draws' windows together), else
    where :func:`crisis_starts` draws one (at ``start_frac`` of the data, and nothing drawn, when
    ``start_jitter`` is 0; else uniformly among the starts within ``start_jitter`` of it that fit);
    ``inject_crisis`` shocks open/close of every asset over the window rows it is listed in (halts
    inside included; ``listed`` is unchanged) and every spread, and the observed ``spread_bps`` feature
    by the same ``spread_mult``; ``regime_code`` is set to ``regime_label`` in the window (unless None).
    Bootstrap: rows are drawn from ``simple_returns(history or market_data)``; prices are rebuilt from
    ``close[0]`` by compounding each drawn row's return, with the drawn row's overnight gap (``open[s] /
    c`` with ``c`` the last real close before ``s``, ``last_real_close``: a reopen's open carries the
    gap across its halt); ``listed`` is where the drawn row has a return (its real bars, less listing
    bars: a reopen after a hole is listed, with the hole's whole move); ``spread_bps``, both dollar
    volumes, ``regime_code``, ``forecast_fallback`` and the features not derived from prices are the
    drawn rows' values. An asset unlisted on a drawn row keeps its previous price (the simulator masks
    it). ``ts`` is the window's own calendar (:func:`path_calendar`). Its ``close_before``
    (``kelly_lite``'s sigma history) is the source's bars before the first drawn row, scaled to join the
    path at ``close[0]``.

    Both rebuild the price-derived features (``envs.stress_features.PRICE_FEATURES``) and, on the
    cells whose stored forecast is the baseline forecaster's (``MarketData.forecast_fallback``; a
    bootstrap row: its drawn row's), the forecast columns (``FORECAST_FEATURES``) from the new prices
    on every changed row (crisis: from the window start; bootstrap: all rows), with the ingest
    feature functions and ``config.feature_config``; an imported forecast keeps its stored (for a
    bootstrap, drawn) value. ``history`` (same assets, everything up to the window's end) supplies
    the warm-up bars before ``market_data.ts[0]`` those rolling windows and EWMAs need,
    and is where a bootstrap draws its rows from (a short window rarely holds enough bars of the
    requested regime). ``regime_code`` is the scenario's label, not recomputed.
    """
    cfg = config or ScenarioConfig()
    scenario = cfg.get(name)
    if history is not None and history.symbols != market_data.symbols:
        raise ValueError("history must hold the same assets, in the same order, as market_data")
    if start is not None and not isinstance(scenario, CrisisScenario):
        raise ValueError(f"start={start!r} places a crisis window; scenario {name!r} is a bootstrap")
    if isinstance(scenario, CrisisScenario):
        shocked, from_row = _apply_crisis(scenario, market_data, rng, start)
    else:
        shocked, from_row = _apply_bootstrap(scenario, market_data, rng, history or market_data), 0
    return with_stressed_features(shocked, from_row, history, cfg.feature_config)


def scenario_draws(
    name: str,
    market_data: MarketData,
    seed: int | Sequence[int],
    config: ScenarioConfig | None = None,
    history: MarketData | None = None,
) -> tuple[MarketData, ...]:
    """``config.draws`` independent ``apply_scenario`` results, draw ``j`` seeded by child ``j`` of
    ``SeedSequence(seed)``: stress results are a spread over draws, never one lucky (or unlucky) path.
    A crisis with jitter starts its draws at different bars (:func:`crisis_starts`, drawn from one
    more child), as long as the window has that many starts: independent draws met on one start, so
    two of five draws could be one path."""
    cfg = config or ScenarioConfig()
    *children, placing = np.random.SeedSequence(seed).spawn(cfg.draws + 1)
    scenario = cfg.get(name)
    starts: list[int | None] = [None] * cfg.draws
    if isinstance(scenario, CrisisScenario):  # data too short for the window: refused there
        starts = [*crisis_starts(scenario, market_data.n_steps, cfg.draws, np.random.default_rng(placing))]
    return tuple(
        apply_scenario(name, market_data, np.random.default_rng(c), cfg, history, start=s)
        for c, s in zip(children, starts, strict=True)
    )


def crisis_starts(sc: CrisisScenario, t_total: int, draws: int, rng: np.random.Generator) -> list[int]:
    """The first rows of ``draws`` draws' crisis windows on ``t_total`` bars (the rule of
    ``apply_scenario``; ``t_total > length``).

    The starts that fit are ``1 .. T - length``. Without jitter the window starts at
    ``int(start_frac * T)`` clipped to them. With jitter the candidates are the starts from
    ``int((start_frac - start_jitter) * T)`` to ``int((start_frac + start_jitter) * T)`` that fit, or,
    where none of those fits (a split little longer than the window), every start that does; the
    draws take them in a random order without repeating one until all are taken, so no start is
    favoured and no two draws share one while others are free. (Clipping a drawn start instead piled
    every draw past the last fitting start onto it: 43 % of ``crisis_2008_like``'s draws on a 258-bar
    fold, all of them on 121-160 bars.)"""
    _check_fits(sc, t_total)
    first, last = 1, t_total - sc.length
    if sc.start_jitter <= 0:
        return [min(max(int(sc.start_frac * t_total), first), last)] * draws
    lo = max(int((sc.start_frac - sc.start_jitter) * t_total), first)
    hi = min(int((sc.start_frac + sc.start_jitter) * t_total), last)
    if lo > hi:
        lo, hi = first, last
    order = rng.permutation(np.arange(lo, hi + 1))
    return [int(s) for s in np.resize(order, draws)]


def _check_fits(sc: CrisisScenario, t_total: int) -> None:
    """Refuse data too short for the scenario's window (:class:`ScenarioDataError`)."""
    if t_total <= sc.length:
        raise ScenarioDataError(
            f"the data has {t_total} bars; the scenario window (length={sc.length}) needs {sc.length + 1}"
        )


def _apply_crisis(
    sc: CrisisScenario, md: MarketData, rng: np.random.Generator, start: int | None
) -> tuple[MarketData, int]:
    """The shocked data and the window's first row (``start``, or one :func:`crisis_starts` draws)."""
    t_total = md.n_steps
    _check_fits(sc, t_total)
    if start is None:
        start = crisis_starts(sc, t_total, 1, rng)[0]
    shocked = inject_crisis(
        md.open,
        md.close,
        md.spread_bps,
        start=start,
        length=sc.length,
        vol_mult=sc.vol_mult,
        corr_target=sc.corr_target,
        spread_mult=sc.spread_mult,
        drift=sc.drift,
        rng=rng,
        listed=md.listed,
        loss=sc.loss,
        listed_after=md.listed_after,
        max_bar_vol=None if sc.max_vol is None else sc.max_vol / math.sqrt(md.periods_per_year),
    )
    regime = md.regime_code.copy()
    if sc.regime_label is not None:
        regime[start : start + sc.length] = sc.regime_label
    features = md.features
    if "spread_bps" in md.feature_names:  # the policy sees the wider spreads it pays
        features = features.copy()
        features[start : start + sc.length, :, md.feature_names.index("spread_bps")] *= sc.spread_mult
    out = replace(
        md,
        open=shocked.open,
        close=shocked.close,
        spread_bps=shocked.spread_bps,
        regime_code=regime,
        features=features,
    )
    return out, start


def path_calendar(ts: np.ndarray, n_steps: int) -> np.ndarray:
    """The dates of a bootstrap path of ``n_steps`` bars over the window ``ts``: the path's bar ``i``
    on the window's bar ``i``, so what is dated (a cash rate schedule, the report's axis) is the
    window's; past the window's end (a path longer than it), one median step a bar."""
    if n_steps <= len(ts):
        return np.asarray(ts[:n_steps]).copy()
    step = np.median(np.diff(ts)) if len(ts) > 1 else np.timedelta64(1, "D")
    extra = ts[-1] + np.arange(1, n_steps - len(ts) + 1) * step
    return np.concatenate([ts, extra])


def _apply_bootstrap(
    sc: BootstrapScenario, md: MarketData, rng: np.random.Generator, source: MarketData
) -> MarketData:
    """``md``'s window rebuilt from rows drawn out of ``source`` (``md`` itself or a longer history)."""
    n_steps = sc.n_steps or md.n_steps
    r = simple_returns(source)
    draw = regime_block_bootstrap(
        r,
        source.regime_code,
        sc.block_len,
        n_steps,
        rng,
        regime=sc.regime,
        min_pool_blocks=sc.min_pool_blocks,
    )
    src = draw.index  # >= 1 always: row 0 has no finite return and is never drawn
    listed = np.isfinite(draw.returns)  # a real bar with a known move (a reopen's spans its hole)
    before = np.where(listed, last_real_close(source)[src], 1.0)
    growth = np.where(listed, source.close[src] / before, 1.0)
    gap = np.where(listed, source.open[src] / before, 1.0)
    close = md.close[0] * np.cumprod(growth, axis=0)
    prev_close = np.vstack([md.close[:1], close[:-1]])
    ts = path_calendar(md.ts, n_steps)
    # the path's history: the source bars before its first drawn row, scaled to join it at md.close[0]
    before_close, before_listed = bars_before_slice(source, int(src[0]))
    before_close = before_close * (md.close[0] / source.close[src[0] - 1])
    return replace(
        md,
        ts=ts,
        open=prev_close * gap,
        close=close,
        listed=listed,
        spread_bps=source.spread_bps[src],
        dollar_volume=source.dollar_volume[src],
        bar_dollar_volume=None if source.bar_dollar_volume is None else source.bar_dollar_volume[src],
        features=source.features[src],
        regime_code=source.regime_code[src],
        feature_missing=None if source.feature_missing is None else source.feature_missing[src],
        forecast_fallback=None if source.forecast_fallback is None else source.forecast_fallback[src],
        close_before=before_close,
        listed_before=before_listed,
    )
