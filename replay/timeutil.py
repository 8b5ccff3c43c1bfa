"""Timestamp parsing shared by readers and splits: every user-given date becomes a UTC Timestamp."""

from __future__ import annotations

from datetime import datetime

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
