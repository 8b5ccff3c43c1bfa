"""Building blocks shared by the raytrade RLModules: observation parsing, per-asset encoding, pooling.

Design decisions (all families):

* **Flat observations.** The catalog builds envs with ``flat_obs=True``: RLlib's default connectors
  handle one ``Box`` without a flattening connector, and the module splits it back into
  ``features [B, N, F]``, ``weights [B, N]``, ``mask [B, N]`` and ``portfolio [B, 5]``
  (:func:`split_obs`, the layout of ``envs.gym_envs.batched_observation``). A ``Dict`` observation is
  accepted too (serving may pass one).
* **N is read per batch, F is fixed.** ``F`` comes from the observation and action spaces at
  ``setup()`` (``D = N * (F + 2) + 5``); at forward time ``N = (D - 5) / (F + 2)``, so a
  permutation-equivariant module trained on 8 assets runs unchanged on 32.
* **Scale-free inputs.** Raw features mix units (returns ~1e-2, spreads in bps), so each asset row
  is ``[cross-sectional z-score over listed assets, asinh(raw), current weight]``
  (:func:`asset_inputs`); the z-score is permutation-equivariant and ignores masked assets. With the
  env's train-window normaliser (``envs.normalization``, what the specs use) the "raw" features are
  already normalised per column over time and carry a fraction-missing channel as their last one.
* **Masks are exact.** Masked (unlisted) assets are excluded from every pooled statistic and get an
  exact 0 from :func:`project_scores` (the projection's box is ``[0, 0]`` there).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from torch import nn

from raytrade.envs.gym_envs import GATE_ACTION_FIELDS, N_PORTFOLIO_STATE
from raytrade.envs.projection import project_weights_torch

FROZEN = ConfigDict(frozen=True, extra="forbid")
C = TypeVar("C", bound=BaseModel)

# Keys RLlib merges into every module's ``model_config`` (``AlgorithmConfig._model_config_auto_includes``);
# they say nothing about our modules, so validation drops them instead of failing on them.
RLLIB_AUTO_KEYS: frozenset[str] = frozenset({"vf_share_layers"})
PORTFOLIO_DRAWDOWN: Final = 1
"""Position of the drawdown (``1 - equity / running peak``) in the portfolio state (``envs.gym_envs``
layout: cash fraction, drawdown, kill-switch active, kill-switch bars, progress)."""


class ProjectionConfig(BaseModel):
    """Constraints of the ``weights()`` diagnostic (fractions of equity): the mean projected onto a
    copy of the env's caps. It is not the decision: replays, scores and serving take the clipped mean
    and project it once with the full constraints (``models.inference.policy_output``), which this
    copy lacks (the crypto sleeve and no-short rule: the observation does not say which assets are
    crypto; the kill switch's unwind bounds).
    """

    model_config = FROZEN

    gross_cap: float = Field(2.0, ge=0, description="sum |w| cap")
    per_asset_cap: float = Field(1.0, ge=0, le=1, description="|w_i| cap (<= 1: the action Box)")
    long_only: bool = Field(False, description="forbid short weights")


class ExplorationConfig(BaseModel):
    """How the Gaussian's exploration noise varies with risk and by asset (sampling only: the
    deterministic decision the objective scores and serving uses, the mean, never sees it).

    ``log_std_eff[b, i] = log_std + log(max(drawdown_floor, 1 - dd[b] / drawdown_scale))
    + log(probe_std_multiplier) * [i in probe_assets]`` (:func:`exploration_log_std`), ``dd`` the
    observation's portfolio drawdown. Why: a book already under water should try less, so the
    noise shrinks as the drawdown deepens (to ``drawdown_floor`` times the base std at
    ``drawdown_scale`` and beyond); probe symbols are the ones named for trying things, so their
    noise is larger. The defaults leave the noise as it was (one shared ``log_std``).
    """

    model_config = FROZEN

    drawdown_scale: float | None = Field(
        None,
        gt=0,
        le=1,
        description="drawdown (fraction below the peak) at which the std reaches the "
        "floor; None: the std does not depend on the drawdown",
    )
    drawdown_floor: float = Field(0.1, gt=0, le=1, description="smallest std factor the drawdown gives")
    probe_assets: tuple[NonNegativeInt, ...] = Field(
        (), description="asset indices (the universe's order) of the probe symbols"
    )
    probe_std_multiplier: float = Field(2.0, ge=1, description="std factor of the probe assets")

    @property
    def active(self) -> bool:
        return self.drawdown_scale is not None or bool(self.probe_assets)


def validate_model_config(cls: type[C], model_config: Any) -> C:
    """``cls.model_validate`` of RLlib's ``model_config`` dict without RLlib's auto-included keys."""
    if model_config is not None and not isinstance(model_config, Mapping):
        raise TypeError(f"model_config must be a dict, got {type(model_config).__name__}")
    raw = {k: v for k, v in dict(model_config or {}).items() if k not in RLLIB_AUTO_KEYS}
    return cls.model_validate(raw)


# ------------------------------------------------------------------------------------ observations


class PortfolioObs(NamedTuple):
    """The observation split into its parts (batch-first, float32)."""

    features: torch.Tensor  # [B, N, F]
    weights: torch.Tensor  # [B, N]
    mask: torch.Tensor  # [B, N] bool
    portfolio: torch.Tensor  # [B, 5]


def n_assets_of(action_space: gym.Space[Any]) -> int:
    """N from the action space: ``Box(N)`` target weights or ``MultiDiscrete([4, 2, K] * N)``."""
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return int(action_space.shape[0])
    fields = GATE_ACTION_FIELDS
    if isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.size % fields == 0:
        return int(action_space.nvec.size // fields)
    raise ValueError(f"action space must be Box(N) or MultiDiscrete([4, 2, K] * N), got {action_space}")


def n_features_of(observation_space: gym.Space[Any], n_assets: int) -> int:
    """F from the observation space (flat ``Box(N * (F + 2) + 5)`` or the env's ``Dict``)."""
    if isinstance(observation_space, gym.spaces.Dict):
        feats = observation_space["features"]
        if not isinstance(feats, gym.spaces.Box):
            raise ValueError(f"Dict observation needs a Box 'features', got {feats}")
        return int(feats.shape[-1])
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"observation space must be the env's flat Box or Dict, got {observation_space}")
    width = int(observation_space.shape[0])
    rest = width - N_PORTFOLIO_STATE - 2 * n_assets
    if rest <= 0 or rest % n_assets:
        raise ValueError(
            f"flat observation of size {width} does not match N={n_assets} assets "
            f"(expected N * (F + 2) + {N_PORTFOLIO_STATE})"
        )
    return rest // n_assets


