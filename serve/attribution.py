"""Feature attributions of a decision: which of a symbol's own features moved its action, and which way.

For each symbol ``i`` the attribution of feature ``f`` is gradient x input,
``d signal_i / d x[i, f] * x[i, f]``, where ``signal_i`` is what the policy decides for ``i`` before
the constraints: the mean of its Gaussian action (weights policies; the score a catalog module
projects) or the logit of its chosen gate mode (gated policies). Only the symbol's own feature block
is attributed (not other symbols' features, not the portfolio state), and the ``top_k`` largest in
absolute value are returned. A column that holds the same value for every symbol at the bar (a macro
series, a regime flag that is off everywhere) is left out: it tells nothing about this symbol against
the others, and the models' cross-sectional z-score is flat in it there, so its local gradient (up to
1/sqrt(eps) of the z-score's variance floor) is not a sensitivity anyone could act on. It explains
the policy's local sensitivity, not the projection or the kill switch that may have changed the
final weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from raytrade.envs.gym_envs import GATE_MODES


def feature_attributions(
    module: Any, obs: Any, n_assets: int, feature_names: Sequence[str], top_k: int = 3
) -> list[list[dict[str, float]]]:
    """``[B][N]`` dicts ``{feature: gradient x input}`` (the ``top_k`` largest by magnitude) for a
    batch of env observations (flat ``[B, D]`` or the dict form)."""
    import torch
    from ray.rllib.core.columns import Columns

    n_feat = len(feature_names)
    flat = not isinstance(obs, dict)
    if flat:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)).clone().requires_grad_(True)
        batch_obs: Any = x
    else:
        x = torch.as_tensor(np.asarray(obs["features"], dtype=np.float32)).clone().requires_grad_(True)
        batch_obs = {
            k: (x if k == "features" else torch.as_tensor(np.asarray(v, np.float32))) for k, v in obs.items()
        }
    with torch.enable_grad():
        # RLlib's public forwards run the module's generic ``_forward`` under no_grad; call it directly
        module.eval()
        inputs = module._forward({Columns.OBS: batch_obs})[Columns.ACTION_DIST_INPUTS]
        signal = _signal(inputs, module.action_space, n_assets)  # [B, N]
        values = x.detach().numpy()
        per_asset = values[:, : n_assets * n_feat].reshape(-1, n_assets, n_feat) if flat else values
        varies = np.ptp(per_asset, axis=1) > 0  # [B, F]: differs between symbols at this bar
        out: list[list[dict[str, float]]] = [[{} for _ in range(n_assets)] for _ in range(signal.shape[0])]
        for i in range(n_assets):
            (grad,) = torch.autograd.grad(signal[:, i].sum(), x, retain_graph=i < n_assets - 1)
            contrib = (grad * x).detach().numpy()
            block = contrib[:, i * n_feat : (i + 1) * n_feat] if flat else contrib[:, i, :]
            for b in range(block.shape[0]):
                ranked = np.where(varies[b], np.abs(block[b]), -1.0)
                order = [f for f in np.argsort(-ranked)[:top_k] if varies[b, f]]
                out[b][i] = {feature_names[f]: float(block[b, f]) for f in order}
    return out


def _signal(inputs: Any, space: gym.Space[Any], n_assets: int) -> Any:
    """What the policy decides per symbol, differentiably: Gaussian means, or the chosen mode logit."""
    if isinstance(space, gym.spaces.Box):
        return inputs[:, :n_assets]
    per_symbol = inputs.reshape(inputs.shape[0], n_assets, -1)
    modes = per_symbol[..., : len(GATE_MODES)]
    return modes.gather(-1, modes.argmax(-1, keepdim=True)).squeeze(-1)
