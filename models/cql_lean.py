"""``cql_lean``: a CQL RLModule that does RLlib's CQL arithmetic with less work per update.

RLlib's default CQL module (SAC's) spends most of an update on repeated work: every Q evaluation
runs each twin Q network (a two-stream observation/action encoder plus a fusion layer) in its own
forward pass, the policy runs again on ``num_actions`` copies of every observation to sample the
conservative term's actions, and the learner takes four backward passes. This module keeps the
loss (see :mod:`models.cql_learner`) and changes only how it is computed:

* **One Q network per twin, an MLP over ``[obs, action]``** (ReLU), the shape d3rlpy and the CQL
  paper use. Both twins live in one :class:`TwinQ` (parameters stacked on a leading axis of 2) and
  are evaluated together by batched matrix products.
* **The first layer is split** ``W [obs; a] = W_o obs + W_a a``: the observation half is computed
  once per distinct observation and broadcast over the actions evaluated at it (the data action,
  ``K`` random and ``K`` current-policy actions at ``obs``; ``K`` next-policy actions at ``next_obs``).
  Same arithmetic up to float summation order.
* **All sampled actions in one pass per observation group** (``obs``: ``2K + 1`` actions;
  ``next_obs``: ``K``), not one pass per kind and per twin.
* **The policy runs once** on ``[obs; next_obs]``. The conservative term's policy actions are drawn
  from those same distributions (RLlib draws them from the policy re-run on repeated observations:
  the same distributions, with the policy's parameters frozen, so the same values in law and no
  gradient either way).

The action distribution is RLlib's ``TorchSquashedGaussian`` (what RLlib's CQL/SAC module uses), so
inference, scoring, promotion and serving read this module like any RLlib module:
``forward_inference`` gives ``action_dist_inputs`` (mean and log std of ``N`` assets).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch
from pydantic import BaseModel, Field
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.numpy import MAX_LOG_NN_OUTPUT, MIN_LOG_NN_OUTPUT
from torch import nn

from raytrade.models.common import FROZEN, validate_model_config

ACTION_DIST_INPUTS_NEXT = "action_dist_inputs_next"
"""``_forward_train`` output: the policy's distribution inputs at ``next_obs`` (RLlib's SAC key)."""

CQL_AUTO_KEYS: frozenset[str] = frozenset({"twin_q", "num_actions"})
"""Keys RLlib's CQL config merges into ``model_config``; ``num_actions`` is read from the algorithm
config by the learner, ``twin_q`` must be true (the module is always twin)."""


class LeanCQLConfig(BaseModel):
    """``model_config`` of :class:`LeanCQLModule`."""

    model_config = FROZEN

    hidden: tuple[int, ...] = Field((256, 256), min_length=1, description="hidden widths, policy and Q")
    twin_q: Literal[True] = Field(True, description="always twin Q (RLlib's CQL default)")
    num_actions: int | None = Field(None, ge=1, description="RLlib's; the learner reads its config")


def _linear_init(shape: Sequence[int], fan_in: int) -> nn.Parameter:
    """``nn.Linear``'s default init: uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class TwinQ(nn.Module):
    """Two Q MLPs over ``[obs, action]`` (ReLU hidden layers), parameters stacked on axis 0.

    ``w_obs [2, D, H1]``, ``w_act [2, N, H1]``, ``b_in [2, 1, 1, H1]``: the first layer, split into its
    observation and action columns; ``weights[i] [2, H_i, H_i+1]`` and ``biases[i] [2, 1, H_i+1]``:
    the rest, the last one ``H -> 1``. Each twin is initialised as ``nn.Linear`` layers would be
    (fan-in of the first layer ``D + N``).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]):
        super().__init__()
        h1 = hidden[0]
        self.w_obs = _linear_init((2, obs_dim, h1), obs_dim + act_dim)
        self.w_act = _linear_init((2, act_dim, h1), obs_dim + act_dim)
        self.b_in = _linear_init((2, 1, 1, h1), obs_dim + act_dim)
        sizes = [*hidden, 1]
        self.weights = nn.ParameterList(_linear_init((2, a, b), a) for a, b in itertools.pairwise(sizes))
        self.biases = nn.ParameterList(_linear_init((2, 1, b), a) for a, b in itertools.pairwise(sizes))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Q values ``[2, M, K]`` of both twins for ``K`` actions ``[M, K, N]`` at each of ``M``
        observations ``[M, D]``. ``frozen``: the parameters enter detached (gradients reach the
        actions and observations only), as RLlib's ``requires_grad = False`` around the actor's Q."""
        params = [self.w_obs, self.w_act, self.b_in, *self.weights, *self.biases]
        if frozen:
            params = [p.detach() for p in params]
        w_obs, w_act, b_in = params[:3]
        n = len(self.weights)
        weights, biases = params[3 : 3 + n], params[3 + n :]
        m, k = actions.shape[:2]
        h_obs = torch.matmul(obs, w_obs)  # [2, M, H1]: once per observation
        h_act = torch.matmul(actions.reshape(m * k, -1), w_act).view(2, m, k, -1)  # [2, M, K, H1]
        h = torch.relu(h_act + h_obs.unsqueeze(2) + b_in).view(2, m * k, -1)
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < n - 1:
                h = torch.relu(h)
        return h.view(2, m, k)


