"""When a finished ``raytrade tune`` search may stand in for a new one, and what happens to one that
may not.

A search folder (``STORAGE/NAME``) is reused only when it is finished (``leaderboard.json`` next to
``raytrade_run.json``), its recorded command is the command that would run now, it was scored by the
objective's rule of now (``SearchObjective.book_end``: a search scored before the objective closed
the book at the window's end chose its checkpoints under another rule, which ``raytrade tune
--resume`` refuses to mix too), the code it ran is the code that would run now (its recorded code
fingerprint, ``Provenance.code_sha256``, equals ``models.registry.code_fingerprint``: a search space,
model or objective changed in code keeps the command; a run file older than the field is never
reused, fail closed), and the data it read are the data it would read now: its recorded
data fingerprint (``Provenance.data_sha256``) equals the store's current one, and, for a search that
read an experience store (an offline spec), its recorded experience fingerprint equals that store's
current one. Why the fingerprints too: a command names the replay store by path, not by content; a
store that was appended to, restated or re-ingested under the same path keeps the command, and a
search selected on other bars (its windows being fractions of the store, not even the same bars)
would otherwise be reused silently.

A folder that is not reused is moved aside, never deleted nor searched into: it is renamed to
``NAME.replaced-<its start, UTC>`` (``-2``, ``-3``, ... when taken) in the same parent, so nothing
already stored is lost and no folder ever holds two searches' trials (``run_tune`` refuses a folder
holding a run file anyway). The fingerprints are computed once by the caller (:func:`store_state`:
they hash every file of the store), not once per search.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raytrade.cluster.run_file import LEADERBOARD_FILE, RUN_FILE, RunFile, read_run_file
from raytrade.tune_specs.objective import BOOK_END

REPLACED_MARK = ".replaced-"
"""What the name of a search folder moved aside carries after the run name."""


@dataclass(frozen=True)
class StoreState:
    """The store's fingerprints as of now: what a finished search must have recorded to be reused.

    ``experience_sha256``: the ``experience`` table's fingerprint (``replay.fingerprint``,
    ``EXPERIENCE_TABLES``), None when no search of the caller reads an experience store or that store
    has no experience table; a recorded search that read one is then never reused (fail closed)."""

    data_sha256: str
    experience_sha256: str | None = None


def store_state(replay: Path, experience: Path | None = None) -> StoreState:
    """The fingerprints of ``replay``'s bars and features and of ``experience``'s experience table
    (None: no search reads one, or it has none: ``raytrade tune`` refuses the search, with its own
    message), each hashed once."""
    from raytrade.replay.fingerprint import EXPERIENCE_TABLES, data_fingerprint

    sha, _ = data_fingerprint(replay)
    exp = None
    if experience is not None and (experience / EXPERIENCE_TABLES[0]).is_dir():
        exp = data_fingerprint(experience, EXPERIENCE_TABLES)[0]
    return StoreState(sha, exp)


def why_not_reused(
    run: RunFile, finished: bool, command: str, store: StoreState, code_sha256: str
) -> str | None:
    """None when the search ``run`` records may stand in for ``command`` run by the code of
    fingerprint ``code_sha256`` on ``store`` (see the module docstring); else why not, naming both
    fingerprints (first 12 hex) when the code or the data differ."""
    if not finished:
        return f"it did not finish (no {LEADERBOARD_FILE})"
    if run.command != command:
        return "its command differs"
    return why_inputs_differ(run, store, code_sha256)


def why_inputs_differ(run: RunFile, store: StoreState, code_sha256: str) -> str | None:
    """None when the search ``run`` records was scored by today's objective rule, by the code of
    fingerprint ``code_sha256``, on the data ``store`` fingerprints; else why not, naming both
    fingerprints (first 12 hex) when the code or the data differ. What a reused search must meet
    (:func:`why_not_reused`) and what ``raytrade tune --resume`` requires before it adds trials to a
    search's leaderboard (one leaderboard, one rule, one code, one store)."""
    if run.objective.book_end != BOOK_END:
        # its leaderboard ranked checkpoints with the book marked to market at the window's end; a
        # re-score of its chosen one would still be a choice made under the other rule
        return f"it was scored with the book {run.objective.book_end} at the window's end (now: {BOOK_END})"
    code = run.provenance.code_sha256
    if code is None:
        return f"its run file records no code fingerprint (now {code_sha256[:12]}): its code is unknown"
    if code != code_sha256:
        return f"the code changed since (code fingerprint then {code[:12]}, now {code_sha256[:12]})"
    then, now = run.provenance.data_sha256, store.data_sha256
    if then != now:
        return f"the store's data changed since (fingerprint then {then[:12]}, now {now[:12]})"
    seen = run.provenance.experience
    if seen is not None and seen.sha256 != store.experience_sha256:
        current = "none" if store.experience_sha256 is None else store.experience_sha256[:12]
        return f"its experience store changed since (fingerprint then {seen.sha256[:12]}, now {current})"
    return None


def move_aside(run_dir: Path, run: RunFile) -> Path:
    """Rename ``run_dir`` to ``NAME.replaced-<start>`` (a free name in the same parent); the new path."""
    stem = f"{run_dir.name}{REPLACED_MARK}{run.provenance.started_at:%Y%m%dT%H%M%SZ}"
    target, n = run_dir.with_name(stem), 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{stem}-{n}")
    os.rename(run_dir, target)
    return target


def settle_run_dir(
    run_dir: Path, command: str, store: StoreState, code_sha256: str
) -> tuple[RunFile | None, str | None]:
    """(the run file of a reusable finished search in ``run_dir``, else None; the line to log), for
    ``command`` run by the code of fingerprint ``code_sha256`` on ``store``.

    No run file in ``run_dir``: (None, None), nothing to say. A search that may not be reused
    (:func:`why_not_reused`) is moved aside (:func:`move_aside`) and the line says why and where to.
    A malformed run file raises ``RunFileError`` naming it (nothing is moved)."""
    if not (run_dir / RUN_FILE).exists():
        return None, None
    run = read_run_file(run_dir)
    reason = why_not_reused(run, (run_dir / LEADERBOARD_FILE).exists(), command, store, code_sha256)
    if reason is None:
        line = (
            f"reusing the finished search {run_dir.name}: same command, same code ({code_sha256[:12]}), "
            f"same data ({store.data_sha256[:12]})"
        )
        if run.provenance.experience is not None:
            line += f" and experience ({run.provenance.experience.sha256[:12]})"
        return run, line
    moved = move_aside(run_dir, run)
    return None, f"searching {run_dir.name} again: {reason}; the old search is kept in {moved.name}"
