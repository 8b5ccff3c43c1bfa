"""RLlib's CQL loss on :class:`models.cql_lean.LeanCQLModule`, with one backward pass per update.

The loss is RLlib's ``CQLTorchLearner`` (continuous actions, CQL(H), no Lagrangian), term by term;
:func:`cql_losses` states it and computes it from a batch, the policy's outputs and the update's
random draws (:class:`CQLDraws`). With ``B`` transitions, ``K = num_actions``, ``N`` assets:

* ``a~, logp~ = pi(obs)`` reparameterised; ``a', logp' = pi(next_obs)`` sampled, no gradient.
* alpha loss ``-mean(log_alpha * (logp~ + target_entropy))`` (``logp~`` detached);
  ``alpha = exp(log_alpha)`` enters every other term detached.
* actor loss ``mean(alpha * logp~ - min_i Q_i(obs, a~))`` (Q's parameters frozen: the gradient
  reaches the policy through ``a~`` only); during the first ``bc_iters`` updates
  ``mean(alpha * logp~ - log pi(a_data | obs))`` instead (behaviour cloning).
* target ``y = r + gamma * (1 - terminated) * min_i Q'_i(next_obs, a')`` (``deterministic_backup``;
  otherwise ``- alpha * logp'`` is added inside the bracket), no gradient.
* critic loss of twin ``i``: ``mean((Q_i(obs, a_data) - y)^2) + w * T * mean_b logsumexp_j(x_ij / T)
  - w * mean(Q_i(obs, a_data))`` with, for each transition, the ``3K`` values ``x_ij``:
  ``Q_i(obs, u) - log(0.5^N)`` for ``K`` uniform actions ``u`` in the action box,
  ``Q_i(next_obs, a'_k) - logp'_k`` for ``K`` policy actions at ``next_obs`` and
  ``Q_i(obs, a~_k) - logp~_k`` for ``K`` policy actions at ``obs`` (log-probabilities detached, the
  actions carry no gradient); ``w = min_q_weight``, ``T = temperature``.

RLlib takes one backward pass per optimiser (twin 1, twin 2, policy, alpha) over one graph; the four
losses depend on disjoint parameters (each twin's critic loss on its own Q only, the actor loss on
the policy only, the alpha loss on ``log_alpha`` only), so one backward pass of their sum gives
exactly the same gradients (:meth:`LeanCQLLearner.compute_gradients` is ``TorchLearner``'s: one
``backward`` of the summed loss). The twins share one Adam optimiser (``qf``): Adam is per
parameter, so with equal learning rates and ``eps`` that is the same update as RLlib's two.
``grad_clip`` is refused: RLlib clips per optimiser, and one optimiser over both twins would clip
their joint norm instead. Target networks: RLlib's own Polyak update (``tau``) after each update.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from ray.rllib.algorithms.cql.cql import CQLConfig
from ray.rllib.algorithms.cql.torch.cql_torch_learner import CQLTorchLearner
from ray.rllib.algorithms.sac.sac_learner import (
    LOGPS_KEY,
    QF_LOSS_KEY,
    QF_MAX_KEY,
    QF_MEAN_KEY,
    QF_MIN_KEY,
    QF_TWIN_LOSS_KEY,
    TD_ERROR_MEAN_KEY,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.metrics import ALL_MODULES
from ray.tune.result import TRAINING_ITERATION

from raytrade.models.cql_lean import ACTION_DIST_INPUTS_NEXT, LeanCQLModule, squashed_gaussian


class CQLDraws(NamedTuple):
    """The random numbers of one update (``B`` transitions, ``K`` sampled actions, ``N`` assets)."""

    curr: torch.Tensor  # [B, N] standard normal: the reparameterised action at obs
    next: torch.Tensor  # [B, N] standard normal: the action at next_obs (the target's)
    curr_repeat: torch.Tensor  # [B, K, N] standard normal: K policy actions at obs
    next_repeat: torch.Tensor  # [B, K, N] standard normal: K policy actions at next_obs
    uniform: torch.Tensor  # [B, K, N] in [0, 1): K random actions low + (high - low) * u

    @classmethod
    def sample(cls, batch: int, k: int, n: int, device: torch.device | None = None) -> CQLDraws:
        """Fresh draws from torch's global generator (what RLlib's module samples from too)."""
        return cls(
            curr=torch.randn(batch, n, device=device),
            next=torch.randn(batch, n, device=device),
            curr_repeat=torch.randn(batch, k, n, device=device),
            next_repeat=torch.randn(batch, k, n, device=device),
            uniform=torch.rand(batch, k, n, device=device),
        )


class CQLHyper(NamedTuple):
    """The loss's constants (RLlib's ``CQLConfig`` fields of the same names)."""

    gamma: float
    min_q_weight: float
    temperature: float
    deterministic_backup: bool
    behaviour_cloning: bool  # True during the first ``bc_iters`` updates
    target_entropy: float


class CQLLosses(NamedTuple):
    """The four losses (each the gradient source of its own parameters) and logged statistics."""

    actor: torch.Tensor
    critic: torch.Tensor  # twin 1: Bellman MSE + conservative term
    critic_twin: torch.Tensor
    alpha: torch.Tensor
    cql: torch.Tensor  # twin 1's conservative term
    logp: torch.Tensor  # mean log-probability of the reparameterised actions
    q_curr_repeat: torch.Tensor  # [B, K] twin 1's Q of the K policy actions at obs (RLlib's qf stats)
    td_error: torch.Tensor  # [B] mean over the twins of |Q_i(obs, a_data) - y|

    def total(self) -> torch.Tensor:
        """The sum the one backward pass runs on (disjoint parameters: see the module docstring)."""
        return self.actor + self.critic + self.critic_twin + self.alpha


def cql_losses(
    module: LeanCQLModule,
    batch: dict[str, torch.Tensor],
    fwd_out: dict[str, torch.Tensor],
    draws: CQLDraws,
    log_alpha: torch.Tensor,
    hyper: CQLHyper,
) -> CQLLosses:
    """RLlib's CQL losses (module docstring) for ``batch``, the module's ``_forward_train`` output
    ``fwd_out`` and the update's ``draws``."""
    obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
    data_actions = batch[Columns.ACTIONS]
    logits, logits_next = fwd_out[Columns.ACTION_DIST_INPUTS], fwd_out[ACTION_DIST_INPUTS_NEXT]
    n, k = data_actions.shape[-1], draws.uniform.shape[1]

    alpha = log_alpha.exp()
    a_curr, logp_curr = squashed_gaussian(logits, draws.curr)
    alpha_loss = -torch.mean(log_alpha * (logp_curr.detach() + hyper.target_entropy))
    if hyper.behaviour_cloning:
        bc_logp = module.get_train_action_dist_cls().from_logits(logits).logp(data_actions)
        actor_loss = torch.mean(alpha.detach() * logp_curr - bc_logp)
    else:
        q_curr = module.q(obs, a_curr.unsqueeze(1), frozen=True).min(0).values[:, 0]
        actor_loss = torch.mean(alpha.detach() * logp_curr - q_curr)

    with torch.no_grad():
        a_next, logp_next = squashed_gaussian(logits_next, draws.next)
        q_next = module.target_q(next_obs, a_next.unsqueeze(1)).min(0).values[:, 0]
        if not hyper.deterministic_backup:
            q_next = q_next - alpha * logp_next
        target = batch[Columns.REWARDS] + hyper.gamma * ((1.0 - batch[Columns.TERMINATEDS].float()) * q_next)
        # K policy actions at obs and at next_obs: the policy's outputs, without its gradient
        a_curr_k, logp_curr_k = squashed_gaussian(logits.detach().unsqueeze(1), draws.curr_repeat)
        a_next_k, logp_next_k = squashed_gaussian(logits_next.detach().unsqueeze(1), draws.next_repeat)
        a_rand = -1.0 + 2.0 * draws.uniform  # the action box [-1, 1]^N

    # every Q the critic loss needs, both twins: [data | K random | K policy] at obs, K policy at next
    q_obs = module.q(obs, torch.cat([data_actions.unsqueeze(1), a_rand, a_curr_k], dim=1))
    q_next_k = module.q(next_obs, a_next_k)
    q_data, q_rand, q_curr_k = q_obs[:, :, 0], q_obs[:, :, 1 : k + 1], q_obs[:, :, k + 1 :]
    random_density = math.log(0.5**n)
    stacked = torch.cat([q_rand - random_density, q_next_k - logp_next_k, q_curr_k - logp_curr_k], dim=2)
    t, w = hyper.temperature, hyper.min_q_weight
    conservative = torch.logsumexp(stacked / t, dim=2).mean(1) * w * t - q_data.mean(1) * w  # [2]: per twin
    bellman = (q_data - target).pow(2).mean(1)  # [2]
    critics = bellman + conservative
    return CQLLosses(
        actor=actor_loss,
        critic=critics[0],
        critic_twin=critics[1],
        alpha=alpha_loss,
        cql=conservative[0].detach(),
        logp=logp_curr.detach().mean(),
        q_curr_repeat=q_curr_k[0].detach(),
        td_error=(q_data.detach() - target).abs().mean(0),
    )


