"""Offline RL: simulated experience in the ``experience`` table, its transitions read by pandas and Ray
Data, refusals naming the column and the episode, and the offline specs trained on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from raytrade.replay.experience import (
    ExperienceError,
    read_transitions_frame,
    transitions_from_frame,
)
from raytrade.tune_specs import SPECS

N_ASSETS = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 equities, 1.5 years daily; seed 1 is one whose equal-weight validation return is clearly
    positive (+12 %), so "recovers 90 % of it" is a meaningful bar."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("offline") / "store"
    market = generate(n_symbols=N_ASSETS, years=1.5, seed=1)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


def simulate(
    store: Path, out: Path, policy: str = "equal_weight", episodes: int = 1, noise: float = 0.0
) -> Any:
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience

    return simulate_experience(
        SimulateOptions(policy=policy, replay=store, out=out, episodes=episodes, noise=noise)
    )


@pytest.fixture(scope="module")
def experience(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two episodes of ``equal_weight`` (targets jittered by 0.02) on the store's train split."""
    out = tmp_path_factory.mktemp("offline") / "experience"
    simulate(store, out, episodes=2, noise=0.02)
    return out


def experience_frame(root: Path) -> pd.DataFrame:
    from raytrade.replay.experience import READ_COLUMNS
    from raytrade.replay.reader import read_frame

    return read_frame(root, "experience", columns=list(READ_COLUMNS))


# ------------------------------------------------------------------------------ recording


def test_simulated_transitions_are_the_env_observations_and_the_policy_actions(
    store: Path, tmp_path: Path
) -> None:
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.policies import equal_weight_policy
    from raytrade.envs.gym_envs import batched_observation
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.envs.rollout import replay_policy
    from raytrade.tune_specs.offline import OFFLINE_FEATURES, offline_env_config
    from raytrade.tune_specs.spec import train_normalizer

    outcome = simulate(store, tmp_path / "exp")
    tr = read_transitions_frame(tmp_path / "exp")
    data = load_market_data(store, "train", feature_columns=OFFLINE_FEATURES)
    steps = data.n_steps - 1
    assert outcome.rows == steps * N_ASSETS and tr["obs"].shape[0] == steps
    # the env's own flat encoding (train normaliser) of the first bar, before any trade
    data_cfg = {"kind": "replay", "root": str(store.resolve()), "split": "train"}
    env_cfg = PortfolioEnvConfig.model_validate(
        offline_env_config(
            {
                "data": data_cfg,
                "feature_columns": list(OFFLINE_FEATURES),
                "normalizer": train_normalizer(data_cfg, OFFLINE_FEATURES).model_dump(mode="json"),
            }
        )
    )
    from raytrade.envs.simulator import MarketSimulator

    sim = MarketSimulator(data, env_cfg.sim.model_copy(update={"episode_len": steps}), n_envs=1, seed=0)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    release = env_cfg.sim.kill_switch.release_after_bars
    first = batched_observation(sim.observe(), None, release, flat=True, normalizer=env_cfg.normalizer)
    np.testing.assert_array_equal(tr["obs"][0], first[0])
    np.testing.assert_array_equal(tr["new_obs"][:-1], tr["obs"][1:])  # one episode, consecutive steps
    np.testing.assert_array_equal(tr["actions"][0], np.full(N_ASSETS, 0.25, np.float32))  # 1/n on bar 0
    assert tr["truncateds"].tolist() == [False] * (steps - 1) + [True] and not tr["terminateds"].any()
    # the logged rewards are the simulator's: their log-growth sum is the replay's total return
    replay = replay_policy(data, equal_weight_policy(data, 0), env_cfg.sim)
    assert np.prod(1 + replay.returns[0]) == pytest.approx(
        np.exp(tr["rewards"].astype(np.float64).sum()), rel=1e-5
    )


