"""One nightly per replay store at a time: an exclusive ``flock`` on ``STORE/nightly.lock``.

Why: two nightlies on one store (a cron run overlapping the previous one, a retried Ray job while the
first still runs) interleaved their ingest, evaluation, results section and night record
(``cluster.nightly_record``): both found the night not yet run, both ingested, and the later one
rewrote what the earlier one had written. :func:`nightly_lock` is taken before the night checks
whether it already ran and held until the run ends, so the second run is refused at once, with one
line naming the store, the lock file and the holder, and touches nothing.

* Non-blocking: a second run does not queue behind the first (a queued cron run would evaluate a
  night the first one just recorded, or pile up); it ends with :class:`NightlyBusyError`, an
  ``InputError``, so the command exits with the project's refusal status (2, ``cluster.errors``).
* Released on any exit: on return or exception by the ``with``; on a crash (SIGKILL, OOM, a node
  lost) by the kernel, because a ``flock`` lives only as long as the process's open file. So no lock
  is ever stale: the file stays behind, and what it says (the last holder's pid, host and start
  time, :class:`LockHolder`) is shown only while a live process holds the lock.
* The file lies at the store root beside ``nightly.json``, outside every table folder: the store's
  readers list only ``TABLE/year=YYYY/part-*.parquet``, so it is no table and no part of the data
  fingerprint. On NFS, Linux implements ``flock`` with NFS byte-range locks, so two hosts sharing the
  store exclude each other too; hence the host in the holder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.replay.errors import InputError

LOCK_FILE: Final = "nightly.lock"


class NightlyBusyError(InputError):
    """Another nightly holds the store's lock: this run refused, having done nothing."""


class LockHolder(BaseModel):
    """What ``STORE/nightly.lock`` says about the run holding it (written once the lock is held)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int = Field(description="Process id of the holding nightly.")
    host: str = Field(description="Host it runs on (the store may be on shared storage).")
    started: str = Field(description="When it took the lock, ISO 8601 UTC.")


def described(text: str) -> str:
    """``text`` (a lock file's content) as ``pid P on HOST, started T``; a file the holder has not
    written yet (it writes right after locking) or did not write says the holder is unknown."""
    try:
        holder = LockHolder.model_validate_json(text)
    except ValidationError:
        return "holder unknown: the lock file does not say"
    return f"pid {holder.pid} on {holder.host}, started {holder.started}"


@contextmanager
def nightly_lock(store: Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``store`` (an existing folder) for the ``with`` block; yields the
    lock file. ``NightlyBusyError`` at once, naming the store, the lock file and its holder, when
    another process holds it."""
    path = store / LOCK_FILE
    with _held(path, f"the store {store} is in use by another nightly"):
        yield path


def results_lock_file(results: Path) -> Path:
    """The lock beside a results file: ``.NAME.lock`` in its folder."""
    return results.with_name(f".{results.name}.lock")


@contextmanager
def results_lock(results: Path) -> Iterator[Path]:
    """Hold the exclusive lock of the results file ``results`` (its folder made when missing) for the
    ``with`` block: nightlies of different stores may share one results file and reports folder, which
    the store's lock does not cover. ``NightlyBusyError`` at once when another nightly holds it."""
    results.parent.mkdir(parents=True, exist_ok=True)
    path = results_lock_file(results)
    with _held(path, f"the results file {results} is in use by another nightly"):
        yield path


@contextmanager
def _held(path: Path, busy: str) -> Iterator[None]:
    """An exclusive non-blocking ``flock`` on ``path`` with this process as its holder; refused with
    ``busy``, the holder and the lock file when another process holds it."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise NightlyBusyError(
                f"{busy} ({described(handle.read())}; lock {path}): nothing done; run it again once "
                "that one has ended"
            ) from None
        try:
            holder = LockHolder(
                pid=os.getpid(), host=socket.gethostname(), started=datetime.now(UTC).isoformat()
            )
            handle.seek(0)
            handle.truncate()
            handle.write(holder.model_dump_json())
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
