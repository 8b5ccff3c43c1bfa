"""Performance and risk metrics over a series of simple per-period net returns.

Design decisions
----------------
* Input is a 1-D array of *simple* net returns ``r[t] = equity[t] / equity[t-1] - 1`` (after costs),
  one per bar; ``periods_per_year`` says how many bars make a year (252 stocks, 365 crypto daily).
* Formulas follow empyrical-reloaded (the reference the tests compare against to 1e-10 relative)
  wherever empyrical defines the metric: sample standard deviation with ``ddof=1``, Sharpe annualised
  with ``sqrt(periods_per_year)``, Sortino's downside deviation ``sqrt(mean(min(r - mar, 0) ** 2))``
  over *all* periods, CAGR ``(prod(1 + r)) ** (periods_per_year / T) - 1``, drawdowns measured against
  a running peak that starts at the initial equity 1.0.
* Where a ratio has a zero denominator the function returns a documented value (``nan`` or ``0.0``)
  instead of ``inf`` and never emits a numpy warning. Where empyrical returns ``inf`` (Sharpe of a
  constant positive series, Sortino with no downside) this module returns ``nan``: "undefined", not
  "infinitely good".
* **A series constant up to float rounding has no Sharpe ratio** (``nan``), like an exactly constant
  one: its ``std`` is rounding noise, and a ratio over it is ~1e16, not a measurement. The rule
  (:func:`no_dispersion`, the only one; the bootstrap's row-wise Sharpe uses it too): ``std(r, ddof=1)
  <= max(DISPERSION_RTOL * |mean(r)|, DISPERSION_ATOL)``. Here this departs from empyrical, which reports the
  ~1e16. ``annual_volatility`` still reports the measured (tiny) deviation: it is not a ratio.
* Bad input fails loudly: NaN/inf returns, returns ``< -1`` (equity would go negative) and wrong
  dimensionality raise ``ValueError`` naming the argument and the first bad index and value. Nothing
  is coerced silently.
* A return of exactly ``-1`` is ruin: the simulator liquidates an account whose equity reaches zero,
  floors it there and keeps it flat (returns 0 afterwards). Such a series is summarised, not refused:
  total return -100 %, max drawdown -100 %, the ratios computed on the floored series.

Sign conventions: returns, drawdowns and CVaR are fractions of equity; losses are negative
(``max_drawdown`` is ``<= 0``, ``cvar`` is negative when the worst periods lose money).
"""

from __future__ import annotations

import bisect
import math
from typing import Final

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

DISPERSION_RTOL: Final = 1e-9
"""A series whose sample std is at most this times its |mean| has no measurable dispersion (Sharpe
``nan``). Why 1e-9: subtracting two float64 return series (``(bench + c) - bench``) leaves noise of
about 1e-16 x the operands' size, so rounding stays below 1e-9 x |c| unless the operands are ~1e7
times the excess (a 1 % a bar benchmark against an excess under 1e-9 a bar, below what any book can
earn or measure); and a real series this steady would have an annualised Sharpe ratio above
``sqrt(periods_per_year) / 1e-9`` (1.6e10 daily), which no book has. Far above rounding, far below
any measured dispersion."""

DISPERSION_ATOL: Final = 1e-12
"""A series whose sample std is at most this (per period) has no measurable dispersion either. A
return is a ratio of two equities less 1, so its rounding is ~1e-16 whatever its size: the excess of a
book in cash over the rate it earned (``envs.cash_rate``) is that noise alone, and its mean is noise
too, so :data:`DISPERSION_RTOL` cannot tell it from a series. 1e-12 a bar is an annualised volatility
of 1.6e-11 on daily bars: far above rounding, far below what any book that holds anything moves."""

CVAR_CUTOFF: Final = 0.05
"""Tail probability used by ``cvar`` and ``tail_hit_rate`` in ``summarize``."""

TAIL_MIN_HISTORY: Final = 20
"""Bars of history ``tail_hit_rate`` needs before its first out-of-sample VaR test."""

