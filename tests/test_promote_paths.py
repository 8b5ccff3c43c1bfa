"""A leaderboard names the trial and checkpoint folders that ``raytrade promote`` joins onto the run
folder (or onto its local mirror, which it makes hold exactly the remote's files, deleting the rest):
a value leading outside the run is refused before anything is read, downloaded or deleted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.cluster.run_file import (
    LEADERBOARD_FILE,
    LeaderboardRow,
    RunFileError,
    read_leaderboard,
    write_run_file,
)
from tests.run_files import smoke_run_file

OUTSIDE = ["../../victim", "/etc", "", ".", "a/../../b", "t0/../.."]


def _row(**update: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trial": "t0",
        "trial_dir": "t0",
        "params": {},
        "iteration": 1,
        "checkpoint": "t0/checkpoint_000001",
        "node_id": None,
        "error": None,
        "objective": 0.1,
        "sharpe": 0.2,
        "sortino": 0.3,
        "cvar_5": -0.01,
        "total_return": 0.02,
        "turnover": 0.1,
        "max_drawdown": 0.05,
    }
    return {**row, **update}


def _run(folder: Path, row: dict[str, Any]) -> Path:
    """A run folder holding a run file, one trial's (empty) params.json and a one-row leaderboard."""
    (folder / "t0").mkdir(parents=True)
    (folder / "t0" / "params.json").write_text("{}")
    write_run_file(folder, smoke_run_file("/data/store", "x", "d" * 64))
    (folder / LEADERBOARD_FILE).write_text(json.dumps([row]))
    return folder


@pytest.mark.parametrize("field", ["trial_dir", "checkpoint"])
@pytest.mark.parametrize("value", OUTSIDE)
def test_a_leaderboard_folder_outside_the_run_is_refused_naming_the_field(
    tmp_path: Path, field: str, value: str
) -> None:
    (tmp_path / LEADERBOARD_FILE).write_text(json.dumps([_row(**{field: value})]))
    with pytest.raises(RunFileError) as info:
        read_leaderboard(tmp_path)
    assert str(info.value) == (
        f"{str(tmp_path / LEADERBOARD_FILE)!r} is not a valid leaderboard: field '0.{field}': Value error, "
        f"{value!r} is not a relative path inside the run folder (absolute, '..' or empty)"
    )


def test_promote_of_a_remote_run_whose_checkpoint_leads_outside_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror of the checkpoint was made exact: every local file the remote lacked, outside the
    mirror, was deleted, then promote died with a traceback."""
    from raytrade.replay.remote import cache_dir

    monkeypatch.setenv("RAYTRADE_CACHE_DIR", str(tmp_path / "cache"))
    remote = tmp_path / "remote_run"
    uri = f"file://{remote}"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    rel = os.path.relpath(victim, cache_dir(uri))
    _run(remote, _row(checkpoint=rel))
    args = ["promote", "--run", uri, "--name", "x", "--registry", str(tmp_path / "registry")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    mirror_board = cache_dir(uri) / LEADERBOARD_FILE
    assert result.output.splitlines() == [
        f"error: {str(mirror_board)!r} is not a valid leaderboard: field '0.checkpoint': Value error, "
        f"{rel!r} is not a relative path inside the run folder (absolute, '..' or empty)"
    ]
    assert sorted(os.listdir(victim)) == ["important.txt"]
    assert not (tmp_path / "registry").exists()


def test_a_mirrored_checkpoint_is_checked_to_lie_inside_the_mirror_before_anything_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: a row that skipped validation (built in code) still cannot aim the exact
    download, which deletes what the remote lacks, outside the run's mirror."""
    from raytrade.cluster.remote_run import fetch_trial
    from raytrade.replay.remote import RemoteError

    monkeypatch.setenv("RAYTRADE_CACHE_DIR", str(tmp_path / "cache"))
    remote = tmp_path / "remote_run"
    (remote / "t0").mkdir(parents=True)
    (remote / "t0" / "params.json").write_text("{}")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    run_dir = tmp_path / "cache" / "run"
    run_dir.mkdir(parents=True)
    row = LeaderboardRow.model_construct(**_row(checkpoint="../../victim"))
    with pytest.raises(RemoteError, match=r"lies outside the mirror .*: nothing downloaded or deleted$"):
        fetch_trial(f"file://{remote}", run_dir, row)
    assert sorted(os.listdir(victim)) == ["important.txt"]


def test_a_trial_config_without_env_config_is_refused_in_one_line(tmp_path: Path) -> None:
    from raytrade.cluster.promote import trial_config
    from raytrade.replay.errors import InputError

    _run(tmp_path, _row())
    with pytest.raises(InputError) as info:
        trial_config(tmp_path, LeaderboardRow.model_validate(_row()))
    assert str(info.value) == (
        f"{str(tmp_path / 't0' / 'params.json')!r} is not an RLlib trial config: it holds no "
        "'env_config' object"
    )


def test_select_promote_refuses_a_leaderboard_rewritten_after_the_comparison(tmp_path: Path) -> None:
    """``select --promote`` read the winner's leaderboard again at promotion and promoted its best
    row, whatever it had become since the comparison."""
    from raytrade.cluster.promote import promote
    from raytrade.models.manifest import Selection, SelectionCandidate
    from raytrade.replay.errors import InputError

    run = _run(tmp_path / "run", _row(trial="t1", checkpoint="t1/checkpoint_000009", iteration=9))
    compared = SelectionCandidate.model_construct(trial="t0", checkpoint="t0/checkpoint_000001", iteration=1)
    selection = Selection.model_construct(candidates=[compared], winner=str(run))
    with pytest.raises(InputError) as info:
        promote(run, "alpha", tmp_path / "registry", selection=selection)
    assert str(info.value) == (
        f"the leaderboard of {str(run)!r} changed since the selection: its best checkpoint is now "
        "'t1/checkpoint_000009' (trial t1, iteration 9), the selection compared 't0/checkpoint_000001' "
        "(trial t0, iteration 1); nothing promoted, select again"
    )
    assert not (tmp_path / "registry").exists()
