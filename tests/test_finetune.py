"""Fine-tuning: ``raytrade tune --init registry:NAME[@V]``, risk-aware exploration, probe symbols."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from raytrade.envs.gym_envs import N_PORTFOLIO_STATE, PortfolioEnv
from raytrade.models.catalog import ppo_config, rl_module_spec
from raytrade.models.common import (
    PORTFOLIO_DRAWDOWN,
    ExplorationConfig,
    dummy_flat_obs,
    exploration_log_std,
    gaussian_dist_inputs,
)
from raytrade.replay.errors import InputError
from raytrade.tune_specs.exploration import (
    exploration_options,
    parse_symbols,
    probe_indices,
    with_exploration,
)
from raytrade.tune_specs.init_weights import (
    InitConflictError,
    InitVersion,
    adopt_env_config,
    check_compatible,
)

LOG_STD = torch.tensor([-1.0])
BASE_STD = math.exp(-1.0)
TINY_ENV: dict[str, Any] = {
    "data": {"kind": "synthetic", "n_assets": 4, "n_steps": 120, "seed": 0},
    "sim": {"episode_len": 16},
}


def _portfolio(drawdowns: list[float]) -> torch.Tensor:
    port = torch.zeros(len(drawdowns), N_PORTFOLIO_STATE)
    port[:, PORTFOLIO_DRAWDOWN] = torch.tensor(drawdowns)
    return port


def _module(family: str, n_assets: int = 4, model_config: dict[str, Any] | None = None) -> Any:
    torch.manual_seed(0)
    env = PortfolioEnv({**TINY_ENV, "data": {**TINY_ENV["data"], "n_assets": n_assets}, "flat_obs": True})
    spec = rl_module_spec(family, model_config)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    return spec.build()


# ------------------------------------------------------------------------------ exploration


def test_exploration_off_leaves_the_shared_log_std_unchanged() -> None:
    out = exploration_log_std(LOG_STD, _portfolio([0.0, 0.5]), 4, ExplorationConfig())
    dist = gaussian_dist_inputs(torch.ones(2, 4), out, torch.ones(2, 4, dtype=torch.bool))
    assert torch.equal(dist[:, 4:], torch.full((2, 4), -1.0))


def test_drawdown_schedule_shrinks_the_std_to_its_floor_at_the_scale() -> None:
    cfg = ExplorationConfig(drawdown_scale=0.2, drawdown_floor=0.1)
    std = exploration_log_std(LOG_STD, _portfolio([0.0, 0.1, 0.2, 0.5]), 3, cfg).exp().expand(4, 3)
    # dd = 0: unchanged; dd = scale / 2: half; dd = scale and beyond: the floor (0.1 x)
    expected = BASE_STD * torch.tensor([1.0, 0.5, 0.1, 0.1]).unsqueeze(-1).expand(4, 3)
    torch.testing.assert_close(std, expected, rtol=1e-6, atol=0)


def test_probe_assets_explore_with_the_multiplier() -> None:
    cfg = ExplorationConfig(probe_assets=(1, 3), probe_std_multiplier=2.0)
    std = exploration_log_std(LOG_STD, _portfolio([0.3]), 4, cfg).exp()
    torch.testing.assert_close(std, BASE_STD * torch.tensor([1.0, 2.0, 1.0, 2.0]), rtol=1e-6, atol=0)


def test_the_module_samples_with_the_schedule() -> None:
    exploration = {"drawdown_scale": 0.2, "drawdown_floor": 0.25, "probe_assets": [2]}
    module = _module("ppo_mlp", model_config={"exploration": exploration})
    obs = dummy_flat_obs(4, module.n_features, batch=2)
    obs[:, -N_PORTFOLIO_STATE + PORTFOLIO_DRAWDOWN] = torch.tensor([0.0, 0.3])
    std = module.forward_exploration({"obs": obs})["action_dist_inputs"][:, 4:].exp()
    base = module.policy.log_std.exp().item()
    expected = base * torch.tensor([[1.0, 1.0, 2.0, 1.0], [0.25, 0.25, 0.5, 0.25]])
    torch.testing.assert_close(std, expected, rtol=1e-6, atol=0)


def test_a_probe_asset_outside_the_universe_is_refused_at_setup() -> None:
    with pytest.raises(ValueError, match=r"probe_assets \[4\] outside the 4 assets"):
        _module("ppo_mlp", model_config={"exploration": {"probe_assets": [0, 4]}})


def test_probe_symbols_become_universe_positions() -> None:
    assert probe_indices(("AAA", "BBB", "CCC"), parse_symbols("CCC, AAA")) == (0, 2)


def test_search_options_name_probe_symbols_by_position_in_the_training_universe() -> None:
    options = exploration_options(TINY_ENV, "SYN003,SYN001", 0.2)
    assert options == {"drawdown_scale": 0.2, "probe_assets": (1, 3)}


def test_an_unknown_probe_symbol_is_refused_with_the_universe() -> None:
    with pytest.raises(InputError, match=r"\['ZZZ'\] are not in the training universe \['AAA', 'BBB'\]"):
        probe_indices(("AAA", "BBB"), ("AAA", "ZZZ"))


def test_a_repeated_probe_symbol_is_refused() -> None:
    with pytest.raises(InputError, match=r"\['AAA'\] named more than once"):
        parse_symbols("AAA,BBB,AAA")


def test_exploration_options_reach_the_module_config() -> None:
    config = with_exploration(ppo_config("ppo_mlp", TINY_ENV), {"probe_assets": (1,)})
    model = config.rl_module_spec.model_config
    assert model["exploration"] == {"probe_assets": (1,)} and model["projection"]["gross_cap"] == 2.0


def test_a_module_without_exploration_options_refuses_them() -> None:
    with pytest.raises(InputError, match="module GatingModule has no exploration options"):
        with_exploration(ppo_config("gating", TINY_ENV), {"drawdown_scale": 0.1})


# ------------------------------------------------------------------------------ adopting a version

THEIRS: dict[str, Any] = {
    "data": {"kind": "replay", "root": "/old", "split": "train", "extra_features": ["kelly_fraction"]},
    "feature_columns": ["ret_1"],
    "normalizer": {"columns": ["ret_1"], "fitted_on": "old"},
    "action": {"mode": "tilt:kelly_lite", "max_tilt": 0.1},
}
OURS: dict[str, Any] = {
    "data": {"kind": "replay", "root": "/new", "split": "train"},
    "feature_columns": ["ret_1", "ret_5"],
    "normalizer": {"columns": ["ret_1", "ret_5"], "fitted_on": "new"},
    "action": {"mode": "absolute"},
    "sim": {"episode_len": 64},
}


def test_init_adopts_the_versions_features_normaliser_and_action() -> None:
    out = adopt_env_config(OURS, THEIRS, "registry:p@1", features_given=False, action_given=False)
    assert out == {
        "data": {"kind": "replay", "root": "/new", "split": "train", "extra_features": ["kelly_fraction"]},
        "feature_columns": ["ret_1"],
        "normalizer": {"columns": ["ret_1"], "fitted_on": "old"},
        "action": {"mode": "tilt:kelly_lite", "max_tilt": 0.1},
        "sim": {"episode_len": 64},
    }


def test_init_refuses_other_features_naming_both() -> None:
    match = r"--features \['ret_1', 'ret_5'\] differ from registry:p@1's feature columns \['ret_1'\]"
    with pytest.raises(InitConflictError, match=match):
        adopt_env_config(OURS, THEIRS, "registry:p@1", features_given=True, action_given=False)


def test_init_refuses_another_action_mapping_naming_both() -> None:
    match = r"action \{'mode': 'absolute'\} differs from registry:p@1's action \{'mode': 'tilt:kelly_lite'"
    with pytest.raises(InitConflictError, match=match):
        adopt_env_config(OURS, THEIRS, "registry:p@1", features_given=False, action_given=True)


_VERSION = InitVersion(registry="/r", name="p", version=1)


def test_init_refuses_a_module_of_another_class() -> None:
    config = ppo_config("ppo_mlp", TINY_ENV)
    with pytest.raises(
        InitConflictError, match="holds a DistributionalPPOModule module; spec 'ppo' trains PPOMLP"
    ):
        check_compatible(_module("distributional"), config, _VERSION, "ppo")


def test_init_refuses_other_spaces() -> None:
    config = ppo_config("ppo_mlp", TINY_ENV)
    with pytest.raises(
        InitConflictError, match=r"registry:p@1's observation space Box.*\(55,\).*env Box.*\(45,\)"
    ):
        check_compatible(_module("ppo_mlp", n_assets=5), config, _VERSION, "ppo")


# ------------------------------------------------------------------------------ end to end (Ray)


@pytest.fixture(scope="module")
def promoted(ppo_smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ppo smoke search's best trial promoted as ``smoke@1`` into a fresh registry."""
    from raytrade.cluster.promote import promote

    registry = tmp_path_factory.mktemp("finetune") / "registry"
    promote(ppo_smoke_run, "smoke", registry)
    return registry


