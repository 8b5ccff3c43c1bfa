"""RLlib's CQL loss on :class:`models.cql_lean.LeanCQLModule`, with one backward pass per update.

The loss is RLlib's ``CQLTorchLearner`` (continuous actions, CQL(H), no Lagrangian), term by term;
:func:`cql_losses` states it and computes it from a batch, the policy's outputs and the update's
random draws (:class:`CQLDraws`). With ``B`` transitions, ``K = num_actions``, ``N`` assets:

* ``a~, logp~ = pi(obs)`` reparameterised; ``a', logp' = pi(next_obs)`` sampled, no gradient.
* alpha loss ``-mean(log_alpha * (logp~ + target_entropy))`` (``logp~`` detached);
  ``alpha = exp(log_alpha)`` enters every other term detached.
* actor loss ``mean(alpha * logp~ - min_i Q_i(obs, a~))`` (Q's parameters frozen: the gradient
  reaches the policy through ``a~`` only); during the first ``bc_iters`` updates
  ``mean(alpha * logp~ - log pi(a_data | obs))`` instead (behaviour cloning; the learner's own
  count of updates, :class:`LeanCQLLearner`).
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
``grad_clip`` is RLlib's per optimiser: the ``qf`` optimiser's gradients are clipped twin by twin
(:func:`clip_twin_gradients`, each twin's tensors as RLlib's ``qf`` and ``qf_twin`` optimisers hold
them), the policy's and alpha's by RLlib's own ``clip_gradients``. Target networks: RLlib's own
Polyak update (``tau``) after each update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
from ray.rllib.utils.torch_utils import clip_gradients, compute_global_norm
from ray.tune.result import TRAINING_ITERATION

from raytrade.models.cql_lean import ACTION_DIST_INPUTS_NEXT, LeanCQLModule, squashed_gaussian

NORM_BOUND = 10e8
"""What RLlib's ``clip_gradients`` puts in place of an infinite norm (``nan_to_num``; NaN becomes 0)."""


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


