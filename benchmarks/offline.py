"""CQL on one logged dataset: RLlib (ours) against d3rlpy (the reference), same networks, batch, steps.

    python -m benchmarks.offline --json out.json [--quick]

The dataset is built here, from nothing but the library's env: episodes of a known behaviour policy
(``equal_weight`` plus Gaussian noise, clipped to the action box ``[-1, 1]^N``) stepped through
``PortfolioEnv`` on a seeded synthetic market's training window. Each transition is stored once as
arrays (:class:`LoggedTransitions`: flat observation, action, reward, flat next observation,
terminated, truncated, episode id); both libraries read those same arrays:

* RLlib: the rows, shuffled once, written to parquet and read by Ray Data through
  ``CQLConfig.offline_data`` (columns ``obs / actions / rewards / new_obs / terminateds /
  truncateds / eps_id``, RLlib's offline schema), one local learner;
* d3rlpy: an ``MDPDataset`` of the same episodes (a truncated episode carries its final observation
  as one extra row flagged ``timeout``, so its transitions are exactly the RLlib rows).

The observation is the env's ``Dict`` observation flattened by :func:`flatten_observation` (features,
weights, mask, portfolio state: the order of the env's own ``flat_obs`` form, which a test checks).

Same learner on both sides: CQL(H) with twin Q, 10 sampled actions, conservative weight 5,
temperature 1, no Lagrangian (d3rlpy ``alpha_learning_rate=0``), no behaviour-cloning warm-up
(RLlib ``bc_iters=0``), actor / critic / entropy learning rates 1e-4 / 3e-4 / 1e-4, gamma 0.99,
tau 0.005, ReLU hidden layers ``OfflineBudget.hidden`` for the policy and each Q function, the
same batch and number of gradient updates, one torch thread each, set once for the process both
learners train in (``torch_threads`` in the report; on a loaded 2-core machine two threads made
d3rlpy 7x slower). Ours is the ``cql`` spec's module and learner (``tune_specs.cql.lean_cql``:
``models.cql_lean``, ``models.cql_learner``): RLlib's CQL loss with the policy and each Q function
one MLP over ``[obs, action]`` as d3rlpy's, so the networks are the same shapes (at 256x256, N = 8:
452,372 parameters against d3rlpy's 452,374, which also counts its log temperature and log alpha;
RLlib keeps log alpha in the learner). What still differs in the work per update: d3rlpy evaluates
the data action's Q twice and runs the policy four times (actor, two conservative samplings, the
deterministic target action), ours once on ``[obs; next_obs]``; d3rlpy's target uses the policy's
mean action at ``next_obs``, RLlib's a sample; d3rlpy takes three backward passes, ours one.
RLlib's ``iter_batches`` also ends each pass over the data on a short batch, so RLlib's
samples are its own ``num_env_steps_trained`` counter, not updates x batch.

Measurement: per seed, both learners are built (setup, timed apart), then trained in rounds of
``updates_per_round`` updates, RLlib's ``Algorithm.train()`` and one d3rlpy epoch taken in turn so a
slow spell of the shared machine hits both. Samples/s = learner samples per second of training;
the headline ``ratio`` leaves out each side's first round (RLlib's holds the one-off Ray Data mapping
of the whole dataset through the ``OfflinePreLearner``), ``ratio_all_rounds`` keeps it.
Validation return: each trained policy, deterministic, rolled once through ``PortfolioEnv`` on a
held-out window after the training window (same code for both: a callable on the flat observation);
the return is the episode's summed reward (log growth of equity). Targets: ``ratio >= 0.5`` and
``return_gap = mean(RLlib) - mean(d3rlpy) >= -spread`` (spread: the larger of the two seeds' sample
standard deviations). Without d3rlpy installed (the ``bench`` extra) it says so and reports RLlib only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from benchmarks.common import on_local_ray, print_table, quick_and_json_args, write_report
from raytrade.envs.baseline_weights import equal_weights
from raytrade.envs.evaluation.harness import slice_window
from raytrade.envs.gym_envs import N_PORTFOLIO_STATE, PortfolioEnv
from raytrade.envs.market_data import MarketData
from raytrade.envs.synthetic_market import synthetic_market_data
from raytrade.replay.splits import EMBARGO_BARS, TimeWindow

FlatPolicy = Callable[[np.ndarray], np.ndarray]
"""A policy on the flat observation ``[D]`` returning an action ``[N]`` in ``[-1, 1]``."""


class OfflineBudget(BaseModel):
    """Size of the logged dataset and of the training run (same for both libraries)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_assets: int = Field(8, ge=1, description="assets of the synthetic market (action dimension)")
    train_bars: int = Field(750, ge=2, description="bars of the training window the episodes sample")
    episode_len: int = Field(63, ge=1, description="decisions per logged and per validation episode")
    episodes: int = Field(64, ge=1, description="logged episodes of the behaviour policy")
    behaviour_noise: float = Field(0.1, ge=0, description="std of the noise on equal_weight's weights")
    batch: int = Field(256, ge=1, description="transitions per gradient update")
    updates_per_round: int = Field(50, ge=1, description="gradient updates per timed round")
    rounds: int = Field(4, ge=2, description="timed rounds per seed (the first is reported apart)")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="learner seeds")
    hidden: tuple[int, ...] = Field((256, 256), min_length=1, description="hidden layer widths")


