"""``raytrade tune`` refuses what it can check from the options and the stores before Ray starts, and
says why a search whose trials all failed failed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.tune import tune_command

N_ASSETS = 4


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal here comes before Ray starts: starting it fails the test."""
    from raytrade.cluster import local_cluster

    monkeypatch.setattr(local_cluster, "init_ray", lambda *_, **__: pytest.fail("Ray started"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("precheck") / "store"
    market = generate(n_symbols=N_ASSETS, years=1.5, seed=1)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(tune_command, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def smoke(store: Path, tmp_path: Path, spec: str = "ppo") -> list[str]:
    return [
        "--spec",
        spec,
        "--replay",
        str(store),
        "--smoke",
        "--storage",
        str(tmp_path / "runs"),
        "--no-wandb",
    ]


# ------------------------------------------------------------------------------ experience


def test_experience_recorded_with_other_features_is_refused_naming_column_episode_and_both_specs(
    store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience
    from raytrade.cluster.tune import TuneOptions
    from raytrade.replay.reader import read_frame
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import env_layout, offline_env_config

    out = tmp_path / "exp"
    simulate_experience(SimulateOptions(policy="equal_weight", replay=store, out=out, features="enriched"))
    logged = read_frame(out, "experience", columns=["episode_id", "observation_spec"])
    opts = TuneOptions(spec="bc", replay=store, experience=out, smoke=True)
    spec = get_spec("bc")
    learner = env_layout(offline_env_config(opts.env_config(spec, opts.budget(spec)))).observation_spec
    assert logged["observation_spec"].nunique() == 1 and logged["observation_spec"][0] != learner
    code, output = invoke([*smoke(store, tmp_path, "bc"), "--experience", str(out)])
    assert code == 2
    assert output.strip() == (
        f"error: experience column 'observation_spec' of episode {logged['episode_id'].min()!r} is "
        f"{logged['observation_spec'][0][:12]}..., the learner's is {learner[:12]}... (observations "
        "encoded with other feature columns or another normaliser)"
    )


def test_experience_recorded_at_the_default_split_is_refused_at_another_train_fraction_naming_it(
    store: Path, tmp_path: Path
) -> None:
    """``--train-fraction`` moves the training window the learner's normaliser is fitted on, so
    experience encoded at the default split (simulate-experience's) no longer matches it: the one
    line names the flag, its value and what works (the same experience is read at the default split)."""
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience
    from raytrade.cluster.tune import TuneOptions, check_experience, experience_window
    from raytrade.replay.reader import read_frame
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import env_layout, offline_env_config

    out = tmp_path / "exp"
    simulate_experience(SimulateOptions(policy="equal_weight", replay=store, out=out))
    spec = get_spec("bc")
    assert check_experience(TuneOptions(spec="bc", replay=store, experience=out, smoke=True), spec)
    opts = TuneOptions(spec="bc", replay=store, experience=out, smoke=True, train_fraction=0.5)
    window = experience_window(opts, spec)
    learner = env_layout(offline_env_config(opts.env_config(spec, opts.budget(spec)))).observation_spec
    logged = read_frame(out, "experience", columns=["episode_id", "observation_spec"])
    assert logged["observation_spec"].nunique() == 1 and logged["observation_spec"][0] != learner
    code, output = invoke(
        [*smoke(store, tmp_path, "bc"), "--experience", str(out), "--train-fraction", "0.5"]
    )
    assert code == 2
    assert output.strip() == (
        f"error: --train-fraction 0.5: experience column 'observation_spec' of episode "
        f"{logged['episode_id'].min()!r} is {logged['observation_spec'][0][:12]}..., the learner's is "
        f"{learner[:12]}... (observations encoded with other feature columns or another normaliser): the "
        f"learner's normaliser is fitted on its training window ({window.train_start.date()} .. "
        f"{window.train_end.date()}), which this fraction moves, and the experience was encoded at the "
        "default split (0.6, where `raytrade simulate-experience` records); leave --train-fraction out to "
        "learn from it"
    )


def test_experience_logged_on_another_universe_is_refused_naming_the_step_and_both_universes(
    store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.reader import read_frame
    from raytrade.replay.sources.synthetic import generate

    other = tmp_path / "other"
    market = generate(n_symbols=N_ASSETS - 1, years=1.5, seed=1)
    ingest_frames(other, market.bars, market.macro, show_progress=False)
    out = tmp_path / "exp"
    simulate_experience(SimulateOptions(policy="equal_weight", replay=other, out=out))
    logged = read_frame(out, "experience", columns=["episode_id", "step", "asset_index", "symbol"])
    first = logged[logged["episode_id"] == logged["episode_id"].min()]
    step = first[first["step"] == first["step"].min()].sort_values("asset_index")
    universe = sorted(read_frame(store, "bars", columns=["symbol"])["symbol"].unique())
    code, output = invoke([*smoke(store, tmp_path, "bc"), "--experience", str(out)])
    assert code == 2
    assert output.strip() == (
        f"error: experience column 'symbol' of episode {step['episode_id'].iloc[0]!r} step "
        f"{step['step'].iloc[0]} is {step['symbol'].tolist()} in asset order, the learner's universe is "
        f"{universe} (experience logged on other assets or in another asset order)"
    )


# ------------------------------------------------------------------------------ options


def test_online_wandb_without_a_key_is_refused_before_ray_starts(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    args = [a for a in smoke(store, tmp_path) if a != "--no-wandb"]
    code, output = invoke([*args, "--wandb"])
    assert code != 0
    assert output.strip() == "error: --wandb needs a wandb key: set WANDB_API_KEY"


def test_probe_symbols_outside_the_store_are_refused_before_ray_starts(store: Path, tmp_path: Path) -> None:
    from raytrade.replay.reader import read_frame

    universe = sorted(read_frame(store, "bars", columns=["symbol"])["symbol"].unique())
    code, output = invoke([*smoke(store, tmp_path), "--probe-symbols", "ZZZ"])
    assert code == 2
    assert output.strip() == f"error: probe symbols ['ZZZ'] are not in the training universe {universe}"


def test_drawdown_std_scale_on_a_module_without_exploration_is_refused_before_ray_starts(
    store: Path, tmp_path: Path
) -> None:
    code, output = invoke([*smoke(store, tmp_path, "gnn"), "--drawdown-std-scale", "0.2"])
    assert code == 2
    assert output.startswith("error: module ") and output.strip().endswith(
        "has no exploration options (--probe-symbols, --drawdown-std-scale)"
    )


def test_more_env_runners_than_a_new_local_ray_has_cpus_are_refused_before_it_starts(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    import ray._private.utils

    # a process without Ray yet (a suite's worker may have the session's running): a new local one
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray._private.utils, "get_num_cpus", lambda *_, **__: 2)
    code, output = invoke([*smoke(store, tmp_path), "--env-runners", "3"])
    assert code == 2
    assert output.strip() == (
        "error: --env-runners 3: a trial needs 4 bundles (1 learner + 3 env runners: "
        "[{'CPU': 1.0}, {'CPU': 1.0}, {'CPU': 1.0}, {'CPU': 1.0}], 4 CPUs in all) but the cluster's 1 "
        "node(s) cannot hold them (CPUs per node: 2); lower --env-runners or add nodes"
    )


# ------------------------------------------------------------------------------ failed trials

RAY_DATA_FAILURE = """Failure # 1 (occurred at 2026-12-03_10-00-00)
ray::BC.train() (pid=4242, ip=127.0.0.1, actor_id=abc, repr=BC(env=raytrade-portfolio-v0))
  File "/venv/ray/tune/trainable/trainable.py", line 331, in train
    raise skipped from exception_cause(skipped)
  File "/venv/ray/data/_internal/execution/streaming_executor.py", line 300, in run
    raise e from None
ray.exceptions.RayTaskError(ExperienceError): ray::ReadTransitions() (pid=4250, ip=127.0.0.1)
  File "/work/raytrade/replay/experience.py", line 520, in _file_transitions
    raise ExperienceError("experience column " + message)
raytrade.replay.experience.ExperienceError: experience column 'observation_spec' of episode 'ep-0' is \
b9e1aaaaaaaa..., the learner's is 4920bbbbbbbb... (observations encoded with other feature columns or \
another normaliser)
Failed to read transitions after 1/1 attempts (total backoff 0.0s).
To change retry attempts, backoff, or which errors are retried, configure \
`ray.data.DataContext.get_current()` (`retried_io_errors` for I/O; `retried_map_errors` and \
`max_map_retries` for any task) if you believe this to be transient.
"""


def test_a_search_whose_trials_all_failed_names_the_innermost_error_not_rays_retry_hint(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster import local_cluster, tune

    class FailedTuner:
        def fit(self) -> list[Any]:
            return [SimpleNamespace(error=RuntimeError(RAY_DATA_FAILURE), metrics={}, path=str(tmp_path))]

    monkeypatch.setattr(local_cluster, "init_ray", lambda *_, **__: True)
    monkeypatch.setattr(tune, "build_tuner", lambda *_, **__: FailedTuner())
    code, output = invoke([*smoke(store, tmp_path), "--name", "failed"])
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        f"Error: all trials of {tmp_path / 'runs' / 'failed'} failed: ExperienceError: experience column "
        "'observation_spec' of episode 'ep-0' is b9e1aaaaaaaa..., the learner's is 4920bbbbbbbb... "
        "(observations encoded with other feature columns or another normaliser)"
    )


def test_the_layout_check_reads_only_the_window_the_learner_reads(store: Path, tmp_path: Path) -> None:
    """Rows outside the training window are never read by the learner, so they are not refused."""
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience
    from raytrade.replay.experience import ExperienceError, check_layout
    from raytrade.replay.reader import read_frame

    out = tmp_path / "exp"
    simulate_experience(SimulateOptions(policy="equal_weight", replay=store, out=out))
    rows = read_frame(out, "experience", columns=["ts", "symbol", "asset_index"])
    universe = rows.sort_values("asset_index")["symbol"].unique().tolist()
    first, last = rows["ts"].min(), rows["ts"].max()
    check_layout(out, last + pd.Timedelta(days=1), None, universe, "other")  # nothing in the window
    with pytest.raises(ExperienceError, match="'observation_spec' of episode"):
        check_layout(out, first, last, universe, "other")
