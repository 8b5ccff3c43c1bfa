"""The documents a ``raytrade tune`` run leaves next to Tune's files, typed.

* ``raytrade_run.json`` (:class:`RunFile`): the search (spec, replay, budget, objective, the
  reproducing command) and what it depended on (:class:`models.manifest.Provenance`: code version,
  library versions, data fingerprint), written when the run starts, so an interrupted run is still
  described and ``raytrade promote`` copies the training-time facts instead of measuring a store that
  may have grown since.
* ``leaderboard.json`` (a JSON list of :class:`LeaderboardRow`, best first): one row per trial, its
  best checkpoint by validation objective, and how many of its checkpoints that choice compared
  (:func:`checkpoints_compared` sums them over the trials: what a claim about the run's winner on the
  validation window must be adjusted for).

Both are frozen pydantic models written with ``model_dump_json`` and read with
``model_validate_json``; a malformed file is refused with one line naming it and the field.
A file with a field this checkout does not know (pydantic's ``extra_forbidden``) was written by a
newer raytrade: it is refused with that diagnosis (:func:`newer_writer_line`), the run file naming the
``provenance.code_version`` it records, since a run folder on shared storage is read by every
checkout that points at it and "Extra inputs are not permitted" sends the reader to the file, not to
their own out-of-date code. Undefined scores are written as ``NaN`` (as Python's ``json`` always wrote
them) and read back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from raytrade.models.manifest import Manifest, Provenance, SearchObjective, first_error, newer_writer_line
from raytrade.replay.errors import InputError
from raytrade.replay.remote import leads_outside
from raytrade.tune_specs.overfit import OverfitCheck
from raytrade.tune_specs.spec import Budget

RUN_FILE: Final = "raytrade_run.json"
LEADERBOARD_FILE: Final = "leaderboard.json"
_DOC = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


def _inside_run(rel: str) -> str:
    """``rel`` unchanged when it names a folder inside the run (relative, no ``..``, not empty).
    ``raytrade promote`` joins it onto the run folder (or its local mirror, which it makes hold
    exactly the remote's files): any other value would read, write or delete outside the run."""
    if leads_outside(rel):
        raise ValueError(f"{rel!r} is not a relative path inside the run folder (absolute, '..' or empty)")
    return rel


RunRelativePath = Annotated[str, AfterValidator(_inside_run)]
"""A folder of a run, relative to the run folder and inside it."""


class RunFileError(InputError):
    """A run folder's ``raytrade_run.json`` or ``leaderboard.json`` that is missing or malformed (an
    input error: the command was pointed at the wrong folder, or at an unfinished or older run)."""


class RunFile(BaseModel):
    """``raytrade_run.json``: one search, as started."""

    model_config = _DOC

    spec: str = Field(description="tune_specs spec name")
    family: str = Field(description="model family of the spec")
    replay: str = Field(description="replay store root (absolute)")
    budget: Budget
    objective: SearchObjective
    searched: list[str] = Field(description="paths (a/b) of the searched parameters")
    required_features: list[str]
    seed: int
    command: str = Field(description="the raytrade tune command that reproduces the search")
    provenance: Provenance = Field(description="code, libraries and data when the search started")


class LeaderboardRow(BaseModel):
    """One trial of a finished search: its best checkpoint (by validation objective) and scores."""

    model_config = _DOC

    trial: str
    trial_dir: RunRelativePath = Field(description="trial folder, relative to the run folder")
    params: dict[str, Any] = Field(description="searched parameter path -> value")
    iteration: int = Field(ge=0, description="training iteration of the checkpoint (or last result)")
    checkpoint: RunRelativePath | None = Field(
        description="checkpoint folder relative to the run; None: none left"
    )
    checkpoints_compared: int | None = Field(
        None,
        ge=0,
        description="the trial's checkpoints with a finite validation objective, among which "
        "``checkpoint`` is the best (0: none; None: an older run that did not record it)",
    )
    node_id: str | None
    env_runner_node_ids: list[str] = Field(
        default_factory=list,
        description="node id of each remote env runner, as the runner reported it (empty: none, or an "
        "older run)",
    )
    error: str | None = Field(
        description="the trial's error, if it failed: its most telling line (cluster.tune.trial_error_line)"
    )
    objective: float
    sharpe: float
    sortino: float
    cvar_5: float
    total_return: float
    turnover: float = Field(description="mean traded notional / equity per bar")
    max_drawdown: float
    information_ratio: float = Field(
        math.nan, description="annualised ratio of the per-bar excess over equal_weight (nan: older run)"
    )
    excess_return: float = Field(math.nan, description="total return minus equal_weight's (nan: older run)")
    gross_exposure: float = Field(math.nan, description="mean sum |w| of the target weights (nan: older run)")
    costs: float = Field(math.nan, description="total costs paid / initial equity (nan: older run)")
    train_objective: float = Field(
        math.nan,
        description="the same objective on the tail of the training window at the same checkpoint "
        "(tune_specs.objective.train_window; nan: older run)",
    )
    overfit: OverfitCheck | None = Field(
        None,
        description="train and validation objective slopes over the trial's last iterations "
        "(tune_specs.overfit; None: too few iterations, or an older run)",
    )


_ROWS = TypeAdapter(list[LeaderboardRow])


def _recorded_code_version(text: str) -> str | None:
    """``provenance.code_version`` of a run file's raw JSON, or None when it cannot be read there."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    provenance = document.get("provenance") if isinstance(document, dict) else None
    version = provenance.get("code_version") if isinstance(provenance, dict) else None
    return version if isinstance(version, str) else None


def write_run_file(run_dir: Path, record: RunFile) -> Path:
    """Write ``raytrade_run.json`` into ``run_dir`` (created if needed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    path.write_text(record.model_dump_json(indent=2))
    return path


def read_run_file(run_dir: Path) -> RunFile:
    """The ``raytrade_run.json`` of a run folder (:class:`RunFileError` naming the folder when
    absent, the field when malformed, e.g. written by a raytrade older than the provenance record; the
    writer and its ``code_version`` when a newer raytrade wrote it: :func:`newer_writer_line`)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise RunFileError(f"{str(run_dir)!r} is not a raytrade tune run (no {RUN_FILE})")
    text = path.read_text()
    try:
        return RunFile.model_validate_json(text)
    except ValidationError as exc:
        newer = newer_writer_line(path, exc, _recorded_code_version(text))
        raise RunFileError(newer or f"{str(path)!r} is not a valid run file: {first_error(exc)}") from None


def write_leaderboard(run_dir: Path, rows: list[LeaderboardRow]) -> Path:
    """Write ``leaderboard.json`` (rows in the given order: best first)."""
    path = run_dir / LEADERBOARD_FILE
    path.write_bytes(_ROWS.dump_json(rows, indent=2))
    return path


def _missing_run(run_dir: Path) -> str:
    """The error for a run folder that is not one: a file, or nothing, then naming the run ``raytrade
    tune`` most likely wrote instead (a ``--smoke`` search's default name is the spec's plus ``-smoke``)."""
    if run_dir.exists():
        return f"{str(run_dir)!r} is not a folder: pass the run folder `raytrade tune` printed"
    smoke = run_dir.with_name(f"{run_dir.name}-smoke")
    hint = (
        f"; a --smoke search writes {str(smoke)!r}, which exists"
        if (smoke / LEADERBOARD_FILE).is_file()
        else ": pass the folder `raytrade tune` printed (--storage/--name)"
    )
    return f"{str(run_dir)!r} does not exist{hint}"


def read_leaderboard(run_dir: Path) -> list[LeaderboardRow]:
    """The rows of a run's ``leaderboard.json``, best first."""
    path = Path(run_dir) / LEADERBOARD_FILE
    if not Path(run_dir).is_dir():
        raise RunFileError(_missing_run(Path(run_dir)))
    if not path.is_file():
        raise RunFileError(f"{str(run_dir)!r} has no {LEADERBOARD_FILE}: did `raytrade tune` finish?")
    try:
        return _ROWS.validate_json(path.read_text())
    except ValidationError as exc:
        newer = newer_writer_line(path, exc)
        raise RunFileError(newer or f"{str(path)!r} is not a valid leaderboard: {first_error(exc)}") from None


def checkpoints_compared(rows: list[LeaderboardRow]) -> int | None:
    """How many checkpoints a search compared on its validation window to pick its best one (the
    leaderboard's first row with a checkpoint, ``cluster.promote.best_row``): every trial's eligible
    checkpoints (:attr:`LeaderboardRow.checkpoints_compared`), summed. None when a row does not say
    (a run older than the count): the run's choice cannot be counted, and a claim about it cannot be
    adjusted for it."""
    counts = [r.checkpoints_compared for r in rows]
    if not counts or any(c is None for c in counts):
        return None
    return sum(c for c in counts if c is not None)


def compared_with_init(run: RunFile, own: int | None) -> int | None:
    """Every checkpoint compared on the validation window of ``run`` to reach its best: its own
    leaderboard's ``own`` (:func:`checkpoints_compared`) plus those its ``--init`` version was chosen
    among on the same window (``Provenance.init_validation``); None when either is unknown."""
    init = run.provenance.init_validation
    if own is None or init is None:
        return own
    return None if init.checkpoints_compared is None else own + init.checkpoints_compared


def version_checkpoints_compared(manifest: Manifest) -> int | None:
    """How many checkpoints were compared on its validation window to choose the version of
    ``manifest``: its selection's N (``raytrade select --promote``: every run's, counted in
    checkpoints), else its source run's leaderboard with that run's own ``--init`` ones
    (:func:`compared_with_init`) while the run folder is readable here; None otherwise (a remote or
    deleted run, an older leaderboard)."""
    selection = manifest.selection
    if selection is not None and selection.claim is not None and selection.claim.counted == "checkpoints":
        return selection.claim.candidates
    source = Path(manifest.source.run)
    try:
        return compared_with_init(read_run_file(source), checkpoints_compared(read_leaderboard(source)))
    except RunFileError:
        return None
