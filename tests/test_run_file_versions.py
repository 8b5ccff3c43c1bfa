"""A run folder written by a newer raytrade is refused as such, naming the writer's code version.

Run folders live on shared storage (``/data/runs`` on KubeRay) and are read by whichever checkout
points at them; pydantic's "Extra inputs are not permitted" sent the reader to the file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from raytrade.cluster.run_file import (
    LEADERBOARD_FILE,
    RUN_FILE,
    RunFile,
    RunFileError,
    read_leaderboard,
    read_run_file,
    write_run_file,
)
from raytrade.models.manifest import Provenance, SearchObjective
from raytrade.tune_specs.spec import ON_POLICY_SMOKE


def _run_file(run_dir: Path) -> dict[str, object]:
    """A valid run file written to ``run_dir``, returned as its raw JSON for the test to edit."""
    record = RunFile(
        spec="ppo",
        family="ppo",
        replay="/data/store",
        budget=ON_POLICY_SMOKE,
        objective=SearchObjective(metric="validation/objective", mode="max", cvar_penalty=1.0),
        searched=[],
        required_features=["ret_1"],
        seed=0,
        command="raytrade tune --spec ppo --replay /data/store",
        provenance=Provenance(
            started_at=datetime(2026, 1, 2, tzinfo=UTC),
            code_version="1a2b3c4d5e6f",
            libraries={},
            data_sha256="d" * 64,
            data_files=2,
        ),
    )
    path = write_run_file(run_dir, record)
    document: dict[str, object] = json.loads(path.read_text())
    return document


def test_a_run_file_with_a_field_this_checkout_does_not_know_names_the_newer_writer(tmp_path: Path) -> None:
    document = _run_file(tmp_path)
    provenance = document["provenance"]
    assert isinstance(provenance, dict)
    provenance["code_fingerprint_v2"] = "f" * 64  # a field a later raytrade records
    (tmp_path / RUN_FILE).write_text(json.dumps(document))
    with pytest.raises(RunFileError) as refused:
        read_run_file(tmp_path)
    assert str(refused.value) == (
        f"{str(tmp_path / RUN_FILE)!r} was written by a newer raytrade (code_version '1a2b3c4d5e6f'): "
        "its field 'provenance.code_fingerprint_v2' is unknown to this checkout; update the checkout "
        "(git pull, then reinstall) to read it"
    )


def test_a_newer_run_file_without_a_readable_code_version_is_still_named_newer(tmp_path: Path) -> None:
    document = _run_file(tmp_path)
    document["run"] = {"provenance": document.pop("provenance")}  # a later layout: moved, so unread
    (tmp_path / RUN_FILE).write_text(json.dumps(document))
    with pytest.raises(RunFileError) as refused:
        read_run_file(tmp_path)
    assert str(refused.value) == (
        f"{str(tmp_path / RUN_FILE)!r} was written by a newer raytrade: its field 'run' is unknown to "
        "this checkout; update the checkout (git pull, then reinstall) to read it"
    )


def test_a_run_file_missing_a_field_is_refused_as_before(tmp_path: Path) -> None:
    document = _run_file(tmp_path)
    del document["seed"]
    (tmp_path / RUN_FILE).write_text(json.dumps(document))
    with pytest.raises(RunFileError) as refused:
        read_run_file(tmp_path)
    assert str(refused.value) == (
        f"{str(tmp_path / RUN_FILE)!r} is not a valid run file: field 'seed': Field required"
    )


def test_a_leaderboard_with_a_field_this_checkout_does_not_know_names_a_newer_writer(tmp_path: Path) -> None:
    row = {"trial": "t0", "trial_dir": "t0", "params": {}, "iteration": 1, "checkpoint": None}
    row |= {"node_id": None, "error": None, "objective": 0.1, "sharpe": 0.2, "sortino": 0.3}
    row |= {"cvar_5": -0.01, "total_return": 0.02, "turnover": 0.1, "max_drawdown": 0.05}
    (tmp_path / LEADERBOARD_FILE).write_text(json.dumps([row]))
    assert read_leaderboard(tmp_path)[0].trial == "t0"  # the row as this checkout writes it
    (tmp_path / LEADERBOARD_FILE).write_text(json.dumps([{**row, "regime_objective": 0.4}]))
    with pytest.raises(RunFileError) as refused:
        read_leaderboard(tmp_path)
    assert str(refused.value) == (
        f"{str(tmp_path / LEADERBOARD_FILE)!r} was written by a newer raytrade: its field "
        "'0.regime_objective' is unknown to this checkout; update the checkout (git pull, then "
        "reinstall) to read it"
    )
