"""The bars a registry version's weights saw, as bars of a store: the one place that decides it.

``raytrade tune --init`` (``tune_specs.init_weights.check_training_window``) and ``raytrade
evaluate`` (``envs.evaluation.insample``, through ``PolicyHandle.trained_on``) both ask
:func:`version_training_window`:

* trained on synthetic data: None (it saw no store's bars);
* the store has the fingerprint the version trained on: its train split recomputed on that store
  with the version's own data config (fractions, embargo, universe);
* else the window its manifest records (``data.train_window``, every search since it existed; an
  offline version's experience window);
* else :class:`TrainingWindowUnknown` (an offline version that read every date of its experience
  table, or an older version trained on a store that has changed since);
* an offline version's window then ends no earlier than the last bar its behaviour policies saw
  (trained on, or chose their checkpoint on; ``data.experience.behaviour``, ``replay.behaviour``):
  cloning a policy learns what it knew. A behaviour policy whose training window is unknown makes
  the offline version's unknown too.

The validation window (where the version's checkpoint was chosen, :func:`version_validation_window`)
is recomputed on the store the version trained on, unchanged, else read from the manifest
(``data.validation_window``, every search since 2026-12-05); an older version's on a changed store
is unknown, and the evaluation says so (``envs.evaluation.insample``).

An offline run's held-out scores (its search's validation scores, ``raytrade select``'s ranking and
claim, ``raytrade promote``'s metrics) are in sample on the splits its behaviour policies saw
(:func:`behaviour_in_sample`, by ``replay.behaviour.splits_seen``, the rule ``raytrade tune`` warns
by): the commands that report those scores say so, naming the run and the policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from raytrade.envs.config import ReplayDataConfig
from raytrade.envs.evaluation.insample import TrainedOn
from raytrade.models.manifest import BehaviourInSample, ExperienceFingerprint, Manifest
from raytrade.replay.behaviour import BehaviourPolicy, describe, splits_seen
from raytrade.replay.errors import InputError
from raytrade.replay.splits import TimeWindow


class TrainingWindowUnknown(InputError):
    """The version's training window cannot be determined on this store (the message says why)."""


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def version_training_window(
    manifest: Manifest, root: str, store_sha256: str, label: str
) -> tuple[pd.Timestamp, pd.Timestamp, str] | None:
    """(first bar, last bar, how it is known) of the window the version ``label`` (``manifest``)
    trained on, as bars of the store at ``root`` (fingerprint ``store_sha256``); see the module
    docstring for None and :class:`TrainingWindowUnknown`."""
    data = manifest.env_config().data
    if not isinstance(data, ReplayDataConfig):
        return None
    experience = manifest.data.experience
    if experience is not None and experience.window is None:
        raise TrainingWindowUnknown(
            f"{label} is an offline version recorded before experience windows: it learnt from every "
            "date of its experience table"
        )
    own = _own_window(manifest, data, root, store_sha256, label)
    behaviour = experience.behaviour if experience is not None else None
    return own if not behaviour else _with_behaviour(own, behaviour, label)


def _own_window(
    manifest: Manifest, data: ReplayDataConfig, root: str, store_sha256: str, label: str
) -> tuple[pd.Timestamp, pd.Timestamp, str]:
    """The bars the version itself trained on (its experience window for an offline one)."""
    if manifest.data.sha256 == store_sha256:
        from raytrade.envs.replay_loader import split_calendar

        train = split_calendar(data.model_copy(update={"root": root, "split": "train"}))
        recorded = manifest.data.train_window
        if recorded is not None and (_utc(recorded.start) < train[0] or _utc(recorded.end) > train[-1]):
            # the calendar rule changed since (stamps where nothing traded are no bars since 2026-12-05):
            # the bars it trained on are the recorded ones, which the recomputation no longer covers
            start, end = min(train[0], _utc(recorded.start)), max(train[-1], _utc(recorded.end))
            return start, end, "recomputed on this store and widened to the window its manifest records"
        return train[0], train[-1], "recomputed on this store, which has the fingerprint it trained on"
    if manifest.data.train_window is not None:
        recorded = manifest.data.train_window
        return _utc(recorded.start), _utc(recorded.end), "as its manifest records it"
    experience = manifest.data.experience
    window = experience.window if experience is not None else None
    if window is not None:
        return _utc(window.train_start), _utc(window.train_end), "as its manifest records it"
    raise TrainingWindowUnknown(
        f"{label} trained on the store {manifest.data.root} with fingerprint {manifest.data.sha256[:12]}, "
        f"the store {root} now has {store_sha256[:12]} (grown, restated or another store) and its "
        "manifest records no training window"
    )