DEFAULT_BUDGET = OfflineBudget()
QUICK_BUDGET = OfflineBudget(
    n_assets=4,
    train_bars=80,
    episode_len=10,
    episodes=6,
    batch=32,
    updates_per_round=3,
    rounds=2,
    seeds=(0,),
    hidden=(32, 32),
)


class LoggedTransitions(NamedTuple):
    """One row per transition, ``M`` rows, episodes in order (``D`` flat observation width)."""

    obs: np.ndarray  # [M, D] float32
    actions: np.ndarray  # [M, N] float32 in [-1, 1]
    rewards: np.ndarray  # [M] float32
    next_obs: np.ndarray  # [M, D] float32
    terminateds: np.ndarray  # [M] bool: the episode ended in ruin
    truncateds: np.ndarray  # [M] bool: the episode reached episode_len
    episode_ids: np.ndarray  # [M] int64


def flatten_observation(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The env's ``Dict`` observation as one float32 vector: features (row-major ``[N, F]``), weights,
    mask, portfolio state; the order of the env's own ``flat_obs`` encoding."""
    parts = [obs["features"].ravel(), obs["weights"], obs["mask"], obs["portfolio"]]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _bars(data: MarketData, lo: int, hi: int, name: str) -> MarketData:
    """Bars ``[lo, hi)`` of ``data``."""
    utc = [pd.Timestamp(data.ts[i]).tz_localize("UTC") for i in (lo, hi - 1)]
    return slice_window(data, TimeWindow(name, utc[0], utc[1], hi - lo))


def market_windows(budget: OfflineBudget) -> tuple[MarketData, MarketData]:
    """(training window, held-out validation window) of one seeded synthetic market.

    The validation window starts ``EMBARGO_BARS`` after the training window ends and holds exactly
    ``episode_len + 1`` bars, so its one episode starts at its first bar whatever the sampler does.
    """
    n_steps = budget.train_bars + EMBARGO_BARS + budget.episode_len + 1
    data = synthetic_market_data(n_assets=budget.n_assets, n_steps=n_steps, seed=0)
    start = budget.train_bars + EMBARGO_BARS
    return _bars(data, 0, budget.train_bars, "train"), _bars(data, start, n_steps, "validation")


def env_config(budget: OfflineBudget, flat: bool = False) -> dict[str, Any]:
    """``env_config`` of the benchmark's ``PortfolioEnv`` (its data: the synthetic market's config)."""
    n_steps = budget.train_bars + EMBARGO_BARS + budget.episode_len + 1
    return {
        "data": {"kind": "synthetic", "n_assets": budget.n_assets, "n_steps": n_steps, "seed": 0},
        "sim": {"episode_len": budget.episode_len},
        "flat_obs": flat,
    }


def log_episodes(data: MarketData, budget: OfflineBudget, seed: int = 0) -> LoggedTransitions:
    """``budget.episodes`` episodes of ``equal_weight`` + N(0, ``behaviour_noise``) on ``data``.

    Episode ``k`` resets the env with seed ``seed + k`` (its window start) and draws its noise from
    one generator seeded ``seed``; same arguments, same arrays.
    """
    env = PortfolioEnv(env_config(budget), data=data)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {k: [] for k in LoggedTransitions._fields}
    for k in range(budget.episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            noise = budget.behaviour_noise * rng.standard_normal(budget.n_assets)
            action = np.clip(equal_weights(obs["mask"]) + noise, -1.0, 1.0).astype(np.float32)
            nxt, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(
                LoggedTransitions._fields,
                (
                    flatten_observation(obs),
                    action,
                    reward,
                    flatten_observation(nxt),
                    terminated,
                    truncated,
                    k,
                ),
                strict=True,
            ):
                rows[key].append(value)
            obs, done = nxt, terminated or truncated
    return LoggedTransitions(
        obs=np.stack(rows["obs"]),
        actions=np.stack(rows["actions"]),
        rewards=np.asarray(rows["rewards"], dtype=np.float32),
        next_obs=np.stack(rows["next_obs"]),
        terminateds=np.asarray(rows["terminateds"], dtype=bool),
        truncateds=np.asarray(rows["truncateds"], dtype=bool),
        episode_ids=np.asarray(rows["episode_ids"], dtype=np.int64),
    )


def validation_return(policy: FlatPolicy, data: MarketData, budget: OfflineBudget) -> float:
    """Summed reward of one episode of ``policy`` over ``data`` (``episode_len + 1`` bars: it starts
    at the first bar)."""
    env = PortfolioEnv(env_config(budget), data=data)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(flatten_observation(obs)))
        total, done = total + reward, terminated or truncated
    return total


def d3rlpy_arrays(logged: LoggedTransitions) -> dict[str, np.ndarray]:
    """``MDPDataset`` arrays of the logged episodes: a truncated episode gets its final observation as
    one more row (action 0, reward 0, ``timeouts`` 1), a terminated one ends on its last transition
    (``terminals`` 1), so d3rlpy's transitions are exactly the logged rows."""
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")
    }
    ends = np.flatnonzero(np.diff(logged.episode_ids, append=logged.episode_ids[-1] + 1))
    start = 0
    for end in (ends + 1).tolist():
        sl = slice(start, end)
        obs, actions, rewards = logged.obs[sl], logged.actions[sl], logged.rewards[sl]
        terminals, timeouts = logged.terminateds[sl].astype(np.float32), np.zeros(end - start, np.float32)
        if not logged.terminateds[end - 1]:
            obs = np.concatenate([obs, logged.next_obs[end - 1 : end]])
            actions = np.concatenate([actions, np.zeros_like(actions[:1])])
            rewards = np.concatenate([rewards, np.zeros(1, np.float32)])
            terminals = np.concatenate([terminals, np.zeros(1, np.float32)])
            timeouts = np.concatenate([timeouts, np.ones(1, np.float32)])
        for key, value in zip(cols, (obs, actions, rewards, terminals, timeouts), strict=True):
            cols[key].append(value)
        start = end
    return {k: np.concatenate(v) for k, v in cols.items()}


