"""Daily bars and intraday bars never share a store: the rule, checked at ingest and by the loader.

The simulator steps one calendar, the union of the stamps of the class that makes it, with one bar
length (``periods_per_year`` and a bar's financing follow from it). Daily bars among intraday ones
break both:

* **In one series.** A file that stitches a daily history to recent hourly bars (a common vendor
  export) read as hourly: the median bars per date set the year, so the daily stretch was annualised
  as hours (a reviewer's BTCUSD: 27.9 % a year reported for 168 %) and every hourly bar paid a day's
  financing. A series holds a daily stretch when it has a run of :data:`MIXED_RUN` consecutive dates
  with one bar each, all at one time of day, and a run of as many dates with several bars, and that
  time of day is one its days of several bars never use (a daily stamp, 00:00 UTC or a local
  midnight, off the session's hours), or the symbol is crypto (it trades around the clock, so a week
  of one bar a day at one hour is a daily series, not a thin one).
* **Across symbols.** An hourly equity next to a daily one put a 00:00 UTC label before each day's
  hourly labels, at which the daily equity's close of that evening was already shown: a decision
  there saw a price of the future, and each symbol had a hole at every label of the other. A symbol
  with one bar a day is daily here when its stamps fall at times of day no intraday symbol of the
  store uses.

A thin intraday name is neither: Alpaca sends no bar for an hour without trades, so it may have a
single bar on many days, but at the session's hours (those its busier days and the other intraday
symbols use). Refused with one line naming the symbols and the dates; nothing is guessed
(resampling is the user's call)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.timeutil import named_symbols, times_of_day

MIXED_RUN: Final = 5
"""Consecutive dates of one bar each, and consecutive dates of several, that make one series a daily
stretch and an intraday one (:func:`series_switch`): a week of each."""


class MixedBarLengthsError(InputError):
    """Daily bars among intraday ones in one store (the message names them)."""


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(length, start index) of the longest run of True in ``flags`` (0, -1 when none)."""
    best, start, run = 0, -1, 0
    for i, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run > best:
            best, start = run, i - run + 1
    return best, start


def _clock(stamps: pd.DatetimeIndex) -> np.ndarray:
    """``HH:MM`` (UTC) of each stamp."""
    return np.asarray(stamps.strftime("%H:%M"))


def series_switch(stamps: pd.DatetimeIndex, crypto: bool = False) -> str | None:
    """Why one symbol's stamps (UTC, sorted) hold a daily stretch and an intraday one (module
    docstring), None when they do not."""
    dates = stamps.normalize()
    per_date = pd.Series(1, index=stamps).groupby(dates).size()
    single = per_date.to_numpy() == 1
    singles, first_single = _longest_run(single)
    several, first_several = _longest_run(~single)
    if singles < MIXED_RUN or several < MIXED_RUN:
        return None
    day = per_date.index
    run_days = day[first_single : first_single + singles]
    run_clock = _clock(stamps[dates.isin(run_days)])
    if len(set(run_clock)) != 1:
        return None  # one bar a day at varying hours: a thin intraday series
    busy_clock = set(_clock(stamps[dates.isin(day[~single])]))
    if run_clock[0] in busy_clock and not crypto:
        return None  # at an hour its busier days trade too: thin, not daily
    return (
        f"{int(single.sum())} dates with one bar each ({singles} in a row from {day[first_single].date()}, "
        f"stamped at {run_clock[0]} UTC) and {int((~single).sum())} with several ({several} in a row from "
        f"{day[first_several].date()}): a daily history and intraday bars in one series"
    )


def refuse_mixed_bar_lengths(
    bars: pd.DataFrame, origin: str | None = None, stored: Collection[str] = ()
) -> None:
    """Refuse ``bars`` (``symbol``, ``ts`` UTC, ``asset_class``) that put daily bars among intraday
    ones, in one series or across symbols (module docstring). ``stored`` names symbols already in the
    store (marked in the message), ``origin`` prefixes it. Raises :class:`MixedBarLengthsError`."""
    prefix = f"{origin}: refused, nothing written: " if origin else ""
    crypto = set(bars.loc[bars["asset_class"].astype(str) == "crypto", "symbol"].astype(str))
    intraday_clock: set[str] = set()
    one_a_day: dict[str, pd.DatetimeIndex] = {}
    for symbol, ts in bars.groupby(bars["symbol"].astype(str), sort=True)["ts"]:
        stamps = pd.DatetimeIndex(ts).sort_values()
        why = series_switch(stamps, crypto=symbol in crypto)
        if why is not None:
            mark = " (in the store)" if symbol in stored else ""
            raise MixedBarLengthsError(
                f"{prefix}{symbol!r}{mark} holds bars of two lengths: {why}. The simulator steps one bar "
                "length (its year and a bar's financing follow from it): store the series at one "
                "timeframe (resample it, or drop the stretch at the other)"
            )
        dates = stamps.normalize()
        several = dates.duplicated(keep=False)
        if several.any():
            intraday_clock |= set(_clock(stamps[several]))
        elif len(stamps) > 1:
            one_a_day[symbol] = stamps
    daily = {s: t for s, t in one_a_day.items() if not set(_clock(t)) <= intraday_clock}
    if not intraday_clock or not daily:
        return
    intraday = sorted(set(bars["symbol"].astype(str)) - set(one_a_day))
    raise MixedBarLengthsError(
        f"{prefix}daily bars next to intraday ones in one store: {named_symbols(sorted(daily), stored)} "
        f"daily (stamped at {times_of_day(pd.DatetimeIndex(next(iter(daily.values()))))} UTC), "
        f"{named_symbols(intraday, stored)} intraday. The simulator steps one calendar: a daily bar is "
        "shown at a label hours before its close, and each symbol misses every label of the others. "
        "Keep one timeframe per store (resample the intraday bars to daily, or ingest them into their "
        "own store)"
    )