def _search(store: Path, registry: Path, *extra: str) -> list[str]:
    """``raytrade tune`` arguments of a one-trial, one-iteration smoke search started from ``smoke``."""
    args = ["--spec", "ppo", "--replay", str(store), "--smoke", "--num-samples", "1", "--iterations", "1"]
    return [*args, "--no-wandb", "--init", "registry:smoke", "--registry", str(registry), *extra]


def test_init_weights_are_on_the_learner_and_the_env_runner_before_the_first_sample(
    promoted: Path, synthetic_store: Path
) -> None:
    import numpy as np
    from ray.rllib.core import DEFAULT_MODULE_ID

    from raytrade.cluster.tune import TuneOptions
    from raytrade.models.registry_load import load
    from raytrade.tune_specs import get_spec

    spec = get_spec("ppo")
    opts = TuneOptions(
        spec="ppo", replay=synthetic_store, smoke=True, init="registry:smoke", registry=promoted
    )
    env_config = opts.env_config(spec, opts.budget(spec))
    config = opts.search_config(spec, spec.algo_config(env_config, opts.budget(spec)), env_config)
    # one point of the search space: an Algorithm is built from plain values
    algo = config.training(lr=1e-4, entropy_coeff=0.0, clip_param=0.2, gamma=0.99).build_algo()
    try:
        want = load("smoke@1", promoted).module.get_state()
        learner = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
        runner = algo.env_runner.module.get_state()
    finally:
        algo.stop()
    assert sorted(learner) == sorted(want) and set(runner) < set(want)  # the runner's is inference-only
    assert [k for k in want if not np.array_equal(learner[k], want[k])] == []
    assert [k for k in runner if not np.array_equal(runner[k], want[k])] == []