def policy_mlp(obs_dim: int, act_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    """``obs -> hidden (ReLU) -> [mean, log std]`` of the squashed Gaussian over ``act_dim``."""
    sizes = [obs_dim, *hidden, 2 * act_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def squashed_gaussian(
    logits: torch.Tensor, noise: torch.Tensor, low: float = -1.0, high: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(action, log-probability) of RLlib's ``TorchSquashedGaussian.from_logits(logits)`` for the
    standard normal draw ``noise`` (the reparameterised sample ``u = mean + std * noise``).

    ``logits [..., 2N]`` broadcast against ``noise [..., N]``: the log std is clipped to
    ``[MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT]``, the action is ``low + (tanh(u) + 1) / 2 * (high -
    low)`` clipped to the box, and the log-probability is the Normal's minus the tanh Jacobian
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, as RLlib computes it.
    """
    loc, log_std = logits.chunk(2, dim=-1)
    log_std = torch.clamp(log_std, MIN_LOG_NN_OUTPUT, MAX_LOG_NN_OUTPUT)
    u = loc + log_std.exp() * noise
    normal = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    jacobian = 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))
    action = torch.clamp((torch.tanh(u) + 1.0) / 2.0 * (high - low) + low, low, high)
    return action, (normal - jacobian).sum(-1)


class LeanCQLModule(TorchRLModule, InferenceOnlyAPI, TargetNetworkAPI, QNetAPI):
    """Squashed-Gaussian policy MLP and :class:`TwinQ` (with its target copy) on a flat ``Box``
    observation and a ``Box(N)`` action in ``[-1, 1]`` (``PortfolioEnv``'s, flat)."""

    config_cls: ClassVar[type[LeanCQLConfig]] = LeanCQLConfig

    def setup(self) -> None:
        self.cfg = validate_model_config(self.config_cls, self.model_config)
        obs_space, act_space = self.observation_space, self.action_space
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise ValueError(f"LeanCQLModule needs a flat Box observation space, got {obs_space}")
        if not (
            isinstance(act_space, gym.spaces.Box)
            and len(act_space.shape) == 1
            and (act_space.low == -1).all()
            and (act_space.high == 1).all()
        ):
            raise ValueError(f"LeanCQLModule needs a Box(N) action space in [-1, 1], got {act_space}")
        self.obs_dim, self.act_dim = int(obs_space.shape[0]), int(act_space.shape[0])
        self.pi = policy_mlp(self.obs_dim, self.act_dim, self.cfg.hidden)
        if not self.inference_only:
            self.q = TwinQ(self.obs_dim, self.act_dim, self.cfg.hidden)

    def get_train_action_dist_cls(self) -> Any:
        from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian

        return TorchSquashedGaussian

    def get_exploration_action_dist_cls(self) -> Any:
        return self.get_train_action_dist_cls()

    def get_inference_action_dist_cls(self) -> Any:
        return self.get_train_action_dist_cls()

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS])}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The policy's distribution inputs at ``obs`` and at ``next_obs``, in one pass; the Q terms
        are the learner's (they need its random draws)."""
        obs = batch[Columns.OBS]
        logits = self.pi(torch.cat([obs, batch[Columns.NEXT_OBS]]))
        return {
            Columns.ACTION_DIST_INPUTS: logits[: obs.shape[0]],
            ACTION_DIST_INPUTS_NEXT: logits[obs.shape[0] :],
        }

    def make_target_networks(self) -> None:
        self.target_q = make_target_network(self.q)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.q, self.target_q)]

    def forward_target(  # type: ignore[override]  # a tensor, as RLlib's own SAC module returns
        self, batch: dict[str, Any], **kwargs: Any
    ) -> torch.Tensor:
        """``min`` over the target twins of ``Q'(obs, actions)`` ``[B]``."""
        return self.target_q(batch[Columns.OBS], batch[Columns.ACTIONS].unsqueeze(1)).min(0).values[:, 0]

    def compute_q_values(  # type: ignore[override]  # a tensor, as RLlib's own SAC module returns
        self, batch: dict[str, Any], **kwargs: Any
    ) -> torch.Tensor:
        """``min`` over the twins of ``Q(obs, actions)`` ``[B]``."""
        return self.q(batch[Columns.OBS], batch[Columns.ACTIONS].unsqueeze(1)).min(0).values[:, 0]

    def get_non_inference_attributes(self) -> list[str]:
        return ["q", "target_q"]
