"""A search stopped by a signal ends with the exact command that continues it.

``ray job stop`` sends the driver SIGTERM; before, the search ended with Ray's ``*** SIGTERM received``
dump and nothing else, although ``--resume`` continues it from the trials' last checkpoints."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raytrade.cluster import local_cluster, tune
from raytrade.cluster.tune import TuneOptions, tune_command


def _stopping_tuner(raised: BaseException) -> Any:
    class Tuner:
        def fit(self) -> Any:
            raise raised

    return lambda *_args, **_kwargs: Tuner()


@pytest.mark.parametrize(
    ("raised", "name", "exit_code"),
    [
        (SystemExit(signal.SIGTERM), "SIGTERM", signal.SIGTERM),  # what ray.init's driver handler raises
        (KeyboardInterrupt(), "SIGINT", 1),  # a second Ctrl-C, past Tune's graceful stop (click: Aborted!)
    ],
)
def test_a_search_stopped_by_a_signal_prints_the_command_that_continues_it(
    raised: BaseException,
    name: str,
    exit_code: int,
    synthetic_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_cluster, "init_ray", lambda *_, **__: True)
    monkeypatch.setattr(tune, "build_tuner", _stopping_tuner(raised))
    runs = tmp_path / "runs"
    args = ["--spec", "ppo", "--replay", str(synthetic_store), "--smoke", "--storage", str(runs)]
    args += ["--name", "ppo-20260102", "--no-wandb", "--seed", "3"]
    result = CliRunner().invoke(tune_command, args)
    run_dir = runs / "ppo-20260102"
    opts = TuneOptions(
        spec="ppo", replay=synthetic_store, smoke=True, storage=str(runs), name="ppo-20260102", seed=3
    )
    command = f"{opts.command()} --no-wandb --resume"
    assert result.exit_code == exit_code, result.output
    assert f"search stopped by {name}; continue it with: {command} (run folder {run_dir})" in result.output
    # the line is a command the CLI takes, for the same search, resumed
    _raytrade, _tune, *resumed = shlex.split(command)
    params = tune_command.make_context("tune", resumed).params
    assert params["resume"] and params["no_wandb"]
    assert (params["name"], params["storage"], params["seed"]) == ("ppo-20260102", str(runs), 3)


def test_the_resume_command_drops_env_runners_and_keeps_the_wandb_mode() -> None:
    """A resumed search keeps its env runners and refuses the flag; the wandb mode is not in the
    reproducing command, so a resume would otherwise fall back to offline logging."""
    opts = TuneOptions(spec="ppo", replay="/data/store", storage="/data/runs", name="n", env_runners=2)
    assert "--env-runners 2" in opts.command()
    assert opts.model_copy(update={"wandb": "online"}).resume_command() == (
        opts.command().replace(" --env-runners 2", "") + " --wandb --resume"
    )
    assert opts.resume_command() == opts.command().replace(" --env-runners 2", "") + " --resume"


PROBE = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path

    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    from raytrade.cluster.tune import resume_hint_on_stop

    with resume_hint_on_stop("raytrade tune --spec ppo --resume", Path("/data/runs/ppo")):
        os.kill(os.getpid(), signal.SIGTERM)  # as `ray job stop` does
        time.sleep(60)
    print("the search went on", flush=True)
    """
)


@pytest.mark.ray
def test_under_a_real_ray_driver_sigterm_prints_rays_dump_then_the_resume_line(tmp_path: Path) -> None:
    """The hint relies on the SIGTERM handler ``ray.init`` installs in the driver raising
    ``SystemExit(SIGTERM)`` after Ray's C++ handler printed its dump: checked in a fresh process (a
    fresh local Ray, ``address="local"``), so a Ray upgrade that changes it fails here."""
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    line = (
        "search stopped by SIGTERM; continue it with: raytrade tune --spec ppo --resume "
        "(run folder /data/runs/ppo)"
    )
    assert done.returncode != 0 and "the search went on" not in done.stdout, done.stderr[-2000:]
    assert line in done.stderr, done.stderr[-2000:]
    assert done.stderr.index("SIGTERM received") < done.stderr.index(line)


