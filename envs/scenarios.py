"""Scenario generators for stress evaluation and adversarial training (pure numpy, seeded).

Design decisions
----------------
* Every generator takes a ``numpy.random.Generator`` and nothing else random: same seed, same output.
  Inputs are never mutated; new arrays are returned.
* ``regime_block_bootstrap`` resamples whole cross-sections (rows ``[t, :]``) so cross-asset
  correlation inside a row is kept; blocks of consecutive rows keep short-range autocorrelation.
* ``inject_crisis`` shocks close-to-close *log* returns inside a window and rebuilds prices from
  them with ``exp``, so prices stay positive; after the window, returns are the original ones (the
  level shift the crisis caused persists).
* ``apply_scenario`` works on ``MarketData`` and changes prices, spreads, the listing mask and the
  regime label only. ``features`` are *not* recomputed (the feature builders live in ``replay/``):
  inside and after a shocked window, price-derived features describe the original history. That is
  a known limitation of these scenarios; callers that need consistent features must rebuild them.

Regime codes: 0 calm, 1 choppy, 2 crisis (as in ``MarketData.regime_code``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.market_data import MarketData

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

N_REGIMES = 3
NO_REGIME = -1
"""Per-row regime of a row with no finite return: such rows are never drawn."""


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
) -> BootstrapDraw:
    """Block-bootstrap whole cross-sections of ``returns`` ``[T, N]``, conditioned on regime.

    Pools: for each regime ``k`` the rows whose per-row regime (``row_regimes``) is ``k``, in time
    order, treated as one circular series. A block starts at a uniformly drawn pool position and
    walks forward through the pool, wrapping from its last row to its first (the circular bootstrap:
    every pool row is equally likely). With ``stationary=True`` block lengths are geometric with mean
    ``block_len`` (Politis-Romano stationary bootstrap), otherwise exactly ``block_len``.

    * ``regime=k``: every drawn row comes from regime ``k``'s pool. ``ValueError`` if it is empty.
    * ``regime=None``: a regime path is simulated from the empirical first-order transition matrix of
      the per-row regimes (first state from their empirical frequencies); each step draws from its
      regime's pool and a regime change starts a new block.

    NaN entries (unlisted assets) travel with their row: ``out.returns[i]`` is NaN exactly where
    ``returns[out.index[i]]`` is NaN, so the listing mask of the path is the source rows' mask.
    Rows with no finite return are never drawn.
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
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps!r}")
    if regime is not None and regime not in range(N_REGIMES):
        raise ValueError(f"regime must be 0, 1, 2 or None, got {regime!r}")
    per_row = row_regimes(regime_code, r)
    pools = [np.flatnonzero(per_row == k) for k in range(N_REGIMES)]
    if regime is not None:
        if pools[regime].size == 0:
            raise ValueError(f"regime={regime}: no row of returns is in that regime")
        path = np.full(n_steps, regime, dtype=np.int64)
    else:
        if not (per_row >= 0).any():
            raise ValueError("returns has no row with a finite value to draw from")
        path = _simulate_regimes(per_row, n_steps, rng)

    index = np.empty(n_steps, dtype=np.int64)
    pos, remaining, current = 0, 0, NO_REGIME
    for i in range(n_steps):
        pool = pools[path[i]]
        if remaining == 0 or path[i] != current:
            pos = int(rng.integers(pool.size))
            remaining = int(rng.geometric(1.0 / block_len)) if stationary else block_len
            current = int(path[i])
        else:
            pos = (pos + 1) % pool.size
        index[i] = pool[pos]
        remaining -= 1
    return BootstrapDraw(returns=r[index].copy(), index=index, regime=per_row[index])


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
) -> CrisisPrices:
    """Shock rows ``start .. start + length - 1`` of ``[T, N]`` price arrays.

    Window returns are close-to-close log returns ``x[t, n] = log(close[t, n] / close[t - 1, n])``,
    so ``start >= 1``. For each *eligible* asset (listed on row ``start - 1`` and on every window row;
    all assets when ``listed`` is None) with window mean ``mu`` and standard deviation ``sigma``
    (``ddof=1``):

    1. standardise ``z = (x - mu) / sigma`` (``z = 0`` for an asset with ``sigma == 0``);
    2. correlation shock: with ``c0`` the average pairwise correlation of ``z`` over eligible assets,
       ``w = (corr_target - c0) / (1 - c0)`` and a common factor ``f ~ N(0, 1)`` per row from ``rng``,
       ``z' = sqrt(1 - w) z + sqrt(w) f``, which has unit variance and average pairwise correlation
       ``c0 + w (1 - c0) = corr_target`` in expectation. Skipped (``w = 0``) when ``corr_target`` is
       None, below ``c0``, or fewer than 2 assets are eligible;
    3. volatility shock and drift: ``x' = mu + drift + vol_mult * sigma * z'``, so the window's
       standard deviation becomes ``vol_mult`` times the original (in expectation when the factor is
       blended, exactly otherwise). ``drift`` is an extra log return per bar (``-0.01`` ~ -1 %/bar).

    Prices are rebuilt with ``k[t] = exp(cumsum(x' - x))`` over the window (``k`` constant after it):
    ``close' = close * k[t]``, ``open' = open * k[t - 1]``, i.e. the overnight gap
    ``open[t] / close[t - 1]`` is kept and the shock lands between open and close. ``high``/``low``
    keep their distance from the bar body: ``high' = max(open', close') * high / max(open, close)``
    (and ``min`` for ``low``). Non-eligible assets are untouched. ``spread_bps`` is multiplied by
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
    if corr_target is not None and not -1.0 < corr_target < 1.0:
        raise ValueError(f"corr_target must be in (-1, 1) or None, got {corr_target!r}")
    if listed is None:
        eligible = np.ones(n_assets, dtype=bool)
    else:
        lst = np.asarray(listed, dtype=bool)
        if lst.shape != o.shape:
            raise ValueError(f"listed has shape {lst.shape}, expected {o.shape}")
        eligible = np.asarray(lst[start - 1 : start + length].all(axis=0), dtype=bool)

    window = slice(start, start + length)
    x = np.log(c[window] / c[start - 1 : start + length - 1])  # [L, N]
    mu = x.mean(axis=0)
    sigma = x.std(axis=0, ddof=1)
    safe_sigma = np.where(sigma > 0.0, sigma, 1.0)
    z = np.where(sigma > 0.0, (x - mu) / safe_sigma, 0.0)

    weight = 0.0
    factor = rng.standard_normal(length)  # drawn even when unused: the rng stream stays stable
    active = eligible & (sigma > 0.0)
    if corr_target is not None and active.sum() >= 2:
        c0 = _mean_pairwise_corr(z[:, active])
        if corr_target > c0:
            weight = (corr_target - c0) / (1.0 - c0)
    z_new = math.sqrt(1.0 - weight) * z + math.sqrt(weight) * factor[:, None] * (sigma > 0.0)
    x_new = mu + drift + vol_mult * sigma * z_new
    delta = np.where(eligible, x_new - x, 0.0)

    k = np.ones((t_total, n_assets))
    k[window] = np.exp(np.cumsum(delta, axis=0))
    k[start + length :] = k[start + length - 1]
    k_prev = np.vstack([np.ones((1, n_assets)), k[:-1]])
    new_open = o * k_prev
    new_close = c * k
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
    """A window of ``inject_crisis`` placed on the data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["crisis"] = "crisis"
    start_frac: float = Field(0.5, ge=0.0, lt=1.0, description="window start as a fraction of T")
    length: int = Field(ge=2, description="window length in bars")
    vol_mult: float = Field(ge=0.0, description="window volatility multiplier")
    corr_target: float | None = Field(None, gt=-1.0, lt=1.0, description="average pairwise corr")
    spread_mult: float = Field(1.0, ge=0.0, description="spread multiplier inside the window")
    drift: float = Field(0.0, description="extra log return per bar inside the window")
    regime_label: int | None = Field(2, ge=0, le=2, description="regime_code written in the window")


