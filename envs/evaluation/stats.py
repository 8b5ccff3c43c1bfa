"""Seeded stationary-bootstrap confidence intervals of Sharpe / Sortino differences between policies.

Design decisions
----------------
* Politis-Romano stationary bootstrap: each resampled path starts at a uniform bar and, at every
  step, continues to the next bar (circularly) with probability ``1 - 1/block_len`` or jumps to a
  new uniform bar; block lengths are geometric with mean ``block_len``. It keeps the short-range
  dependence (volatility clustering) that an i.i.d. bootstrap destroys.
* Paired: both policies' returns are resampled with the *same* indices (they were earned on the
  same bars), so the interval is for the difference itself, not for two independent estimates.
  The indices come from one seed and are shared by every comparison of a report (common random
  numbers: intervals of different policies are comparable).
* The Sharpe / Sortino of a sample use exactly ``envs.metrics``' formulas (ddof 1, annualised,
  downside deviation over all periods), vectorised over samples; a sample where either ratio is
  undefined (no dispersion, even up to float rounding: ``envs.metrics.no_dispersion``; no downside)
  is dropped and ``n_valid`` says how many were kept.
* Interval: percentile (``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles, numpy's linear rule).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.metrics import rounding_only, sharpe_ratio, sharpe_rows, sortino_ratio

Ratio = Literal["sharpe", "sortino"]


class BootstrapConfig(BaseModel):
    """Stationary bootstrap of the difference in risk-adjusted ratios."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(1000, ge=10, description="bootstrap paths")
    block_len: float = Field(10.0, ge=1.0, description="mean block length, bars")
    level: float = Field(0.95, gt=0.0, lt=1.0, description="two-sided confidence level")
    seed: int = Field(0, description="seed of the resampling indices")


class DifferenceCI(NamedTuple):
    """``estimate`` = ratio(policy) - ratio(benchmark) on the data; ``low``/``high`` the interval."""

    estimate: float
    low: float
    high: float
    n_valid: int


def stationary_indices(n: int, samples: int, block_len: float, rng: np.random.Generator) -> np.ndarray:
    """``[samples, n]`` resampling indices of the stationary bootstrap (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = np.empty((samples, n), dtype=np.int64)
    out[:, 0] = rng.integers(0, n, size=samples)
    jumps = rng.random((samples, n)) < 1.0 / block_len
    fresh = rng.integers(0, n, size=(samples, n))
    for i in range(1, n):
        out[:, i] = np.where(jumps[:, i], fresh[:, i], (out[:, i - 1] + 1) % n)
    return out


def sharpe_batch(r: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Row-wise ``envs.metrics.sharpe_ratio`` of ``r [S, T]``: ``envs.metrics.sharpe_rows``, the same
    formula and the same rule for a row without dispersion (constant up to float rounding: NaN)."""
    return sharpe_rows(np.asarray(r, dtype=np.float64), periods_per_year)


def sortino_batch(r: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Row-wise ``envs.metrics.sortino_ratio`` of ``r [S, T]`` (NaN where undefined: no downside, or
    a row that is 0 up to rounding, ``envs.metrics.rounding_only``)."""
    downside = np.sqrt(np.mean(np.square(np.minimum(r, 0.0)), axis=1)) * math.sqrt(periods_per_year)
    ok = (downside > 0) & ~rounding_only(r)
    value = r.mean(axis=1) * periods_per_year / np.where(ok, downside, 1.0)
    return np.where(ok & np.isfinite(value), value, np.nan)


_BATCH = {"sharpe": sharpe_batch, "sortino": sortino_batch}
_POINT = {"sharpe": sharpe_ratio, "sortino": sortino_ratio}


def percentile_ci(estimate: float, paths: np.ndarray, level: float) -> DifferenceCI:
    """The percentile interval at ``level`` of ``paths``' finite values around ``estimate``: NaN
    bounds and ``n_valid`` 0 when no path is finite."""
    valid = paths[np.isfinite(paths)]
    if valid.size == 0:
        return DifferenceCI(float(estimate), math.nan, math.nan, 0)
    lo, hi = np.quantile(valid, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return DifferenceCI(float(estimate), float(lo), float(hi), int(valid.size))


def _pair(returns: np.ndarray, benchmark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(returns, dtype=np.float64)
    b = np.asarray(benchmark, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"returns {a.shape} and benchmark {b.shape} must be 1-D of the same length")
    return a, b


def ratio_difference(
    returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float, ratio: Ratio
) -> float:
    """``ratio(returns) - ratio(benchmark)`` on the bars themselves (1-D, the same bars)."""
    a, b = _pair(returns, benchmark)
    point = _POINT[ratio]
    return float(point(a, periods_per_year) - point(b, periods_per_year))


def difference_paths(
    returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float, ratio: Ratio, indices: np.ndarray
) -> np.ndarray:
    """``ratio(returns) - ratio(benchmark)`` on each resampled path of ``indices [S, T]`` (NaN where
    either ratio is undefined)."""
    a, b = _pair(returns, benchmark)
    batch = _BATCH[ratio]
    out: np.ndarray = batch(a[indices], periods_per_year) - batch(b[indices], periods_per_year)
    return out


def difference_ci(
    returns: np.ndarray,
    benchmark: np.ndarray,
    periods_per_year: float,
    ratio: Ratio,
    indices: np.ndarray,
    level: float,
) -> DifferenceCI:
    """Percentile interval of ``ratio(returns) - ratio(benchmark)`` over the resampling ``indices``.

    ``returns`` and ``benchmark`` are 1-D simple returns on the same bars. NaN bounds (and
    ``n_valid`` 0) when the ratio is undefined on every sample (e.g. a cash policy).
    """
    estimate = ratio_difference(returns, benchmark, periods_per_year, ratio)
    paths = difference_paths(returns, benchmark, periods_per_year, ratio, indices)
    return percentile_ci(estimate, paths, level)
