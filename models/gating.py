"""``gating``: the hierarchical gate for ``GatedSymbolEnv``: stage 1 picks a mode, stage 2 sizes it.

Action space ``MultiDiscrete([4, 2, K] * N)``: per symbol a gate mode (0 flat, 1 probe, 2 passive,
3 aggressive), a side (0 long, 1 short) and a sizing level ``k`` that the env turns into ``(k + 1)
/ K`` of the mode's cap (``envs.gym_envs.gate_orders``: probe of ``probe_weight``, passive and
aggressive of the contract's kelly_lite with sigma from the last 7 closes).

* One encoder shared by all symbols (the DeepSets encoder of :mod:`models.common`) feeds, per
  symbol, the **gate head** (4 mode and 2 side logits) and **one sizing actor per mode**
  (``sizing_heads["probe" | "passive" | "aggressive"]``, K level logits each); the value head reads
  the pooled embedding and the portfolio state.
* **The chosen mode's head sizes.** The distribution (:mod:`models.gate_distribution`) samples
  the level from the head of the sampled mode, and its log-probability is that head's, so PPO
  trains each sizing head on the samples where its mode was taken (all of them on a batch where
  every mode occurs); the entropy bonus reaches each head in proportion to its mode's probability.
* **The contract's gate is a hard mask.** The observation's last feature channel is the gated
  env's gate (1 where the contract's gates - spread cap, edge threshold, consensus, known sigma -
  are open, ``envs.gate``). Where it is closed, ``passive`` and ``aggressive`` are impossible;
  unlisted symbols can only be flat. The mask acts on the logits, so it holds in every forward
  (training, evaluation and serving alike): the allowed mode logits are log-normalised and the
  impossible ones set to ``MASKED_LOGIT`` = -1e4 below them, i.e. probability ``exp(-1e4) = 0``
  exactly in float32 (never sampled, never the argmax) while entropy and KL stay finite, which a
  literal ``-inf`` would not (``0 * -inf``). Where the gate is open every mode stays possible.

:meth:`GatingModule.decisions` gives the greedy (mode, side, level) per symbol.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, Field
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from raytrade.envs.gym_envs import GATE_ACTION_FIELDS, GATE_MODES, N_PORTFOLIO_STATE
from raytrade.models.common import (
    FROZEN,
    AssetSetEncoder,
    PortfolioObs,
    features_per_asset,
    head_input,
    mlp,
    n_assets_of,
    scale_last_layer,
    split_obs,
    validate_model_config,
)
from raytrade.models.gate_distribution import N_MODES, N_SIDES, GateDistribution

MASKED_LOGIT = -1e4
SIZED_MODES: tuple[str, ...] = GATE_MODES[1:]  # probe, passive, aggressive: one sizing head each
GATED_MODES = (GATE_MODES.index("passive"), GATE_MODES.index("aggressive"))
"""Modes that need the contract's gate open."""


class GatingConfig(BaseModel):
    """``model_config`` of :class:`GatingModule`."""

    model_config = FROZEN

    hidden: int = Field(64, ge=1, description="width of the shared per-symbol encoder")
    depth: int = Field(2, ge=1, description="layers of the per-symbol encoder")
    head_hidden: int = Field(64, ge=1, description="hidden width of the gate, sizing and value heads")


class GateDecisions(NamedTuple):
    """Greedy per-symbol decisions ``[B, N]``."""

    mode: torch.Tensor  # int64, 0 flat .. 3 aggressive
    side: torch.Tensor  # int64, 0 long, 1 short
    level: torch.Tensor  # int64 sizing level of the chosen mode's head, 0 where flat


def allowed_modes(mask: torch.Tensor, gate_open: torch.Tensor) -> torch.Tensor:
    """``[B, N, 4]`` bool: flat always; probe where listed; passive and aggressive where listed and
    the contract's gate is open."""
    allowed = mask.unsqueeze(-1).expand(*mask.shape, N_MODES).clone()
    allowed[..., 0] = True
    for m in GATED_MODES:
        allowed[..., m] &= gate_open
    return allowed


def mask_mode_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Allowed mode logits log-normalised (<= 0), the others ``MASKED_LOGIT`` (probability 0)."""
    normalised = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.where(allowed, normalised, torch.full_like(logits, MASKED_LOGIT))


class GatingModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Shared per-symbol encoder -> gate head (mode, side) and a sizing head per mode; value head."""

    config_cls: ClassVar[type[GatingConfig]] = GatingConfig

    def setup(self) -> None:
        self.cfg = validate_model_config(self.config_cls, self.model_config)
        self.n_features = features_per_asset(self.observation_space, self.action_space)
        n = n_assets_of(self.action_space)  # type: ignore[arg-type]  # checked by features_per_asset
        nvec = [int(v) for v in getattr(self.action_space, "nvec", [])]
        if len(nvec) != GATE_ACTION_FIELDS * n or nvec != [N_MODES, N_SIDES, nvec[-1]] * n:
            raise ValueError(f"gating needs MultiDiscrete([4, 2, K] * N), got {self.action_space}")
        self.size_levels = nvec[2]
        h, hh = self.cfg.hidden, self.cfg.head_hidden
        self.encoder = AssetSetEncoder(self.n_features, h, self.cfg.depth)
        head_width = 2 * h + N_PORTFOLIO_STATE
        self.gate_head = scale_last_layer(mlp([head_width, hh, N_MODES + N_SIDES]), 0.01)
        self.sizing_heads = nn.ModuleDict(
            {mode: scale_last_layer(mlp([head_width, hh, self.size_levels]), 0.01) for mode in SIZED_MODES}
        )
        self.action_dist_cls = GateDistribution.get_partial_dist_cls(  # type: ignore[misc]
            size_levels=self.size_levels
        )
        if not self.inference_only:
            self.value_head = mlp([h + N_PORTFOLIO_STATE, hh, 1])

    def _encode(self, raw_obs: Any) -> tuple[PortfolioObs, torch.Tensor, torch.Tensor]:
        """(obs, distribution inputs ``[B, N, 6 + 3K]`` with the mode mask applied, value embedding)."""
        obs = split_obs(raw_obs, self.n_features)
        h, ctx = self.encoder(obs)
        head_in = head_input(h, ctx, obs.portfolio)
        gate = self.gate_head(head_in)
        gate_open = obs.features[..., -1] > 0.5  # the env's gate channel (0 on masked rows)
        modes = mask_mode_logits(gate[..., :N_MODES], allowed_modes(obs.mask, gate_open))
        sizes = [self.sizing_heads[mode](head_in) for mode in SIZED_MODES]
        inputs = torch.cat([modes, gate[..., N_MODES:], *sizes], dim=-1)
        return obs, inputs, torch.cat([ctx, obs.portfolio], dim=-1)

    def decisions(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> GateDecisions:
        """Greedy mode, side and sizing level per symbol (unlisted -> flat, closed gate -> flat/probe)."""
        with torch.no_grad():
            inputs = self._encode(obs)[1]
            greedy = self._distribution(inputs).greedy().reshape(*inputs.shape[:2], GATE_ACTION_FIELDS)
        return GateDecisions(greedy[..., 0], greedy[..., 1], greedy[..., 2])

    def _distribution(self, inputs: torch.Tensor) -> GateDistribution:
        return GateDistribution.from_logits(inputs.flatten(1), size_levels=self.size_levels)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._encode(batch[Columns.OBS])[1].flatten(1)}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        _, inputs, emb = self._encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: inputs.flatten(1), Columns.EMBEDDINGS: emb}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self._encode(batch[Columns.OBS])[2]
        return self.value_head(embeddings).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head"]
