"""The leaner no-grad forwards give the same numbers, bit for bit, as the plain statement of the
computation they replace (kept below as ``_ref_*``: the code before the per-op savings), for every
family of the catalog, flat and Dict observations, masked assets (NaN features on them, a row with
none listed), B = 1 and B > 1. Seeded untrained modules, no Ray."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns

from raytrade.envs.gym_envs import N_PORTFOLIO_STATE
from raytrade.envs.projection import project_weights, project_weights_torch
from raytrade.models.common import PortfolioObs, exploration_log_std, split_obs
from raytrade.models.gnn import profile_similarity, topk_edges, topk_neighbours
from tests.test_models import N_ASSETS, build, obs_batch

# ------------------------------------------------------------------------------ the plain statement


def _ref_split_obs(obs: Any, n_features: int) -> PortfolioObs:
    if isinstance(obs, dict):
        feats, weights, mask = obs["features"].float(), obs["weights"].float(), obs["mask"] > 0.5
        port = obs["portfolio"].float()
    else:
        b, d = obs.shape
        n = (d - N_PORTFOLIO_STATE) // (n_features + 2)
        nf = n * n_features
        x = obs.float()
        feats, weights = x[:, :nf].reshape(b, n, n_features), x[:, nf : nf + n]
        mask, port = x[:, nf + n : nf + 2 * n] > 0.5, x[:, nf + 2 * n :]
    feats = torch.where(mask.unsqueeze(-1), feats, torch.zeros_like(feats))
    return PortfolioObs(feats, torch.where(mask, weights, torch.zeros_like(weights)), mask, port)


def _ref_zscore(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    cnt = m.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(1, keepdim=True) / cnt
    var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / cnt
    return (x - mean) / torch.sqrt(var + eps) * m


def _ref_asset_inputs(obs: PortfolioObs) -> torch.Tensor:
    z = _ref_zscore(obs.features, obs.mask)
    raw = torch.asinh(obs.features) * obs.mask.unsqueeze(-1).to(obs.features.dtype)
    return torch.cat([z, raw, obs.weights.unsqueeze(-1)], dim=-1)


def _ref_masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def _ref_head_input(h: torch.Tensor, ctx: torch.Tensor, portfolio: torch.Tensor) -> torch.Tensor:
    n = h.shape[1]
    return torch.cat([h, ctx.unsqueeze(1).expand(-1, n, -1), portfolio.unsqueeze(1).expand(-1, n, -1)], -1)


def _ref_gaussian(mean: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = mean * mask.to(mean.dtype)
    return torch.cat([mean, log_std.expand_as(mean)], dim=-1)


def _ref_project(scores: torch.Tensor, mask: torch.Tensor, projection: Any) -> torch.Tensor:
    w = project_weights(
        scores.clamp(-1.0, 1.0).double().numpy(),
        projection.gross_cap,
        projection.per_asset_cap,
        projection.long_only,
        mask.numpy(),
    )
    return torch.from_numpy(w).float()


def _ref_gatv2_dense(conv: Any, x: torch.Tensor, src: Any, sim: Any, keep: Any) -> torch.Tensor:
    b, n, _ = x.shape
    heads, c = conv.heads, conv.out_channels
    x_l = conv.lin_l(x).view(b, n, heads, c)
    x_r = conv.lin_r(x).view(b, n, heads, c)
    attr = torch.where(keep, sim, torch.zeros_like(sim))
    loop_attr = attr.sum(-1, keepdim=True) / keep.to(x.dtype).sum(-1, keepdim=True).clamp(min=1.0)
    flat_src = (src + (torch.arange(b) * n).view(b, 1, 1)).reshape(-1)
    x_src = x_l.reshape(b * n, heads, c).index_select(0, flat_src).view(b, n, -1, heads, c)
    x_j = torch.cat([x_src, x_l.unsqueeze(2)], dim=2)
    e = torch.cat([attr, loop_attr], dim=-1)[..., None, None] * conv.lin_edge.weight[:, 0].view(heads, c)
    z = F.leaky_relu(x_r.unsqueeze(2) + x_j + e, conv.negative_slope)
    logits = (z * conv.att).sum(-1)
    real = torch.cat([keep, keep.new_ones(b, n, 1)], dim=-1).unsqueeze(-1)
    alpha = torch.softmax(logits.masked_fill(~real, float("-inf")), dim=2)
    out = (alpha.unsqueeze(-1) * x_j).sum(2).reshape(b, n, heads * c)
    return out + conv.bias


def _ref_scores(module: Any, raw: Any) -> tuple[PortfolioObs, torch.Tensor, torch.Tensor]:
    """``(obs, scores, log_std)`` of a ``ppo_mlp``/``distributional``/``gnn`` module, stated plainly
    (the GNN: PyG's edge list with grad enabled, the dense layers under no-grad)."""
    obs = _ref_split_obs(raw, module.n_features)
    if hasattr(module, "policy"):  # ppo_mlp, distributional: the DeepSets encoder
        policy = module.policy
        h = policy.encoder.phi(_ref_asset_inputs(obs))
        score_head, log_std = (
            policy.score_head,
            exploration_log_std(policy.log_std, obs.portfolio, obs.mask.shape[1], policy.exploration),
        )
    else:  # gnn
        enc = module.encoder
        z = _ref_zscore(obs.features, obs.mask)
        zc = z - z.mean(-1, keepdim=True)
        zn = zc / (zc.norm(dim=-1, keepdim=True) + 1e-8)
        sim = zn @ zn.transpose(1, 2)
        h = enc.inp(_ref_asset_inputs(obs))
        if torch.is_grad_enabled():  # PyG's edge list
            b, n, _ = h.shape
            edge_index, edge_attr = topk_edges(sim, obs.mask, enc.cfg.top_k)
            h = h.reshape(b * n, -1)
            for conv in enc.convs:
                h = h + enc.act(conv(h, edge_index, edge_attr))
            h = h.reshape(b, n, -1)
        else:
            nb = topk_neighbours(sim, obs.mask, enc.cfg.top_k)
            for conv in enc.convs:
                h = h + enc.act(_ref_gatv2_dense(conv, h, nb.src, nb.sim, nb.keep))
        score_head, log_std = module.score_head, module.log_std
    ctx = _ref_masked_mean(h, obs.mask)
    return obs, score_head(_ref_head_input(h, ctx, obs.portfolio)).squeeze(-1), log_std


def _ref_outputs(module: Any, raw: Any) -> dict[str, torch.Tensor]:
    """``_forward_inference``'s outputs of a ``ppo_mlp``/``distributional``/``gnn`` module, stated plainly."""
    obs, scores, log_std = _ref_scores(module, raw)
    return {Columns.ACTION_DIST_INPUTS: _ref_gaussian(scores, log_std, obs.mask)}


def _ref_weights(module: Any, raw: Any) -> torch.Tensor:
    """``weights()`` of a ``ppo_mlp``/``distributional``/``gnn`` module (the projected mean), stated
    plainly."""
    with torch.no_grad():
        obs, scores, _ = _ref_scores(module, raw)
        return _ref_project(scores, obs.mask, module.cfg.projection)


# ------------------------------------------------------------------------------ observations


def _observations(n_features: int, batch: int) -> torch.Tensor:
    """``obs_batch`` (assets 1 and 4 unlisted) with NaN features on the unlisted assets and, for
    B > 1, a first row with no asset listed."""
    obs = obs_batch(n_features, batch=batch, seed=7)
    nf = N_ASSETS * n_features
    obs[:, :nf].view(batch, N_ASSETS, n_features)[:, [1, 4]] = float("nan")
    if batch > 1:
        obs[0, nf + N_ASSETS : nf + 2 * N_ASSETS] = 0.0
    return obs


def _as_dict(obs: torch.Tensor, n_features: int) -> dict[str, torch.Tensor]:
    b, nf = obs.shape[0], N_ASSETS * n_features
    return {
        "features": obs[:, :nf].reshape(b, N_ASSETS, n_features),
        "weights": obs[:, nf : nf + N_ASSETS],
        "mask": obs[:, nf + N_ASSETS : nf + 2 * N_ASSETS],
        "portfolio": obs[:, nf + 2 * N_ASSETS :],
    }


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("family", ["ppo_mlp", "distributional", "gnn"])
def test_inference_outputs_equal_the_plain_statement(family: str, flat: bool, batch: int) -> None:
    module = build(family, flat=flat)
    module.eval()
    obs = _observations(module.n_features, batch)
    raw: Any = obs if flat else _as_dict(obs, module.n_features)
    with torch.inference_mode():
        out = module._forward_inference({Columns.OBS: raw})
        ref = _ref_outputs(module, raw)
    assert set(out) == {Columns.ACTION_DIST_INPUTS}  # the decision is the mean: no projected actions
    for key in (Columns.ACTION_DIST_INPUTS,):
        assert torch.isfinite(out[key]).all()
        assert torch.equal(out[key], ref[key]), key
    with torch.inference_mode():  # the projected mean (a diagnostic now) is still the plain projection
        weights = module.weights(raw)
    assert torch.isfinite(weights).all() and torch.equal(weights, _ref_weights(module, raw))


@pytest.mark.parametrize("family", ["ppo_mlp", "distributional"])
def test_training_outputs_and_gradients_equal_the_plain_statement(family: str) -> None:
    module = build(family)
    obs = _observations(module.n_features, 6)
    out = module._forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    ref_obs, scores, log_std = _ref_scores(module, obs)
    ref = _ref_gaussian(scores, log_std, ref_obs.mask)
    assert torch.equal(out, ref)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    params = list(module.policy.parameters())
    grads = torch.autograd.grad((out * weights).sum(), params)
    ref_grads = torch.autograd.grad((ref * weights).sum(), params)
    assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads, strict=True))


