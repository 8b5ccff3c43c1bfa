"""``gnn``: graph attention (GATv2) over an asset graph the module builds from each observation.

RLlib has no graph observation space, so the graph lives inside the module (DESIGN §5).

**Which similarity.** The observation holds only the *current* feature row of each asset (``ret_1``,
``ret_5``, ``ret_20``, ``vol_20``, spread, forecast, ... - no return history), so a rolling
return correlation cannot be computed from it. The similarity is the correlation across features
of the assets' standardised feature profiles: each feature is z-scored across listed assets, each
asset's profile is centred and normalised over features, and ``sim_ij`` is the dot product (a
Pearson correlation in ``[-1, 1]``). The multi-horizon return features make it a coarse proxy for
co-movement (assets that moved alike over 1, 5 and 20 bars score high). ``similarity_features``
restricts it to chosen feature columns (indices into the observed features, e.g. the ``ret_*``).

**Graph.** Each listed asset receives edges from its ``top_k`` most similar *other* listed assets
(edge attribute: the similarity); masked assets have no edges (GATv2's self loops only) and are
left out of pooling; their weights are exactly 0 (projection mask). A batch is one disjoint graph
of ``B * N`` nodes. Under no-grad (serving, sampling) the same layers run on the dense
``[B, N, top_k + 1]`` neighbour layout (:func:`gatv2_dense`), without PyG's edge list: equal to float
rounding, 1.4-1.7x less time per forward; training keeps the edge list and its gradients.

**Heads.** Node embeddings -> per-asset scores (Gaussian mean, as ``ppo_mlp``) and, through the
masked mean of node embeddings plus the portfolio state, the value. Permuting assets permutes the
outputs (up to ties in the top-k).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn
from torch_geometric.nn import GATv2Conv

from raytrade.envs.gym_envs import N_PORTFOLIO_STATE
from raytrade.models.common import (
    FROZEN,
    PortfolioObs,
    ProjectionConfig,
    asset_input_dim,
    asset_inputs_masked,
    cross_sectional_zscore,
    features_per_asset,
    gaussian_dist_inputs,
    head_input,
    masked_mean,
    mlp,
    project_scores,
    run_mlp,
    scale_last_layer,
    split_obs,
    validate_model_config,
    zscore_masked,
)
from raytrade.models.tracing import Inference, ObsInference, ShapeTraces, obs_tensors


class GNNConfig(BaseModel):
    """``model_config`` of :class:`GNNModule`."""

    model_config = FROZEN

    hidden: int = Field(64, ge=1, description="node embedding width (divisible by heads)")
    heads: int = Field(4, ge=1, description="attention heads per GATv2 layer")
    layers: int = Field(2, ge=1, description="GATv2 layers (residual)")
    top_k: int = Field(4, ge=1, description="incoming edges per listed asset")
    similarity_features: tuple[int, ...] | None = Field(
        None, description="feature indices the similarity uses (None: all observed features)"
    )
    head_hidden: int = Field(64, ge=1, description="hidden width of the score and value heads")
    log_std_init: float = Field(-1.0, description="initial log std of the Gaussian over scores")
    projection: ProjectionConfig = ProjectionConfig()


def feature_similarity(features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``[B, N, N]`` correlation across features of the cross-sectionally standardised profiles."""
    return profile_similarity(cross_sectional_zscore(features, mask), eps)


