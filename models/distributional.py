"""``distributional``: the ``ppo_mlp`` policy with a quantile critic and a CVaR-mixed value.

* The critic outputs ``K`` quantiles of the return at the fixed midpoints ``tau_k = (2k + 1) / 2K``
  (sorted, so they never cross) and is trained with the quantile Huber loss
  (:func:`quantile_huber_loss`) by :class:`models.distributional_learner.DistributionalPPOLearner`.
* The value PPO's GAE uses (:meth:`DistributionalPPOModule.compute_values`) is
  ``V = (mean(q) + w * CVaR_alpha(q)) / (1 + w)`` with ``w = cvar_weight >= 0`` - a convex mix of the
  quantile mean and the lower-tail mean, so ``w = 0`` is risk-neutral PPO and larger ``w`` makes
  advantages penalise states whose return distribution has a fat left tail.
* ``CVaR_alpha`` is exact for the critic's distribution (K equally likely atoms): the mean of the
  lowest ``alpha`` probability mass, with a partial weight on the atom that straddles ``alpha``
  (:func:`cvar_weights`).

Honest caveat: with ``w > 0`` the value targets are bootstrapped from the mixed value, so the
quantiles estimate the distribution of the n-step return continued by the risk-adjusted value, not
the exact return distribution (the same trade-off as risk-sensitive TD targets).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from ray.rllib.algorithms.tqc import TQCConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.tune.registry import register_env

from raytrade.envs.config import PortfolioEnvConfig
from raytrade.envs.gym_envs import PORTFOLIO_ENV_ID, make_portfolio_env
from raytrade.models.common import features_per_asset, mlp, validate_model_config
from raytrade.models.ppo_mlp import PPOMLPConfig, ScorePolicy, ScorePolicyForwards

# ------------------------------------------------------------------------------------ pure functions


def quantile_taus(k: int) -> torch.Tensor:
    """Quantile midpoints ``(2i + 1) / 2K``, i = 0..K-1."""
    if k < 1:
        raise ValueError(f"number of quantiles must be >= 1, got {k}")
    return (2 * torch.arange(k, dtype=torch.float32) + 1) / (2 * k)


def quantile_huber_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    taus: torch.Tensor,
    kappa: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Quantile Huber loss of predicted quantiles ``pred [B, K]`` against scalar targets ``target [B]``.

    ``rho(u) = |tau_k - 1{u < 0}| * L_kappa(u) / kappa`` with ``u = target - pred_k`` and
    ``L_kappa`` the Huber loss (``kappa = 0``: the plain pinball loss ``|tau - 1{u<0}| * |u|``),
    averaged over the K quantiles (so the scale does not grow with K). ``reduction="none"`` returns
    the per-sample loss ``[B]``, else its mean.
    """
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    u = target.unsqueeze(-1) - pred
    abs_u = u.abs()
    if kappa == 0:
        elem = abs_u
    else:
        huber = torch.where(abs_u <= kappa, 0.5 * u.pow(2), kappa * (abs_u - 0.5 * kappa))
        elem = huber / kappa
    weight = (taus.to(pred.dtype) - (u.detach() < 0).to(pred.dtype)).abs()
    per_sample = (weight * elem).mean(-1)
    return per_sample if reduction == "none" else per_sample.mean()


