"""PPO learner whose value loss is the quantile Huber loss of :class:`DistributionalPPOModule`.

The policy part is RLlib's ``PPOTorchLearner.compute_loss_for_module`` unchanged (clipped surrogate,
entropy bonus, optional KL penalty, the same metric keys); only the value term differs:

    total = -surrogate + vf_loss_coeff * quantile_huber(quantiles, value_targets) - entropy_coeff * H
            (+ kl_coeff * KL)

Value targets are GAE's (computed from ``compute_values``, the CVaR-mixed quantile mean). The
squared-error clip ``vf_clip_param`` is not applied: the quantile Huber loss is already linear in
the tails. Extra metrics: ``quantile_huber_loss``, ``quantile_spread`` (mean q_max - q_min) and
``cvar_value`` (mean CVaR-mixed value).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
    PPOConfig,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.torch_utils import explained_variance

from raytrade.models.distributional import DistributionalPPOModule, quantile_huber_loss, risk_value

QUANTILE_LOSS_KEY = "quantile_huber_loss"
QUANTILE_SPREAD_KEY = "quantile_spread"
CVAR_VALUE_KEY = "cvar_value"


class DistributionalPPOLearner(PPOTorchLearner):
    """``PPOTorchLearner`` with the value loss replaced by the quantile Huber loss."""

    def compute_loss_for_module(
        self,
        *,
        module_id: str,
        config: AlgorithmConfig,
        batch: dict[str, Any],
        fwd_out: dict[str, Any],
    ) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        if not isinstance(module, DistributionalPPOModule):
            raise TypeError(f"DistributionalPPOLearner needs a DistributionalPPOModule, got {type(module)}")
        if not isinstance(config, PPOConfig):
            raise TypeError(f"DistributionalPPOLearner needs a PPOConfig, got {type(config)}")

        loss_mask: torch.Tensor | None = batch.get(Columns.LOSS_MASK)

        def masked_mean(x: Any) -> torch.Tensor:
            if loss_mask is None:
                return torch.mean(x)
            return torch.sum(x[loss_mask]) / torch.sum(loss_mask)

        # ---- policy: exactly PPOTorchLearner's
        curr_dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        prev_dist = module.get_exploration_action_dist_cls().from_logits(batch[Columns.ACTION_DIST_INPUTS])
        logp_ratio = torch.exp(curr_dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        if config.use_kl_loss:
            mean_kl = masked_mean(prev_dist.kl(curr_dist))
        else:
            mean_kl = torch.tensor(0.0, device=logp_ratio.device)
        entropy = curr_dist.entropy()
        adv = batch[Postprocessing.ADVANTAGES]
        surrogate = torch.min(
            adv * logp_ratio, adv * torch.clamp(logp_ratio, 1 - config.clip_param, 1 + config.clip_param)
        )

        # ---- value: quantile Huber loss against GAE's value targets
        targets: torch.Tensor = batch[Postprocessing.VALUE_TARGETS]
        quantiles = module.compute_quantiles(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        q_loss = quantile_huber_loss(
            quantiles, targets, module.taus, module.cfg.huber_kappa, reduction="none"
        )
        values = risk_value(quantiles, module.cvar_w, module.cfg.cvar_weight)

        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total = masked_mean(-surrogate + config.vf_loss_coeff * q_loss - entropy_coeff * entropy)
        if config.use_kl_loss:
            total = total + torch.as_tensor(self.curr_kl_coeffs_per_module[module_id]) * mean_kl

        mean_q_loss = masked_mean(q_loss)
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -masked_mean(surrogate),
                VF_LOSS_KEY: mean_q_loss,
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: mean_q_loss,
                QUANTILE_LOSS_KEY: mean_q_loss,
                QUANTILE_SPREAD_KEY: masked_mean(quantiles[:, -1] - quantiles[:, 0]),
                CVAR_VALUE_KEY: masked_mean(values),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(targets, values),
                ENTROPY_KEY: masked_mean(entropy),
                LEARNER_RESULTS_KL_KEY: mean_kl,
            },
            key=module_id,
            window=1,
        )
        return total
