"""What each ``raytrade simulate-experience`` run recorded into an experience store, so that a run
that would store the same episodes again is refused before it writes one.

An episode of a simulated run is a pure function of the policy (its version), the observed features,
the noise, the replay data and its seed (``envs.experience.simulate_episodes``: episode ``K`` of a
run is seeded ``seed + K``); only its ids differ from run to run (the run id has a random part, so
the writer's id checks cannot see the repeat). Re-running a command with the same arguments would
append bit-identical episodes under new ids, and every offline learner would count their
transitions twice.

Design decisions
----------------
* One JSON file per run under ``ROOT/recordings/`` (:data:`RECORDINGS_DIR`), written atomically
  before the run's episodes are stored (removed when none could be; rewritten to count the
  episodes stored when a write stops part-way), like the behaviour records (``replay.behaviour``), outside the
  fingerprinted ``experience`` table; no learner reads it.
* Two runs repeat an episode when they share the policy version, features, noise and replay data
  fingerprint and their episode seeds overlap; with no noise and a deterministic policy the seed
  changes nothing, so any two such runs repeat (:func:`repeats`).
* Stores recorded before the records existed have none: their runs cannot be compared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.replay.errors import InputError

RECORDINGS_DIR: Final = "recordings"


class RecordedRun(BaseModel):
    """One simulate-experience run: what decides its episodes, and which it recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(description="the run (episode ids are RUN_ID:K)")
    policy: str = Field(description="--policy as given")
    policy_version: str = Field(description="the rows' policy_version (NAME@VERSION)")
    stochastic: bool = Field(description="the policy draws at random (its seed changes its decisions)")
    features: tuple[str, ...] = Field(description="the observed feature columns")
    noise: float = Field(ge=0, description="std of the Gaussian noise on the targets (weight units)")
    seed: int = Field(description="seed of episode 0; episode K is seeded seed + K")
    episodes: int = Field(ge=1, description="episodes asked for")
    replay_sha256: str = Field(description="fingerprint of the replay store's bars and features")

    def seeds(self) -> range:
        return range(self.seed, self.seed + self.episodes)


def repeats(earlier: RecordedRun, run: RecordedRun) -> bool:
    """Whether ``run`` would record an episode ``earlier`` recorded: same policy version, features,
    noise and replay data, and a shared episode seed (any seed when neither noise nor the policy
    draws at random)."""
    same = (earlier.policy_version, earlier.features, earlier.noise, earlier.replay_sha256) == (
        run.policy_version,
        run.features,
        run.noise,
        run.replay_sha256,
    )
    seeded = run.noise > 0 or run.stochastic
    shared = set(earlier.seeds()) & set(run.seeds())
    return same and (bool(shared) or not seeded)


def recording_path(root: str | os.PathLike[str], run_id: str) -> Path:
    return Path(root) / RECORDINGS_DIR / f"{re.sub(r'[^A-Za-z0-9@._-]', '_', run_id)}.json"


def read_recordings(root: str | os.PathLike[str]) -> list[RecordedRun]:
    """Every run record of the store at ``root``; a file that is not one is refused (``InputError``)."""
    runs = []
    for path in sorted((Path(root) / RECORDINGS_DIR).glob("*.json")):
        try:
            runs.append(RecordedRun.model_validate_json(path.read_text()))
        except (OSError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{str(path)!r} is not a simulate-experience run record: {first}") from None
    return runs


def refuse_repeat(root: str | os.PathLike[str], run: RecordedRun) -> None:
    """``InputError`` (one line naming the earlier run and how to record new episodes) when the store
    at ``root`` holds a run that ``run`` repeats (:func:`repeats`)."""
    earlier = next((r for r in read_recordings(root) if repeats(r, run)), None)
    if earlier is None:
        return
    last = earlier.seed + earlier.episodes - 1
    if run.noise > 0 or run.stochastic:
        fresh = f"pass another --seed (free from {max(r.seed + r.episodes for r in read_recordings(root))})"
    else:
        fresh = f"{run.policy} without --noise decides the same whatever the seed: pass --noise > 0"
    raise InputError(
        f"{os.fspath(root)!r} already holds run {earlier.run_id} ({earlier.policy_version}, seeds "
        f"{earlier.seed}..{last}, noise {earlier.noise:g}) recorded on the same replay data: "
        f"its episodes would be stored again under new ids and counted twice by offline learners; {fresh}"
    )


def write_recording(root: str | os.PathLike[str], run: RecordedRun) -> Path:
    """Write ``run``'s record (atomically) into the store at ``root``; returns its path."""
    from raytrade.replay.writer import write_file_atomically

    path = recording_path(root, run.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, run.model_dump_json(indent=2).encode())
    return path
