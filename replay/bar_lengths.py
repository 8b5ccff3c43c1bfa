"""Daily bars and intraday bars never share a store: the rule, checked at ingest and by the loader.

The simulator steps one calendar, the union of the stamps of the class that makes it, with one bar
length (``periods_per_year`` and a bar's financing follow from it). Daily bars among intraday ones
break both:

* **In one series.** A file that stitches a daily history to recent hourly bars (a common vendor
  export) read as hourly: the median bars per date set the year, so the daily stretch was annualised
  as hours (a reviewer's BTCUSD: 27.9 % a year reported for 168 %) and every hourly bar paid a day's
  financing.
* **Across symbols.** An hourly equity next to a daily one put a 00:00 UTC label before each day's
  hourly labels, at which the daily equity's close of that evening was already shown: a decision
  there saw a price of the future, and each symbol had a hole at every label of the other.

Stamps alone cannot always tell a daily bar from the one bar a thin name traded that day (Alpaca
sends no bar for an hour without trades), so the rule reads them as follows. A bar is **daily** when
it is the only bar of its symbol on its date and it is stamped

* at a daily stamp: 00:00 UTC (a date label, the csv source's), midnight in New York (Alpaca's
  stocks, and the crypto day it builds next to them: 04:00 or 05:00 UTC with daylight saving) or in
  US Central time (Alpaca's own daily crypto: 05:00 or 06:00 UTC), or
* for an equity, at a time of day no intraday equity of the store trades at (a regular session's
  close next to regular-hours bars; with extended hours every hour to 20:00 in New York is on the
  clock, and a bar there cannot be told from a thin name's): the class's *intraday clock* is every
  time of day (in New York, where a session keeps its hours across daylight saving) stamped on a
  date where a symbol has several bars.

A coin trades around the clock, so its one bar a day at another hour is a thin coin's. A symbol is
refused when it holds :data:`MIXED_RUN` consecutive daily bars and any date of several bars (one
series, two lengths; once a series is daily, even one date of several bars is wrong), or when it has
only daily bars in a store with intraday bars of any class (two lengths across symbols). A daily
series with two daily stamps on one date (a csv history at 00:00 UTC overlapping Alpaca's at New
York midnight) is named as two daily clocks.
One line names the symbol, the dates and the stamps; nothing is guessed (resampling is the user's
call). Where stamps cannot tell, the rule refuses: a week of a thin name trading only at a daily
stamp (a coin only at 00:00 UTC; an equity whose extended hours' last bar, 19:00 in New York, is
stamped 00:00 UTC in winter, trading only then) reads as a daily history."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.timeutil import NEW_YORK, US_CENTRAL, named_symbols, times_of_day

MIXED_RUN: Final = 5
"""Consecutive dates of one daily bar each that make a series daily (a week of a daily history):
fewer is read as a thin intraday name's quiet days."""


class MixedBarLengthsError(InputError):
    """Daily bars among intraday ones in one store (the message names them)."""


def _minute_of_day(stamps: pd.DatetimeIndex) -> np.ndarray:
    """Minutes since midnight in New York of each stamp: a session's hours are the same there all
    year (in UTC they move an hour with daylight saving), and an integer is fast to compare."""
    local = stamps.tz_convert(NEW_YORK)
    return np.asarray(local.hour * 60 + local.minute, dtype=np.int64)


def _daily_stamps(stamps: pd.DatetimeIndex) -> np.ndarray:
    """``[n]`` bool: stamped at midnight UTC, in New York or in US Central time (module docstring)."""
    out = (stamps.hour == 0) & (stamps.minute == 0)
    for zone in (NEW_YORK, US_CENTRAL):
        local = stamps.tz_convert(zone)
        out |= (local.hour == 0) & (local.minute == 0)
    return np.asarray(out, dtype=bool)


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(length, start index) of the longest run of True in ``flags`` (0, -1 when none)."""
    best, start, run = 0, -1, 0
    for i, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run > best:
            best, start = run, i - run + 1
    return best, start


class _Series:
    """One symbol's stamps (UTC, sorted) by date: which dates hold one bar, which several, and each
    stamp's time of day in New York and whether it is a daily stamp (each computed once)."""

    def __init__(self, stamps: pd.DatetimeIndex) -> None:
        self.stamps = stamps
        self.dates = stamps.normalize()
        self.several = np.asarray(self.dates.duplicated(keep=False), dtype=bool)  # per stamp
        self.minutes = _minute_of_day(stamps)
        self.daily_stamp = _daily_stamps(stamps)

    def clock(self) -> set[int]:
        """The New York minutes of the day stamped on its dates of several bars."""
        return set(self.minutes[self.several].tolist())

    def daily(self, crypto: bool, intraday_clock: set[int]) -> np.ndarray:
        """``[n]`` bool: each stamp is a daily bar (module docstring)."""
        daily = self.daily_stamp.copy()
        if not crypto:
            daily |= ~np.isin(self.minutes, list(intraday_clock))
        return daily & ~self.several