class BootstrapScenario(BaseModel):
    """A ``regime_block_bootstrap`` path replacing the data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["bootstrap"] = "bootstrap"
    regime: int | None = Field(2, ge=0, le=2, description="regime to draw from; None follows transitions")
    block_len: int = Field(10, ge=1, description="mean block length in bars")
    n_steps: int | None = Field(None, ge=2, description="path length in bars; None keeps T")


Scenario = Annotated[CrisisScenario | BootstrapScenario, Field(discriminator="kind")]


def _default_scenarios() -> dict[str, Scenario]:
    return {
        # Months of high, correlated volatility with a steady decline and wide spreads.
        "crisis_2008_like": CrisisScenario(
            length=120, vol_mult=3.0, corr_target=0.7, spread_mult=3.0, drift=-0.003
        ),
        # Three bars of a sharp, highly correlated drop with very wide spreads; no rebound (worst case).
        "flash_crash": CrisisScenario(length=3, vol_mult=4.0, corr_target=0.9, spread_mult=10.0, drift=-0.04),
        # A month of doubled-plus volatility, correlation and drift unchanged.
        "vol_spike": CrisisScenario(length=20, vol_mult=2.5, spread_mult=2.0, regime_label=1),
        # A path made only of historical crisis-regime rows.
        "bootstrap_crisis": BootstrapScenario(regime=2, block_len=10),
    }


class ScenarioConfig(BaseModel):
    """Named stress scenarios; ``model_validate`` a dict to override or add entries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenarios: dict[str, Scenario] = Field(default_factory=_default_scenarios)

    def get(self, name: str) -> CrisisScenario | BootstrapScenario:
        try:
            return self.scenarios[name]
        except KeyError:
            raise ValueError(f"unknown scenario {name!r}; known: {sorted(self.scenarios)}") from None


