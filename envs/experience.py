"""Record a policy's episodes in the simulator as rows of the replay store's ``experience`` table.

Design decisions
----------------
* One row per (decision step, asset), like the live loop's one row per (cycle, symbol), so logged
  and simulated experience are read by the same code (``replay.experience``). Each row carries the
  offline-RL columns of ``replay.schema.EXPERIENCE_SCHEMA``: the asset's slice of the env
  observation before and after the step, the shared portfolio state, the asset's action, the
  step's reward, terminal / truncated, the episode id and the step index.
* Observations are encoded by the env's own encoder (``envs.gym_envs.batched_observation``) with the
  env config the learner will train with (observed columns, train-split normaliser), so a stored
  observation is byte for byte what ``PortfolioEnv`` would have shown the learner.
* An episode replays the policy over the whole window from its first bar (the evaluation policies
  recover their bar index from the episode's progress, ``envs.evaluation.policies.step_index``),
  through the same simulator and costs as training. A ``Decision``'s holds are executed as holds;
  the logged action is its target weights (the held assets' current weights), which is what the
  env's weight action can express. ``noise`` (std, in weight units) perturbs the policy's targets
  with a seeded Gaussian so that several episodes of a deterministic policy differ (offline RL
  learns nothing about actions a dataset never shows); 0 logs the policy exactly. A held or
  unlisted symbol gets none: no order could trade it, so a jittered action there would be logged as
  a choice that had no effect on the reward (its logged action is the policy's own).
* The logged action is the target clipped to the action space ``[-1, 1]``; the simulator projects
  it onto the constraints as it does every env action (``target_weight`` is the projection).
* Every row carries :func:`observation_spec` of the env config (observed columns, normaliser,
  portfolio-state layout), and ``symbol`` in ``asset_index`` order is the universe: an offline
  learner whose env encodes observations otherwise, or trades other assets, refuses the rows
  (``replay.experience``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from raytrade.envs.config import GatedEnvConfig, PortfolioEnvConfig
from raytrade.envs.gym_envs import N_PORTFOLIO_STATE, batched_observation, feature_index
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import Decision
from raytrade.envs.simulator import MarketSimulator, Observation

_FLAT_EPS = 1e-12
"""A target within this of the current weight is logged as side ``flat``."""


def observation_spec(cfg: PortfolioEnvConfig, feature_names: Sequence[str]) -> str:
    """sha256 (hex) of what decides how ``batched_observation`` encodes an observation under ``cfg``:
    the observed columns (``cfg.feature_columns``, else all of ``feature_names``, the data's), the
    normaliser's statistics and clip (not its ``fitted_on`` label), the kill switch's release bars
    (the portfolio state's scale), the gate channel and the portfolio-state width. Two configs with
    the same spec encode the same market state as the same numbers; the flat or dict form is not
    part of it (logged rows hold per-asset slices, flattened on read)."""
    normalizer = (
        None if cfg.normalizer is None else cfg.normalizer.model_dump(mode="json", exclude={"fitted_on"})
    )
    spec = {
        "columns": list(cfg.feature_columns or feature_names),
        "normalizer": normalizer,
        "release_bars": cfg.sim.kill_switch.release_after_bars,
        "gated": isinstance(cfg, GatedEnvConfig),
        "portfolio_state": N_PORTFOLIO_STATE,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _encode(ob: Observation, data: MarketData, cfg: PortfolioEnvConfig) -> dict[str, np.ndarray]:
    feat_idx = feature_index(data, cfg.feature_columns)
    rb = cfg.sim.kill_switch.release_after_bars
    return batched_observation(ob, feat_idx, rb, flat=False, normalizer=cfg.normalizer)


def asset_slices(obs: dict[str, np.ndarray]) -> np.ndarray:
    """``[B, N, F + 2]``: each asset's observed feature channels, its current weight, its listed flag.

    Concatenating the slices' features over assets, then the weights, then the flags, then the
    portfolio state gives the env's flat observation (``replay.experience.flat_observation``)."""
    return np.concatenate(
        [obs["features"], obs["weights"][..., None], obs["mask"][..., None]], axis=-1
    ).astype(np.float32)


def simulate_episode(
    data: MarketData,
    policy: Callable[[Observation], Any],
    env_cfg: PortfolioEnvConfig,
    *,
    episode_id: str,
    policy_version: str,
    noise: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """One episode of ``policy`` over all of ``data`` as experience rows (see the module docstring)."""
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    steps = data.n_steps - 1
    sim_cfg = env_cfg.sim.model_copy(update={"episode_len": steps})
    simulator = MarketSimulator(data, sim_cfg, n_envs=1, seed=seed)
    simulator.reset(starts=np.zeros(1, dtype=np.int64))
    rng = np.random.default_rng(seed)
    n = data.n_assets
    steps_rows: list[dict[str, Any]] = []
    spec = observation_spec(env_cfg, data.feature_names)
    ob = simulator.observe()
    encoded = _encode(ob, data, env_cfg)
    for k in range(steps):
        out = policy(ob)
        weights, hold = (out.weights, out.hold) if isinstance(out, Decision) else (out, None)
        target = np.asarray(weights, dtype=np.float64).reshape(1, n)
        if noise > 0:  # exploration where an order can trade: not on a held or an unlisted symbol
            jitter = rng.normal(0.0, noise, target.shape)
            movable = ob.mask.reshape(1, n)
            if hold is not None:
                movable = movable & ~np.asarray(hold, dtype=bool).reshape(1, n)
            target = target + np.where(movable, jitter, 0.0)
        action = np.clip(target, -1.0, 1.0)
        fill = None if hold is None else ~np.asarray(hold, dtype=bool).reshape(1, n)
        current = ob.weights.reshape(1, n)
        result = simulator.step(action, fill=fill)
        next_ob = simulator.observe()
        next_encoded = _encode(next_ob, data, env_cfg)
        terminal = bool(result.terminated[0])
        truncated = not terminal and (k == steps - 1 or bool(result.truncated[0]))
        steps_rows.append(
            _step_rows(
                data,
                k,
                episode_id,
                policy_version,
                encoded,
                next_encoded,
                action[0],
                result.target_weights[0],
                current[0],
                float(result.reward[0]),
                terminal,
                truncated,
            )
            | {"observation_spec": [spec] * n}
        )
        if terminal or truncated:
            break
        ob, encoded = next_ob, next_encoded
    return pd.DataFrame({c: [v for rows in steps_rows for v in rows[c]] for c in steps_rows[0]})


def _step_rows(
    data: MarketData,
    k: int,
    episode_id: str,
    policy_version: str,
    obs: dict[str, np.ndarray],
    next_obs: dict[str, np.ndarray],
    action: np.ndarray,
    target: np.ndarray,
    current: np.ndarray,
    reward: float,
    terminal: bool,
    truncated: bool,
) -> dict[str, Any]:
    """The columns of one step's rows (one per asset), as lists."""
    n = data.n_assets
    slices, next_slices = asset_slices(obs)[0], asset_slices(next_obs)[0]
    port, next_port = obs["portfolio"][0].astype(np.float32), next_obs["portfolio"][0].astype(np.float32)
    delta = target - current
    side = np.where(delta > _FLAT_EPS, "buy", np.where(delta < -_FLAT_EPS, "sell", "flat"))
    ts = pd.Timestamp(data.ts[k]).tz_localize("UTC")
    return {
        "symbol": list(data.symbols),
        "ts": [ts] * n,
        "decision_id": [f"{episode_id}:{k}:{s}" for s in data.symbols],
        "policy_version": [policy_version] * n,
        "side": side.tolist(),
        "target_weight": target.astype(np.float64).tolist(),
        "reward": [reward] * n,
        "episode_id": [episode_id] * n,
        "step": [k] * n,
        "asset_index": list(range(n)),
        "observation": list(slices),
        "portfolio_state": [port] * n,
        "action": action.astype(np.float64).tolist(),
        "next_observation": list(next_slices),
        "next_portfolio_state": [next_port] * n,
        "terminal": [terminal] * n,
        "truncated": [truncated] * n,
    }


def simulate_episodes(
    data: MarketData,
    make_policy: Callable[[MarketData, int], Callable[[Observation], Any]],
    env_cfg: PortfolioEnvConfig,
    *,
    episodes: int,
    policy_version: str,
    run_id: str,
    noise: float = 0.0,
    seed: int = 0,
) -> Iterator[pd.DataFrame]:
    """``episodes`` episodes (ids ``RUN_ID:K``), each seeded ``seed + K`` and built fresh by
    ``make_policy(data, seed + K)``; yields one frame per episode (one append each)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    for k in range(episodes):
        yield simulate_episode(
            data,
            make_policy(data, seed + k),
            env_cfg,
            episode_id=f"{run_id}:{k}",
            policy_version=policy_version,
            noise=noise,
            seed=seed + k,
        )