def test_simulate_experience_cli_refuses_an_unknown_policy(store: Path, tmp_path: Path) -> None:
    from raytrade.cluster.simulate_experience import simulate_experience_command

    args = ["--policy", "momentum", "--replay", str(store), "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(simulate_experience_command, args)
    assert result.exit_code != 0
    assert (
        "--policy 'momentum': expected kelly_lite, equal_weight or registry:NAME[@VERSION]" in result.output
    )


# ------------------------------------------------------------------------------ refusals


def test_a_null_transition_column_is_refused_naming_it_and_the_episode(experience: Path) -> None:
    frame = experience_frame(experience)
    episode = sorted(frame["episode_id"].unique())[1]
    row = frame.index[(frame["episode_id"] == episode) & (frame["step"] == 7)][0]
    frame.at[row, "next_observation"] = None
    with pytest.raises(
        ExperienceError, match=f"column 'next_observation' is missing \\(null\\) in episode '{episode}'"
    ):
        transitions_from_frame(frame)


@pytest.mark.parametrize("column", ["reward", "action"])
@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_null_or_nan_number_is_refused_naming_its_column_and_the_episode(
    experience: Path, column: str, missing: float | None
) -> None:
    frame = experience_frame(experience)
    episode = sorted(frame["episode_id"].unique())[1]
    row = frame.index[(frame["episode_id"] == episode) & (frame["step"] == 7)][0]
    frame[column] = frame[column].astype(object)
    frame.at[row, column] = missing
    frame[column] = frame[column].astype(float)
    with pytest.raises(
        ExperienceError, match=f"column '{column}' is missing \\(null\\) in episode '{episode}'"
    ):
        transitions_from_frame(frame)


def test_logged_rows_without_transitions_are_refused_naming_the_decision(experience: Path) -> None:
    frame = experience_frame(experience).head(N_ASSETS).copy()
    frame["episode_id"] = None  # what the live loop's decision rows hold today
    decision = frame["decision_id"].iloc[0]
    with pytest.raises(
        ExperienceError, match=f"column 'episode_id' is missing \\(null\\) in decision '{decision}'"
    ):
        transitions_from_frame(frame)


def test_a_step_of_another_action_space_is_refused_naming_the_episode(experience: Path) -> None:
    frame = experience_frame(experience)
    first = frame["episode_id"].min()
    with pytest.raises(
        ExperienceError, match=f"'action' has 4 assets in episode '{first}'.*has 5 \\(mixed action spaces\\)"
    ):
        transitions_from_frame(frame, n_assets=5)


def test_a_learner_reads_experience_of_its_universe_and_encoding_and_refuses_another_normaliser(
    store: Path, experience: Path
) -> None:
    from raytrade.tune_specs.offline import OFFLINE_FEATURES, env_layout, offline_env_config
    from raytrade.tune_specs.spec import train_normalizer

    data = {"kind": "replay", "root": str(store.resolve()), "split": "train"}
    normalizer = train_normalizer(data, OFFLINE_FEATURES)
    short = {"sim": {"episode_len": 64}}  # the env needs episode_len + 1 bars of the train split
    layout = env_layout(
        offline_env_config(
            {"data": data, "feature_columns": list(OFFLINE_FEATURES), "normalizer": normalizer.model_dump()}
            | short
        )
    )
    checks = {"symbols": layout.symbols, "observation_spec": layout.observation_spec}
    assert read_transitions_frame(experience, **checks)["obs"].shape[1] == layout.observation_space.shape[0]
    other = normalizer.model_copy(update={"scale": tuple(2 * s for s in normalizer.scale)})
    relayout = env_layout(
        offline_env_config(
            {"data": data, "feature_columns": list(OFFLINE_FEATURES), "normalizer": other.model_dump()}
            | short
        )
    )
    assert relayout.observation_space == layout.observation_space  # same sizes: only the spec can tell
    with pytest.raises(
        ExperienceError, match="observations encoded with other feature columns or another normaliser"
    ):
        read_transitions_frame(experience, symbols=layout.symbols, observation_spec=relayout.observation_spec)


def test_tune_refuses_experience_for_an_online_spec_and_an_offline_spec_without_experience(
    store: Path,
) -> None:
    from raytrade.cluster.tune import tune_command

    online = CliRunner().invoke(
        tune_command, ["--spec", "ppo", "--replay", str(store), "--experience", str(store)]
    )
    assert (
        online.exit_code != 0
        and "--experience applies to the offline specs (bc, cql, iql, marwil)" in online.output
    )
    offline = CliRunner().invoke(tune_command, ["--spec", "bc", "--replay", str(store), "--smoke"])
    assert offline.exit_code != 0 and "no experience under" in offline.output


def test_vectorised_assembly_equals_the_step_by_step_reference(experience: Path) -> None:
    """Rows in any order, with rows that carry no transition among them: the same transitions,
    column by column and dtype by dtype, as the pandas loop it replaced (``tests/transitions_reference``)."""
    from tests.transitions_reference import reference_transitions

    frame = experience_frame(experience)
    decisions = frame.head(3).assign(episode_id=None, decision_id=["d0", "d1", "d2"])  # set aside
    frame = pd.concat([frame.loc[frame["step"] < 100], decisions]).sample(frac=1.0, random_state=0)
    expected = reference_transitions(frame, n_assets=N_ASSETS)
    got = transitions_from_frame(frame, n_assets=N_ASSETS)
    assert len(got["t"]) > 100
    for column in expected:
        assert got[column].dtype == expected[column].dtype, column
        np.testing.assert_array_equal(got[column], expected[column], err_msg=column)


def _drop_an_asset(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(frame.index[(frame["step"] == 5) & (frame["asset_index"] == 2)])


def _short_observation(frame: pd.DataFrame) -> pd.DataFrame:
    row = frame.index[(frame["step"] == 9) & (frame["asset_index"] == 1)][-1]
    frame.at[row, "observation"] = frame.at[row, "observation"][:-1]
    return frame


def _short_next_observation(frame: pd.DataFrame) -> pd.DataFrame:
    row = frame.index[(frame["step"] == 3) & (frame["asset_index"] == 0)][-1]
    frame.at[row, "next_observation"] = frame.at[row, "next_observation"][:-1]
    return frame


def _short_step(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame["step"] == 11  # every asset of one step: a step of another observation space
    frame.loc[rows, "observation"] = frame.loc[rows, "observation"].map(lambda v: v[:-1])
    return frame


@pytest.mark.parametrize(
    ("corrupt", "kwargs"),
    [
        (_drop_an_asset, {}),
        (_short_step, {}),
        (_short_observation, {}),
        (_short_next_observation, {"n_assets": N_ASSETS}),
        (lambda f: f, {"obs_dim": 7}),
        (lambda f: f, {"n_assets": N_ASSETS + 1}),
    ],
    ids=["asset_index", "step", "observation", "next_observation", "obs_dim", "n_assets"],
)
def test_vectorised_assembly_refuses_what_the_reference_refuses_with_the_same_message(
    experience: Path, corrupt: Any, kwargs: dict[str, int]
) -> None:
    from tests.transitions_reference import reference_transitions

    frame = corrupt(experience_frame(experience))
    with pytest.raises(ExperienceError) as expected:
        reference_transitions(frame, **kwargs)
    with pytest.raises(ExperienceError) as got:
        transitions_from_frame(frame, **kwargs)
    assert str(got.value) == str(expected.value)


def test_next_observations_of_another_size_than_the_observations_are_refused(experience: Path) -> None:
    """The step-by-step loop let these through (``new_obs`` narrower than ``obs``)."""
    frame = experience_frame(experience)
    frame["next_observation"] = frame["next_observation"].map(lambda v: v[:-1])
    first = frame["episode_id"].min()
    dim = N_ASSETS * len(frame["observation"].iloc[0]) + len(frame["portfolio_state"].iloc[0])
    with pytest.raises(
        ExperienceError,
        match=f"'next_observation' gives {dim - N_ASSETS} values, 'observation' {dim}, in episode '{first}'",
    ):
        transitions_from_frame(frame)


def offline_config(store: Path, experience: Path, name: str) -> Any:
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import with_experience

    spec = get_spec(name)
    return with_experience(
        spec.algo_config(spec.env_config(str(store), spec.smoke), spec.smoke), str(experience)
    )


@pytest.mark.parametrize(("name", "copies"), [("cql", True), ("bc", True), ("marwil", False)])
def test_the_learner_batches_are_the_ones_rllib_made_from_the_step_by_step_assembly(
    store: Path, experience: Path, name: str, copies: bool
) -> None:
    """Before: the pandas loop's transitions through RLlib's ``OfflinePreLearner``; now: the
    vectorised assembly, and ``learner_columns`` where RLlib's mapping only copies columns
    (``copies_columns``; ``marwil`` keeps RLlib's). Same learner batch, column by column."""
    from ray.rllib.offline.offline_prelearner import OfflinePreLearner

    from raytrade.tune_specs.offline import copies_columns, learner_columns
    from tests.transitions_reference import reference_transitions

    config = offline_config(store, experience, name)
    spaces = (config.observation_space, config.action_space)
    module_spec = config.get_multi_rl_module_spec(spaces={"default_policy": spaces})
    pre_learner = OfflinePreLearner(config=config, spaces=spaces, module_spec=module_spec)
    frame = experience_frame(experience)
    frame = frame.loc[frame["step"] < 64]  # both episodes' first 64 steps: 128 transitions
    expected = pre_learner(reference_transitions(frame, N_ASSETS))
    transitions = transitions_from_frame(frame, N_ASSETS)
    assert copies_columns(config, pre_learner._module, pre_learner._learner_connector) is copies
    got = learner_columns(transitions) if copies else pre_learner(transitions)
    assert sorted(got) == sorted(expected) and len(transitions["t"]) == 128
    for key, tensor in expected.items():
        value = torch.as_tensor(got[key])
        assert value.dtype == tensor.dtype, key
        assert torch.equal(value, tensor), key


def test_read_tasks_take_consecutive_files_up_to_the_row_budget() -> None:
    from raytrade.replay.experience import read_groups

    files = [Path(f"f{i}") for i in range(5)]
    rows = dict(zip(files, [40, 50, 20, 150, 10], strict=True))
    groups = read_groups(files, rows, 100)
    assert groups == [[files[0], files[1]], [files[2]], [files[3]], [files[4]]]


# ------------------------------------------------------------------------------ Ray Data and learners


@pytest.mark.ray
def test_ray_data_and_pandas_read_the_same_transitions(ray_session: None, experience: Path) -> None:
    from raytrade.replay.experience import OUTPUT_COLUMNS, read_transitions

    expected = read_transitions_frame(experience, n_assets=N_ASSETS)
    rows = read_transitions(experience, n_assets=N_ASSETS).take_all()
    rows.sort(key=lambda r: (r["eps_id"], r["t"]))
    assert len(rows) == len(expected["t"]) == 2 * (len(expected["t"]) // 2)
    for column in OUTPUT_COLUMNS:
        got = np.stack([np.asarray(r[column]) for r in rows])
        np.testing.assert_array_equal(got, np.asarray(expected[column]).reshape(got.shape), err_msg=column)


def sampled_rows(config: Any) -> dict[str, np.ndarray]:
    """Every row the learner iterates from ``ExperienceData(config)`` (one pass), sorted by content."""
    from raytrade.tune_specs.offline import ExperienceData

    data = ExperienceData(config)
    spaces = (config.observation_space, config.action_space)
    data.module_spec = config.get_multi_rl_module_spec(spaces={"default_policy": spaces})
    data.spaces = {"__env__": spaces, "__env_single__": spaces}  # what the Algorithm sets
    state = data.module_spec.build().get_state()
    (iterator,) = data.sample(num_samples=128, return_iterator=True, module_state=state)
    batches = list(iterator.iter_batches(batch_size=128))
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.lexsort(rows["default_policy/obs"].T[::-1])
    return {k: v[order] for k, v in rows.items()}


@pytest.mark.ray
def test_ray_data_feeds_the_learner_the_rows_rllibs_pre_learner_made(
    ray_session: None, store: Path, experience: Path
) -> None:
    from ray.rllib.offline.offline_prelearner import OfflinePreLearner

    from raytrade.replay.experience import scale_rewards, window_count

    config = offline_config(store, experience, "cql")
    got = sampled_rows(config)  # learner_columns in the read tasks
    spaces = (config.observation_space, config.action_space)
    module_spec = config.get_multi_rl_module_spec(spaces={"default_policy": spaces})
    pre_learner = OfflinePreLearner(config=config, spaces=spaces, module_spec=module_spec)
    transitions = read_transitions_frame(experience, n_assets=N_ASSETS)  # in process
    scale = window_count(experience, None, None).reward_std  # every transition is in the window
    expected = pre_learner(scale_rewards(transitions, scale))  # the learner reads rewards / their std
    order = np.lexsort(expected["default_policy/obs"].numpy().T[::-1])
    assert sorted(got) == sorted(expected) and len(got["default_policy/obs"]) == len(order) > 100
    for key, tensor in expected.items():
        values = tensor.numpy()[order]
        assert got[key].dtype == values.dtype, key
        np.testing.assert_array_equal(got[key], values, err_msg=key)


def first_minibatch(config: Any) -> dict[str, np.ndarray]:
    """The first minibatch a learner draws from ``ExperienceData(config)``, as RLlib draws it
    (``iter_batches`` with the data's ``iter_batches_kwargs``)."""
    from raytrade.tune_specs.offline import ExperienceData

    data = ExperienceData(config)
    size = config.train_batch_size_per_learner
    return dict(next(iter(data.data.iter_batches(batch_size=size, **data.iter_batches_kwargs))))


@pytest.mark.ray
def test_a_learners_minibatch_draws_from_every_episode_and_across_the_window(
    ray_session: None, store: Path, experience: Path
) -> None:
    """Read in (episode, step) order, a learner's first minibatch was the first episode's first 128
    consecutive days, the next one its next 128: each update fitted one stretch of one episode."""
    config = offline_config(store, experience, "bc").training(train_batch_size_per_learner=128)
    batch = first_minibatch(config)
    steps = read_transitions_frame(experience, n_assets=N_ASSETS)["t"]
    episodes = {str(e) for e in batch["eps_id"]}
    assert len(batch["t"]) == 128 and len(episodes) == 2, episodes
    # spread over the whole window: from its first fifth to its last
    assert batch["t"].min() < steps.max() / 5 and batch["t"].max() > steps.max() * 4 / 5
    assert not np.all(np.diff(batch["t"]) == 1)
    again = first_minibatch(config)  # one order per seed
    np.testing.assert_array_equal(again["t"], batch["t"])
    np.testing.assert_array_equal(again["eps_id"], batch["eps_id"])
    other = first_minibatch(config.debugging(seed=7))
    assert not np.array_equal(other["t"], batch["t"])


def offline_algorithm(spec_name: str, store: Path, experience: Path, updates: int, **fixed: Any) -> Any:
    """The spec's config (validation scoring included) on ``experience``, with the searched values
    fixed and ``updates`` learner updates of 128 transitions per iteration, built in-process."""
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import with_experience

    spec = get_spec(spec_name)
    config = with_experience(
        spec.algo_config(spec.env_config(str(store), spec.smoke), spec.smoke), str(experience)
    )
    config = config.training(train_batch_size_per_learner=128, **fixed).offline_data(
        dataset_num_iters_per_learner=updates
    )
    return config.debugging(seed=0).build_algo()


@pytest.mark.ray
def test_bc_recovers_the_logged_policy_validation_return(
    ray_session: None, store: Path, experience: Path
) -> None:
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.metrics import total_return
    from raytrade.tune_specs.objective import benchmark_rollout, held_out_data

    algo = offline_algorithm("bc", store, experience, updates=25, lr=1e-2)
    try:
        result = algo.train()
        validation = held_out_data(algo.config.env_config)
        sim = env_config_from_dict(algo.config.env_config).sim
    finally:
        algo.stop()
    logged = total_return(benchmark_rollout(validation, sim).returns[0])  # equal_weight, the logged policy
    assert logged > 0.1
    assert result["validation"]["total_return"] >= 0.9 * logged


@pytest.mark.ray
@pytest.mark.parametrize(
    ("name", "fixed"),
    [
        ("cql", {"actor_lr": 3e-4, "critic_lr": 3e-4, "min_q_weight": 5.0, "initial_alpha": 0.1}),
        ("iql", {"actor_lr": 3e-4, "critic_lr": 3e-4, "expectile": 0.8, "beta": 1.0}),
    ],
)
def test_q_learners_train_on_the_experience_and_are_scored_on_validation(
    ray_session: None, store: Path, experience: Path, name: str, fixed: dict[str, Any], tmp_path: Path
) -> None:
    from ray.rllib.core.rl_module.rl_module import RLModule

    from raytrade.tune_specs.objective import score_module

    algo = offline_algorithm(name, store, experience, updates=2, **fixed)
    try:
        result = algo.train()
        checkpoint = Path(algo.save_to_path(str(tmp_path / "checkpoint")))
        env_config = algo.config.env_config
    finally:
        algo.stop()
    learner = result["learners"]["default_policy"]
    assert result["training_iteration"] == 1 and learner["num_module_steps_trained"] == 2 * 128
    validation = result["validation"]
    assert np.isfinite(validation["objective"]) and np.isfinite(validation["total_return"])
    # the hook scored the trained weights: the ones `raytrade promote` takes from the checkpoint
    module_dir = checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy"
    assert (
        score_module(RLModule.from_checkpoint(module_dir), env_config)["objective"] == validation["objective"]
    )


@pytest.mark.parametrize("name", ["bc", "marwil"])
def test_imitation_specs_train_ppos_module_on_the_store_experience(store: Path, name: str) -> None:
    from raytrade.models.ppo_mlp import PPOMLPModule
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import ExperienceData

    spec = get_spec(name)
    config = spec.algo_config(spec.env_config(str(store), spec.smoke), spec.smoke)
    assert config.rl_module_spec.module_class is PPOMLPModule  # ppo's class: an --init fine-tune can copy it
    assert config.offline_data_class is ExperienceData and config.input_ == str(store.resolve())
    assert config.dataset_num_iters_per_learner == spec.smoke.train_batch // spec.smoke.minibatch


def test_simulate_experience_flags_agree_with_its_options_model() -> None:
    from raytrade.cluster.options import option_drift
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience_command

    assert option_drift(simulate_experience_command, SimulateOptions) == []


def test_the_writer_refuses_an_observation_that_is_not_a_list_of_finite_numbers(tmp_path: Path) -> None:
    from raytrade.replay.validation import ReplayValidationError
    from raytrade.replay.writer import ReplayWriter

    row = {
        "symbol": "AAA",
        "ts": pd.Timestamp("2024-01-02", tz="UTC"),
        "decision_id": "e:0:AAA",
        "policy_version": "equal_weight",
        "side": "buy",
        "target_weight": 0.25,
        "observation": [0.5, float("inf")],
    }
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(pd.DataFrame([row]))
    assert "column 'observation'" in str(refused.value) and "expected a list of finite numbers" in str(
        refused.value
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_value_a_spec_searches_passes_rllibs_validation(store: Path, name: str) -> None:
    """``iql`` searched ``beta`` in {1, 3, 10}, and RLlib's IQL keeps MARWIL's check that ``beta`` is
    at most 1: any trial that drew 3 or 10 ended the whole search with a ValueError. Every end of
    every searched range and every choice, the others at their first value, must validate."""
    from ray.tune.search.sample import Categorical, Domain

    from raytrade.tune_specs import get_spec

    spec = get_spec(name)
    config = spec.algo_config(spec.env_config(str(store), spec.smoke), spec.smoke)
    searched = {k: v for k, v in config.to_dict().items() if isinstance(v, Domain)}
    assert searched, f"{name} searches nothing"

    def first(domain: Domain) -> Any:
        return domain.categories[0] if isinstance(domain, Categorical) else domain.lower

    for key, domain in searched.items():
        ends = domain.categories if isinstance(domain, Categorical) else [domain.lower, domain.upper]
        for value in ends:
            fixed = {k: first(d) for k, d in searched.items()} | {key: value}
            config.copy(copy_frozen=False).update_from_dict(fixed).validate()
