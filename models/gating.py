"""``gating``: hierarchical per-symbol policy for ``GatedSymbolEnv`` (mode head + side head).

Action space ``MultiDiscrete([4, 2] * N)``: per symbol a gate mode (0 flat, 1 probe, 2 passive,
3 aggressive) and a side (0 long, 1 short). The distribution is RLlib's ``TorchMultiCategorical``
over ``2N`` independent categoricals with ``input_lens = [4, 2] * N``; the logits are laid out per
symbol ``[mode_0 (4), side_0 (2), mode_1 (4), side_1 (2), ...]``, the order of the action vector.

* One encoder shared by all symbols (the DeepSets encoder of :mod:`models.common`) feeds a
  per-symbol head giving the 4 mode and 2 side logits; the value head reads the pooled embedding
  and the portfolio state.
* Masked (unlisted) symbols are forced flat: their non-flat mode logits are ``MASKED_LOGIT``
  (probability ``exp(-1e4) = 0`` in float32, finite so entropy and KL stay finite) and their side
  logits are 0 (a constant, so no gradient and a constant entropy term).
* **Sizing heads, honestly.** The env sizes positions itself (``kelly_lite`` from the edge and
  sigma features; probe a fixed weight), so the action carries no size. The per-mode sizing heads
  output a multiplier in ``(0, 2)`` reported by ``forward_inference`` under ``size_multiplier``
  (for the greedy mode; flat -> 0) for serving to log or apply as a tilt. No loss trains them - the
  last layer starts at zero, so the multiplier is exactly 1.0 (neutral) until a future loss does.

There is no ``weights()`` here: target weights depend on the env's kelly sizing, which the module
does not replicate; :meth:`GatingModule.decisions` gives the greedy (mode, side, multiplier).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, Field
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from raytrade.envs.gym_envs import GATE_MODES, N_PORTFOLIO_STATE
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

N_MODES = len(GATE_MODES)
N_SIDES = 2
MASKED_LOGIT = -1e4
SIZE_MULTIPLIER_KEY = "size_multiplier"


class GatingConfig(BaseModel):
    """``model_config`` of :class:`GatingModule`."""

    model_config = FROZEN

    hidden: int = Field(64, ge=1, description="width of the shared per-symbol encoder")
    depth: int = Field(2, ge=1, description="layers of the per-symbol encoder")
    head_hidden: int = Field(64, ge=1, description="hidden width of the mode/side/sizing/value heads")
    max_size_multiplier: float = Field(2.0, gt=0, description="sizing heads output in (0, this)")


class GateDecisions(NamedTuple):
    """Greedy per-symbol decisions ``[B, N]``."""

    mode: torch.Tensor  # int64, 0 flat .. 3 aggressive
    side: torch.Tensor  # int64, 0 long, 1 short
    size_multiplier: torch.Tensor  # float, 0 where flat


class GatingModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Shared per-symbol encoder -> mode and side categoricals (+ advisory sizing), value head."""

    config_cls: ClassVar[type[GatingConfig]] = GatingConfig

    def setup(self) -> None:
        self.cfg = validate_model_config(self.config_cls, self.model_config)
        self.n_features = features_per_asset(self.observation_space, self.action_space)
        n = n_assets_of(self.action_space)  # type: ignore[arg-type]  # checked by features_per_asset
        nvec = getattr(self.action_space, "nvec", None)
        if nvec is None or list(nvec) != [N_MODES, N_SIDES] * n:
            raise ValueError(f"gating needs MultiDiscrete([4, 2] * N), got {self.action_space}")
        h, hh = self.cfg.hidden, self.cfg.head_hidden
        self.encoder = AssetSetEncoder(self.n_features, h, self.cfg.depth)
        head_width = 2 * h + N_PORTFOLIO_STATE
        self.gate_head = scale_last_layer(mlp([head_width, hh, N_MODES + N_SIDES]), 0.01)
        self.sizing_head = scale_last_layer(mlp([head_width, hh, N_MODES - 1]), 0.0)
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(  # type: ignore[misc]
            input_lens=[N_MODES, N_SIDES] * n
        )
        if not self.inference_only:
            self.value_head = mlp([h + N_PORTFOLIO_STATE, hh, 1])

    def _encode(self, raw_obs: Any) -> tuple[PortfolioObs, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(obs, gate logits [B, N, 6] with masking applied, head input [B, N, 2H + 5], embedding)."""
        obs = split_obs(raw_obs, self.n_features)
        h, ctx = self.encoder(obs)
        head_in = head_input(h, ctx, obs.portfolio)
        logits = self.gate_head(head_in)
        forced = torch.zeros_like(logits[0, 0])
        forced[1:N_MODES] = MASKED_LOGIT
        logits = torch.where(obs.mask.unsqueeze(-1), logits, forced)
        return obs, logits, head_in, torch.cat([ctx, obs.portfolio], dim=-1)

    def decisions(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> GateDecisions:
        """Greedy mode and side per symbol (masked -> flat) and the advisory size multiplier."""
        _, logits, head_in, _ = self._encode(obs)
        return self._decide(logits, head_in)

    def _decide(self, logits: torch.Tensor, head_in: torch.Tensor) -> GateDecisions:
        mode = logits[..., :N_MODES].argmax(-1)
        side = logits[..., N_MODES:].argmax(-1)
        per_mode = self.cfg.max_size_multiplier * torch.sigmoid(self.sizing_head(head_in))  # [B, N, 3]
        chosen = per_mode.gather(-1, (mode - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return GateDecisions(mode, side, torch.where(mode > 0, chosen, torch.zeros_like(chosen)))

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        _, logits, _, _ = self._encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits.flatten(1)}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            _, logits, head_in, _ = self._encode(batch[Columns.OBS])
            return {
                Columns.ACTION_DIST_INPUTS: logits.flatten(1),
                SIZE_MULTIPLIER_KEY: self._decide(logits, head_in).size_multiplier,
            }

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        _, logits, _, emb = self._encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits.flatten(1), Columns.EMBEDDINGS: emb}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self._encode(batch[Columns.OBS])[3]
        return self.value_head(embeddings).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head"]
