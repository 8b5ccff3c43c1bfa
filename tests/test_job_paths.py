"""Inside a Ray job a relative path a command reads or writes is refused (cluster.options.PathOption,
WrittenPathOption, PathArgument).

`ray job submit --working-dir . -- raytrade nightly --replay store ...` ran in Ray's temporary copy
of the working dir: it ingested into, and wrote its reports and results into, that copy (deleted when
the job ends) and exited 0. A relative path a command only reads (`raytrade tune --replay store`)
resolved against the same copy, which `.rayignore` keeps the store out of: a bare "does not exist"
from deep inside. The job is faked here: the variable Ray's job supervisor sets for the entrypoint,
or a working directory named like Ray's copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import LAZY_COMMANDS, main
from raytrade.cluster.options import (
    RAY_JOB_ENV,
    PathArgument,
    PathOption,
    WrittenPathOption,
    refuse_relative_paths,
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
    refuse_relative_paths(context)  # --registry registry: not used without --promote
    context = select.make_context("select", ["/runs/a", "--out", "/x", "--promote", "alpha"])
    with pytest.raises(InputError, match="^--registry 'registry' is a relative path"):
        refuse_relative_paths(context)


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
    marked = _marked(lambda p: isinstance(p, WrittenPathOption))
    assert marked == {**WRITTEN, "migrate": {"registry"}, "sign": {"registry"}}


def _marked(kind: Callable[[click.Parameter], bool]) -> dict[str, set[str]]:
    """Per command (a group's subcommands by their own names), its parameters of ``kind``."""
    context = click.Context(main)
    marked: dict[str, set[str]] = {}
    for name in sorted({*main.list_commands(context), *LAZY_COMMANDS}):
        command = main.get_command(context, name)
        assert command is not None
        commands = command.commands if isinstance(command, click.Group) else {name: command}
        for sub, one in commands.items():
            found = {p.name for p in one.params if kind(p) and p.name}
            if found:
                marked[sub] = found
    return marked


# ------------------------------------------------------------------ places a command reads


def _read_refusal(flag: str, value: str, cwd: Path, folder: str) -> str:
    return (
        f"error: {flag} {value!r} is a relative path and this command runs as a Ray job, in {cwd}, {folder}: "
        f"it would be read from {cwd / value}; pass an absolute path on the cluster's shared storage\n"
    )


DRIVER = "the job driver's folder on the head node (not the folder it was submitted from)"
COPY = "Ray's temporary copy of the job's --working-dir (deleted when the job ends)"


def test_tune_in_a_job_refuses_a_relative_store_it_reads(tmp_path: Path, in_job: Path) -> None:
    """It used to look for the store in the job's folder and end with a bare "does not exist"."""
    args = ["tune", "--spec", "ppo", "--smoke", "--replay", "store", "--storage", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output == _read_refusal("--replay", "store", in_job, DRIVER)
    assert not (tmp_path / "runs").exists() and list(in_job.iterdir()) == []


def test_experiment_in_a_working_dir_copy_refuses_a_relative_store_it_reads(
    tmp_path: Path, in_working_dir_copy: Path
) -> None:
    args = ["experiment", "--replay", "store", "--out", str(tmp_path / "exp"), "--budget", "smoke"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output == _read_refusal("--replay", "store", in_working_dir_copy, COPY)
    assert not (tmp_path / "exp").exists()


def test_select_in_a_job_refuses_a_relative_run_folder_argument(tmp_path: Path, in_job: Path) -> None:
    args = ["select", str(tmp_path / "runs" / "a"), "runs/b", "--out", str(tmp_path / "select")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output == _read_refusal("RUN_DIRS", "runs/b", in_job, DRIVER)


def _context(command: str, args: list[str]) -> click.Context:
    found = main.get_command(click.Context(main), command)
    assert found is not None
    return found.make_context(command, list(args))  # click consumes the list it parses


def test_serve_in_a_job_refuses_its_relative_default_registry(in_job: Path) -> None:
    with pytest.raises(InputError) as refused:
        refuse_relative_paths(_context("serve", ["--model", "alpha", "--detach"]))
    assert f"{refused.value}\n" == _read_refusal("--registry", "registry", in_job, DRIVER).removeprefix(
        "error: "
    )


@pytest.mark.parametrize(
    ("command", "args", "reading"),
    [
        ("evaluate", ["--replay", "/s", "--out", "/o"], ["--policies", "cash, registry:alpha@2"]),
        ("simulate-experience", ["--replay", "/s", "--out", "/o"], ["--policy", "registry:alpha"]),
        ("tune", ["--spec", "ppo", "--replay", "/s", "--storage", "/r"], ["--init", "registry:alpha"]),
    ],
)
def test_a_default_registry_is_refused_only_where_the_command_reads_it(
    in_job: Path, command: str, args: list[str], reading: list[str]
) -> None:
    """Baselines only, a non-registry policy, no --init: the registry is not read, nor checked."""
    if command == "simulate-experience":
        refuse_relative_paths(_context(command, [*args, "--policy", "kelly_lite"]))
    else:
        refuse_relative_paths(_context(command, args))
    with pytest.raises(
        InputError, match="^--registry 'registry' is a relative path .* it would be read from"
    ):
        refuse_relative_paths(_context(command, [*args, *reading]))


def test_relative_in_job_says_where_a_read_path_would_be_read_from() -> None:
    why = relative_in_job("--replay", "store", {RAY_JOB_ENV: "{}"}, Path("/head/driver"), "read")
    assert why == (
        "--replay 'store' is a relative path and this command runs as a Ray job, in /head/driver, "
        f"{DRIVER}: it would be read from /head/driver/store; pass an absolute path on the cluster's "
        "shared storage"
    )


READ = {
    "calibrate-costs": {"replay"},
    "evaluate": {"replay", "registry", "cost_profile", "cash_rates"},
    "experiment": {"replay"},
    "ingest": {"path"},
    "nightly": {"registry", "path", "cash_rates"},
    "promote": {"run_dir"},
    "recalibrate": {"replay"},
    "select": {"run_dirs", "replay"},
    "serve": {"registry"},
    "simulate-experience": {"replay", "registry"},
    "summary": {"root"},
    "tune": {"replay", "experience", "cost_profile", "registry", "cash_rates"},
}


def test_every_command_marks_the_places_it_reads() -> None:
    """The local paths a command reads (a store, registry, run folder, cost profile, CSV folder) and
    does not write: a new one must be a PathOption or PathArgument (or this list is out of date)."""
    marked = _marked(
        lambda p: isinstance(p, PathOption | PathArgument) and not isinstance(p, WrittenPathOption)
    )
    assert marked == READ