def simple_returns(market_data: MarketData) -> FloatArray:
    """Close-to-close simple returns ``[T, N]``; NaN on row 0 and wherever ``t`` or ``t - 1`` is unlisted."""
    c = market_data.close
    out = np.full(c.shape, np.nan)
    both = market_data.listed[1:] & market_data.listed[:-1]
    out[1:] = np.where(both, c[1:] / c[:-1] - 1.0, np.nan)
    return out


def apply_scenario(
    name: str,
    market_data: MarketData,
    rng: np.random.Generator,
    config: ScenarioConfig | None = None,
    history: MarketData | None = None,
) -> MarketData:
    """Return a new ``MarketData`` with scenario ``name`` of ``config`` (defaults when None) applied.

    Crisis: the window starts at ``clip(int(start_frac * T), 1, T - length)``; ``inject_crisis`` shocks
    open/close/spread of listed assets; ``regime_code`` is set to ``regime_label`` in the window
    (unless None). Bootstrap: rows are drawn from ``simple_returns(market_data)``; prices are rebuilt
    from ``close[0]`` by compounding each drawn row's return, with the drawn row's overnight gap
    (``open[s] / close[s - 1]``); ``listed``, ``spread_bps``, ``dollar_volume``, ``features`` and
    ``regime_code`` are the drawn rows' values. An asset unlisted on a drawn row keeps its previous
    price (the simulator masks it). ``ts`` becomes ``ts[0] + i * median(diff(ts))`` (a synthetic
    calendar). Features are never recomputed (see the module docstring). ``history`` (same assets,
    e.g. everything up to the window's end) is where a bootstrap draws its rows from instead of
    ``market_data`` itself: a short window rarely holds enough bars of the requested regime.
    """
    scenario = (config or ScenarioConfig()).get(name)
    if isinstance(scenario, CrisisScenario):
        return _apply_crisis(scenario, market_data, rng)
    if history is not None and history.symbols != market_data.symbols:
        raise ValueError("history must hold the same assets, in the same order, as market_data")
    return _apply_bootstrap(scenario, market_data, rng, history or market_data)


def _apply_crisis(sc: CrisisScenario, md: MarketData, rng: np.random.Generator) -> MarketData:
    t_total = md.n_steps
    if t_total < sc.length + 1:
        raise ValueError(f"market_data has {t_total} bars; the scenario window needs {sc.length + 1}")
    start = min(max(int(sc.start_frac * t_total), 1), t_total - sc.length)
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
    )
    regime = md.regime_code.copy()
    if sc.regime_label is not None:
        regime[start : start + sc.length] = sc.regime_label
    return replace(
        md, open=shocked.open, close=shocked.close, spread_bps=shocked.spread_bps, regime_code=regime
    )


def _apply_bootstrap(
    sc: BootstrapScenario, md: MarketData, rng: np.random.Generator, source: MarketData
) -> MarketData:
    """``md``'s window rebuilt from rows drawn out of ``source`` (``md`` itself or a longer history)."""
    n_steps = sc.n_steps or md.n_steps
    r = simple_returns(source)
    draw = regime_block_bootstrap(r, source.regime_code, sc.block_len, n_steps, rng, regime=sc.regime)
    src = draw.index  # >= 1 always: row 0 has no finite return and is never drawn
    listed = source.listed[src] & source.listed[src - 1]
    growth = np.where(listed, source.close[src] / source.close[src - 1], 1.0)
    gap = np.where(listed, source.open[src] / source.close[src - 1], 1.0)
    close = md.close[0] * np.cumprod(growth, axis=0)
    prev_close = np.vstack([md.close[:1], close[:-1]])
    step = np.median(np.diff(md.ts)) if md.n_steps > 1 else np.timedelta64(1, "D")
    ts = md.ts[0] + np.arange(n_steps) * step
    return replace(
        md,
        ts=ts,
        open=prev_close * gap,
        close=close,
        listed=listed,
        spread_bps=source.spread_bps[src],
        dollar_volume=source.dollar_volume[src],
        features=source.features[src],
        regime_code=source.regime_code[src],
    )