def _with_behaviour(
    own: tuple[pd.Timestamp, pd.Timestamp, str], behaviour: list[BehaviourPolicy], label: str
) -> tuple[pd.Timestamp, pd.Timestamp, str]:
    """``own`` widened to the bars the offline version's behaviour policies saw (trained or chosen
    their checkpoint on): it learnt what they knew. One whose window is unknown makes it unknown."""
    unknown = next((b for b in behaviour if not b.known), None)
    if unknown is not None:
        raise TrainingWindowUnknown(
            f"{label} learnt from experience recorded by {describe(unknown)}: what that policy's "
            "weights saw is unknown, and so is what this version learnt from"
        )
    start, end, how = own
    seen = [b for b in behaviour if b.seen_until is not None]
    last = max(seen, key=lambda b: _utc(b.seen_until), default=None)
    if last is None or _utc(last.seen_until) <= end:
        return own
    first = min((_utc(b.train_start) for b in seen if b.train_start is not None), default=start)
    return (
        min(start, first),
        _utc(last.seen_until),
        f"{how}, widened to what its behaviour policy {describe(last)} saw",
    )


def version_validation_window(manifest: Manifest, root: str, store_sha256: str) -> TimeWindow | None:
    """The validation window the version's checkpoint was chosen on: recomputed on the store at
    ``root`` when it has the fingerprint the version trained on, else as its manifest records it;
    None when neither (synthetic data, or an older version on a changed store)."""
    data = manifest.env_config().data
    if not isinstance(data, ReplayDataConfig):
        return None
    if manifest.data.sha256 != store_sha256:
        recorded = manifest.data.validation_window
        if recorded is None:
            return None
        return TimeWindow("validation", _utc(recorded.start), _utc(recorded.end), 0)
    from raytrade.envs.replay_loader import split_calendar

    bars = split_calendar(data.model_copy(update={"root": root, "split": "validation"}))
    start, end = bars[0], bars[-1]
    recorded = manifest.data.validation_window
    if recorded is not None:  # widened to the recorded one where the calendar rule has moved it (above)
        start, end = min(start, _utc(recorded.start)), max(end, _utc(recorded.end))
    return TimeWindow("validation", start, end, int(((bars >= start) & (bars <= end)).sum()))


def trained_on(manifest: Manifest, root: str, store_sha256: str, label: str) -> TrainedOn:
    """What the version ``label`` saw, for the evaluation's out-of-sample check
    (``envs.evaluation.insample``); an unknown training window is ``known=False``, never an error."""
    try:
        window = version_training_window(manifest, root, store_sha256, label)
    except TrainingWindowUnknown as exc:
        return TrainedOn(None, str(exc), known=False)
    if window is None:
        return TrainedOn(None, "trained on synthetic data, no bars of this store")
    start, end, how = window
    validation = version_validation_window(manifest, root, store_sha256)
    return TrainedOn(TimeWindow("train", start, end, 0), how, validation=validation)


def behaviour_in_sample(
    experience: ExperienceFingerprint | None, validation_end: datetime | None
) -> list[BehaviourInSample]:
    """The behaviour policies of an offline run's ``experience`` (its run file's or manifest's) that
    saw bars of its validation split (ending ``validation_end``; None: unknown) or its test split
    (``replay.behaviour.splits_seen``); empty for an online run or one older than the records."""
    window = None if experience is None else experience.window
    if experience is None or window is None:
        return []
    found = []
    for b in experience.behaviour or []:
        splits = splits_seen(b, window.train_end, validation_end)
        if splits:
            found.append(
                BehaviourInSample(
                    policy=b.policy_version,
                    described=describe(b),
                    seen_until=b.seen_until if b.known else None,
                    splits=list(splits),
                )
            )
    return found


def in_sample_sentence(seen: BehaviourInSample) -> str:
    """``its behaviour policy NAME (...) saw ...: its SPLITS scores are in sample``, for a message
    that begins with the run's or version's name."""
    splits = " and ".join(seen.splits)
    if seen.seen_until is None:
        return (
            f"what its behaviour policy {seen.described} saw is unknown: its {splits} scores cannot be "
            "shown out of sample"
        )
    return (
        f"its behaviour policy {seen.described} saw bars through {seen.seen_until.date()}, of its {splits} "
        f"split{'s' if len(seen.splits) > 1 else ''}: its {splits} scores are in sample (it learnt what "
        "that policy knew), not out-of-sample results"
    )
