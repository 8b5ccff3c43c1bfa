"""The gating policy's action distribution: per symbol a mode, a side, and the chosen mode's size.

Per symbol the module emits ``6 + 3K`` inputs: 4 mode logits (flat, probe, passive, aggressive),
2 side logits (long, short) and ``K`` sizing-level logits from each of the three sizing heads
(probe, passive, aggressive). The action is ``[mode, side, level]`` (``MultiDiscrete([4, 2, K] *
N)``): the level is sampled from the head of the mode that was chosen, so that head alone
produces the size. The joint law of one symbol is

    p(mode, side, level) = p(mode) p(side) p_mode(level)        (flat: no size, p(level) = 1)

and every quantity PPO needs follows from it exactly, summed over symbols:

* ``logp(a) = log p(mode) + log p(side) + [mode > 0] log p_mode(level)``: a sample trains the
  sizing head of its own mode; a batch in which each mode is taken trains every head.
* ``entropy = H(mode) + H(side) + sum_m p(mode = m) H(p_m)`` (chain rule): every head's entropy
  counts in proportion to how often its mode is chosen.
* ``kl(q) = KL(mode) + KL(side) + sum_m p(mode = m) KL(p_m || q_m)`` (chain rule for KL).

Logits of impossible modes arrive as ``MASKED_LOGIT`` after the module's normalisation (see
``models.gating``): their probability is exactly 0 in float32, so they are never sampled, never
the argmax, and contribute exactly 0 to the entropy and the KL.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic

from raytrade.envs.gym_envs import GATE_ACTION_FIELDS, GATE_MODES

N_MODES = len(GATE_MODES)  # flat, probe, passive, aggressive
N_SIDES = 2
N_SIZED = N_MODES - 1  # every mode but flat has a sizing head


def inputs_per_symbol(size_levels: int) -> int:
    """Distribution inputs per symbol: mode and side logits, one set of level logits per sized mode."""
    return N_MODES + N_SIDES + N_SIZED * size_levels


class GateDistribution(Distribution):
    """Mode, side and the chosen mode's sizing level, per symbol (law in the module docstring).

    Built from ``[B, N * (6 + 3K)]`` inputs by :meth:`from_logits` (``size_levels=K``; the module
    passes it through ``get_partial_dist_cls``). Actions are ``[B, 3N]`` int64 ``[mode, side, level]``
    per symbol; a flat symbol's level is 0 and ignored.
    """

    def __init__(self, mode_logits: torch.Tensor, side_logits: torch.Tensor, size_logits: torch.Tensor):
        super().__init__()
        self.mode_logp = torch.log_softmax(mode_logits, dim=-1)  # [B, N, 4]
        self.side_logp = torch.log_softmax(side_logits, dim=-1)  # [B, N, 2]
        self.size_logp = torch.log_softmax(size_logits, dim=-1)  # [B, N, 3, K]

    @classmethod
    def from_logits(cls, logits: Any, **kwargs: Any) -> GateDistribution:
        if "size_levels" not in kwargs:
            raise TypeError("GateDistribution.from_logits needs size_levels (the action space's K)")
        size_levels = int(kwargs["size_levels"])
        per = inputs_per_symbol(size_levels)
        if logits.shape[-1] % per:
            raise ValueError(f"gate distribution inputs of width {logits.shape[-1]} are not N * {per}")
        x = logits.reshape(*logits.shape[:-1], -1, per)
        size = x[..., N_MODES + N_SIDES :].reshape(*x.shape[:-1], N_SIZED, size_levels)
        return cls(x[..., :N_MODES], x[..., N_MODES : N_MODES + N_SIDES], size)

    @staticmethod
    def required_input_dim(space: gym.Space[Any], **kwargs: Any) -> int:
        nvec = np.asarray(getattr(space, "nvec", []))
        return int(nvec.size // GATE_ACTION_FIELDS * inputs_per_symbol(int(nvec[2]))) if nvec.size else 0

    def _level_logp(self, mode: torch.Tensor) -> torch.Tensor:
        """``[B, N, K]``: log-probabilities of the levels of each symbol's ``mode`` head (flat: probe's)."""
        head = (mode - 1).clamp(min=0)[..., None, None].expand(*mode.shape, 1, self.size_logp.shape[-1])
        return self.size_logp.gather(-2, head).squeeze(-2)

    def _split(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fields = value.long().reshape(*value.shape[:-1], -1, GATE_ACTION_FIELDS)
        return fields[..., 0], fields[..., 1], fields[..., 2]

    def _join(self, mode: torch.Tensor, side: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        level = torch.where(mode > 0, level, torch.zeros_like(level))
        return torch.stack([mode, side, level], dim=-1).flatten(-2)

    def sample(self, **kwargs: Any) -> torch.Tensor:
        mode = torch.distributions.Categorical(logits=self.mode_logp).sample()
        side = torch.distributions.Categorical(logits=self.side_logp).sample()
        level = torch.distributions.Categorical(logits=self._level_logp(mode)).sample()
        return self._join(mode, side, level)

    def rsample(self, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("a categorical law has no reparameterised sample")

    def greedy(self) -> torch.Tensor:
        """``[B, 3N]``: the most probable mode and side, and the most probable level of that mode.

        A row with a NaN input has no most probable mode, yet its argmax is 0 (flat): whoever decides
        with it checks the inputs first (``models.inference.broken_rows``)."""
        mode = self.mode_logp.argmax(-1)
        return self._join(mode, self.side_logp.argmax(-1), self._level_logp(mode).argmax(-1))

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self.greedy())

    def logp(self, value: Any, **kwargs: Any) -> torch.Tensor:
        mode, side, level = self._split(value)
        lp = self.mode_logp.gather(-1, mode[..., None]).squeeze(-1)
        lp = lp + self.side_logp.gather(-1, side[..., None]).squeeze(-1)
        size_lp = self._level_logp(mode).gather(-1, level[..., None]).squeeze(-1)
        return (lp + torch.where(mode > 0, size_lp, torch.zeros_like(size_lp))).sum(-1)

    def entropy(self, **kwargs: Any) -> torch.Tensor:
        h_mode = _entropy(self.mode_logp)
        h_side = _entropy(self.side_logp)
        h_size = (self.mode_logp[..., 1:].exp() * _entropy(self.size_logp)).sum(-1)
        return (h_mode + h_side + h_size).sum(-1)

    def kl(self, other: Distribution, **kwargs: Any) -> torch.Tensor:
        if not isinstance(other, GateDistribution):
            raise TypeError(f"KL of a GateDistribution needs another one, got {type(other).__name__}")
        kl_mode = _kl(self.mode_logp, other.mode_logp)
        kl_side = _kl(self.side_logp, other.side_logp)
        kl_size = (self.mode_logp[..., 1:].exp() * _kl(self.size_logp, other.size_logp)).sum(-1)
        return (kl_mode + kl_side + kl_size).sum(-1)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    return (logp.exp() * (logp - logq)).sum(-1)
