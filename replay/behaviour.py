"""The behaviour policies of an experience store: who recorded its simulated episodes, and what that
policy's weights had seen.

An offline learner (BC, MARWIL, CQL, IQL) learns what its behaviour policy knew. A registry policy
whose weights saw bars after the window its experience was recorded on passes that knowledge to
every offline version trained on it; so ``raytrade simulate-experience`` writes one
:class:`BehaviourPolicy` per run and an offline search records those of the transitions it reads
(``cluster.tune``; the manifest's ``data.experience.behaviour``), whose training windows then extend
the offline version's (``models.training_window``).

Design decisions
----------------
* One JSON file per recording run under ``ROOT/behaviour/`` (:data:`BEHAVIOUR_DIR`), written
  atomically before the run's first episode: no episode is stored without its record. The file is
  outside the fingerprinted ``experience`` table; a record only ever widens what a search reports.
  It is provenance, not training input, so the experience fingerprint need not cover it: no learner
  reads it (``replay.experience.read_transitions`` reads the ``experience`` table alone, dataset rows
  and actions; no importance weight or action probability comes from a record), and the records a
  search used are copied whole into its run file and manifest (``data.experience.behaviour``), the
  copy that ``models.training_window`` reads (``raytrade evaluate``'s in-sample check, ``tune
  --init``), never the store's files again.
* Dates, not a store's bars: the behaviour policy's windows are computed where the experience was
  recorded (its replay store) and compared by date wherever they are read.
* The runs a search learns from are those of the transitions in its window (episode id
  ``RUN_ID:K``). A simulated run of a registry policy without a record (recorded before records
  existed) reads as a record whose training window is unknown; baseline runs (nothing trained) and
  the live loop's episodes (``live:``: a served version acts on bars after those it trained on)
  carry none.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.replay.errors import InputError
from raytrade.replay.reader import TimeLike, read_table

BEHAVIOUR_DIR: Final = "behaviour"
SIMULATED_REGISTRY_RUN: Final = "sim:registry:"
"""How the run id of a simulated registry policy's episodes begins (``cluster.simulate_experience``)."""


