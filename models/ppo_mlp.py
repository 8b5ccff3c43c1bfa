"""``ppo_mlp``: PPO policy whose MLP shares weights across assets (permutation-equivariant).

Architecture (DeepSets): ``h_i = phi(x_i)`` for each asset row ``x_i`` (z-scored and raw features,
current weight; see :mod:`models.common`), context ``c = mean_{listed} h_i``, portfolio state ``p``.

* score ``s_i = psi([h_i, c, p])`` -> the mean of a diagonal Gaussian over the N pre-projection
  scores, with one shared learned ``log_std``. PPO samples actions from it and the env clips them
  to ``[-1, 1]`` and projects them onto the constraints, so the policy gradient is the plain one.
  ``exploration`` (:class:`models.common.ExplorationConfig`, off by default) scales that std per
  observation (shrinking with the portfolio drawdown) and per asset (larger on probe assets).
* value ``V = v([c, p])``.
* :meth:`PPOMLPModule.weights` is the deterministic allocation for inference and serving: the mean
  clipped and projected with ``envs.projection.project_weights_torch`` under the mask, so masked
  assets get exactly 0 and ``sum |w| <= gross_cap``, ``|w_i| <= per_asset_cap`` hold exactly.
  ``forward_inference`` returns it as ``actions`` (RLlib then skips sampling).

Permuting the assets of an observation permutes scores and weights and leaves the value unchanged
(tested). Observations are the env's flat Box (``flat_obs=True``) or its Dict.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from raytrade.envs.gym_envs import N_PORTFOLIO_STATE
from raytrade.models.common import (
    FROZEN,
    AssetSetEncoder,
    ExplorationConfig,
    PortfolioObs,
    ProjectionConfig,
    check_probe_assets,
    exploration_log_std,
    features_per_asset,
    gaussian_dist_inputs,
    head_input,
    mlp,
    n_assets_of,
    project_scores,
    run_mlp,
    scale_last_layer,
    split_obs,
    validate_model_config,
)
from raytrade.models.tracing import Inference, ObsInference, ShapeTraces, obs_tensors


class PPOMLPConfig(BaseModel):
    """``model_config`` of :class:`PPOMLPModule`."""

    model_config = FROZEN

    hidden: int = Field(64, ge=1, description="width of the per-asset encoder")
    depth: int = Field(2, ge=1, description="layers of the per-asset encoder")
    head_hidden: int = Field(64, ge=1, description="hidden width of the score and value heads")
    log_std_init: float = Field(-1.0, description="initial log std of the Gaussian over scores")
    projection: ProjectionConfig = ProjectionConfig()
    exploration: ExplorationConfig = ExplorationConfig()


class ScorePolicy(nn.Module):
    """Encoder + per-asset score head + shared log std: the policy half, reused by ``distributional``.

    ``forward`` returns ``(obs, scores [B, N], value embedding [B, H + 5])``.
    """

    def __init__(self, cfg: PPOMLPConfig, n_features: int):
        super().__init__()
        h, hh = cfg.hidden, cfg.head_hidden
        self.n_features = n_features
        self.embedding_dim = h + N_PORTFOLIO_STATE
        self.encoder = AssetSetEncoder(n_features, h, cfg.depth)
        self.score_head = scale_last_layer(mlp([2 * h + N_PORTFOLIO_STATE, hh, 1]), 0.01)
        self.log_std = nn.Parameter(torch.full((1,), cfg.log_std_init))
        self.exploration = cfg.exploration

    def forward(self, raw_obs: Any) -> tuple[PortfolioObs, torch.Tensor, torch.Tensor]:
        obs = split_obs(raw_obs, self.n_features)
        ctx, scores = self.scores(obs)
        return obs, scores, torch.cat([ctx, obs.portfolio], dim=-1)

    def scores(self, obs: PortfolioObs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ctx [B, H], scores [B, N])``: the pooled asset embeddings and each asset's score."""
        h, ctx = self.encoder(obs)
        return ctx, run_mlp(self.score_head, head_input(h, ctx, obs.portfolio)).squeeze(-1)

    def trace(self, on: bool = True) -> ShapeTraces | None:
        """Compute :meth:`outputs`' inference scores through per-shape traces
        (:class:`models.tracing.ShapeTraces`; ``on`` False: eagerly again), returned: for a loaded
        policy that only answers."""
        self._traces = ShapeTraces(ObsInference(self, self.n_features, _policy_inference)) if on else None
        return self._traces

    def dist_inputs(self, obs: PortfolioObs, scores: torch.Tensor) -> torch.Tensor:
        """Gaussian inputs ``[B, 2N]``: the scores and the exploration schedule's log std."""
        log_std = exploration_log_std(self.log_std, obs.portfolio, scores.shape[-1], self.exploration)
        return gaussian_dist_inputs(scores, log_std, obs.mask)

    def weights(self, raw_obs: Any, projection: ProjectionConfig) -> torch.Tensor:
        """Deterministic feasible weights ``[B, N]`` (projection of the Gaussian mean)."""
        obs, scores, _ = self(raw_obs)
        return project_scores(scores, obs.mask, projection)

    def outputs(self, raw_obs: Any, kind: str) -> dict[str, Any]:
        """The RLModule forward outputs: ``kind`` "exploration", "inference" or "train" (adds the
        value embeddings). No ``Columns.ACTIONS``: the decision is the distribution's mean, which the
        env (and RLlib's connector without exploration) bands and projects once; the projected
        ``weights()`` are a diagnostic (``models.inference.policy_output``), not computed per call
        (about 65 us a decision)."""
        traces: ShapeTraces | None = getattr(self, "_traces", None)
        if kind == "inference" and traces is not None and not torch.is_grad_enabled():
            _scores, dist_inputs, _mask = traces(*obs_tensors(raw_obs))
            return {Columns.ACTION_DIST_INPUTS: dist_inputs}
        obs, scores, emb = self(raw_obs)
        out: dict[str, Any] = {Columns.ACTION_DIST_INPUTS: self.dist_inputs(obs, scores)}
        if kind == "train":
            out[Columns.EMBEDDINGS] = emb
        return out


