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
from typing import Final, Literal

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


def read_nights(store: Path) -> NightLog:
    """The store's record (empty when it has none); ``InputError`` naming the file when it is not one
    this code wrote."""
    path = store / NIGHTS_FILE
    if not path.is_file():
        return NightLog()
    try:
        return NightLog.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise InputError(
            f"{str(path)!r} is not a nightly record ({first_problem(exc)}): move it aside to evaluate "
            "every night again"
        ) from None


def recorded_night(store: Path, day: str) -> Night | None:
    """Where ``day``'s night on ``store`` went, or None when the store records no such night."""
    return read_nights(store).nights.get(day)


def record_night(store: Path, day: str, report_dir: Path, results: Path) -> None:
    """Record (or, after ``--replace``, re-record) ``day`` on ``store``: its report folder and results
    file, absolute; the file is replaced whole."""
    log = read_nights(store)
    night = Night(report=str(report_dir.resolve()), results=str(results.resolve()))
    updated = log.model_copy(update={"nights": {**log.nights, day: night}})
    path = store / NIGHTS_FILE
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(updated.model_dump_json(indent=2) + "\n")
    os.replace(staging, path)
