"""Which nights a replay store was evaluated for, and where each went: ``STORE/nightly.json``.

Why with the store: the store is the one thing every run of a nightly names (``--replay``), while the
results file and the reports folder default to paths relative to the working directory, so the same
night run from another folder (cron from ``$HOME``, a Ray job) found no section in *its* results file
and evaluated and wrote the night again. The record is keyed by the night's date and holds the
absolute report folder and results file, so a rerun can say where that night went.

The file lies at the store root, outside every table folder: the store's readers list only
``TABLE/year=YYYY/part-*.parquet`` (``replay.reader.table_files``), so it is neither read as a table
nor part of the data fingerprint (``replay.fingerprint``); a store mirror copies it like any file.
It is written after the night's section, replaced whole (temp file + rename): a crash before that
leaves no record, and the rerun evaluates the night.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.replay.errors import InputError, first_problem

NIGHTS_FILE: Final = "nightly.json"
NIGHTS_SCHEMA: Final = "raytrade.nightly/1"


class Night(BaseModel):
    """Where one night's evaluation went (absolute paths)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report: str = Field(description="The night's report folder (REPORTS/DATE), absolute.")
    results: str = Field(description="The results file holding the night's section, absolute.")


class NightLog(BaseModel):
    """``STORE/nightly.json``: the nights evaluated on this store, by date (``YYYY-MM-DD``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_schema: Literal["raytrade.nightly/1"] = NIGHTS_SCHEMA
    nights: dict[str, Night] = Field(default_factory=dict)


Record = TypeVar("Record", bound=BaseModel)


def _read_record(path: Path, model: type[Record], what: str, advice: str) -> Record:
    """The record at ``path`` (``model()`` when there is none); ``InputError`` naming the file, what
    it should be and ``advice`` when it is not one this code wrote."""
    if not path.is_file():
        return model()
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise InputError(f"{str(path)!r} is not {what} ({first_problem(exc)}): {advice}") from None


def _write_record(path: Path, record: BaseModel) -> None:
    """Replace the record at ``path`` whole (temp file + rename)."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(record.model_dump_json(indent=2) + "\n")
    os.replace(staging, path)


def read_nights(store: Path) -> NightLog:
    """The store's record (empty when it has none); ``InputError`` naming the file when it is not one
    this code wrote."""
    return _read_record(
        store / NIGHTS_FILE, NightLog, "a nightly record", "move it aside to evaluate every night again"
    )


def recorded_night(store: Path, day: str) -> Night | None:
    """Where ``day``'s night on ``store`` went, or None when the store records no such night."""
    return read_nights(store).nights.get(day)


def record_night(store: Path, day: str, report_dir: Path, results: Path) -> None:
    """Record (or, after ``--replace``, re-record) ``day`` on ``store``: its report folder and results
    file, absolute; the file is replaced whole."""
    log = read_nights(store)
    night = Night(report=str(report_dir.resolve()), results=str(results.resolve()))
    _write_record(store / NIGHTS_FILE, log.model_copy(update={"nights": {**log.nights, day: night}}))


# ------------------------------------------------------- ingests that no section has reported yet

PENDING_FILE: Final = "nightly-ingest.json"


class PendingIngest(BaseModel):
    """What nightly ingests stored, and warned about, since the last section was written:
    ``STORE/nightly-ingest.json``. A night that fails after its ingest (an evaluation error, a killed
    job) leaves its bars in the store; its retry ingests "nothing new", so without this record the
    section would never say what entered the store, nor repeat the ingest's warnings (bars not
    stored, restatements, suspected splits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_schema: Literal["raytrade.nightly-ingest/1"] = "raytrade.nightly-ingest/1"
    appended: dict[str, int] = Field(default_factory=dict, description="Rows appended per table.")
    warnings: tuple[str, ...] = Field((), description="The ingests' warnings, first seen first.")
    runs: tuple[str, ...] = Field((), description="The nights (YYYY-MM-DD) whose ingests these are.")

    def plus(self, other: PendingIngest) -> PendingIngest:
        """Both ingests: rows summed per table, each warning once, the nights in order."""
        tables = {*self.appended, *other.appended}
        return PendingIngest(
            appended={t: self.appended.get(t, 0) + other.appended.get(t, 0) for t in sorted(tables)},
            warnings=tuple(dict.fromkeys((*self.warnings, *other.warnings))),
            runs=tuple(dict.fromkeys((*self.runs, *other.runs))),
        )

    @property
    def empty(self) -> bool:
        return not any(self.appended.values()) and not self.warnings


def read_pending_ingest(store: Path) -> PendingIngest:
    """The ingests no section has reported yet (none: an empty record)."""
    return _read_record(
        store / PENDING_FILE,
        PendingIngest,
        "a nightly ingest record",
        "move it aside (the next section then reports only its own night's ingest)",
    )


def write_pending_ingest(store: Path, pending: PendingIngest) -> None:
    """Replace the record whole (temp file + rename); an empty one removes the file."""
    path = store / PENDING_FILE
    if pending.empty:
        path.unlink(missing_ok=True)
        return
    _write_record(path, pending)
