"""Inside a Ray job a relative path a command writes to is refused (cluster.options.WrittenPathOption).

`ray job submit --working-dir . -- raytrade nightly --replay store ...` ran in Ray's temporary copy
of the working dir: it ingested into, and wrote its reports and results into, that copy (deleted when
the job ends) and exited 0. The job is faked here: the variable Ray's job supervisor sets for the
entrypoint, or a working directory named like Ray's copy.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import LAZY_COMMANDS, main
from raytrade.cluster.options import (
    RAY_JOB_ENV,
    WrittenPathOption,
    refuse_relative_written_paths,
    relative_in_job,
)
from raytrade.replay.errors import InputError

JOB_COPY = "ray/session_1/runtime_resources/working_dir_files/_ray_pkg_0123abcd"


@pytest.fixture()
def in_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Ray job's entrypoint: the supervisor's variable set, the cwd a folder of the cluster's."""
    cwd = tmp_path / "driver"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(RAY_JOB_ENV, '{"runtime_env": {}, "metadata": {}}')
    return cwd


@pytest.fixture()
def in_working_dir_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cwd Ray gives a `--working-dir` job (no job variable: the folder alone tells)."""
    cwd = tmp_path / JOB_COPY
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    return cwd


def test_nightly_in_a_job_refuses_its_relative_default_results_file(tmp_path: Path, in_job: Path) -> None:
    (tmp_path / "registry").mkdir()
    result = CliRunner().invoke(
        main,
        [
            *("nightly", "--replay", str(tmp_path / "store"), "--registry", str(tmp_path / "registry")),
            *("--source", "synthetic", "--n-symbols", "2", "--years", "1"),
            *("--reports", str(tmp_path / "reports")),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.output == (
        "error: --results 'marketsimulatorresults.md' is a relative path and this command runs as a Ray "
        f"job, in {in_job}, the job driver's folder on the head node (not the folder it was submitted "
        f"from): it would have gone to {in_job / 'marketsimulatorresults.md'}; give an absolute path (or a "
        "URI) the cluster keeps\n"
    )
    assert not (tmp_path / "store").exists() and list(in_job.iterdir()) == []


def test_ingest_in_a_working_dir_copy_refuses_a_relative_store(in_working_dir_copy: Path) -> None:
    result = CliRunner().invoke(
        main, ["ingest", "--source", "synthetic", "--n-symbols", "2", "--years", "1", "--out", "store"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --out 'store' is a relative path and this command runs as")
    assert "Ray's temporary copy of the job's --working-dir (deleted when the job ends)" in result.output
    assert f"it would have gone to {in_working_dir_copy / 'store'};" in result.output
    assert len(result.output.splitlines()) == 1
    assert list(in_working_dir_copy.iterdir()) == []


def test_ingest_in_a_job_writes_an_absolute_store(tmp_path: Path, in_job: Path) -> None:
    args = ["ingest", "--source", "synthetic", "--n-symbols", "2", "--years", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "store" / "bars").is_dir() and list(in_job.iterdir()) == []


def test_promote_in_a_job_refuses_the_relative_default_registry(tmp_path: Path, in_job: Path) -> None:
    result = CliRunner().invoke(main, ["promote", "--run", str(tmp_path / "run"), "--name", "a"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --registry 'registry' is a relative path")


def test_select_in_a_job_reads_without_promoting_so_its_registry_is_not_checked(in_job: Path) -> None:
    select = main.get_command(click.Context(main), "select")
    assert select is not None
    context = select.make_context("select", ["/runs/a", "--out", "/reports/select"])
    refuse_relative_written_paths(context)  # --registry registry: read only without --promote
    context = select.make_context("select", ["/runs/a", "--out", "/x", "--promote", "alpha"])
    with pytest.raises(InputError, match="^--registry 'registry' is a relative path"):
        refuse_relative_written_paths(context)


@pytest.mark.parametrize(
    ("value", "cwd", "environ", "refused"),
    [
        ("store", Path("/home/u/repo"), {}, False),  # not a job: the user's own folder
        ("store", Path("/home/u/repo"), {RAY_JOB_ENV: "{}"}, True),
        ("store", Path("/tmp/ray/s/runtime_resources/working_dir_files/_ray_pkg_1"), {}, True),
        ("/data/store", Path("/tmp/ray/s/runtime_resources/working_dir_files/_ray_pkg_1"), {}, False),
        ("s3://bucket/store", Path("/x"), {RAY_JOB_ENV: "{}"}, False),
        (None, Path("/x"), {RAY_JOB_ENV: "{}"}, False),
        ("store", Path("/tmp/working_dir_files/runtime_resources"), {}, False),  # the order matters
    ],
)
def test_relative_in_job(value: str | None, cwd: Path, environ: dict[str, str], refused: bool) -> None:
    assert (relative_in_job("--out", value, environ, cwd) is not None) == refused


WRITTEN = {
    "calibrate-costs": {"out"},
    "demo": {"out"},
    "evaluate": {"out"},
    "experiment": {"out", "results_log"},
    "ingest": {"out"},
    "live": {"store", "state_file", "account_lock_dir"},
    "nightly": {"replay", "reports", "results"},
    "promote": {"registry"},
    "select": {"registry", "out"},
    "simulate-experience": {"out"},
    "tune": {"storage"},
}


def test_every_command_marks_the_places_it_writes() -> None:
    """The commands that write a store, registry, run folder, report or results file, and what they
    write: a new option of that kind must be a WrittenPathOption (or this list is out of date)."""
    context = click.Context(main)
    marked: dict[str, set[str]] = {}
    for name in sorted({*main.list_commands(context), *LAZY_COMMANDS}):
        command = main.get_command(context, name)
        assert command is not None
        commands = command.commands if isinstance(command, click.Group) else {name: command}
        for sub, one in commands.items():
            found = {p.name for p in one.params if isinstance(p, WrittenPathOption) and p.name}
            if found:
                marked[sub if sub != name else name] = found
    assert marked == {**WRITTEN, "migrate": {"registry"}, "sign": {"registry"}}