def _policy_inference(policy: ScorePolicy, obs: PortfolioObs) -> Inference:
    """:meth:`ScorePolicy.scores`' scores and their distribution inputs (what the traced forward runs)."""
    scores = policy.scores(obs)[1]
    return scores, policy.dist_inputs(obs, scores)


class ScorePolicyForwards:
    """RLModule forwards of a module whose actor is ``self.policy`` (a :class:`ScorePolicy`) with
    ``self.cfg.projection``: shared by ``ppo_mlp`` and ``distributional`` (list it before
    ``TorchRLModule`` in the bases)."""

    policy: ScorePolicy
    cfg: PPOMLPConfig

    def weights(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic feasible weights ``[B, N]`` (projection of the Gaussian mean)."""
        return self.policy.weights(obs, self.cfg.projection)

    def trace_inference(self, on: bool = True) -> ShapeTraces | None:
        """Run :meth:`_forward_inference`'s scores through per-shape traces (``models.tracing``;
        ``on`` False: eagerly again): the same numbers with less Python per forward. Returns the
        traces. For a loaded policy that only answers."""
        return self.policy.trace(on)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self.policy.outputs(batch[Columns.OBS], "exploration")

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return self.policy.outputs(batch[Columns.OBS], "inference")

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self.policy.outputs(batch[Columns.OBS], "train")


class PPOMLPModule(ScorePolicyForwards, TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Shared per-asset MLP, Gaussian over scores, projected deterministic weights, value head."""

    config_cls: ClassVar[type[PPOMLPConfig]] = PPOMLPConfig

    def setup(self) -> None:
        self.cfg = validate_model_config(self.config_cls, self.model_config)
        self.n_features = features_per_asset(self.observation_space, self.action_space)
        assert self.action_space is not None  # features_per_asset checked it
        check_probe_assets(self.cfg.exploration, n_assets_of(self.action_space))
        self.policy = ScorePolicy(self.cfg, self.n_features)
        if not self.inference_only:
            self.value_head = mlp([self.policy.embedding_dim, self.cfg.head_hidden, 1])

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.policy(batch[Columns.OBS])[2]
        return self.value_head(embeddings).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head"]