def series_switch(
    stamps: pd.DatetimeIndex, crypto: bool = False, intraday_clock: set[int] | None = None
) -> str | None:
    """Why one symbol's stamps (UTC, sorted) hold a daily stretch and intraday dates (module
    docstring), None when they do not. ``intraday_clock``: the class's intraday minutes of the day
    (None: the series' own)."""
    return _switch(_Series(stamps), crypto, intraday_clock)


def _switch(series: _Series, crypto: bool, intraday_clock: set[int] | None) -> str | None:
    """:func:`series_switch` of a series already split by date."""
    if not series.several.any():
        return None
    stamps = series.stamps
    daily = series.daily(crypto, series.clock() if intraday_clock is None else intraday_clock)
    run, first = _longest_run(_per_date(series, daily))
    if run < MIXED_RUN:
        return None
    dates = series.dates.unique()
    start = dates[first]
    run_stamps = stamps[(series.dates >= start) & (series.dates <= dates[first + run - 1])]
    several_dates = series.dates[series.several].unique()
    on_several = stamps[series.several]
    if series.daily_stamp[series.several].all():
        return (
            f"holds {_dates(len(several_dates))} with two daily stamps (first {several_dates[0].date()}, "
            f"at {times_of_day(on_several)} UTC) in a daily series: two daily clocks (a history stamped "
            "at 00:00 UTC overlapping one at a local midnight); keep one and re-ingest into a new store"
        )
    return (
        f"holds bars of two lengths: {run} dates in a row with one daily bar each from {start.date()} "
        f"(stamped at {times_of_day(run_stamps)} UTC) and {_dates(len(several_dates))} with several bars "
        f"(first {several_dates[0].date()}): a daily history and intraday bars in one series. The "
        "simulator steps one bar length (its year and a bar's financing follow from it): store the "
        "series at one timeframe (resample it, or drop the stretch at the other)"
    )


def _dates(n: int) -> str:
    return f"{n} date" if n == 1 else f"{n} dates"


def _per_date(series: _Series, daily: np.ndarray) -> np.ndarray:
    """``[dates]`` bool: the date's one bar is daily (False on a date of several bars)."""
    return np.asarray(pd.Series(daily).groupby(series.dates.to_numpy()).all().to_numpy(), dtype=bool)


def refuse_mixed_bar_lengths(
    bars: pd.DataFrame, origin: str | None = None, stored: Collection[str] = ()
) -> None:
    """Refuse ``bars`` (``symbol``, ``ts`` UTC, ``asset_class``) that put daily bars among intraday
    ones, in one series or across symbols (module docstring). ``stored`` names symbols already in the
    store (marked in the message), ``origin`` prefixes it. Raises :class:`MixedBarLengthsError`."""
    prefix = f"{origin}: refused, nothing written: " if origin else ""
    classes = bars.groupby(bars["symbol"].astype(str))["asset_class"].first().astype(str)
    series = {
        symbol: _Series(pd.DatetimeIndex(ts).sort_values())
        for symbol, ts in bars.groupby(bars["symbol"].astype(str), sort=True)["ts"]
    }
    clocks: dict[str, set[int]] = {}
    for symbol, one in series.items():
        if one.several.any():
            clocks.setdefault(classes[symbol], set()).update(one.clock())
    daily_symbols: list[str] = []
    for symbol, one in series.items():
        crypto = classes[symbol] == "crypto"
        clock = clocks.get(classes[symbol], set())
        why = _switch(one, crypto, clock)
        if why is not None:
            mark = " (in the store)" if symbol in stored else ""
            raise MixedBarLengthsError(f"{prefix}{symbol!r}{mark} {why}")
        if clocks and len(one.stamps) > 1 and one.daily(crypto, clock).all():
            daily_symbols.append(symbol)
    if not daily_symbols:
        return
    intraday = sorted(s for s, one in series.items() if one.several.any())
    stamped = times_of_day(series[daily_symbols[0]].stamps)
    raise MixedBarLengthsError(
        f"{prefix}daily bars next to intraday ones in one store: {named_symbols(daily_symbols, stored)} "
        f"daily (stamped at {stamped} UTC), {named_symbols(intraday, stored)} intraday. The simulator "
        "steps one calendar: a daily bar is shown at a label hours before its close, or never on one, "
        "and each symbol misses every label of the others. Keep one timeframe per store (resample the "
        "intraday bars to daily, or ingest them into their own store)"
    )
