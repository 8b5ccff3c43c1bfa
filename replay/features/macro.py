"""Macro group, as-of joined: volatility index level and term ratio, curve slope, sector momentum.

* ``vix_level``: the ``vix`` macro series as of each bar (last value with ts <= the bar's ts); where
  the store has no ``vix`` series, a proxy from the equities themselves: the cross-sectional median
  of annualised ``vol_20`` x 100 (computed on the equity calendar, as-of joined to crypto). A
  crypto-only store has no equities: its proxy is its coins' own (their median ``vol_20`` annualised
  at 365 bars a year), so ``vix_level`` and ``vix_term`` exist and an env can observe them (without
  it, no env could load such a store: the default features asked for columns with no values).
* ``vix_term``: ``vix`` / ``vix_3m`` when both exist, else the proxy median(vol_20) / median(vol_60).
* ``curve_slope``: the ``curve_slope`` series (percent) as of the bar; null without one.
* ``sector_momentum``: mean ``ret_20`` of the symbols in the same correlation cluster at ts (computed
  on long rows in ``build``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_of(series: pd.Series, index: pd.DatetimeIndex) -> pd.Series:
    """Values of ``series`` (sorted DatetimeIndex) at or before each timestamp of ``index``."""
    if series.empty:
        return pd.Series(np.nan, index=index)
    series = series[~series.index.duplicated(keep="last")].sort_index()
    positions = series.index.searchsorted(index, side="right") - 1
    values = np.where(positions >= 0, series.to_numpy()[np.clip(positions, 0, None)], np.nan)
    return pd.Series(values, index=index)


def macro_series(macro: pd.DataFrame | None) -> dict[str, pd.Series]:
    """Long macro rows (symbol = series name) as one time-indexed series per name."""
    if macro is None or macro.empty:
        return {}
    return {
        str(name): rows.set_index("ts")["value"].astype("float64").sort_index()
        for name, rows in macro.groupby("symbol", sort=True)
    }


def vol_proxies(
    vol_short: pd.DataFrame, vol_long: pd.DataFrame, periods_per_year: float
) -> dict[str, pd.Series]:
    """Volatility-index proxies from a panel (the equities'; a crypto-only store's coins): level and
    term ratio per calendar bar."""
    short = vol_short.median(axis=1, skipna=True)
    long = vol_long.median(axis=1, skipna=True)
    return {"vix": short * np.sqrt(periods_per_year) * 100.0, "vix_term": short / long}


def macro_group(
    index: pd.DatetimeIndex, columns: list[str], series: dict[str, pd.Series], proxies: dict[str, pd.Series]
) -> dict[str, pd.DataFrame]:
    def broadcast(values: pd.Series) -> pd.DataFrame:
        arr = np.repeat(values.to_numpy(dtype="float64")[:, None], len(columns), axis=1)
        return pd.DataFrame(arr, index=index, columns=columns)

    vix = as_of(series["vix"], index) if "vix" in series else as_of(proxies.get("vix", pd.Series()), index)
    if "vix" in series and "vix_3m" in series:
        term = vix / as_of(series["vix_3m"], index)
    else:
        term = as_of(proxies.get("vix_term", pd.Series()), index)
    slope = as_of(series["curve_slope"], index) if "curve_slope" in series else pd.Series(np.nan, index=index)
    return {"vix_level": broadcast(vix), "vix_term": broadcast(term), "curve_slope": broadcast(slope)}