def write_parquet(logged: LoggedTransitions, folder: Path, seed: int = 0) -> Path:
    """The rows in RLlib's offline schema, shuffled once (RLlib iterates them in file order; d3rlpy
    samples uniformly), as one parquet file in ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.random.default_rng(seed).permutation(len(logged.rewards))

    def vectors(x: np.ndarray) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(x[order].ravel()), x.shape[1])

    table = pa.table(
        {
            "eps_id": logged.episode_ids[order],
            "obs": vectors(logged.obs),
            "actions": vectors(logged.actions),
            "rewards": logged.rewards[order],
            "new_obs": vectors(logged.next_obs),
            "terminateds": logged.terminateds[order],
            "truncateds": logged.truncateds[order],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "transitions.parquet")
    return folder


# ------------------------------------------------------------------------------------ learners


class RoundTimes(NamedTuple):
    """Setup seconds, then (samples, seconds) of each training round."""

    setup_s: float
    rounds: list[tuple[int, float]]


def _rllib_algo(budget: OfflineBudget, data_dir: Path, seed: int) -> Any:
    from ray.rllib.algorithms.cql import CQLConfig

    from raytrade.envs.gym_envs import PORTFOLIO_ENV_ID
    from raytrade.tune_specs.cql import lean_cql

    config = (
        lean_cql(CQLConfig(), budget.hidden)
        .environment(PORTFOLIO_ENV_ID, env_config=env_config(budget, flat=True))
        .env_runners(num_env_runners=0)
        .offline_data(
            input_=[str(data_dir)],
            dataset_num_iters_per_learner=budget.updates_per_round,
            # one PreLearner actor: with the read task it fills a 2-CPU Ray; two would deadlock it
            map_batches_kwargs={"concurrency": 1},
        )
        .training(
            train_batch_size_per_learner=budget.batch,
            bc_iters=0,
            lr=None,
            actor_lr=1e-4,
            critic_lr=3e-4,
            alpha_lr=1e-4,
            gamma=0.99,
            tau=0.005,
            twin_q=True,
            num_actions=10,
            min_q_weight=5.0,
            temperature=1.0,
            lagrangian=False,
            initial_alpha=1.0,
        )
        .debugging(seed=seed)
    )
    return config.build_algo()


def _rllib_policy(algo: Any) -> FlatPolicy:
    """The trained policy, deterministic. CQL's ``training_step`` never syncs weights to the env
    runner (offline: it samples nothing), so they are synced here first."""
    import torch

    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    module = algo.get_module()
    dist_cls = module.get_inference_action_dist_cls()

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.from_numpy(obs[None])})
            action = dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic().sample()
        return np.asarray(action[0].numpy(), dtype=np.float32)

    return policy


def _d3rlpy_algo(budget: OfflineBudget, arrays: Mapping[str, np.ndarray], seed: int) -> tuple[Any, Any]:
    import d3rlpy

    d3rlpy.seed(seed)
    dataset = d3rlpy.dataset.MDPDataset(**arrays)
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(budget.hidden))
    algo = d3rlpy.algos.CQLConfig(
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        batch_size=budget.batch,
        actor_learning_rate=1e-4,
        critic_learning_rate=3e-4,
        temp_learning_rate=1e-4,
        alpha_learning_rate=0.0,
        gamma=0.99,
        tau=0.005,
        n_critics=2,
        n_action_samples=10,
        conservative_weight=5.0,
        initial_temperature=1.0,
        initial_alpha=1.0,
    ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    return algo, dataset


def _d3rlpy_parameters(algo: Any) -> int:
    import dataclasses

    import torch

    modules = algo.impl.modules
    return sum(
        sum(p.numel() for p in getattr(modules, f.name).parameters())
        for f in dataclasses.fields(modules)
        if isinstance(getattr(modules, f.name), torch.nn.Module)
    )


def train_seed(
    budget: OfflineBudget,
    data_dir: Path,
    arrays: Mapping[str, np.ndarray] | None,
    seed: int,
    validation: MarketData,
) -> dict[str, Any]:
    """Build and train both learners for one seed, rounds taken in turn; their validation returns."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    start = time.perf_counter()
    rl_algo = _rllib_algo(budget, data_dir, seed)
    rllib = RoundTimes(time.perf_counter() - start, [])
    d3 = None
    if arrays is not None:
        start = time.perf_counter()
        d3_algo, dataset = _d3rlpy_algo(budget, arrays, seed)
        d3 = RoundTimes(time.perf_counter() - start, [])
        fitter = d3_algo.fitter(
            dataset,
            n_steps=budget.updates_per_round * budget.rounds,
            n_steps_per_epoch=budget.updates_per_round,
            show_progress=False,
            save_interval=budget.rounds + 1,
            logger_adapter=_noop_logger(),
        )
    try:
        for _ in range(budget.rounds):
            start = time.perf_counter()
            result = rl_algo.train()
            seconds = time.perf_counter() - start
            trained = int(result["learners"]["__all_modules__"]["num_env_steps_trained"])
            rllib.rounds.append((trained, seconds))
            if d3 is not None:
                start = time.perf_counter()
                next(fitter)
                d3.rounds.append((budget.updates_per_round * budget.batch, time.perf_counter() - start))
        out: dict[str, Any] = {
            "rllib": rllib._asdict(),
            "rllib_return": validation_return(_rllib_policy(rl_algo), validation, budget),
            "rllib_parameters": next(
                iter(
                    rl_algo.learner_group.foreach_learner(
                        lambda learner: sum(p.numel() for p in learner.module[DEFAULT_MODULE_ID].parameters())
                    )
                )
            ).get(),
        }
    finally:
        rl_algo.stop()
    if d3 is not None:
        out["d3rlpy"] = d3._asdict()
        out["d3rlpy_return"] = validation_return(lambda o: d3_algo.predict(o[None])[0], validation, budget)
        out["d3rlpy_parameters"] = _d3rlpy_parameters(d3_algo)
    return out


