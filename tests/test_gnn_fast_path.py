"""The GNN encoder's no-grad path with its per-forward savings (cached constants, one gather of the
neighbours and the self loop, padding blocked by an added ``-inf``) against the code before them,
kept below as ``_ref_*``: bit for bit, for B = 1, 2, 5, N = 1..64, masked assets with NaN features,
a row with none listed and one with fewer listed than ``top_k``. Seeded untrained encoders, no Ray."""

from __future__ import annotations

import copy
import io
from typing import Any

import torch
import torch.nn.functional as F

from raytrade.models.common import PortfolioObs, asset_inputs, cross_sectional_zscore, run_mlp, split_obs
from raytrade.models.gnn import (
    _CACHED_SHAPES,
    GNNConfig,
    GraphEncoder,
    Neighbours,
    feature_similarity,
    profile_similarity,
)

N_FEATURES = 7

# ------------------------------------------------------------------------------ the code before


def _ref_topk_neighbours(sim: torch.Tensor, mask: torch.Tensor, k: int) -> Neighbours:
    n = sim.shape[-1]
    k_eff = max(min(k, n - 1), 0)
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    valid = mask.unsqueeze(2) & mask.unsqueeze(1) & ~eye
    vals, src = sim.masked_fill(~valid, float("-inf")).topk(k_eff, dim=-1)
    return Neighbours(src, vals, torch.isfinite(vals))


def _ref_dense_graph(nb: Neighbours) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, n, _ = nb.src.shape
    keep = nb.keep.to(nb.sim.dtype)
    attr = torch.where(nb.keep, nb.sim, 0.0)
    loop_attr = attr.sum(-1, keepdim=True) / keep.sum(-1, keepdim=True).clamp(min=1.0)
    src = (nb.src + (torch.arange(b, device=nb.src.device) * n).view(b, 1, 1)).reshape(-1)
    real = torch.cat([nb.keep, nb.keep.new_ones(b, n, 1)], dim=-1).unsqueeze(-1)
    return src, torch.cat([attr, loop_attr], dim=-1)[..., None, None], ~real


def _ref_gatv2_dense(conv: Any, x: torch.Tensor, graph: tuple[torch.Tensor, ...]) -> torch.Tensor:
    src, graph_attr, blocked = graph
    b, n, _ = x.shape
    heads, c = conv.heads, conv.out_channels
    x_l = F.linear(x, conv.lin_l.weight, conv.lin_l.bias).view(b, n, heads, c)
    x_r = F.linear(x, conv.lin_r.weight, conv.lin_r.bias).view(b, n, heads, c)
    x_src = x_l.reshape(b * n, heads, c).index_select(0, src).view(b, n, -1, heads, c)
    x_j = torch.cat([x_src, x_l.unsqueeze(2)], dim=2)
    e = graph_attr * conv.lin_edge.weight[:, 0].view(heads, c)
    z = F.leaky_relu(x_r.unsqueeze(2) + x_j + e, conv.negative_slope)
    logits = (z * conv.att).sum(-1)
    alpha = torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=2)
    out = (alpha.unsqueeze(-1) * x_j).sum(2).reshape(b, n, heads * c)
    return out + conv.bias


def _ref_forward(enc: GraphEncoder, obs: PortfolioObs) -> torch.Tensor:
    z: torch.Tensor | None = None
    if enc.cfg.similarity_features is None and not obs.features.requires_grad:
        z = cross_sectional_zscore(obs.features, obs.mask)
        sim = profile_similarity(z)
    else:
        feats = obs.features
        if enc.cfg.similarity_features is not None:
            feats = feats[..., list(enc.cfg.similarity_features)]
        sim = feature_similarity(feats, obs.mask)
    x = run_mlp(enc.inp, asset_inputs(obs, z))
    graph = _ref_dense_graph(_ref_topk_neighbours(sim, obs.mask, enc.cfg.top_k))
    for conv in enc.convs:
        x = x + enc.act(_ref_gatv2_dense(conv, x, graph))
    return x


# ------------------------------------------------------------------------------ observations


def _encoder(**cfg: Any) -> GraphEncoder:
    torch.manual_seed(0)
    enc = GraphEncoder(GNNConfig(**cfg), N_FEATURES)
    enc.eval()
    return enc


def _obs(b: int, n: int, seed: int) -> PortfolioObs:
    """``split_obs`` of a flat observation: about a third of the assets unlisted (their features
    NaN), for B > 1 a first row with none listed and, for B > 2 and N >= 3, a second with two."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, n, generator=g) > 0.3
    if b > 1:
        mask[0] = False
    if b > 2 and n >= 3:
        mask[1] = False
        mask[1, :2] = True
    feats = torch.randn(b, n, N_FEATURES, generator=g)
    feats[~mask] = float("nan")
    weights, portfolio = 0.1 * torch.randn(b, n, generator=g), torch.randn(b, 5, generator=g)
    flat = torch.cat([feats.flatten(1), weights, mask.float(), portfolio], -1)
    return split_obs(flat, N_FEATURES)


# ------------------------------------------------------------------------------ tests


def test_no_grad_encoder_equals_the_code_before_bit_for_bit() -> None:
    enc = _encoder()  # one encoder for every shape: its cached constants follow (B, N)
    with torch.inference_mode():
        for n in range(1, 65):
            for b in (1, 2, 5):
                obs = _obs(b, n, seed=100 * b + n)
                out = enc(obs)
                assert torch.isfinite(out).all(), (b, n)
                assert torch.equal(out, _ref_forward(enc, obs)), (b, n)


def test_no_grad_encoder_with_similarity_features_or_feature_grads_equals_the_code_before() -> None:
    enc, sub = _encoder(), _encoder(similarity_features=(0, 2, 3))
    obs = _obs(5, 32, seed=4)
    wanting_grad = obs._replace(features=obs.features.clone().requires_grad_(True))
    with torch.no_grad():
        assert torch.equal(sub(obs), _ref_forward(sub, obs))
        assert torch.equal(enc(wanting_grad), _ref_forward(enc, wanting_grad))


def test_the_cache_stays_out_of_the_state_dict_and_copies_with_the_module() -> None:
    enc = _encoder()
    keys = list(enc.state_dict())
    obs = _obs(2, 8, seed=6)
    with torch.inference_mode():  # serving's mode
        out = enc(obs)
    assert list(enc.state_dict()) == keys
    clone = copy.deepcopy(enc)
    buffer = io.BytesIO()
    torch.save(enc, buffer)
    with torch.no_grad():
        assert torch.equal(clone(obs), out)


def test_the_constants_cache_keeps_at_most_its_bound_of_shapes() -> None:
    enc = _encoder()
    with torch.no_grad():
        for n in range(1, 2 * _CACHED_SHAPES + 2):
            enc(_obs(1, n, seed=n))
    assert 0 < len(enc._const_cache) <= _CACHED_SHAPES