@pytest.mark.parametrize("family", ["ppo_mlp", "gnn"])
def test_input_gradients_equal_the_plain_statement(family: str) -> None:
    """``serve.attribution`` differentiates the dist inputs with respect to the observation."""
    module = build(family)
    module.eval()
    obs = _observations(module.n_features, 6)
    x, x_ref = obs.clone().requires_grad_(True), obs.clone().requires_grad_(True)
    out = module._forward({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS]
    ref_obs, scores, log_std = _ref_scores(module, x_ref)
    ref = _ref_gaussian(scores, log_std, ref_obs.mask)
    assert torch.equal(out, ref)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), x_ref)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad, ref_grad)


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("family", ["ppo_mlp", "gating"])
def test_asset_set_encoder_equals_the_plain_statement(family: str, batch: int) -> None:
    module = build(family)
    encoder = module.policy.encoder if family == "ppo_mlp" else module.encoder
    obs = _observations(module.n_features, batch)
    ref = _ref_split_obs(obs, module.n_features)
    parts = split_obs(obs, module.n_features)
    assert all(torch.equal(a, b) for a, b in zip(parts, ref, strict=True))
    h, ctx = encoder(parts)
    ref_h = encoder.phi(_ref_asset_inputs(ref))
    assert torch.equal(h, ref_h)
    assert torch.equal(ctx, _ref_masked_mean(ref_h, ref.mask))


def test_profile_similarity_of_the_zscores_is_the_feature_similarity() -> None:
    module = build("gnn")
    obs = split_obs(_observations(module.n_features, 6), module.n_features)
    z = _ref_zscore(obs.features, obs.mask)
    zc = z - z.mean(-1, keepdim=True)
    zn = zc / (zc.norm(dim=-1, keepdim=True) + 1e-8)
    assert torch.equal(profile_similarity(z), zn @ zn.transpose(1, 2))
    assert np.isfinite(profile_similarity(z).numpy()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_grad_projection_is_the_numpy_projection_cast_by_torch(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    v = (0.7 * torch.randn(64, 16, generator=g)).to(dtype)
    v[5, 2] = float("nan")
    mask = torch.rand(64, 16, generator=g) > 0.25
    with torch.no_grad():
        w = project_weights_torch(v, 2.0, 0.4, False, mask=mask)
    ref = project_weights(v.double().numpy(), 2.0, 0.4, False, mask.numpy())
    ref[5] = np.nan  # a row with a non-finite score comes back all NaN
    torch.testing.assert_close(w, torch.from_numpy(ref).to(dtype), atol=0, rtol=0, equal_nan=True)
