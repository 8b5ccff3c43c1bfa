"""The overfitting check of a run summary: did validation fall while train rose, lately?

The rule (:func:`check_overfit`), per trial, over its last ``k`` reported training iterations
``i_1 < … < i_k`` (a trial that reported fewer is not judged):

* ``train_slope`` and ``validation_slope`` are the least-squares slopes of ``train/objective`` and
  ``validation/objective`` against the iteration number (:func:`least_squares_slope`:
  ``sum((i - ī)(v - v̄)) / sum((i - ī)²)``, objective units per iteration);
* the trial is **overfitting** when ``train_slope > 0`` and ``validation_slope < 0``: it keeps
  getting better on bars it trains on and worse on bars it never saw.

Why slopes over a window rather than the last two points: per-iteration scores are noisy; a fitted
line over ``k`` iterations says where the trial is heading. Why a warning rather than a stop: the
leaderboard already picks each trial's best checkpoint by validation objective, so the warning tells
the reader that the later iterations did not help (early stopping, ``tune_specs.stopping``, is the
knob that acts on it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


def least_squares_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of the least-squares line of ``y`` on ``x``; nan with fewer than 2 distinct ``x`` or a
    non-finite value."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"x {xs.shape} and y {ys.shape} differ in length")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return math.nan
    dx = xs - xs.mean()
    denominator = float(dx @ dx)
    if denominator == 0.0:
        return math.nan
    return float(dx @ (ys - ys.mean())) / denominator


class OverfitCheck(BaseModel):
    """The overfitting check of one trial (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    first_iteration: int = Field(ge=0, description="first training iteration of the fitted window")
    last_iteration: int = Field(ge=0, description="last training iteration of the fitted window")
    train_slope: float = Field(description="least-squares slope of train/objective, per iteration")
    validation_slope: float = Field(description="least-squares slope of validation/objective, per iteration")

    @property
    def overfitting(self) -> bool:
        """Train rose while validation fell over the window (nan slopes: False)."""
        return self.train_slope > 0 and self.validation_slope < 0

    def warning(self, trial: str) -> str:
        """The one-line warning the run summary prints for ``trial``."""
        return (
            f"warning: trial {trial} looks overfitted: over iterations {self.first_iteration}-"
            f"{self.last_iteration} its validation objective fell ({self.validation_slope:+.4f}/iter) "
            f"while its train objective rose ({self.train_slope:+.4f}/iter)"
        )


def check_overfit(
    iterations: Sequence[int], train: Sequence[float], validation: Sequence[float], window: int
) -> OverfitCheck | None:
    """The check over the last ``window`` reported iterations (None: fewer reported). Rows may come
    in any order and repeat an iteration (a trial restarted from a checkpoint reports the iterations
    after it again): the last row of each iteration counts."""
    if window < 2:
        raise ValueError(f"window must be >= 2 iterations, got {window}")
    if not len(iterations) == len(train) == len(validation):
        raise ValueError(
            f"iterations, train and validation have {len(iterations)}, {len(train)} and "
            f"{len(validation)} values"
        )
    rows = {int(i): (float(t), float(v)) for i, t, v in zip(iterations, train, validation, strict=True)}
    kept = sorted(rows)[-window:]
    if len(kept) < window:
        return None
    return OverfitCheck(
        first_iteration=kept[0],
        last_iteration=kept[-1],
        train_slope=least_squares_slope(kept, [rows[i][0] for i in kept]),
        validation_slope=least_squares_slope(kept, [rows[i][1] for i in kept]),
    )
