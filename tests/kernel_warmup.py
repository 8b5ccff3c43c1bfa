"""Compile the simulator's numba kernels once, before the test workers start (``tests/conftest.py``).

The kernels are cached on disk (``raytrade.envs.kernel_cache``), but a fresh checkout has no cache
for its path, and every process that steps the simulator before some process has written the cache
compiles them itself: the two test workers, each Tune trial, each env runner. On this 2-core machine
one compile takes 13 s idle and 30-70 s when three run at once. Compiled once here, every later
process loads them (about 0.5 s)."""

from __future__ import annotations


def warm_kernels() -> None:
    """Step the code paths whose kernels the suite's processes use first: an env's step (every Tune
    trial, every env runner) and the evaluation's replay of a baseline over several episodes."""
    import numpy as np

    from raytrade.envs.config import SimulatorConfig
    from raytrade.envs.evaluation.policies import baseline_spec
    from raytrade.envs.gym_envs import PortfolioEnv
    from raytrade.envs.rollout import replay_policy
    from raytrade.envs.synthetic_market import synthetic_market_data

    synthetic = {"kind": "synthetic", "n_assets": 4, "n_steps": 60, "seed": 0}
    env = PortfolioEnv({"data": synthetic, "sim": {"episode_len": 20}, "flat_obs": True})
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, env.action_space.dtype))
    data = synthetic_market_data(n_assets=4, n_steps=60, seed=0)
    replay_policy(
        data, baseline_spec("equal_weight").make(data, 0), SimulatorConfig(episode_len=20), n_envs=2
    )