def cvar_weights(k: int, alpha: float) -> torch.Tensor:
    """Weights ``[K]`` (sum 1) such that ``q @ w`` is the CVaR at ``alpha`` of K equal-mass atoms ``q``.

    Atom ``i`` (sorted ascending) covers probability ``[i / K, (i + 1) / K)``; the weight is the
    share of ``[0, alpha)`` it covers, divided by ``alpha``.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"cvar_alpha must be in (0, 1], got {alpha}")
    lo = torch.arange(k, dtype=torch.float64) / k
    covered = (torch.clamp(torch.full_like(lo, alpha) - lo, min=0.0)).clamp(max=1.0 / k)
    return (covered / alpha).to(torch.float32)


def risk_value(quantiles: torch.Tensor, cvar_w: torch.Tensor, cvar_weight: float) -> torch.Tensor:
    """``(mean(q) + w * CVaR(q)) / (1 + w)`` of sorted quantiles ``[B, K]``."""
    mean = quantiles.mean(-1)
    if cvar_weight == 0:
        return mean
    cvar = quantiles @ cvar_w.to(quantiles.dtype)
    return (mean + cvar_weight * cvar) / (1.0 + cvar_weight)


# ------------------------------------------------------------------------------------ module


class DistributionalConfig(PPOMLPConfig):
    """``model_config`` of :class:`DistributionalPPOModule` (the ``ppo_mlp`` fields plus the critic)."""

    n_quantiles: int = Field(32, ge=1, description="K quantiles of the return")
    huber_kappa: float = Field(1.0, ge=0, description="Huber threshold of the quantile loss (0: pinball)")
    cvar_alpha: float = Field(0.1, gt=0, le=1, description="tail probability of the CVaR")
    cvar_weight: float = Field(0.0, ge=0, description="w in V = (mean + w * CVaR) / (1 + w)")


class DistributionalPPOModule(ScorePolicyForwards, TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Shared per-asset policy (as ``ppo_mlp``) with a K-quantile critic."""

    config_cls: ClassVar[type[DistributionalConfig]] = DistributionalConfig
    cfg: DistributionalConfig

    def setup(self) -> None:
        self.cfg = validate_model_config(self.config_cls, self.model_config)
        self.n_features = features_per_asset(self.observation_space, self.action_space)
        self.policy = ScorePolicy(self.cfg, self.n_features)
        k = self.cfg.n_quantiles
        self.register_buffer("taus", quantile_taus(k), persistent=False)
        self.register_buffer("cvar_w", cvar_weights(k, self.cfg.cvar_alpha), persistent=False)
        if not self.inference_only:
            self.quantile_head = mlp([self.policy.embedding_dim, self.cfg.head_hidden, k])

    def compute_quantiles(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        """Sorted return quantiles ``[B, K]`` at :attr:`taus`."""
        if embeddings is None:
            embeddings = self.policy(batch[Columns.OBS])[2]
        return torch.sort(self.quantile_head(embeddings), dim=-1).values

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        """The value GAE uses: quantile mean mixed with the CVaR (see the module docstring)."""
        q = self.compute_quantiles(batch, embeddings)
        return risk_value(q, self.cvar_w, self.cfg.cvar_weight)

    def get_non_inference_attributes(self) -> list[str]:
        return ["quantile_head"]


# ------------------------------------------------------------------------------------ TQC baseline


def tqc_config(env_config: dict[str, Any], **training: Any) -> TQCConfig:
    """RLlib's TQC (off-policy quantile critics) on ``PortfolioEnv``: the distributional baseline.

    Uses RLlib's default TQC module (MLPs over the flat observation, ``flat_obs`` defaulted to True)
    with 2 critics x 25 quantiles, dropping the top 2 per critic. ``training`` overrides go to
    ``TQCConfig.training`` (e.g. ``train_batch_size_per_learner``,
    ``num_steps_sampled_before_learning_starts``, ``training_intensity``, ``replay_buffer_config``).

    An iteration is set by steps, never by time: no minimum time per iteration (SAC's default of one
    second would repeat training steps, each an env fragment and its updates, until it passed: a number
    of updates set by the machine's speed). RLlib's "auto" rollout fragment is ``n_step`` (1) env step,
    and each training step makes one update once learning has started (``training_intensity`` None):
    callers that want another replay ratio set ``rollout_fragment_length`` / ``training_intensity``.
    """
    cfg = {"flat_obs": True, **dict(env_config)}
    PortfolioEnvConfig.model_validate(cfg)
    register_env(PORTFOLIO_ENV_ID, make_portfolio_env)
    defaults: dict[str, Any] = {"n_quantiles": 25, "n_critics": 2, "top_quantiles_to_drop_per_net": 2}
    return (
        TQCConfig()
        .environment(env=PORTFOLIO_ENV_ID, env_config=cfg)
        .env_runners(
            num_env_runners=0, num_envs_per_env_runner=1, gym_env_vectorize_mode="vector_entry_point"
        )
        .training(**{**defaults, **training})
        .reporting(min_time_s_per_iteration=0)
    )