def twin_tensor_norms(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[2, T]``: the L2 norm of each of twin ``i``'s ``T`` RLlib tensors, from the gradients of a
    :class:`TwinQ`'s parameters (``TwinQ.parameters()`` order, twins stacked on axis 0).

    Twin ``i``'s tensors as RLlib's optimiser of that twin holds them (one ``nn.Linear`` per layer):
    the first layer's weight, un-split (``w_obs[i]`` and ``w_act[i]`` together, one norm), its bias
    ``b_in[i]``, then ``weights[j][i]`` and ``biases[j][i]``. Infinite norms are ``NORM_BOUND`` and NaN
    norms 0, as RLlib's ``clip_gradients`` takes them.
    """
    first = torch.cat([grads[0].flatten(1), grads[1].flatten(1)], dim=1).norm(dim=1)
    rest = [g.flatten(1).norm(dim=1) for g in grads[2:]]
    return torch.stack([first, *rest], dim=1).nan_to_num(neginf=-NORM_BOUND, posinf=NORM_BOUND)


def twin_global_norms(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[2]``: each twin's global norm (RLlib's ``compute_global_norm`` of its optimiser's tensors)."""
    return twin_tensor_norms(grads).norm(dim=1).nan_to_num(neginf=-NORM_BOUND, posinf=NORM_BOUND)


def clip_twin_gradients(
    grads: Sequence[torch.Tensor], grad_clip: float, grad_clip_by: str
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The gradients of a :class:`TwinQ`'s parameters (``TwinQ.parameters()`` order) clipped as
    RLlib's ``clip_gradients`` clips each twin's optimiser (``qf``, ``qf_twin``) on its own, and each
    twin's global norm ``[2]`` (``grad_clip_by="global_norm"``; otherwise None). With ``c = grad_clip``:

    * ``value``: every element clipped to ``[-c, c]`` (the same on stacked tensors);
    * ``norm``: each RLlib tensor of each twin (:func:`twin_tensor_norms`) with norm ``n > c`` is
      multiplied by ``c / n``;
    * ``global_norm``: twin ``i``'s tensors are all multiplied by ``min(1, c / max(g_i + 1e-6, c))``,
      ``g_i`` the L2 norm of twin ``i``'s tensor norms (its optimiser's global norm).
    """
    if grad_clip_by == "value":
        return [g.clip(-grad_clip, grad_clip) for g in grads], None
    norms = twin_tensor_norms(grads)  # [2, T]
    if grad_clip_by == "norm":
        scale = torch.where(norms > grad_clip, grad_clip / norms, torch.ones_like(norms))
        per_param = torch.cat([scale[:, :1], scale], dim=1)  # w_obs and w_act share the first weight's
        return [g * per_param[:, j].view(-1, *([1] * (g.dim() - 1))) for j, g in enumerate(grads)], None
    if grad_clip_by == "global_norm":
        total = norms.norm(dim=1).nan_to_num(neginf=-NORM_BOUND, posinf=NORM_BOUND)  # twin_global_norms
        coeff = torch.clamp(grad_clip / torch.clamp(total + 1e-6, min=grad_clip), max=1.0)
        return [g * coeff.view(-1, *([1] * (g.dim() - 1))) for g in grads], total
    raise ValueError(f"grad_clip_by={grad_clip_by!r}: must be one of value, norm, global_norm")


class LeanCQLLearner(CQLTorchLearner):
    """``CQLTorchLearner`` for :class:`LeanCQLModule`: :func:`cql_losses`, three optimisers (``qf``
    over both twins, ``policy``, ``alpha``) and one backward pass per update; ``grad_clip`` per twin
    (:func:`clip_twin_gradients`), so the clipped gradients are RLlib's four optimisers'.

    The actor is cloned during the learner's first ``bc_iters`` updates (:attr:`updates_done`, this
    learner's own count). RLlib's CQL learner counts them with a ``sum`` metric that its
    ``MetricsLogger`` clears at every reduce, i.e. after each ``update`` call (one per training
    iteration): its count restarts every iteration, so with ``bc_iters`` one iteration's updates all
    but the last update of every iteration were behaviour cloning (and with RLlib's default 20,000,
    every one). A learner restored from a checkpoint counts from 0 again (one more iteration of
    cloning)."""

    updates_done: int = 0
    """Updates this learner has taken (set per instance on the first one)."""

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
        cloning = self.updates_done < config.bc_iters
        self.updates_done += 1
        actions = batch[Columns.ACTIONS]
        hyper = CQLHyper(
            gamma=config.gamma,
            min_q_weight=config.min_q_weight,
            temperature=config.temperature,
            deterministic_backup=config.deterministic_backup,
            behaviour_cloning=cloning,
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
                "behaviour_cloning": float(cloning),
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

    def postprocess_gradients_for_module(
        self, *, module_id: str, config: Any = None, module_gradients_dict: dict[Any, Any]
    ) -> dict[Any, Any]:
        """``Learner.postprocess_gradients_for_module`` with the ``qf`` optimiser clipped twin by twin
        and its global norms logged under RLlib's names for its two twin optimisers
        (``gradients_qf_global_norm``, ``gradients_qf_twin_global_norm``)."""
        if not config.grad_clip:  # RLlib's test: no clipping (None or 0), maybe logging
            return super().postprocess_gradients_for_module(
                module_id=module_id, config=config, module_gradients_dict=module_gradients_dict
            )
        module = self.module[module_id].unwrapped()
        if not isinstance(module, LeanCQLModule):
            raise TypeError(f"LeanCQLLearner needs a LeanCQLModule, got {type(module).__name__}")
        clipped: dict[Any, Any] = {}
        for name, optimizer in self.get_optimizers_for_module(module_id):
            grads = self.filter_param_dict_for_optimizer(module_gradients_dict, optimizer)
            if name == "qf":
                refs = [self.get_param_ref(p) for p in module.q.parameters()]
                twin_grads, total = clip_twin_gradients(
                    [grads[r] for r in refs], config.grad_clip, config.grad_clip_by
                )
                grads = dict(zip(refs, twin_grads, strict=True))
                if total is None and config.log_gradients:
                    total = twin_global_norms(twin_grads)
                norms: dict[str, Any] = {"qf": total[0], "qf_twin": total[1]} if total is not None else {}
            else:
                norm = clip_gradients(grads, grad_clip=config.grad_clip, grad_clip_by=config.grad_clip_by)
                if norm is None and config.log_gradients:
                    norm = compute_global_norm(list(grads.values()))
                norms = {name: norm} if norm is not None else {}
            for optimiser, value in norms.items():
                key = (module_id, f"gradients_{optimiser}_global_norm")
                self.metrics.log_value(key=key, value=value, window=1)
            clipped.update(grads)
        return clipped