SUMMARY_KEYS: Final = (
    "total_return",
    "annual_return",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration",
    "cvar_5",
    "tail_hit_rate",
    "turnover",
    "costs_paid",
    "hit_rate",
    "calmar",
)


# --------------------------------------------------------------------------- validation


def _as_float_array(values: ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(values).__name__}: {exc}") from exc
    return arr


def _first_bad(arr: FloatArray, bad: npt.NDArray[np.bool_]) -> tuple[tuple[int, ...], float]:
    flat = int(np.flatnonzero(bad.ravel())[0])
    index = tuple(int(i) for i in np.unravel_index(flat, arr.shape))
    return index, float(arr.ravel()[flat])


def _fmt_index(index: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in index)


def _check_finite(arr: FloatArray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        index, value = _first_bad(arr, bad)
        raise ValueError(f"{name}[{_fmt_index(index)}] = {value!r} is not finite")


def validate_returns(returns: ArrayLike, name: str = "returns") -> FloatArray:
    """Return ``returns`` as a 1-D float64 array, or raise ``ValueError``.

    Rejects: ndim != 1, NaN/inf entries, entries ``< -1`` (equity would become negative), and a
    non-zero return after a ``-1`` (ruin: equity floored at 0, accepted, and flat afterwards). The
    message names ``name`` and the first offending index and value.
    """
    arr = _as_float_array(returns, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    _check_finite(arr, name)
    bad = arr < -1.0
    if bad.any():
        index, value = _first_bad(arr, bad)
        raise ValueError(
            f"{name}[{_fmt_index(index)}] = {value!r} is < -1: equity would become negative "
            "(a ruined account is floored at -1)"
        )
    ruin = np.flatnonzero(arr == -1.0)
    if ruin.size:
        first = int(ruin[0])
        after = np.flatnonzero(arr[first + 1 :] != 0.0)
        if after.size:
            k = first + 1 + int(after[0])
            raise ValueError(
                f"{name}[{k}] = {float(arr[k])!r} follows the ruin at {name}[{first}] = -1.0: "
                "a ruined account holds nothing and stays flat (returns 0)"
            )
    return arr


def _check_ppy(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not math.isfinite(ppy) or ppy <= 0:
        raise ValueError(f"periods_per_year must be a positive finite number, got {periods_per_year!r}")
    return ppy


def _finite_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or ``nan`` when the denominator is 0 (e.g. a deviation that
    underflowed) or the quotient is not finite. Never warns."""
    if denominator == 0.0:
        return math.nan
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(np.float64(numerator) / np.float64(denominator))
    return value if math.isfinite(value) else math.nan


def _is_constant(arr: FloatArray) -> bool:
    return bool(arr.size > 0 and arr.max() == arr.min())


def _mean_std(r: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row-wise (last axis) mean and sample std (``ddof=1``) of ``r`` with at least 2 columns, no
    warning (a std that overflows is ``inf``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return r.mean(axis=-1), r.std(axis=-1, ddof=1)


def no_dispersion(returns: ArrayLike) -> npt.NDArray[np.bool_]:
    """Row-wise (last axis, at least 2 values): whether a series is constant up to float rounding,
    ``max == min`` or ``std(r, ddof=1) <= max(DISPERSION_RTOL * |mean(r)|, DISPERSION_ATOL)`` (see
    the module docstring); a Sharpe ratio of such a series is undefined. A 1-D input gives a 0-d array."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 0 or r.shape[-1] < 2:
        raise ValueError(f"no_dispersion needs at least 2 values per series, got shape {r.shape}")
    mean, std = _mean_std(r)
    with np.errstate(over="ignore", invalid="ignore"):
        steady = std <= np.maximum(DISPERSION_RTOL * np.abs(mean), DISPERSION_ATOL)
    out: npt.NDArray[np.bool_] = (r.max(axis=-1) == r.min(axis=-1)) | steady
    return out


def rounding_only(returns: ArrayLike) -> npt.NDArray[np.bool_]:
    """Row-wise (last axis): every value is 0 up to float rounding, ``|r| <= DISPERSION_ATOL`` (the
    excess of a book in cash over the rate it earned). A 1-D input gives a 0-d array."""
    r = np.asarray(returns, dtype=np.float64)
    out: npt.NDArray[np.bool_] = np.asarray((np.abs(r) <= DISPERSION_ATOL).all(axis=-1))
    return out


def sharpe_rows(r: FloatArray, periods_per_year: float) -> FloatArray:
    """Row-wise annualised Sharpe ``mean / std(ddof=1) * sqrt(periods_per_year)`` of ``r [S, T]``
    (unvalidated values): ``nan`` with fewer than 2 periods, where a row has no dispersion
    (:func:`no_dispersion`) or where the ratio is not finite. The one formula :func:`sharpe_ratio`
    and the bootstrap use."""
    if r.ndim != 2:
        raise ValueError(f"r must be [rows, periods], got shape {r.shape}")
    if r.shape[1] < 2:
        return np.full(r.shape[0], np.nan)
    mean, std = _mean_std(r)
    ok = ~no_dispersion(r) & np.isfinite(std) & (std > 0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        value = mean * math.sqrt(periods_per_year) / np.where(ok, std, 1.0)
    out: FloatArray = np.where(ok & np.isfinite(value), value, np.nan)
    return out


# --------------------------------------------------------------------------- growth


def total_return(returns: ArrayLike) -> float:
    """Compounded return over the whole series, ``prod(1 + r) - 1``; ``0.0`` for an empty series.

    (empyrical's ``cum_returns_final`` gives ``nan`` for empty input; an empty product is 1, so no
    periods means no growth.)
    """
    r = validate_returns(returns)
    return float(np.prod(r + 1.0) - 1.0)


def annual_return(returns: ArrayLike, periods_per_year: float) -> float:
    """Geometric annual growth (CAGR): ``prod(1 + r) ** (periods_per_year / T) - 1``.

    ``nan`` for an empty series (zero years). May be ``+inf`` when extrapolating a short, strongly
    positive series overflows float64 (no warning is emitted).
    """
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size == 0:
        return math.nan
    num_years = r.size / ppy
    ending = float(np.prod(r + 1.0))
    with np.errstate(over="ignore"):
        return float(np.power(ending, 1.0 / num_years) - 1.0)


def annual_volatility(returns: ArrayLike, periods_per_year: float) -> float:
    """Sample standard deviation (``ddof=1``) times ``sqrt(periods_per_year)``.

    ``nan`` with fewer than 2 periods; exactly ``0.0`` for a constant series.
    """
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return math.nan
    if _is_constant(r):
        return 0.0
    return float(np.std(r, ddof=1) * math.sqrt(ppy))


# --------------------------------------------------------------------------- risk-adjusted


def per_period_rate(rate: ArrayLike, n: int, name: str) -> float | FloatArray:
    """A per-period rate: a finite scalar, or a finite ``[n]`` array (one rate per return); raises
    ``ValueError`` naming ``name`` otherwise."""
    if np.ndim(rate) == 0:
        value = float(rate)  # type: ignore[arg-type]
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return value
    arr = _as_float_array(rate, name)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) (one rate per return)")
    _check_finite(arr, name)
    return arr


def sharpe_ratio(returns: ArrayLike, periods_per_year: float, risk_free: ArrayLike = 0.0) -> float:
    """Annualised Sharpe: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``.

    ``risk_free`` is a per-period simple rate (not annual): one for every period, or ``[T]`` (the
    rate of each period's bar, ``envs.cash_rate``). ``nan`` with fewer than 2 periods, when
    the excess returns are constant, exactly or up to float rounding (:func:`no_dispersion`;
    empyrical gives ``inf`` or ~1e16), or when the ratio is not finite (a deviation that underflows
    to 0).
    """
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return math.nan
    return float(sharpe_rows((r - per_period_rate(risk_free, r.size, "risk_free"))[None, :], ppy)[0])


def downside_risk(returns: ArrayLike, periods_per_year: float, required_return: ArrayLike = 0.0) -> float:
    """Annualised downside deviation as empyrical defines it.

    ``sqrt(mean(min(r - required_return, 0) ** 2)) * sqrt(periods_per_year)``: the mean runs over
    *all* periods (periods above the threshold contribute 0), not just the losing ones.
    ``nan`` for an empty series.
    """
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size == 0:
        return math.nan
    diff = np.minimum(r - per_period_rate(required_return, r.size, "required_return"), 0.0)
    return float(np.sqrt(np.mean(np.square(diff))) * math.sqrt(ppy))


def sortino_ratio(returns: ArrayLike, periods_per_year: float, required_return: ArrayLike = 0.0) -> float:
    """Annualised Sortino: ``mean(r - mar) * ppy / downside_risk(r, ppy, mar)``; ``required_return``
    per period, a scalar or ``[T]`` as :func:`sharpe_ratio`'s ``risk_free``.

    ``nan`` with fewer than 2 periods, when the downside deviation is 0 (no period below
    ``required_return``; empyrical gives ``inf`` there), when ``r - required_return`` is 0 up to
    rounding (:func:`rounding_only`: its downside is noise) or when the ratio is not finite.
    """
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return math.nan
    dr = downside_risk(r, ppy, required_return)
    mar = per_period_rate(required_return, r.size, "required_return")
    if bool(rounding_only(r - mar)):  # a book in cash over its own rate: its downside is noise
        return math.nan
    return _finite_ratio(float(np.mean(r - mar)) * ppy, dr)


# --------------------------------------------------------------------------- drawdowns


def drawdown_series(returns: ArrayLike) -> FloatArray:
    """Drawdown after each period: ``(equity[t] - peak[t]) / peak[t]``, in ``[-1, 0]`` (-1: ruined).

    ``equity[t] = prod(1 + r[:t+1])`` starting from 1.0, and ``peak[t] = max(1.0, equity[:t+1])``: the
    initial equity counts as a peak, so a loss in the first period is already a drawdown (as in
    empyrical). Same length as ``returns``; an empty input gives an empty array.
    """
    r = validate_returns(returns)
    if r.size == 0:
        return np.zeros(0, dtype=np.float64)
    equity = np.cumprod(r + 1.0)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    out: FloatArray = (equity - peak) / peak
    return out


def max_drawdown(returns: ArrayLike) -> float:
    """Largest peak-to-trough loss as a negative fraction (``-0.25`` = 25 % below the peak).

    ``0.0`` when equity never falls below a prior peak, including the empty series (empyrical gives
    ``nan`` for empty input).
    """
    dd = drawdown_series(returns)
    if dd.size == 0:
        return 0.0
    return float(min(dd.min(), 0.0))


def max_drawdown_duration(returns: ArrayLike) -> int:
    """Longest run of consecutive bars whose equity is strictly below the running peak, in bars.

    Counts the bars spent under water: the bar that first falls below the peak counts, the bar that
    regains the peak (equity ``>=`` peak, compared exactly in float64) does not. An unrecovered tail
    counts: a series that ends under water contributes its run up to and including the last bar.
    The initial equity 1.0 is a peak. ``0`` for an empty series or one that is never under water.
    Example: returns ``[-0.1, 0.05, 0.1]`` -> equity ``0.9, 0.945, 1.0395`` -> duration 2.
    """
    under = drawdown_series(returns) < 0.0
    if not under.any():
        return 0
    # Run lengths of True values: boundaries where the mask changes.
    padded = np.concatenate(([False], under, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    return int((ends - starts).max())


def calmar_ratio(returns: ArrayLike, periods_per_year: float) -> float:
    """``annual_return / abs(max_drawdown)``; ``nan`` when there is no drawdown or the ratio is infinite."""
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    mdd = max_drawdown(r)
    if not mdd < 0.0:
        return math.nan
    value = annual_return(r, ppy) / abs(mdd)
    return value if math.isfinite(value) else math.nan


# --------------------------------------------------------------------------- tails


def cvar(returns: ArrayLike, cutoff: float = CVAR_CUTOFF) -> float:
    """Expected shortfall: the mean of the worst ``k`` returns, ``k = floor((T - 1) * cutoff) + 1``.

    This is empyrical's ``conditional_value_at_risk``: the tail always holds at least one return (so
    ``T < 21`` at 5 % gives the single worst return) and about ``cutoff * T`` returns for long series.
    Sign: reported as a return, negative when the worst periods lose money (``-0.03`` = the worst 5 %
    of periods lost 3 % on average). ``nan`` for an empty series.
    """
    r = validate_returns(returns)
    _check_cutoff(cutoff)
    if r.size == 0:
        return math.nan
    return float(cvar_rows(r[None, :], cutoff)[0])


def cvar_rows(r: FloatArray, cutoff: float = CVAR_CUTOFF) -> FloatArray:
    """Row-wise :func:`cvar` of ``r [S, T]`` (``T >= 1``, unvalidated values): the mean of the
    ``floor((T - 1) * cutoff) + 1`` smallest values of each row."""
    _check_cutoff(cutoff)
    if r.ndim != 2 or r.shape[1] < 1:
        raise ValueError(f"r must be [rows, periods] with at least 1 period, got shape {r.shape}")
    k = int((r.shape[1] - 1) * cutoff)
    out: FloatArray = np.partition(r, k, axis=1)[:, : k + 1].mean(axis=1)
    return out


def _check_cutoff(cutoff: float) -> None:
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"cutoff must be in (0, 1), got {cutoff!r}")


def _linear_percentile(sorted_values: list[float], q: float) -> float:
    """numpy's default ("linear") percentile of an already sorted list, ``q`` in [0, 1]."""
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def tail_hit_rate(
    returns: ArrayLike,
    cutoff: float = CVAR_CUTOFF,
    threshold: float | None = None,
    min_history: int = TAIL_MIN_HISTORY,
) -> float:
    """Share of periods whose return breaches the historical VaR, tested out of sample.

    Default (``threshold is None``): for each ``t >= min_history`` the threshold is the historical
    VaR of the returns strictly *before* ``t``, ``VaR_t = np.percentile(r[:t], 100 * cutoff)``
    (linear interpolation, as empyrical's ``value_at_risk``); a hit is ``r[t] < VaR_t`` (strict).
    The rate is ``hits / (T - min_history)``. A well-calibrated tail gives about ``cutoff`` (5 %);
    fat tails and volatility clustering give more. No look-ahead: period ``t`` is judged only against
    the past. ``nan`` when ``T <= min_history``.

    With ``threshold`` given (e.g. the VaR of a training window) every period is tested against that
    fixed value: the rate is ``mean(r < threshold)``; ``nan`` for an empty series.
    """
    r = validate_returns(returns)
    _check_cutoff(cutoff)
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        return math.nan if r.size == 0 else float(np.mean(r < threshold))
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history!r}")
    if r.size <= min_history:
        return math.nan
    history = sorted(r[:min_history].tolist())
    hits = 0
    for value in r[min_history:].tolist():
        if value < _linear_percentile(history, cutoff):
            hits += 1
        bisect.insort(history, value)
    return hits / (r.size - min_history)


# --------------------------------------------------------------------------- trading activity


def turnover(traded: ArrayLike) -> float:
    """Mean traded fraction of equity per period.

    ``traded`` is either 1-D ``[T]``: per period, the gross traded notional (sum over assets of the
    absolute notional bought or sold) divided by equity, must be ``>= 0``; or 2-D ``[T, N]``: signed
    per-asset traded notional / equity (buys positive, sells negative), summed as absolute values
    over assets. Each trade counts once (one-way): moving all equity from asset A to B is 2.0
    (sell 1.0 + buy 1.0). ``nan`` for an empty series (no periods to average).
    """
    arr = _as_float_array(traded, "traded")
    if arr.ndim not in (1, 2):
        raise ValueError(f"traded must be 1-D [T] or 2-D [T, N], got shape {arr.shape}")
    _check_finite(arr, "traded")
    if arr.ndim == 1:
        bad = arr < 0.0
        if bad.any():
            index, value = _first_bad(arr, bad)
            raise ValueError(
                f"traded[{_fmt_index(index)}] = {value!r} is negative; 1-D traded is gross notional / equity"
            )
        per_period = arr
    else:
        per_period = np.abs(arr).sum(axis=1)
    if per_period.size == 0:
        return math.nan
    return float(per_period.mean())


_turnover = turnover  # ``summarize`` has a parameter named ``turnover`` that shadows the function.


def costs_paid(costs: ArrayLike) -> float:
    """Sum of all costs (1-D ``[T]`` or 2-D ``[T, N]``), in the units given; ``0.0`` when empty.

    Sign: positive = paid; negative entries (rebates) are allowed and reduce the total.
    """
    arr = _as_float_array(costs, "costs")
    if arr.ndim not in (1, 2):
        raise ValueError(f"costs must be 1-D [T] or 2-D [T, N], got shape {arr.shape}")
    _check_finite(arr, "costs")
    return float(arr.sum())


def hit_rate(returns: ArrayLike, risk_free: ArrayLike = 0.0) -> float:
    """Share of non-zero-return periods with a positive return.

    Periods with exactly 0.0 return (flat, no position) are excluded from both counts. ``nan`` when
    there is no non-zero period (empty series or all zeros). With a ``risk_free`` return (per period,
    a scalar or ``[T]``: what cash earned) the returns are counted over it, and a period within
    ``DISPERSION_ATOL`` of it is flat (a book in cash earns the rate: no hit).
    """
    r = validate_returns(returns)
    rf = per_period_rate(risk_free, r.size, "risk_free")
    if np.any(np.asarray(rf) != 0.0):  # cash at 0 % (a scalar or all-zero series): exact zeros are flat
        r = np.where(np.abs(r - rf) <= DISPERSION_ATOL, 0.0, r - rf)
    nonzero = int(np.count_nonzero(r))
    if nonzero == 0:
        return math.nan
    return int(np.count_nonzero(r > 0.0)) / nonzero


# --------------------------------------------------------------------------- summary


def summarize(
    returns: ArrayLike,
    periods_per_year: float,
    turnover: ArrayLike | None = None,
    costs: ArrayLike | None = None,
    risk_free: ArrayLike = 0.0,
) -> dict[str, float]:
    """All metrics of this module in one dict with the keys of ``SUMMARY_KEYS``.

    ``risk_free`` (per period, a scalar or ``[T]``) is what the Sharpe and Sortino ratios and the hit
    rate measure the returns over; every other figure is of the returns themselves.

    ``turnover`` is the traded array ``turnover()`` takes and ``costs`` the cost array; when given
    they must have ``T`` rows like ``returns``. When omitted, ``turnover`` and ``costs_paid`` are
    ``nan`` (unknown, not zero). ``max_drawdown_duration`` is reported as a float (bars).
    ``cvar_5`` and ``tail_hit_rate`` use a 5 % cutoff.
    """
    r = validate_returns(returns)
    ppy = _check_ppy(periods_per_year)
    turnover_value = math.nan
    costs_value = math.nan
    if turnover is not None:
        _check_rows(turnover, "turnover", r.size)
        turnover_value = _turnover(turnover)
    if costs is not None:
        _check_rows(costs, "costs", r.size)
        costs_value = costs_paid(costs)
    return {
        "total_return": total_return(r),
        "annual_return": annual_return(r, ppy),
        "volatility": annual_volatility(r, ppy),
        "sharpe": sharpe_ratio(r, ppy, risk_free),
        "sortino": sortino_ratio(r, ppy, risk_free),
        "max_drawdown": max_drawdown(r),
        "max_drawdown_duration": float(max_drawdown_duration(r)),
        "cvar_5": cvar(r, CVAR_CUTOFF),
        "tail_hit_rate": tail_hit_rate(r, CVAR_CUTOFF),
        "turnover": turnover_value,
        "costs_paid": costs_value,
        "hit_rate": hit_rate(r, risk_free),
        "calmar": calmar_ratio(r, ppy),
    }


def _check_rows(values: ArrayLike, name: str, n_rows: int) -> None:
    rows = np.shape(values)[0] if np.ndim(values) > 0 else None
    if rows != n_rows:
        raise ValueError(f"{name} has {rows} rows, expected {n_rows} (one per return)")