def features_per_asset(observation_space: gym.Space[Any] | None, action_space: gym.Space[Any] | None) -> int:
    """F (features per asset) of a module built on these spaces (both must be set by then)."""
    if observation_space is None or action_space is None:
        raise ValueError("observation_space and action_space must be set (RLlib fills them from the env)")
    return n_features_of(observation_space, n_assets_of(action_space))


def split_obs(obs: torch.Tensor | Mapping[str, torch.Tensor], n_features: int) -> PortfolioObs:
    """Split a flat ``[B, N * (F + 2) + 5]`` observation (or the env's Dict) into its parts."""
    if isinstance(obs, Mapping):
        feats, weights, mask = obs["features"].float(), obs["weights"].float(), obs["mask"] > 0.5
        port = obs["portfolio"].float()
    else:
        b, d = (int(size) for size in obs.shape)  # ints also while traced (``models.tracing``)
        n, rem = divmod(d - N_PORTFOLIO_STATE, n_features + 2)
        if rem or n < 1:
            raise ValueError(
                f"flat observation width {d} is not N * ({n_features} + 2) + {N_PORTFOLIO_STATE}"
            )
        nf = n * n_features
        x = obs.float()
        feats, weights = x[:, :nf].reshape(b, n, n_features), x[:, nf : nf + n]
        mask, port = x[:, nf + n : nf + 2 * n] > 0.5, x[:, nf + 2 * n :]
    # masked rows are zeroed so nothing an unlisted asset carries (even a NaN) reaches the network
    feats = torch.where(mask.unsqueeze(-1), feats, 0.0)
    return PortfolioObs(feats, torch.where(mask, weights, 0.0), mask, port)


