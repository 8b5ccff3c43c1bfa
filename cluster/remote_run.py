"""A ``raytrade tune`` run folder at a remote location (``--storage s3://…``), mirrored for reading.

``raytrade promote --run s3://…/NAME`` needs the run's two documents, then the best trial's
``params.json`` and checkpoint only: the other trials' checkpoints are not downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from raytrade.cluster.run_file import LEADERBOARD_FILE, RUN_FILE, LeaderboardRow
from raytrade.replay.remote import download_tree, is_remote, join


def fetch_run(run: str | os.PathLike[str]) -> Path:
    """The local folder of the run ``run``: itself when local, else its mirror holding the run file
    and the leaderboard as the remote has them now (a copy the remote lacks is removed)."""
    if not is_remote(run):
        return Path(run).resolve()
    documents = {RUN_FILE, LEADERBOARD_FILE}
    return download_tree(str(run), include=documents.__contains__, refresh=True, exact=True)


def fetch_trial(run: str | os.PathLike[str], run_dir: Path, row: LeaderboardRow) -> None:
    """Mirror ``row``'s ``params.json`` and checkpoint folder of the remote run ``run`` into
    ``run_dir`` (nothing to do for a local run). The row's folders are relative paths inside the run
    (:class:`LeaderboardRow` refuses others); each local copy is checked again to lie inside
    ``run_dir`` before anything is written or deleted there (``download_tree``'s ``within``)."""
    if not is_remote(run) or row.checkpoint is None:
        return
    uri = str(run)
    trial = run_dir / row.trial_dir
    download_tree(join(uri, row.trial_dir), trial, include="params.json".__eq__, refresh=True, within=run_dir)
    download_tree(
        join(uri, row.checkpoint), run_dir / row.checkpoint, refresh=True, exact=True, within=run_dir
    )