def test_a_first_sigterm_stops_tunes_loop_gracefully_a_second_goes_to_the_handler_before() -> None:
    """``graceful_sigterm``: a first SIGTERM, once Tune's loop has installed its SIGUSR1 stop, calls
    that stop (``fit`` returns, its state saved) and records the signal; a second one goes to the
    handler that was there (Ray's driver handler raises ``SystemExit``); so does one before Tune's
    loop runs. The handlers are restored after the block."""
    stops: list[int] = []

    class Previous(Exception):
        pass

    def ray_handler(signum: int, frame: Any) -> None:
        raise Previous(signum)

    old_term, old_usr1 = signal.signal(signal.SIGTERM, ray_handler), signal.getsignal(signal.SIGUSR1)
    try:
        with tune.graceful_sigterm() as term, pytest.raises(Previous):
            os.kill(os.getpid(), signal.SIGTERM)  # before Tune's loop: Ray's handler
        assert term == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is ray_handler  # restored
        with tune.graceful_sigterm() as term:
            signal.signal(signal.SIGUSR1, lambda signum, frame: stops.append(signum))  # Tune's loop starts
            os.kill(os.getpid(), signal.SIGTERM)
            assert stops == [signal.SIGUSR1] and term == [signal.SIGTERM]  # a graceful stop, no raise
            with pytest.raises(Previous):
                os.kill(os.getpid(), signal.SIGTERM)  # a second one: Ray's reaction
        assert stops == [signal.SIGUSR1] and term == [signal.SIGTERM, signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is ray_handler
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGUSR1, old_usr1)


WAIT_PROBE = textwrap.dedent(
    """
    import os, signal, threading, time

    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    from raytrade.cluster.tune import graceful_sigterm

    @ray.remote
    def slow():
        time.sleep(120)

    stopped = threading.Event()
    with graceful_sigterm() as term:
        signal.signal(signal.SIGUSR1, lambda signum, frame: stopped.set())  # what Tune's loop installs
        ref = slow.remote()
        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        while not stopped.is_set():  # Tune's loop: its time is spent inside ray.wait
            ray.wait([ref], timeout=0.1)
    print(f"stopped gracefully: {term}", flush=True)
    ray.shutdown()
    """
)


@pytest.mark.ray
def test_under_a_real_ray_driver_a_sigterm_inside_ray_wait_stops_the_loop(tmp_path: Path) -> None:
    """Ray's driver handler raised ``SystemExit`` inside ``ray.wait``, where Tune's loop spends its
    time, and the driver died with SIGABRT (exit 134) after Ray's dump: no resume line, no saved
    state. Under ``graceful_sigterm`` the loop ends on its own stop, in a fresh local Ray."""
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    done = subprocess.run(
        [sys.executable, "-c", WAIT_PROBE], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"stopped gracefully: [{int(signal.SIGTERM)}]" in done.stdout, done.stderr[-2000:]


def test_a_search_tune_stopped_on_sigterm_prints_the_line_and_exits_143(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``graceful_sigterm``: Tune's loop stops, ``fit`` returns with trials unfinished, and the
    command ends with the SIGTERM line and a SIGTERM's exit status (128 + 15)."""
    from types import SimpleNamespace

    class Tuner:
        def fit(self) -> Any:
            signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # Tune's loop installs its stop
            os.kill(os.getpid(), signal.SIGTERM)  # as `ray job stop` does
            return [SimpleNamespace(error=None, metrics={"done": False})]

    monkeypatch.setattr(local_cluster, "init_ray", lambda *_, **__: True)
    monkeypatch.setattr(tune, "build_tuner", lambda *_args, **_kwargs: Tuner())
    old_usr1 = signal.getsignal(signal.SIGUSR1)
    runs = tmp_path / "runs"
    args = ["--spec", "ppo", "--replay", str(synthetic_store), "--smoke", "--storage", str(runs)]
    try:
        result = CliRunner().invoke(tune_command, [*args, "--name", "p", "--no-wandb"])
    finally:
        signal.signal(signal.SIGUSR1, old_usr1)
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "search stopped by SIGTERM; continue it with: " in result.output
    assert f"--resume (run folder {runs / 'p'})" in result.output
