"""Timestamp parsing shared by readers and splits: every user-given date becomes a UTC Timestamp; the
one rule for a bar series' bar length (``bar_length``); and the one rule that daily bars of an asset
class share one clock (``refuse_mixed_daily_clocks``), checked at ingest and by the simulator's loader."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError

DAY: Final = pd.Timedelta(days=1)
"""A symbol's bars are daily (or longer) when their ``bar_length`` is at least this; shorter: intraday."""


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
    """The bar length of a bar series: the smallest spacing between its distinct stamps (one day for
    daily bars, one hour for hourly bars, whatever gaps nights and weekends leave); ``None`` with
    fewer than two distinct stamps. A bar stamped ``ts`` has closed at ``ts + bar_length``."""
    index = pd.DatetimeIndex(stamps).unique().sort_values()
    if len(index) < 2:
        return None
    return pd.Timedelta(np.diff(index.as_unit("ns").asi8).min(), unit="ns")


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

    A symbol's bars are daily when its ``bar_length`` is at least :data:`DAY`; intraday symbols (1h,
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
            f"{_named(symbols, stored)} at {clock} UTC"
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


def _named(symbols: list[str], stored: Collection[str]) -> str:
    """``'A', 'B' (in the store)``: at most five symbols, then how many more."""
    shown = [f"{s!r}" + (" (in the store)" if s in stored else "") for s in symbols[:5]]
    more = f" (+{len(symbols) - 5} more)" if len(symbols) > 5 else ""
    return ", ".join(shown) + more