def dummy_flat_obs(n_assets: int, n_features: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random flat observation (all assets listed) for benchmarks, FLOP counts and tests."""
    g = torch.Generator().manual_seed(seed)
    feats = 0.02 * torch.randn(batch, n_assets * n_features, generator=g)
    weights = torch.zeros(batch, n_assets)
    mask = torch.ones(batch, n_assets)
    port = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.5]]).expand(batch, -1)
    return torch.cat([feats, weights, mask, port], dim=-1)


# ------------------------------------------------------------------------------------ pooling / inputs


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, N, H]`` over listed assets (``mask [B, N]``); 0 where none is listed."""
    return _masked_mean(x, mask.unsqueeze(-1).to(x.dtype))


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """:func:`masked_mean` with the mask as ``m = mask.unsqueeze(-1).to(x.dtype)`` (``[B, N, 1]``)."""
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def cross_sectional_zscore(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-feature z-score of ``x [B, N, F]`` across listed assets; masked rows become 0."""
    return zscore_masked(x, mask.unsqueeze(-1).to(x.dtype), eps)


def zscore_masked(x: torch.Tensor, m: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """:func:`cross_sectional_zscore` with the mask as ``m = mask.unsqueeze(-1).to(x.dtype)``."""
    cnt = m.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(1, keepdim=True) / cnt
    var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / cnt
    return (x - mean) / torch.sqrt(var + eps) * m


def asset_inputs(obs: PortfolioObs, z: torch.Tensor | None = None) -> torch.Tensor:
    """Per-asset network input ``[B, N, 2F + 1]``: z-score, ``asinh`` of raw features, current weight.

    ``z``: ``cross_sectional_zscore(obs.features, obs.mask)`` when the caller has it already.
    """
    return asset_inputs_masked(obs, obs.mask.unsqueeze(-1).to(obs.features.dtype), z)


def asset_inputs_masked(obs: PortfolioObs, m: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`asset_inputs` with the mask as ``m = mask.unsqueeze(-1).to(features.dtype)``: one cast
    of the mask per forward instead of one per use (each a tensor op of a few microseconds)."""
    z = zscore_masked(obs.features, m) if z is None else z
    return torch.cat([z, torch.asinh(obs.features) * m, obs.weights.unsqueeze(-1)], dim=-1)


def asset_input_dim(n_features: int) -> int:
    return 2 * n_features + 1


def mlp(sizes: Sequence[int], activate_last: bool = False) -> nn.Sequential:
    """Linear layers with SiLU between them (and after the last one when ``activate_last``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or activate_last:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def run_mlp(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` for a network of :func:`mlp`'s layers.

    Under no-grad (inference) each ``Linear``/``SiLU`` is applied as the function its ``forward`` is
    (``F.linear``, ``F.silu``): the same numbers without a module call per layer, about 2.4 us each
    (seven per ``ppo_mlp`` forward: ~5% of a one-observation forward). Module hooks are therefore not
    run on that path (raytrade registers none). With grad enabled it is ``net(x)`` itself (training
    unchanged).
    """
    if torch.is_grad_enabled():
        return net(x)
    for layer in net:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight, layer.bias)
        elif isinstance(layer, nn.SiLU):
            x = F.silu(x)
        else:
            x = layer(x)
    return x


def scale_last_layer(net: nn.Sequential, gain: float) -> nn.Sequential:
    """Scale the last linear layer's init by ``gain`` (bias 0): heads start near neutral.

    ``gain=0.01`` for policy heads (small initial scores, the usual PPO practice); ``0`` makes the
    head output exactly 0 until trained.
    """
    last = [m for m in net if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
        last.bias.zero_()
    return net


def head_input(h: torch.Tensor, ctx: torch.Tensor, portfolio: torch.Tensor) -> torch.Tensor:
    """Per-asset head input ``[B, N, 2H + 5]``: own embedding, pooled context, portfolio state."""
    n = h.shape[1]
    return torch.cat(
        [h, ctx.unsqueeze(1).expand(-1, n, -1), portfolio.unsqueeze(1).expand(-1, n, -1)], dim=-1
    )


class AssetSetEncoder(nn.Module):
    """DeepSets encoder: one MLP shared by every asset, plus the mean over listed assets.

    ``forward`` returns per-asset embeddings ``[B, N, H]`` and the pooled context ``[B, H]``;
    permuting the assets permutes the former and leaves the latter unchanged.
    """

    def __init__(self, n_features: int, hidden: int, depth: int):
        super().__init__()
        self.phi = mlp([asset_input_dim(n_features)] + [hidden] * depth, activate_last=True)

    def forward(self, obs: PortfolioObs) -> tuple[torch.Tensor, torch.Tensor]:
        m = obs.mask.unsqueeze(-1).to(obs.features.dtype)
        h = run_mlp(self.phi, asset_inputs_masked(obs, m))
        return h, _masked_mean(h, m)


# ------------------------------------------------------------------------------------ outputs


def gaussian_dist_inputs(mean: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``TorchDiagGaussian`` inputs ``[B, 2N]`` = ``[mean, log_std]``; masked means are 0.

    ``log_std`` is one shared scalar (permutation-equivariant exploration noise), or anything that
    broadcasts to ``[B, N]`` (:func:`exploration_log_std`: per observation and per asset).
    """
    mean = mean * mask.to(mean.dtype)
    return torch.cat([mean, log_std.expand_as(mean)], dim=-1)


def check_probe_assets(cfg: ExplorationConfig, n_assets: int) -> None:
    """``ValueError`` naming the indices of ``cfg.probe_assets`` that are not among ``n_assets``."""
    outside = [i for i in cfg.probe_assets if i >= n_assets]
    if outside:
        raise ValueError(f"exploration.probe_assets {outside} outside the {n_assets} assets observed")


def exploration_log_std(
    log_std: torch.Tensor, portfolio: torch.Tensor, n_assets: int, cfg: ExplorationConfig
) -> torch.Tensor:
    """The effective log std of :class:`ExplorationConfig`, broadcastable to ``[B, N]``: ``log_std``
    itself (``[1]``) when the config is off, ``[B, 1]`` with the drawdown schedule, ``[., N]``
    with probe assets. A negative drawdown (none in the env) counts as 0: the schedule only shrinks.
    """
    out = log_std.reshape(-1)
    if cfg.drawdown_scale is not None:
        dd = portfolio[:, PORTFOLIO_DRAWDOWN].clamp(min=0.0)
        factor = (1.0 - dd / cfg.drawdown_scale).clamp(min=cfg.drawdown_floor)
        out = out + torch.log(factor).unsqueeze(-1)
    if cfg.probe_assets:
        check_probe_assets(cfg, n_assets)
        bonus = torch.zeros(n_assets, dtype=out.dtype, device=out.device)
        bonus[list(cfg.probe_assets)] = math.log(cfg.probe_std_multiplier)
        out = out + bonus
    return out


def project_scores(scores: torch.Tensor, mask: torch.Tensor, cfg: ProjectionConfig) -> torch.Tensor:
    """Scores ``[B, N]`` -> feasible weights: clip to the action box, then the exact projection.

    The clip mirrors the env (it clips actions to [-1, 1] before projecting), so ``weights()`` is
    what the env would hold for the Gaussian's mean.
    """
    clipped = scores.clamp(-1.0, 1.0)
    return project_weights_torch(clipped, cfg.gross_cap, cfg.per_asset_cap, cfg.long_only, mask=mask)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
