"""The one entry the Tune specs use: family name -> RLModuleSpec, learner, env and a full PPOConfig.

Families (``FAMILIES``):

* ``ppo_mlp``: shared per-asset MLP, Gaussian over scores (:mod:`models.ppo_mlp`).
* ``distributional``: same policy, quantile critic + CVaR-mixed value, custom PPO learner
  (:mod:`models.distributional`, :mod:`models.distributional_learner`).
* ``gnn``: GATv2 over an in-module asset similarity graph (:mod:`models.gnn`).
* ``gating``: per-symbol mode/side categoricals for the gated env (:mod:`models.gating`).

:func:`ppo_config` builds the env with ``flat_obs=True`` unless the caller sets ``flat_obs``
(RLlib's default connectors then see one Box; the modules split it), registers the env creator with
``ray.tune.registry.register_env`` under the env's id, uses the vector form of the env
(``gym_env_vectorize_mode="vector_entry_point"``: one simulator call steps all episodes of a
runner) and copies the env's constraints into the module's ``projection`` unless the caller gave one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from ray.tune.registry import register_env
from torch.utils.flop_counter import FlopCounterMode

from raytrade.envs.config import GatedEnvConfig, PortfolioEnvConfig
from raytrade.envs.gym_envs import GATED_ENV_ID, PORTFOLIO_ENV_ID, make_gated_env, make_portfolio_env
from raytrade.models.common import dummy_flat_obs

FAMILIES: tuple[str, ...] = ("ppo_mlp", "distributional", "gnn", "gating")


def _check(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    return family


def module_class(family: str) -> type[RLModule]:
    """The TorchRLModule class of a family (imported on demand: ``gnn`` pulls torch-geometric)."""
    match _check(family):
        case "ppo_mlp":
            from raytrade.models.ppo_mlp import PPOMLPModule

            return PPOMLPModule
        case "distributional":
            from raytrade.models.distributional import DistributionalPPOModule

            return DistributionalPPOModule
        case "gnn":
            from raytrade.models.gnn import GNNModule

            return GNNModule
        case _:
            from raytrade.models.gating import GatingModule

            return GatingModule


def rl_module_spec(family: str, model_config: dict[str, Any] | None = None) -> RLModuleSpec:
    """Spec of the family's module; RLlib fills the spaces from the env. Config is validated now."""
    cls = module_class(family)
    config = dict(model_config or {})
    config_cls = getattr(cls, "config_cls", None)
    if config_cls is not None:  # fail at config time, naming the key, not inside a remote runner
        config_cls.model_validate(config)
    return RLModuleSpec(module_class=cls, model_config=config)


def learner_class(family: str) -> type | None:
    """The custom PPO learner of a family (``distributional``), else None (RLlib's default)."""
    if _check(family) == "distributional":
        from raytrade.models.distributional_learner import DistributionalPPOLearner

        return DistributionalPPOLearner
    return None


def env_name(family: str) -> str:
    """Registered env id the family trains on."""
    return GATED_ENV_ID if _check(family) == "gating" else PORTFOLIO_ENV_ID


def _env_config(family: str, env_config: Mapping[str, Any]) -> tuple[dict[str, Any], PortfolioEnvConfig]:
    """The env_config RLlib gets (``flat_obs`` defaulted to True) and its validated form."""
    cfg = {"flat_obs": True, **dict(env_config)}
    config_cls = GatedEnvConfig if family == "gating" else PortfolioEnvConfig
    return cfg, config_cls.model_validate(cfg)


def ppo_config(
    family: str,
    env_config: dict[str, Any],
    model_config: dict[str, Any] | None = None,
    *,
    num_env_runners: int = 0,
    num_envs_per_env_runner: int = 4,
    **training: Any,
) -> PPOConfig:
    """A complete new-API-stack PPOConfig for ``family`` on its env.

    ``training`` goes to ``PPOConfig.training`` (e.g. ``train_batch_size_per_learner``,
    ``minibatch_size``, ``num_epochs``, ``lr``); ``learner_class`` is set by the family.
    """
    name = env_name(family)
    rllib_env_config, validated = _env_config(family, env_config)
    model = dict(model_config or {})
    if family != "gating" and "projection" not in model:
        c = validated.sim.constraints
        model["projection"] = {
            "gross_cap": c.gross_cap,
            "per_asset_cap": min(c.per_asset_cap, 1.0),
            "long_only": c.long_only,
        }
    register_env(name, make_gated_env if family == "gating" else make_portfolio_env)
    config = (
        PPOConfig()
        .environment(env=name, env_config=rllib_env_config)
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            gym_env_vectorize_mode="vector_entry_point",
        )
        .rl_module(rl_module_spec=rl_module_spec(family, model))
    )
    learner = learner_class(family)
    if learner is not None:
        training = {"learner_class": learner, **training}
    return config.training(**training)


def flops_per_decision(module: RLModule, n_assets: int) -> int:
    """Multiply-adds of one ``forward_inference`` call (B = 1, ``n_assets`` listed assets).

    Measured with ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products
    (linear layers, attention projections) - the dominant cost; element-wise ops, the projection's
    sort and graph scatter ops are not counted. FLOPs / 2 = multiply-adds.

    Our families' modules (they have ``n_features``) see a flat observation of ``n_assets`` assets
    with realistic small feature values; any other module (e.g. RLlib's default module of the
    ``tqc`` spec) a zero observation of its own ``observation_space`` shape, whose width already
    fixes the asset count.
    """
    n_features = getattr(module, "n_features", None)
    if n_features is not None:
        obs = dummy_flat_obs(n_assets, int(n_features))
    else:
        shape = getattr(module.observation_space, "shape", None)
        if shape is None:
            raise ValueError(f"cannot count FLOPs of {type(module).__name__}: no Box observation space")
        obs = torch.zeros((1, *shape), dtype=torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.forward_inference({Columns.OBS: obs})
    return int(counter.get_total_flops()) // 2
