"""Time splits of a replay calendar: train / validation / test and walk-forward folds, with embargo.

A split is a closed window ``[start, end]`` of calendar bars. Consecutive windows are separated by
``embargo_bars`` bars that belong to neither, so nothing computed from a window's last bars (a
forward return, an episode that runs past its end) straddles the boundary into the next window.
Windows are defined on a calendar (the sorted unique timestamps of the store), never on row counts
of one symbol, so every asset sees the same boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.timeutil import as_utc

TRAIN_FRACTION: Final = 0.6
"""Default share of the calendar in the train split (every config that splits a store reads this)."""
VALIDATION_FRACTION: Final = 0.2
"""Default share of the calendar in the validation split; the rest is test."""
EMBARGO_BARS: Final = 5
"""Default bars left out between consecutive splits."""


@dataclass(frozen=True)
class TimeWindow:
    """A closed calendar window ``[start, end]`` holding ``n_bars`` bars."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp
    n_bars: int

    def contains(self, ts: pd.Timestamp) -> bool:
        return bool(self.start <= ts <= self.end)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train on ``train``, evaluate on ``test`` (strictly later)."""

    index: int
    train: TimeWindow
    test: TimeWindow


def _calendar(timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex | np.ndarray) -> pd.DatetimeIndex:
    cal = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(timestamps))).sort_values()
    if cal.tz is None:
        cal = cal.tz_localize("UTC")
    if len(cal) == 0:
        raise ValueError("calendar is empty: the store holds no bars")
    return cal


def _window(name: str, cal: pd.DatetimeIndex, lo: int, hi: int) -> TimeWindow:
    """Window over ``cal[lo:hi]`` (hi exclusive)."""
    if hi <= lo:  # an input problem (shares or dates against a calendar too short), not a bug
        raise InputError(
            f"split {name!r} would be empty (bars {lo}..{hi - 1} of {len(cal)}): the store's calendar is "
            "too short for these shares (--train-fraction, --validation-fraction) or dates and the embargoes"
        )
    return TimeWindow(name, cal[lo], cal[hi - 1], hi - lo)


def time_splits(
    timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex | np.ndarray,
    train_end: str | pd.Timestamp,
    validation_end: str | pd.Timestamp,
    embargo_bars: int = EMBARGO_BARS,
) -> dict[str, TimeWindow]:
    """Train up to ``train_end``, validation up to ``validation_end``, test after; each gap embargoed.

    Dates are inclusive ends. Raises ``ValueError`` naming the split that would be empty.
    """
    if embargo_bars < 0:
        raise ValueError(f"embargo_bars must be >= 0, got {embargo_bars}")
    cal = _calendar(timestamps)
    t_end, v_end = as_utc(train_end, "train_end"), as_utc(validation_end, "validation_end")
    if v_end <= t_end:
        raise ValueError(f"validation_end {v_end.date()} must be after train_end {t_end.date()}")
    train_hi = int(cal.searchsorted(t_end, side="right"))
    val_hi = int(cal.searchsorted(v_end, side="right"))
    return {
        "train": _window("train", cal, 0, train_hi),
        "validation": _window("validation", cal, train_hi + embargo_bars, val_hi),
        "test": _window("test", cal, val_hi + embargo_bars, len(cal)),
    }


def fractional_splits(
    timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex | np.ndarray,
    train: float = TRAIN_FRACTION,
    validation: float = VALIDATION_FRACTION,
    embargo_bars: int = EMBARGO_BARS,
) -> dict[str, TimeWindow]:
    """Splits by share of the calendar: ``train`` and ``validation`` fractions, the rest is test."""
    if not (0 < train < 1 and 0 < validation < 1 and train + validation < 1):
        raise ValueError(f"train={train} and validation={validation} must be in (0, 1) with a sum below 1")
    cal = _calendar(timestamps)
    train_hi = round(len(cal) * train)
    val_hi = round(len(cal) * (train + validation))
    return {
        "train": _window("train", cal, 0, train_hi),
        "validation": _window("validation", cal, train_hi + embargo_bars, val_hi),
        "test": _window("test", cal, val_hi + embargo_bars, len(cal)),
    }


def walk_forward_folds(
    timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex | np.ndarray,
    n_folds: int,
    min_train_bars: int,
    embargo_bars: int = EMBARGO_BARS,
    expanding: bool = True,
) -> list[Fold]:
    """``n_folds`` consecutive test windows covering the calendar after ``min_train_bars``.

    Fold k trains on everything before its test window (``expanding``) or on the last
    ``min_train_bars`` bars before it (rolling), minus the embargo; test windows do not overlap.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if min_train_bars < 1 or embargo_bars < 0:
        raise ValueError(f"min_train_bars={min_train_bars} must be >= 1 and embargo_bars={embargo_bars} >= 0")
    cal = _calendar(timestamps)
    first_test = min_train_bars + embargo_bars
    test_bars = (len(cal) - first_test) // n_folds
    if test_bars < 1:
        raise ValueError(
            f"calendar of {len(cal)} bars is too short for {n_folds} folds after "
            f"{min_train_bars} training bars and an embargo of {embargo_bars}"
        )
    folds = []
    for k in range(n_folds):
        test_lo = first_test + k * test_bars
        test_hi = len(cal) if k == n_folds - 1 else test_lo + test_bars
        train_hi = test_lo - embargo_bars
        train_lo = 0 if expanding else train_hi - min_train_bars
        folds.append(
            Fold(
                k, _window(f"train_{k}", cal, train_lo, train_hi), _window(f"test_{k}", cal, test_lo, test_hi)
            )
        )
    return folds