def profile_similarity(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """:func:`feature_similarity` from the cross-sectional z-scores ``z [B, N, F]`` themselves (the
    encoder's asset inputs hold the same z-scores: it computes them once for both)."""
    zc = z - z.mean(-1, keepdim=True)
    zn = zc / (zc.norm(dim=-1, keepdim=True) + eps)
    return zn @ zn.transpose(1, 2)


class Neighbours(NamedTuple):
    """Each asset's ``k`` most similar other listed assets, per batch row (``[B, N, k]`` each):
    ``src`` their indices in ``0..N-1``, ``sim`` the similarities, ``keep`` which are real edges
    (fewer than ``k`` listed others, or a masked target, leave padding with ``keep`` False)."""

    src: torch.Tensor
    sim: torch.Tensor
    keep: torch.Tensor


def topk_neighbours(
    sim: torch.Tensor, mask: torch.Tensor, k: int, not_self: torch.Tensor | None = None
) -> Neighbours:
    """:class:`Neighbours` of every asset: the ``min(k, N - 1)`` most similar other listed assets;
    masked assets neither send nor receive. ``not_self``: ``~torch.eye(N, dtype=bool)`` when the
    caller keeps one (:class:`GraphEncoder` caches it per ``N`` under no-grad), built here otherwise."""
    n = sim.shape[-1]
    k_eff = max(min(k, n - 1), 0)
    if not_self is None:
        not_self = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    valid = mask.unsqueeze(2) & mask.unsqueeze(1) & not_self
    vals, src = torch.where(valid, sim, float("-inf")).topk(k_eff, dim=-1)  # [B, N, k]
    return Neighbours(src, vals, torch.isfinite(vals))


def topk_edges(sim: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge_index [2, E], edge_attr [E, 1])`` of the disjoint batch graph (node id ``b * N + i``).

    Target ``i`` gets edges from its ``k`` most similar other listed assets; masked assets neither
    send nor receive.
    """
    b, n, _ = sim.shape
    if min(k, n - 1) < 1:
        return torch.zeros(2, 0, dtype=torch.long, device=sim.device), sim.new_zeros(0, 1)
    src, vals, keep = topk_neighbours(sim, mask, k)
    offset = (torch.arange(b, device=sim.device) * n).view(b, 1, 1)
    tgt = torch.arange(n, device=sim.device).view(1, n, 1).expand_as(src)
    edge_index = torch.stack([(src + offset)[keep], (tgt + offset)[keep]])
    return edge_index, vals[keep].unsqueeze(-1)


class DenseGraph(NamedTuple):
    """The :class:`Neighbours` graph in the form every :func:`gatv2_dense` layer reads, built once per
    forward (:func:`dense_graph`) rather than once per layer: it depends on the graph, not on ``x``."""

    src: torch.Tensor
    """``[B * N * (k + 1)]`` long: each neighbour's row in the flattened ``[B * N, ...]`` node
    features, the node itself (its self loop) last: one gather gives every layer's ``k + 1`` sources."""
    attr: torch.Tensor
    """``[B, N, k + 1, 1, 1]``: the edge attributes (0 on padding), the self loop's last."""
    blocked: torch.Tensor
    """``[B, N, k + 1, 1]`` float: ``-inf`` on padding (no edge), 0 on real edges; added to the
    attention logits, it leaves padding out of the softmax (``x + 0`` is ``x`` exactly)."""


class DenseConstants(NamedTuple):
    """The tensors :func:`dense_graph` and :func:`topk_neighbours` need that depend only on
    ``(B, N, device)`` (:meth:`GraphEncoder.forward` caches them)."""

    not_self: torch.Tensor
    """``[N, N]`` bool: ``~eye(N)``."""
    offset: torch.Tensor
    """``[B, 1, 1]`` long: ``b * N``, each row's first node in the flattened batch."""
    self_src: torch.Tensor
    """``[B, N, 1]`` long: ``arange(B * N)``, each node's own row (its self loop's source)."""
    loop_open: torch.Tensor
    """``[B, N, 1]`` float zeros: the self loop's (never blocked) entry of :attr:`DenseGraph.blocked`."""


def dense_constants(b: int, n: int, device: torch.device, dtype: torch.dtype) -> DenseConstants:
    """:class:`DenseConstants` of a ``[B, N]`` batch on ``device`` (``dtype``: the features')."""
    return DenseConstants(
        ~torch.eye(n, dtype=torch.bool, device=device),
        (torch.arange(b, device=device) * n).view(b, 1, 1),
        torch.arange(b * n, device=device).view(b, n, 1),
        torch.zeros(b, n, 1, dtype=dtype, device=device),
    )


def dense_graph(nb: Neighbours, const: DenseConstants | None = None) -> DenseGraph:
    """:class:`DenseGraph` of ``nb``: PyG's self loops added (attribute: the mean of the node's
    incoming ones, its ``'mean'`` fill; 0 without any). ``const``: :func:`dense_constants` of
    ``nb``'s shape when the caller keeps them, built here otherwise."""
    b, n, _ = nb.src.shape
    if const is None:
        const = dense_constants(b, n, nb.src.device, nb.sim.dtype)
    attr = torch.where(nb.keep, nb.sim, 0.0)
    loop_attr = attr.sum(-1, keepdim=True) / nb.keep.sum(-1, keepdim=True).to(nb.sim.dtype).clamp(min=1.0)
    src = torch.cat([nb.src + const.offset, const.self_src], dim=-1).reshape(-1)
    blocked = torch.cat([torch.where(nb.keep, 0.0, float("-inf")), const.loop_open], dim=-1)
    return DenseGraph(src, torch.cat([attr, loop_attr], dim=-1)[..., None, None], blocked.unsqueeze(-1))


def gatv2_dense(conv: GATv2Conv, x: torch.Tensor, graph: DenseGraph) -> torch.Tensor:
    """``conv(x, edge_index, edge_attr)`` of the :func:`topk_edges` graph, computed on the dense
    ``[B, N, k + 1]`` neighbour layout (:func:`dense_graph`: the ``k`` neighbours plus the self loop
    GATv2 adds) instead of PyG's edge list: ``x [B, N, D]`` -> ``[B, N, heads * C]``.

    The same maths as PyG's ``GATv2Conv`` (``share_weights=False``, ``concat=True``, self loops
    whose edge attribute is the mean of the node's incoming ones, 0 without any): for target ``i``
    and source ``j``, ``e_ij = att . leaky_relu(W_r x_i + W_l x_j + W_e a_ij)``, softmax over
    ``j`` (padding excluded), ``out_i = sum_j alpha_ij W_l x_j + bias``. Why: without the edge
    list's scatter/gather (and the ``nonzero`` that builds it) a decision costs a few large tensor
    ops instead of dozens of small ones. Sums run in another order than PyG's, so the outputs agree
    to float rounding only; training keeps PyG's path (its gradients unchanged), this one serves
    the no-grad forwards. ``lin_l``/``lin_r`` are PyG ``Linear`` layers, whose forward is
    ``F.linear``: called as that, without the module call's overhead.
    """
    b, n, _ = x.shape
    heads, c = conv.heads, conv.out_channels
    x_l = F.linear(x, conv.lin_l.weight, conv.lin_l.bias).view(b * n, heads, c)
    x_r = F.linear(x, conv.lin_r.weight, conv.lin_r.bias)
    x_j = x_l.index_select(0, graph.src).view(b, n, -1, heads, c)  # [B, N, k + 1, H, C], self last
    # lin_edge maps a scalar attribute (PyG builds it without bias): ``a * W[:, 0]`` is its product
    lin_edge = conv.lin_edge
    e = graph.attr * lin_edge.weight[:, 0].view(heads, c)
    if lin_edge.bias is not None:
        e = e + lin_edge.bias.view(heads, c)
    z = F.leaky_relu(x_r.view(b, n, 1, heads, c) + x_j + e, conv.negative_slope)
    alpha = torch.softmax((z * conv.att).sum(-1) + graph.blocked, dim=2)  # [B, N, k + 1, H]
    out = (alpha.unsqueeze(-1) * x_j).sum(2).view(b, n, heads * c)
    if conv.res is not None:
        out = out + conv.res(x)
    return out + conv.bias if conv.bias is not None else out


class GraphEncoder(nn.Module):
    """Input projection + residual GATv2 layers over the similarity graph."""

    def __init__(self, cfg: GNNConfig, n_features: int):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        if cfg.similarity_features is not None and any(
            not 0 <= i < n_features for i in cfg.similarity_features
        ):
            raise ValueError(f"similarity_features {cfg.similarity_features} out of range [0, {n_features})")
        self.cfg = cfg
        self.inp = mlp([asset_input_dim(n_features), cfg.hidden], activate_last=True)
        self.convs = nn.ModuleList(
            GATv2Conv(cfg.hidden, cfg.hidden // cfg.heads, heads=cfg.heads, edge_dim=1)
            for _ in range(cfg.layers)
        )
        self.act = nn.SiLU()
        # no-grad cache (:meth:`_forward_dense`): a plain attribute, not buffers (not in the state dict)
        self._const_cache: dict[tuple[int, int, torch.device, torch.dtype], DenseConstants] = {}

    def forward(self, obs: PortfolioObs) -> torch.Tensor:
        """Node embeddings ``[B, N, H]``: through PyG's edge list when a gradient may be taken,
        through :func:`gatv2_dense` (the same layers, float rounding apart) under no-grad
        (:meth:`_forward_dense`). The z-scores of the features are computed once, for the asset
        inputs and (without ``similarity_features``) the similarity, unless a gradient with respect
        to the features is wanted: sharing them (or computing them in another order) would sum that
        gradient's paths in another order, a change of float rounding in ``serve.attribution``'s
        answers."""
        if not torch.is_grad_enabled():
            return self._forward_dense(obs)
        b, n, _ = obs.features.shape
        sim, x = self._similarity_and_inputs(obs, obs.mask.unsqueeze(-1).to(obs.features.dtype))
        edge_index, edge_attr = topk_edges(sim, obs.mask, self.cfg.top_k)
        x = x.reshape(b * n, -1)
        for conv in self.convs:
            x = x + self.act(conv(x, edge_index, edge_attr))
        return x.reshape(b, n, -1)

    def _similarity_and_inputs(self, obs: PortfolioObs, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The similarity ``[B, N, N]`` and the projected node inputs ``[B, N, H]`` (``m``: the mask as
        ``[B, N, 1]`` in the features' dtype). The z-scores serve both unless the similarity reads a
        subset of the features, or a gradient with respect to the features is wanted (input
        gradients, ``serve.attribution``: the graph they always took, in its order)."""
        z: torch.Tensor | None = None
        if self.cfg.similarity_features is None and not obs.features.requires_grad:
            z = zscore_masked(obs.features, m)
            sim = profile_similarity(z)
        else:
            sim_feats = obs.features
            if self.cfg.similarity_features is not None:
                sim_feats = sim_feats[..., list(self.cfg.similarity_features)]
            sim = feature_similarity(sim_feats, obs.mask)
        return sim, run_mlp(self.inp, asset_inputs_masked(obs, m, z))

    def _forward_dense(self, obs: PortfolioObs) -> torch.Tensor:
        """:meth:`forward` under no-grad: the same numbers as computing every piece afresh, bit for
        bit, with fewer tensor ops. Why: at B = 1-4 a forward is ~400 ops of a few microseconds each
        (dispatch, not arithmetic), so each op left out is time saved. The mask is cast once (for the
        z-scores and the asset inputs); :func:`dense_constants` (``~eye``, the index tensors) are
        built once per ``(B, N, device, dtype)`` instead of once per forward; each layer gathers the
        neighbours and the self loop in one ``index_select`` and blocks padding by adding
        :attr:`DenseGraph.blocked`; the activation is ``F.silu``, what ``self.act`` calls."""
        b, n = (int(size) for size in obs.features.shape[:2])  # ints while traced too: the cache's key
        sim, x = self._similarity_and_inputs(obs, obs.mask.unsqueeze(-1).to(obs.features.dtype))
        const = self._dense_constants(b, n, obs.features)
        graph = dense_graph(topk_neighbours(sim, obs.mask, self.cfg.top_k, const.not_self), const)
        for conv in self.convs:
            x = x + F.silu(gatv2_dense(conv, x, graph))
        return x

    def _dense_constants(self, b: int, n: int, like: torch.Tensor) -> DenseConstants:
        """:func:`dense_constants` of ``(b, n)`` on ``like``'s device and dtype, cached (up to
        :data:`_CACHED_SHAPES` shapes)."""
        key = (b, n, like.device, like.dtype)
        const = self._const_cache.get(key)
        if const is None:
            const = dense_constants(b, n, like.device, like.dtype)
            if len(self._const_cache) >= _CACHED_SHAPES:
                self._const_cache.clear()
            self._const_cache[key] = const
        return const


_CACHED_SHAPES = 16
"""How many ``(B, N, device, dtype)`` shapes :meth:`GraphEncoder._dense_constants` keeps (then it
starts afresh): serving sees a handful of batch sizes, sampling one."""


def node_scores(
    encoder: GraphEncoder, score_head: nn.Sequential, obs: PortfolioObs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ctx [B, H], scores [B, N])``: the pooled node embeddings and each asset's score."""
    h = encoder(obs)
    ctx = masked_mean(h, obs.mask)
    return ctx, run_mlp(score_head, head_input(h, ctx, obs.portfolio)).squeeze(-1)


def _layer_inference(layers: nn.ModuleList, obs: PortfolioObs) -> Inference:
    """:func:`node_scores`' scores from ``[encoder, score_head]`` and their distribution inputs with
    the layers' ``log_std`` (what the traced forward runs)."""
    encoder, score_head = layers
    scores = node_scores(cast(GraphEncoder, encoder), cast(nn.Sequential, score_head), obs)[1]
    return scores, gaussian_dist_inputs(scores, cast(torch.Tensor, layers.log_std), obs.mask)


class GNNModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """GATv2 allocator: node scores -> Gaussian mean / projected weights; pooled nodes -> value."""

    config_cls: ClassVar[type[GNNConfig]] = GNNConfig

    def setup(self) -> None:
        self.cfg = validate_model_config(self.config_cls, self.model_config)
        self.n_features = features_per_asset(self.observation_space, self.action_space)
        h, hh = self.cfg.hidden, self.cfg.head_hidden
        self.encoder = GraphEncoder(self.cfg, self.n_features)
        self.score_head = scale_last_layer(mlp([2 * h + N_PORTFOLIO_STATE, hh, 1]), 0.01)
        self.log_std = nn.Parameter(torch.full((1,), self.cfg.log_std_init))
        if not self.inference_only:
            self.value_head = mlp([h + N_PORTFOLIO_STATE, hh, 1])

    def _encode(self, raw_obs: Any) -> tuple[PortfolioObs, torch.Tensor, torch.Tensor]:
        obs = split_obs(raw_obs, self.n_features)
        ctx, scores = node_scores(self.encoder, self.score_head, obs)
        return obs, scores, torch.cat([ctx, obs.portfolio], dim=-1)

    def trace_inference(self, on: bool = True) -> ShapeTraces | None:
        """Run :meth:`_forward_inference`'s encoder and score head through per-shape traces
        (:class:`models.tracing.ShapeTraces`, each checked against the eager forward): the same
        numbers with less Python per forward; ``on`` False: the eager forward again. Returns the
        traces. For a loaded policy that only answers (serving); never for one that trains."""
        layers = nn.ModuleList([self.encoder, self.score_head])
        layers.log_std = self.log_std  # registered with the layers: the trace shares it
        self._traces = ShapeTraces(ObsInference(layers, self.n_features, _layer_inference)) if on else None
        return self._traces

    def weights(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic feasible weights ``[B, N]`` (projection of the Gaussian mean)."""
        o, scores, _ = self._encode(obs)
        return project_scores(scores, o.mask, self.cfg.projection)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs, scores, _ = self._encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: gaussian_dist_inputs(scores, self.log_std, obs.mask)}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            traces: ShapeTraces | None = getattr(self, "_traces", None)
            if traces is None:  # no Columns.ACTIONS: the decision is the mean (ppo_mlp's outputs)
                obs, scores, _ = self._encode(batch[Columns.OBS])
                dist_inputs = gaussian_dist_inputs(scores, self.log_std, obs.mask)
            else:
                _scores, dist_inputs, _mask = traces(*obs_tensors(batch[Columns.OBS]))
            return {Columns.ACTION_DIST_INPUTS: dist_inputs}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs, scores, emb = self._encode(batch[Columns.OBS])
        return {
            Columns.ACTION_DIST_INPUTS: gaussian_dist_inputs(scores, self.log_std, obs.mask),
            Columns.EMBEDDINGS: emb,
        }

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self._encode(batch[Columns.OBS])[2]
        return self.value_head(embeddings).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head"]
