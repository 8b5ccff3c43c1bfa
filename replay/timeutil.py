"""Timestamp parsing shared by readers and splits: every user-given date becomes a UTC Timestamp; the
one rule for a bar series' bar length (``bar_length``); the one rule for when a bar has closed
(``bar_closed_at``, used by the Alpaca source and cost calibration; ``series_closed_at`` where a bar
is read at decision time); and the one rule that daily bars
of an asset class share one clock (``refuse_mixed_daily_clocks``), checked at ingest and by the
simulator's loader."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError

NEW_YORK: Final = ZoneInfo("America/New_York")
"""Where US stocks trade, and where Alpaca starts a stock's daily bar (and the crypto day it builds
next to stocks, ``replay.sources.alpaca_daily``)."""

US_CENTRAL: Final = ZoneInfo("America/Chicago")
"""Where Alpaca starts its own daily crypto bar (a crypto-only fetch)."""

DAY: Final = pd.Timedelta(days=1)
"""A symbol's bars are daily when their ``bar_length`` is this; shorter: intraday."""

MAX_FEATURE_AGE_HOURS: Final = 96.0
"""Features whose bar closed longer than this before a decision are stale: the store stopped updating
or the symbol stopped trading. 96 h covers a closed market's longest ordinary gap (Friday's close to
the Tuesday after a Monday holiday). The policy service refuses to decide on them
(``--max-feature-age-hours``' default) and cost calibration fits no fill on them."""

MAX_MISSED_BARS: Final = 1
"""On daily data, features of a bar that more of the universe's bars closed after (NYSE sessions with
an equity, days for crypto alone: ``replay.exchange_calendar.daily_bars_between``) are stale too: 96
hours let a store three sessions behind decide in mid-week. One missed bar passes (a nightly that has
not run yet). The policy service's ``--max-missed-bars`` default."""

DAILY_SPACING: Final = pd.Timedelta(hours=20)
"""Bars whose smallest spacing is at least this are daily. Intraday timeframes (1m, 1h) are at most a
few hours apart; daily bars stamped at a local midnight (Alpaca: New York for stocks, US Central for
crypto) are 23 h apart across a spring-forward change, 25 h across a fall-back one and 24 h otherwise;
longer gaps are weekends and holidays."""

LONGEST_DAY: Final = pd.Timedelta(hours=25)
"""The longest local day (a fall-back day): a daily bar stamped at a local midnight has closed by then."""

SHORTEST_DAY: Final = pd.Timedelta(hours=23)
"""The shortest local day (a spring-forward day): a daily bar stamped at a local midnight is still
open up to then, and may have closed after it."""