class LeanCQLLearner(CQLTorchLearner):
    """``CQLTorchLearner`` for :class:`LeanCQLModule`: :func:`cql_losses`, three optimisers (``qf``
    over both twins, ``policy``, ``alpha``) and one backward pass per update."""

    def build(self) -> None:
        if self.config.grad_clip is not None:
            raise ValueError(
                f"grad_clip={self.config.grad_clip!r}: LeanCQLLearner clips nothing (RLlib clips per "
                "twin, one optimiser over both twins would clip their joint norm); set grad_clip=None"
            )
        super().build()

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id].unwrapped()
        if not isinstance(module, LeanCQLModule):
            raise TypeError(f"LeanCQLLearner needs a LeanCQLModule, got {type(module).__name__}")
        groups: tuple[tuple[str, list[torch.Tensor], Any], ...] = (
            ("qf", list(module.q.parameters()), config.critic_lr),
            ("policy", list(module.pi.parameters()), config.actor_lr),
            ("alpha", [self._log_alpha(module_id)], config.alpha_lr),
        )
        for name, params, lr in groups:
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params, eps=1e-7),  # RLlib's SAC optimisers
                params=params,
                lr_or_lr_schedule=lr,
            )

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        if not isinstance(module, LeanCQLModule):
            raise TypeError(f"LeanCQLLearner needs a LeanCQLModule, got {type(module).__name__}")
        if not isinstance(config, CQLConfig):
            raise TypeError(f"LeanCQLLearner needs a CQLConfig, got {type(config).__name__}")
        if config.lagrangian:
            raise ValueError("lagrangian=True: RLlib's CQL learner does not implement it, nor does this one")
        self.metrics.log_value((ALL_MODULES, TRAINING_ITERATION), 1, reduce="sum")
        updates = self.metrics.peek((ALL_MODULES, TRAINING_ITERATION), default=0)
        actions = batch[Columns.ACTIONS]
        hyper = CQLHyper(
            gamma=config.gamma,
            min_q_weight=config.min_q_weight,
            temperature=config.temperature,
            deterministic_backup=config.deterministic_backup,
            behaviour_cloning=updates < config.bc_iters,
            target_entropy=float(self.target_entropy[module_id]),
        )
        draws = CQLDraws.sample(actions.shape[0], config.num_actions, actions.shape[-1], actions.device)
        log_alpha = self._log_alpha(module_id)
        losses = cql_losses(module, batch, fwd_out, draws, log_alpha, hyper)
        q_stats = losses.q_curr_repeat
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: losses.actor,
                QF_LOSS_KEY: losses.critic,
                QF_TWIN_LOSS_KEY: losses.critic_twin,
                "cql_loss": losses.cql,
                "alpha_loss": losses.alpha,
                "alpha_value": log_alpha.detach().exp()[0],
                "log_alpha_value": log_alpha.detach()[0],
                "target_entropy": self.target_entropy[module_id],
                LOGPS_KEY: losses.logp,
                QF_MEAN_KEY: q_stats.mean(),
                QF_MAX_KEY: q_stats.max(),
                QF_MIN_KEY: q_stats.min(),
                TD_ERROR_MEAN_KEY: losses.td_error.mean(),
            },
            key=module_id,
            window=1,
        )
        return losses.total()

    def _log_alpha(self, module_id: str) -> torch.Tensor:
        log_alpha = self.curr_log_alpha[module_id]
        assert isinstance(log_alpha, torch.Tensor)  # SACLearner's trainable tensor
        return log_alpha

    compute_gradients = TorchLearner.compute_gradients  # one backward of the summed loss