def _noop_logger() -> Any:
    import d3rlpy

    return d3rlpy.logging.NoopAdapterFactory()


def _rate(per_seed: list[dict[str, Any]], side: str, skip_first: bool) -> float:
    """Learner samples per second over every seed's rounds (the first of each left out if asked)."""
    rounds = [r for seed in per_seed for r in seed[side]["rounds"][1 if skip_first else 0 :]]
    return sum(n for n, _ in rounds) / sum(s for _, s in rounds)


def _spread(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def run(quick: bool = False) -> dict[str, Any]:
    """All measurements; ``quick`` shrinks the budget to a smoke test."""
    import importlib.util

    import torch
    from ray.tune.registry import register_env

    from raytrade.envs.gym_envs import PORTFOLIO_ENV_ID, make_portfolio_env

    torch.set_num_threads(1)
    budget = QUICK_BUDGET if quick else DEFAULT_BUDGET
    register_env(PORTFOLIO_ENV_ID, make_portfolio_env)
    train, validation = market_windows(budget)
    start = time.perf_counter()
    logged = log_episodes(train, budget)
    mask = slice(-(budget.n_assets + N_PORTFOLIO_STATE), -N_PORTFOLIO_STATE)  # of the flat observation
    behaviour_noiseless = validation_return(
        lambda o: equal_weights(o[mask]).astype(np.float32), validation, budget
    )
    have_d3rlpy = importlib.util.find_spec("d3rlpy") is not None
    arrays = d3rlpy_arrays(logged) if have_d3rlpy else None
    with tempfile.TemporaryDirectory(prefix="raytrade-offline-") as tmp:
        data_dir = write_parquet(logged, Path(tmp) / "transitions")
        dataset_s = time.perf_counter() - start
        per_seed = [train_seed(budget, data_dir, arrays, s, validation) for s in budget.seeds]
    out: dict[str, Any] = {
        "config": budget.model_dump(mode="json"),
        "torch_threads": torch.get_num_threads(),  # both learners train in this process
        "transitions": len(logged.rewards),
        "observation_width": int(logged.obs.shape[1]),
        "dataset_build_s": dataset_s,
        "behaviour_return_in_data": float(logged.rewards.sum() / budget.episodes),
        "equal_weight_every_bar_validation_return": behaviour_noiseless,
        "per_seed": per_seed,
        "rllib_setup_s": float(np.mean([s["rllib"]["setup_s"] for s in per_seed])),
        "rllib_first_round_s": float(np.mean([s["rllib"]["rounds"][0][1] for s in per_seed])),
        "rllib_samples_per_s": _rate(per_seed, "rllib", skip_first=True),
        "rllib_samples_per_s_all_rounds": _rate(per_seed, "rllib", skip_first=False),
        "rllib_return_mean": float(np.mean([s["rllib_return"] for s in per_seed])),
        "rllib_return_std": _spread([s["rllib_return"] for s in per_seed]),
        "rllib_parameters": per_seed[0]["rllib_parameters"],
        "d3rlpy": "installed" if have_d3rlpy else "not installed: pip install -e '.[bench]'",
    }
    if have_d3rlpy:
        d3_returns = [s["d3rlpy_return"] for s in per_seed]
        out |= {
            "d3rlpy_setup_s": float(np.mean([s["d3rlpy"]["setup_s"] for s in per_seed])),
            "d3rlpy_first_round_s": float(np.mean([s["d3rlpy"]["rounds"][0][1] for s in per_seed])),
            "d3rlpy_samples_per_s": _rate(per_seed, "d3rlpy", skip_first=True),
            "d3rlpy_samples_per_s_all_rounds": _rate(per_seed, "d3rlpy", skip_first=False),
            "d3rlpy_return_mean": float(np.mean(d3_returns)),
            "d3rlpy_return_std": _spread(d3_returns),
            "d3rlpy_parameters": per_seed[0]["d3rlpy_parameters"],
        }
        out["ratio"] = out["rllib_samples_per_s"] / out["d3rlpy_samples_per_s"]
        out["ratio_all_rounds"] = (
            out["rllib_samples_per_s_all_rounds"] / out["d3rlpy_samples_per_s_all_rounds"]
        )
        out["return_gap"] = out["rllib_return_mean"] - out["d3rlpy_return_mean"]
        out["return_spread"] = max(out["rllib_return_std"], out["d3rlpy_return_std"])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = quick_and_json_args(__doc__, argv)
    out = on_local_ray(lambda: run(quick=args.quick))
    rows: list[tuple[str, Any, str]] = [
        ("logged transitions", out["transitions"], f"flat observation width {out['observation_width']}"),
        ("torch threads", out["torch_threads"], "both learners, one process"),
        ("behaviour return (mean per episode)", out["behaviour_return_in_data"], "in the data"),
        ("equal_weight every bar, validation", out["equal_weight_every_bar_validation_return"], "reference"),
        ("RLlib setup s", out["rllib_setup_s"], "excluded"),
        ("RLlib first round s", out["rllib_first_round_s"], "incl. the Ray Data mapping"),
        ("RLlib samples/s", out["rllib_samples_per_s"], "after the first round"),
        ("RLlib validation return", out["rllib_return_mean"], f"std {out['rllib_return_std']:.4f}"),
    ]
    if "ratio" in out:
        rows += [
            ("d3rlpy setup s", out["d3rlpy_setup_s"], "excluded"),
            ("d3rlpy first round s", out["d3rlpy_first_round_s"], ""),
            ("d3rlpy samples/s", out["d3rlpy_samples_per_s"], "after the first round"),
            ("d3rlpy validation return", out["d3rlpy_return_mean"], f"std {out['d3rlpy_return_std']:.4f}"),
            ("ratio RLlib / d3rlpy samples/s", out["ratio"], ">= 0.5"),
            ("ratio, all rounds", out["ratio_all_rounds"], "reference"),
            ("return gap RLlib - d3rlpy", out["return_gap"], f">= -{out['return_spread']:.4f} (spread)"),
            ("parameters RLlib / d3rlpy", f"{out['rllib_parameters']:,} / {out['d3rlpy_parameters']:,}", ""),
        ]
    else:
        print(f"d3rlpy {out['d3rlpy']}: RLlib's side only")
    print_table("CQL on one logged PortfolioEnv dataset: RLlib vs d3rlpy", rows)
    write_report(args.json, "offline", out)
    return out


if __name__ == "__main__":
    main()
