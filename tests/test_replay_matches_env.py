"""A module's replay (validation scores, ``select``, ``experiment``, ``evaluate``) and its served
decision take the action the env trains on: the Gaussian's mean clipped to ``[-1, 1]``, banded and
projected once onto the full constraints.

Until 2026-12-05 the replay took the module's ``weights()``: the mean projected onto the module's own
copy of the caps (no kill switch, no crypto sleeve, no crypto shorts), then projected again by the
simulator. Under the kill switch or with crypto the book differed from the env's, and the no-trade
band compared projected weights where the env compares the action: at a band of 0.01 it held 96 % of
asset-bars in scoring and serving against 0 % in training."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from raytrade.envs.config import PortfolioEnvConfig
from raytrade.envs.gym_envs import ActionDecoder, PortfolioEnv
from raytrade.envs.rollout import replay_policy
from raytrade.models.catalog import rl_module_spec
from raytrade.models.inference import deterministic_actions, module_policy, observation_arrays


def _module(env: PortfolioEnv, cfg: PortfolioEnvConfig) -> Any:
    """A ppo_mlp module with a confident, uneven mean (scaled score head, a positive bias)."""
    torch.manual_seed(0)
    c = cfg.sim.constraints
    projection = {
        "gross_cap": c.gross_cap,
        "per_asset_cap": min(c.per_asset_cap, 1.0),
        "long_only": c.long_only,
    }
    spec = rl_module_spec("ppo_mlp", {"projection": projection})
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    module.eval()
    head = [layer for layer in module.policy.score_head.modules() if isinstance(layer, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(20.0)
        head.bias.fill_(0.3)
    return module


@pytest.mark.parametrize("band", [0.0, 0.01, 0.05])
def test_the_replay_holds_the_book_the_env_holds_for_the_mean_action(band: float) -> None:
    raw = {
        "flat_obs": True,
        "data": {"kind": "synthetic", "n_assets": 8, "n_steps": 400, "seed": 3, "n_crypto": 2},
        "action": {"no_trade_band": band},
    }
    env = PortfolioEnv(raw)
    cfg = PortfolioEnvConfig.model_validate(raw)
    data, module = env.data, _module(env, cfg)
    sim = cfg.sim.model_copy(update={"episode_len": data.n_steps - 1})
    replayed = replay_policy(data, module_policy(module, data, cfg), sim)

    def mean(ob: Any) -> np.ndarray:  # the env's own decoder fed the greedy action, as training steps it
        return deterministic_actions(module, observation_arrays(ob, data, cfg))

    trained = replay_policy(data, mean, sim, make_step=lambda s: ActionDecoder(cfg, data, s).step)
    assert replayed.kill_active.any()  # the path crosses the kill switch (and holds crypto)
    np.testing.assert_allclose(replayed.weights, trained.weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(replayed.equity, trained.equity, rtol=1e-12)


@pytest.mark.parametrize("family", ["ppo_mlp", "gnn", "distributional"])
def test_the_greedy_action_read_from_the_inputs_is_the_distributions_deterministic_sample(
    family: str,
) -> None:
    """``greedy_actions`` reads a diagonal Gaussian's mean as the first half of its inputs instead of
    building the distribution per decision: the same numbers."""
    from raytrade.models.inference import greedy_actions

    env = PortfolioEnv({"data": {"kind": "synthetic", "n_assets": 6, "n_steps": 300, "seed": 1}})
    spec = rl_module_spec(family, {})
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    inputs = torch.randn(4, 12, generator=torch.Generator().manual_seed(2))
    dist = module.get_inference_action_dist_cls().from_logits(inputs)
    np.testing.assert_array_equal(greedy_actions(module, inputs), dist.to_deterministic().sample().numpy())