class BehaviourPolicy(BaseModel):
    """The policy a run of simulated experience was recorded with, and the bars its weights saw
    (dates, UTC; as known on the replay store the run was recorded on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(description="the recording run (episode ids are RUN_ID:K)")
    policy_version: str = Field(description="the experience rows' policy_version (NAME@VERSION)")
    known: bool = Field(description="its training window is known (or it trained on synthetic data)")
    how: str = Field(description="how the training window is known, or why it is not")
    train_start: datetime | None = Field(None, description="first bar it trained on (None: no store bars)")
    train_end: datetime | None = Field(None, description="last bar it trained on (None: no store bars)")
    validation_end: datetime | None = Field(
        None, description="last bar of the validation window its checkpoint was chosen on, when known"
    )
    in_sample: bool = Field(
        False,
        description="recorded although its weights saw bars after the recorded window "
        "(simulate-experience --behaviour-in-sample)",
    )

    @property
    def seen_until(self) -> datetime | None:
        """The last bar its weights saw or were chosen on (None: none of a store, or unknown)."""
        ends = [t for t in (self.train_end, self.validation_end) if t is not None]
        return max(ends) if ends else None


def behaviour_path(root: str | os.PathLike[str], run_id: str) -> Path:
    """Where the record of run ``run_id`` of the experience store at ``root`` lies."""
    return Path(root) / BEHAVIOUR_DIR / f"{re.sub(r'[^A-Za-z0-9@._-]', '_', run_id)}.json"


def write_behaviour(root: str | os.PathLike[str], record: BehaviourPolicy) -> Path:
    """Write ``record`` (atomically) into the experience store at ``root``; returns its path."""
    from raytrade.replay.writer import write_file_atomically

    path = behaviour_path(root, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, record.model_dump_json(indent=2).encode())
    return path


def read_behaviour(root: str | os.PathLike[str]) -> dict[str, BehaviourPolicy]:
    """Every record of the experience store at ``root``, by run id; a file that is not a record is
    refused (``InputError`` naming it)."""
    records: dict[str, BehaviourPolicy] = {}
    for path in sorted((Path(root) / BEHAVIOUR_DIR).glob("*.json")):
        try:
            record = BehaviourPolicy.model_validate_json(path.read_text())
        except (OSError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{str(path)!r} is not a behaviour policy record: {first}") from None
        records[record.run_id] = record
    return records


def recording_runs(root: str | os.PathLike[str], start: TimeLike, end: TimeLike) -> dict[str, str]:
    """Run id -> policy_version of the transitions of the store at ``root`` dated ``[start, end]``
    (inclusive; None: unbounded), every run, records or not: a simulated baseline's rows carry the
    baseline's name (``equal_weight``), a registry policy's ``NAME@VERSION``."""
    table = read_table(root, "experience", start=start, end=end, columns=["episode_id", "policy_version"])
    table = table.filter(table.column("episode_id").is_valid())
    pairs = table.group_by(["episode_id", "policy_version"]).aggregate([])
    return {
        str(episode).rsplit(":", 1)[0]: str(version)
        for episode, version in zip(
            pairs.column("episode_id").to_pylist(), pairs.column("policy_version").to_pylist(), strict=True
        )
    }


def behaviour_in_window(
    root: str | os.PathLike[str], start: TimeLike, end: TimeLike
) -> tuple[BehaviourPolicy, ...]:
    """The behaviour policies of the transitions of the store at ``root`` dated ``[start, end]``
    (inclusive), one per run, by run id: recorded ones, and an unknown one for a simulated registry
    run without a record (see the module docstring)."""
    runs = recording_runs(root, start, end)
    records = read_behaviour(root)
    found = []
    for run_id in sorted(runs):
        if run_id in records:
            found.append(records[run_id])
        elif run_id.startswith(SIMULATED_REGISTRY_RUN):
            found.append(
                BehaviourPolicy(
                    run_id=run_id,
                    policy_version=runs[run_id],
                    known=False,
                    how="recorded before simulate-experience recorded its behaviour policy's training window",
                )
            )
    return tuple(found)


HELD_OUT_SPLITS: Final = ("validation", "test")
"""The splits an offline search's scores are read on after its training window: its checkpoints are
chosen on validation; test is the out-of-sample check (``raytrade promote``, ``raytrade evaluate``)."""


def splits_seen(
    record: BehaviourPolicy, train_end: datetime, validation_end: datetime | None
) -> tuple[str, ...]:
    """The held-out splits (:data:`HELD_OUT_SPLITS`) of an offline search whose training window ends
    at ``train_end`` and whose validation window ends at ``validation_end`` (None: unknown) that its
    behaviour policy ``record`` saw: the learner learns what that policy knew, so its scores there are
    in sample. The one rule ``raytrade tune``, ``select`` and ``promote`` apply (``envs.evaluation.
    insample``'s, on the record's dates: a split is in sample when the policy saw any bar after the
    split before it ended, the embargo between them included):

    * none when the policy saw no bar after ``train_end`` (or no bar of a store);
    * validation when it saw bars after ``train_end`` up to ``validation_end``;
    * validation and test when it saw bars after ``validation_end``, when ``validation_end`` is
      unknown, or when what it saw is unknown (``known`` false: nothing can be shown out of sample).
    """
    if not record.known:
        return HELD_OUT_SPLITS
    seen = record.seen_until
    if seen is None or seen <= train_end:
        return ()
    if validation_end is not None and seen <= validation_end:
        return HELD_OUT_SPLITS[:1]
    return HELD_OUT_SPLITS


def describe(record: BehaviourPolicy) -> str:
    """``NAME@V (trained on A .. B[, validation to C]; how)`` for a message."""
    if not record.known and record.train_end is None:
        return f"{record.policy_version} (training window unknown: {record.how})"
    if record.train_end is None:
        return f"{record.policy_version} (no store bars: {record.how})"
    assert record.train_start is not None
    span = f"trained on {record.train_start.date()} .. {record.train_end.date()}"
    if record.validation_end is not None:
        span += f", validation to {record.validation_end.date()}"
    return f"{record.policy_version} ({span}; {record.how})"