def as_utc(value: str | datetime | pd.Timestamp, name: str) -> pd.Timestamp:
    """``value`` as a UTC ``Timestamp``; a naive value is taken as UTC (a date label, as the store
    labels daily bars). Raises ``ValueError`` naming the argument when it is not a date."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name}={value!r} is not a date or timestamp") from None
    if stamp is pd.NaT:
        raise ValueError(f"{name}={value!r} is not a date or timestamp")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def times_of_day(stamps: pd.DatetimeIndex | pd.Series) -> str:
    """The times of day (``HH:MM``) of ``stamps``, most frequent first, at most three (``00:00/05:00
    (+2 more)``): how error messages say what clock bars are stamped on."""
    index = pd.DatetimeIndex(stamps)
    counts = pd.Series(index.strftime("%H:%M")).value_counts()
    more = f" (+{len(counts) - 3} more)" if len(counts) > 3 else ""
    return "/".join(counts.index[:3]) + more


def bar_length(stamps: pd.DatetimeIndex | pd.Series) -> pd.Timedelta | None:
    """The bar length of a bar series: :data:`DAY` when the smallest spacing between its distinct stamps
    is at least :data:`DAILY_SPACING` (daily bars, also those 23 h apart across a daylight-saving
    change), else that smallest spacing (one hour for hourly bars, whatever gaps nights and weekends
    leave); ``None`` with fewer than two distinct stamps. When a bar has closed: :func:`bar_closed_at`."""
    index = pd.DatetimeIndex(stamps).unique().sort_values()
    if len(index) < 2:
        return None
    smallest = pd.Timedelta(np.diff(index.as_unit("ns").asi8).min(), unit="ns")
    return DAY if smallest >= DAILY_SPACING else smallest


def bar_closed_at(stamps: pd.DatetimeIndex | pd.Series, length: pd.Timedelta) -> pd.DatetimeIndex:
    """When each bar of one series (opened at ``stamps``; naive stamps are UTC) has surely closed, as
    UTC: never before it closed, so a bar counted closed holds no partial close or volume.

    ``length`` is the series' bar length (:func:`bar_length`, or the requested timeframe). An intraday
    bar closes at ``ts + length``. A daily bar (``length >= DAY``) stamped 00:00 UTC is a date label
    covering that UTC date: closed at ``ts + 1 day``. A daily bar stamped at any other time opened at
    a local midnight and closes at the next one, 23, 24 or 25 h later across daylight-saving changes,
    which the UTC stamps cannot tell apart: it counts as closed at ``ts +`` :data:`LONGEST_DAY`, at most
    2 h after it really closed. (The next stamp of the series is not used: it does not exist for the
    latest bar, the one that matters, and in a series stamped on two clocks it can come before the
    bar's close.)"""
    return _bar_end(stamps, length, LONGEST_DAY)


LONGEST_INTRADAY_BAR: Final = pd.Timedelta(hours=12)
"""Stamps at least this far apart are daily bars to :func:`series_closed_at` (its doc)."""


def series_closed_at(stamps: pd.DatetimeIndex | pd.Series) -> pd.DatetimeIndex:
    """When each bar of one series of stamps has surely closed, UTC, its bar length read from the
    stamps themselves: :func:`bar_closed_at` with :func:`bar_length`, never closing a bar early.

    A single stamp is a daily bar (a day is the longest a bar lasts). A smallest spacing of
    :data:`LONGEST_INTRADAY_BAR` or more is daily too, although ``bar_length`` calls a day only
    :data:`DAILY_SPACING`: a series whose clock changes between two days (05:00 UTC stamps, then 00:00
    UTC date labels) is 19 h apart there, and a 19 h bar would count a date-label bar closed at 19:00
    UTC, before the session's close. No intraday timeframe is that long. Used where a bar is read at
    decision time (serving's observation, the live loop's dollar volume)."""
    length = bar_length(stamps) or DAY
    return bar_closed_at(stamps, DAY if length >= LONGEST_INTRADAY_BAR else length)


def bar_open_until(stamps: pd.DatetimeIndex | pd.Series, length: pd.Timedelta) -> pd.DatetimeIndex:
    """Until when each bar is surely still open, as UTC (:func:`bar_closed_at`'s rules, the other
    way round): a daily bar stamped at a local midnight may last only :data:`SHORTEST_DAY`, so
    something stamped after ``ts + 23 h`` may come after its close."""
    return _bar_end(stamps, length, SHORTEST_DAY)


def _bar_end(
    stamps: pd.DatetimeIndex | pd.Series, length: pd.Timedelta, local_day: pd.Timedelta
) -> pd.DatetimeIndex:
    """``ts + length`` for intraday bars; for daily ones ``ts + 1 day`` when stamped 00:00 UTC (a date
    label) and ``ts + local_day`` when stamped at a local midnight."""
    index = pd.DatetimeIndex(stamps)
    utc = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    if length < DAY:
        return utc + length
    on_date_label = np.asarray(utc == utc.normalize())
    return utc + pd.to_timedelta(np.where(on_date_label, DAY.value, local_day.value), unit="ns")


class MixedDailyClocksError(InputError):
    """Daily bars of one asset class stamped at different times of day on the same dates."""


def refuse_mixed_daily_clocks(
    bars: pd.DataFrame, origin: str | None = None, stored: Collection[str] = ()
) -> None:
    """Refuse daily bars of one asset class stamped at different times of day on the same UTC date.

    The simulator steps on the union of the stamps of the class that makes its calendar. Equities
    dated by plain session dates (00:00 UTC, as the csv source labels a date) next to equities stamped
    at New York midnight with an offset (05:00 UTC in winter) make two labels per session: each symbol
    has a hole at every other label, nothing is filled, and every policy silently shows 0 %. Shifting
    one convention onto the other is not done (which one is right is the user's call).

    A symbol's bars are daily when its ``bar_length`` is :data:`DAY`; intraday symbols (1h,
    1m bars, whose times of day differ by design) and symbols with a single bar are not checked. One
    convention across a daylight-saving change (04:00 and 05:00 UTC on different dates) is fine; so
    are two conventions on dates no other symbol shares. ``bars`` has ``symbol``, ``ts`` (UTC) and
    ``asset_class``; ``stored`` names symbols already in the store (marked in the message), ``origin``
    prefixes it. Raises :class:`MixedDailyClocksError` naming the class, the dates, each clock's
    symbols and the fix."""
    for asset_class, group in bars.groupby(bars["asset_class"].astype(str), sort=True):
        stamps_of = group.groupby(group["symbol"].astype(str), sort=True)["ts"]
        daily = [s for s, ts in stamps_of if (length := bar_length(ts)) is not None and length >= DAY]
        rows = group[group["symbol"].astype(str).isin(daily)]
        stamps = pd.DatetimeIndex(rows["ts"]).tz_convert("UTC")
        dates = stamps.normalize()
        clocks_per_date = pd.Series(stamps).groupby(dates).nunique()
        mixed = clocks_per_date.index[clocks_per_date.to_numpy() > 1]
        if not len(mixed):
            continue
        on_mixed = rows[dates.isin(mixed)]
        by_clock: dict[str, list[str]] = {}
        for symbol, ts in on_mixed.groupby(on_mixed["symbol"].astype(str), sort=True)["ts"]:
            by_clock.setdefault(times_of_day(ts), []).append(symbol)
        groups = "; ".join(
            f"{named_symbols(symbols, stored)} at {clock} UTC"
            for clock, symbols in sorted(by_clock.items(), key=lambda item: -len(item[1]))
        )
        prefix = f"{origin}: refused, nothing written: " if origin else ""
        raise MixedDailyClocksError(
            f"{prefix}daily {asset_class} bars are stamped at different times of day on the same dates "
            f"({len(mixed)} dates, first {mixed[0].date()}): {groups}. The calendar is the union of the "
            "stamps, so each symbol would miss every other bar and never trade. Re-ingest them into a "
            "new store with one convention: every file dated by plain session dates (the csv source "
            "labels a date 00:00 UTC), or every file stamped at the same local midnight with its offset"
        )


def named_symbols(symbols: list[str], stored: Collection[str]) -> str:
    """``'A', 'B' (in the store)``: at most five symbols, then how many more."""
    shown = [f"{s!r}" + (" (in the store)" if s in stored else "") for s in symbols[:5]]
    more = f" (+{len(symbols) - 5} more)" if len(symbols) > 5 else ""
    return ", ".join(shown) + more