@pytest.fixture(scope="module")
def init_run(promoted: Path, synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``--init registry:smoke`` search (1 trial, 1 iteration) with the learning rate 0, so its
    first reported iteration is scored on exactly the loaded weights."""
    from click.testing import CliRunner

    from raytrade.cluster.tune import tune_command
    from raytrade.tune_specs import ppo

    storage = tmp_path_factory.mktemp("finetune-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ppo.SPACE, "lr", 0.0)
        result = CliRunner().invoke(
            tune_command, _search(synthetic_store, promoted, "--storage", str(storage))
        )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return storage / "ppo-smoke"


def test_an_init_search_starts_at_the_versions_validation_score(init_run: Path, promoted: Path) -> None:
    from raytrade.models.manifest import read_manifest

    row = json.loads((init_run / "leaderboard.json").read_text())[0]
    first = json.loads((init_run / row["trial_dir"] / "result.json").read_text().splitlines()[0])
    version = read_manifest(promoted / "smoke" / "1").metrics["validation"]["objective"]
    assert first["training_iteration"] == 1
    assert first["validation"]["objective"] == pytest.approx(version, rel=1e-9, abs=1e-12)


def test_an_init_search_records_the_pinned_version(init_run: Path) -> None:
    from raytrade.cluster.run_file import read_run_file

    assert "--init registry:smoke@1 --registry" in read_run_file(init_run).command


def test_init_with_other_features_is_refused_in_one_line(
    promoted: Path, synthetic_store: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from raytrade.cluster.errors import EXIT_BAD_INPUT
    from raytrade.cluster.tune import tune_command

    args = _search(synthetic_store, promoted, "--storage", str(tmp_path), "--features", "returns")
    result = CliRunner().invoke(tune_command, args)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "differ from registry:smoke@1's feature columns" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
