"""Time splits: boundaries, embargo gaps, walk-forward folds never overlapping their training."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from raytrade.replay import fractional_splits, time_splits, walk_forward_folds

CAL = pd.date_range("2020-01-01", periods=100, freq="D", tz="UTC")


def test_time_splits_leave_an_embargo_between_windows() -> None:
    s = time_splits(CAL, "2020-02-09", "2020-03-10", embargo_bars=3)
    assert (s["train"].start, s["train"].end) == (CAL[0], CAL[39])
    assert s["validation"].start == CAL[43]  # 40, 41, 42 embargoed
    assert s["validation"].end == CAL[69]
    assert s["test"].start == CAL[73] and s["test"].end == CAL[99]
    assert s["train"].n_bars + s["validation"].n_bars + s["test"].n_bars == 100 - 6


def test_fractional_splits_cover_in_order() -> None:
    s = fractional_splits(CAL, 0.6, 0.2, embargo_bars=2)
    assert s["train"].n_bars == 60 and s["validation"].start == CAL[62] and s["test"].start == CAL[82]


def test_walk_forward_folds_are_consecutive_and_after_training() -> None:
    folds = walk_forward_folds(CAL, n_folds=4, min_train_bars=40, embargo_bars=2)
    assert len(folds) == 4
    for prev, fold in itertools.pairwise(folds):
        assert fold.test.start > prev.test.end
    for fold in folds:
        gap = CAL.get_loc(fold.test.start) - CAL.get_loc(fold.train.end)
        assert gap == 3  # two embargoed bars in between
        assert fold.train.start == CAL[0]
    assert folds[-1].test.end == CAL[-1]
    rolling = walk_forward_folds(CAL, n_folds=2, min_train_bars=30, embargo_bars=0, expanding=False)
    assert all(f.train.n_bars == 30 for f in rolling)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: time_splits(CAL, "2020-04-01", "2020-04-08", embargo_bars=5), "split 'test' would be empty"),
        (lambda: time_splits(CAL, "2020-03-01", "2020-02-01"), "must be after train_end"),
        (lambda: walk_forward_folds(CAL, n_folds=80, min_train_bars=50), "too short for 80 folds"),
        (lambda: fractional_splits(CAL, 0.9, 0.2), "sum below 1"),
    ],
)
def test_impossible_splits_say_why(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
