"""Out-of-sample check of registry models: no evaluated window may hold bars a model trained on.

Design decisions
----------------
* **The handle says what its weights saw.** A registry handle's ``trained_on(root, store_sha256)``
  returns a :class:`TrainedOn` (``models.registry_load.PolicyHandle``; computed by
  ``models.training_window``, the one place that also decides ``raytrade tune --init``). envs sits
  below models, so the harness only ever sees the :class:`TrainedOn` value. A handle without
  ``trained_on`` (a stub) is :data:`UNKNOWN`; a bundle of walk-forward fold models whose planner
  checked each fold (``raytrade experiment``) says so (``TrainedOn.walk_forward``).
* **The rule** (the one ``tune --init`` applies): a window is out of sample for a model when its
  first bar comes at least ``embargo_bars`` bars of the evaluated store after the model's last
  training bar (:func:`first_allowed_start`). A window that starts earlier is in sample: it overlaps
  the training window, sits inside the embargo, or lies before the training window (the weights then
  learnt from bars after it: look-ahead, no out-of-sample claim either).
* **Refused by default** (:func:`refusal`: one line naming the model, its training window, the
  windows and the first allowed start). ``EvaluationConfig.in_sample`` evaluates them anyway; the
  report then labels those runs IN-SAMPLE.
* **Unknown training window** (an older version trained on a store that changed since, an offline
  version that read every date, a handle that records none): evaluated, with a warning in the log
  and the report that out-of-sample cannot be checked. Refusing would stop every evaluation of an
  older version, which ``raytrade evaluate`` and the nightly documented as working.
* **Validation window** (the checkpoint was chosen on it): recomputed when the store still has the
  fingerprint the version trained on, else as the manifest records it (every search since
  2026-12-05). An evaluated window that overlaps it is not refused: the report's status says
  ``selection_biased``, the policy is marked and ranked after the clean ones. A version whose
  validation window is unknown (an older one on a grown store) is evaluated with a warning: a window
  after its training window may hold the bars its checkpoint was chosen on (a reviewer's grown store
  put a whole ``--after-training`` fold there, reported out of sample with no word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from raytrade.replay.splits import TimeWindow


@dataclass(frozen=True)
class TrainedOn:
    """What a registry model's weights saw, as dates (UTC).

    ``train``: its training window; None with ``known`` when it trained on synthetic data (no bars of
    any store), None without ``known`` when it cannot be determined. ``how``: how ``train`` is known
    (or why it is not). ``validation``: the window its checkpoint was chosen on, when determinable.
    """

    train: TimeWindow | None
    how: str
    known: bool = True
    validation: TimeWindow | None = None
    walk_forward: bool = False
    """A bundle of fold models (``raytrade experiment``'s variants): each fold's model trained before
    its own test window, which its planner checked; there is no one training window to check here."""


UNKNOWN = TrainedOn(None, "its handle records no training window", known=False)


@dataclass(frozen=True)
class Span:
    """An evaluated window: its name and first and last bar (UTC)."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp

    def dates(self) -> str:
        return f"{self.name} ({_dates(self.start, self.end)})"


@dataclass(frozen=True)
class SampleCheck:
    """One registry model against the evaluated windows."""

    policy: str
    trained_on: TrainedOn
    first_allowed: pd.Timestamp | None  # first bar a window may start on; None: unknown or unbounded
    in_sample: tuple[str, ...]  # windows that start before ``first_allowed``
    validation_overlap: tuple[str, ...]  # windows overlapping the validation window
    embargo_bars: int

    @property
    def warning(self) -> str | None:
        """Why out-of-sample could not be checked, or only in part (None: it was)."""
        seen = self.trained_on
        if not seen.known:
            return (
                f"{self.policy}: out-of-sample cannot be checked, its training window is unknown ({seen.how})"
            )
        if seen.train is not None and seen.validation is None and not seen.walk_forward:
            return (
                f"{self.policy}: its validation window, on which its checkpoint was chosen, is unknown on "
                "this store (a version from before manifests recorded it, on a store that changed since): "
                "windows after its training window may overlap it, selection-biased"
            )
        return None


def _dates(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{start.date()} .. {end.date()}"


def first_allowed_start(
    calendar: pd.DatetimeIndex, train_end: pd.Timestamp, embargo_bars: int
) -> pd.Timestamp:
    """The first bar of ``calendar`` with at least ``embargo_bars`` bars strictly between it and
    ``train_end``; the calendar's end plus one day when there is none (nothing is out of sample)."""
    after = calendar[calendar > train_end]
    if len(after) > embargo_bars:
        return pd.Timestamp(after[embargo_bars])
    return pd.Timestamp(calendar[-1]) + pd.Timedelta(days=1)


def check_windows(
    policy: str,
    trained: TrainedOn,
    windows: Sequence[Span],
    calendar: pd.DatetimeIndex,
    embargo_bars: int,
) -> SampleCheck:
    """Which of ``windows`` are in sample for ``policy`` (see the module docstring)."""
    if trained.train is None:
        return SampleCheck(policy, trained, None, (), (), embargo_bars)
    allowed = first_allowed_start(calendar, trained.train.end, embargo_bars)
    inside = tuple(w.name for w in windows if w.start < allowed)
    val = trained.validation
    overlap = (
        () if val is None else tuple(w.name for w in windows if w.start <= val.end and w.end >= val.start)
    )
    return SampleCheck(policy, trained, allowed, inside, overlap, embargo_bars)


def refusal(check: SampleCheck, windows: Sequence[Span], advice: bool = True) -> str:
    """The one-line error for a model evaluated on bars it trained on (``advice``: with ``raytrade
    evaluate``'s ways forward)."""
    train = check.trained_on.train
    assert train is not None and check.first_allowed is not None  # only a checked model is refused
    named = ", ".join(w.dates() for w in windows if w.name in check.in_sample)
    fact = (
        f"{check.policy} trained on {_dates(train.start, train.end)} ({check.trained_on.how}); the evaluated "
        f"window(s) {named} start before {check.first_allowed.date()}, the first bar {check.embargo_bars} "
        "bars (the embargo) after it: in sample, not an out-of-sample result"
    )
    if not advice:
        return fact
    return (
        f"{fact}. Evaluate windows that start on or after {check.first_allowed.date()} (--walk-forward K "
        "--after-training cuts the folds from there), or pass --in-sample to evaluate anyway, labelled "
        "IN-SAMPLE"
    )
