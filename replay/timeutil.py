"""Timestamp parsing shared by readers and splits: every user-given date becomes a UTC Timestamp; and
the one rule for a bar series' bar length (``bar_length``)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd


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
