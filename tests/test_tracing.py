"""Traced no-grad forwards (``models.tracing``): a trace is used only where it gave the eager
forward's numbers, the ``gnn`` policy's traced forward decides exactly as its eager one (module and
service), and a service warms the batch sizes it will see. No Ray: seeded untrained modules."""

from __future__ import annotations

import copy
import logging
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from ray.rllib.core.columns import Columns
from torch import nn

from raytrade.models.inference import trace_for_inference
from raytrade.models.tracing import ShapeTraces
from raytrade.serve.decide import DecisionService, ServeConfig, serving_market_data
from tests.test_serve_fast_path import _handle, _request

# ------------------------------------------------------------------------------ ShapeTraces


class _Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)) * 2.0


class _Counting(nn.Module):
    """Reads Python state the trace bakes in: its trace answers what the first call answered."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + float(self.calls)


class _Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("cannot be traced")
        return x * 3.0


def test_a_checked_trace_answers_as_the_eager_net_per_shape() -> None:
    torch.manual_seed(0)
    net = _Affine()
    traces = ShapeTraces(net)
    with torch.no_grad():
        for b in (1, 4, 1, 7):
            x = torch.randn(b, 3)
            assert torch.equal(traces(x), net(x))
    assert sorted(k[0][0][0] for k in traces.traced_shapes) == [1, 4, 7] and traces.eager_shapes == []


def test_a_trace_that_differs_from_the_eager_forward_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    net = _Counting()
    traces = ShapeTraces(net)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="raytrade.models.tracing"):
        traces(torch.zeros(2))
        calls = net.calls
        out = traces(torch.zeros(2))
    assert net.calls == calls + 1 and torch.equal(out, torch.full((2,), float(calls + 1)))  # eager, not baked
    assert traces.traced_shapes == [] and len(traces.eager_shapes) == 1
    assert "differs from the eager forward" in caplog.text


def test_a_net_that_cannot_be_traced_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    traces = ShapeTraces(_Untraceable())
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="raytrade.models.tracing"):
        assert torch.equal(traces(torch.ones(3)), torch.full((3,), 3.0))
    assert len(traces.eager_shapes) == 1 and "cannot be traced" in caplog.text


def test_traces_are_the_no_grad_forward_only_and_kept_within_their_bound() -> None:
    torch.manual_seed(0)
    net = _Affine()
    traces = ShapeTraces(net, max_shapes=2)
    with pytest.raises(RuntimeError, match="no_grad"):
        traces(torch.ones(1, 3))
    with torch.no_grad():
        for b in (1, 2, 3, 4, 1, 2):
            x = torch.randn(b, 3)
            assert torch.equal(traces(x), net(x))
    # the first two shapes keep their traces; later ones run eagerly, nothing is evicted
    assert sorted(k[0][0][0] for k in traces.traced_shapes) == [1, 2] and traces.eager_shapes == []


def test_closed_traces_trace_no_new_shape() -> None:
    torch.manual_seed(0)
    net = _Affine()
    traces = ShapeTraces(net)
    with torch.no_grad():
        traces(torch.ones(2, 3))
        traces.close()
        x = torch.randn(5, 3)
        assert torch.equal(traces(x), net(x))
    assert [k[0][0][0] for k in traces.traced_shapes] == [2]


def test_traces_called_from_several_threads_trace_each_shape_once() -> None:
    torch.manual_seed(0)
    net = _Affine()
    traces = ShapeTraces(net, max_shapes=3)
    inputs = [torch.randn(1 + i % 6, 3) for i in range(120)]

    def call(x: torch.Tensor) -> bool:
        with torch.no_grad():
            return bool(torch.equal(traces(x), net(x)))

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(call, inputs))
    assert len(traces.traced_shapes) == 3 and traces.eager_shapes == []


# ------------------------------------------------------------------------------ the gnn policy


def _flat_obs(module: Any, b: int, seed: int) -> torch.Tensor:
    """Random flat observations for ``module``'s universe: about a third of the assets unlisted
    (their features NaN); for B > 1 a first row with none listed, for B > 2 a second with one."""
    n = module.action_space.shape[0]
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, n, generator=g) > 0.3
    if b > 1:
        mask[0] = False
    if b > 2:
        mask[1] = False
        mask[1, 0] = True
    feats = torch.randn(b, n, module.n_features, generator=g)
    feats[~mask] = float("nan")
    weights, portfolio = 0.1 * torch.randn(b, n, generator=g), torch.randn(b, 5, generator=g)
    return torch.cat([feats.flatten(1), weights, mask.float(), portfolio], -1)


@pytest.mark.parametrize("family", ["gnn", "ppo_mlp", "distributional"])
def test_a_policys_traced_forward_equals_its_eager_one_bit_for_bit(family: str) -> None:
    traced, eager = _handle(family).module, _handle(family).module  # the same seed: the same weights
    assert trace_for_inference(traced)
    with torch.inference_mode():  # serving's mode
        for b in (1, 2, 5, 2):
            for seed in range(4):
                obs = {Columns.OBS: _flat_obs(traced, b, seed=10 * b + seed)}
                got, want = traced._forward_inference(obs), eager._forward_inference(obs)
                assert set(got) == set(want) == {Columns.ACTION_DIST_INPUTS}
                for key in (Columns.ACTION_DIST_INPUTS,):
                    assert torch.equal(got[key], want[key]), (b, seed, key)
    traces = _traces(traced)
    assert len(traces.traced_shapes) == 3 and traces.eager_shapes == [] and _traces(eager) is None


def _traces(module: Any) -> ShapeTraces | None:
    return getattr(module, "_traces", None) or getattr(getattr(module, "policy", None), "_traces", None)


def test_a_trace_shares_the_policys_weights() -> None:
    """An in-place change of a weight (``load_state_dict`` copies into the same tensors) reaches the
    trace: it holds the layers' parameters, not copies of their values."""
    traced, eager = _handle("gnn").module, _handle("gnn").module
    trace_for_inference(traced)
    obs = {Columns.OBS: _flat_obs(traced, 2, seed=3)}
    with torch.inference_mode():
        before = traced._forward_inference(obs)[Columns.ACTION_DIST_INPUTS]
    for module in (traced, eager):
        with torch.no_grad():
            module.score_head[-1].bias.add_(0.5)
    with torch.inference_mode():
        after = traced._forward_inference(obs)[Columns.ACTION_DIST_INPUTS]
        assert not torch.equal(after, before)
        assert torch.equal(after, eager._forward_inference(obs)[Columns.ACTION_DIST_INPUTS])


@pytest.mark.parametrize("family", ["gnn", "ppo_mlp"])
def test_a_copy_or_a_pickle_of_a_traced_policy_computes_with_its_own_weights(family: str) -> None:
    traced, reference = _handle(family).module, _handle(family).module
    trace_for_inference(traced)
    obs = {Columns.OBS: _flat_obs(traced, 2, seed=1)}
    with torch.inference_mode():
        before = traced._forward_inference(obs)[Columns.ACTION_DIST_INPUTS]
    assert _traces(traced) is not None and _traces(traced).traced_shapes  # type: ignore[union-attr]
    copies = [copy.deepcopy(traced), pickle.loads(pickle.dumps(traced))]
    with torch.no_grad():  # new weights for the copies (and the eager reference), in place
        for module in (*copies, reference):
            for param in module.parameters():
                param.add_(0.1)
    with torch.inference_mode():
        want = reference._forward_inference(obs)[Columns.ACTION_DIST_INPUTS]
        assert not torch.equal(want, before)
        for clone in copies:
            assert torch.equal(clone._forward_inference(obs)[Columns.ACTION_DIST_INPUTS], want)
        assert torch.equal(traced._forward_inference(obs)[Columns.ACTION_DIST_INPUTS], before)


def test_the_flag_off_turns_a_shared_handles_traces_off() -> None:
    handle = _handle("gnn")
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    DecisionService(handle, data, ServeConfig(max_feature_age_hours=None))
    assert _traces(handle.module) is not None
    DecisionService(handle, data, ServeConfig(max_feature_age_hours=None, traced_forward=False))
    assert _traces(handle.module) is None


def test_a_module_without_a_traced_forward_is_left_as_it_is() -> None:
    module = _Affine()  # e.g. the gating family, or RLlib's own modules: no trace_inference()
    assert not trace_for_inference(module) and _traces(module) is None


def _service(family: str, traced: bool) -> DecisionService:
    handle = _handle(family)
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    return DecisionService(handle, data, ServeConfig(max_feature_age_hours=None, traced_forward=traced))


def test_the_service_decides_with_its_traced_forward_as_with_its_eager_one() -> None:
    traced, eager = _service("gnn", traced=True), _service("gnn", traced=False)
    assert _traces(traced.handle.module) is not None and _traces(eager.handle.module) is None
    symbols = list(traced.data.symbols)
    requests = [
        _request(traced),
        _request(
            traced, positions=[], analysis={s: {"bid_price": 10.0, "ask_price": 10.02} for s in symbols[:3]}
        ),
        _request(traced, drawdown_pct=-0.3),
    ]
    skip = {"decision_id"}
    for batch in (requests[:1], requests):
        got, want = traced.decide(batch), eager.decide(batch)
        assert [a.model_dump(exclude=skip) for a in got] == [a.model_dump(exclude=skip) for a in want]


def test_the_probe_warms_every_batch_size_up_to_the_one_asked_then_no_request_traces() -> None:
    service, eager = _service("gnn", traced=True), _service("gnn", traced=False)
    service.probe(batch_sizes=4)
    traces = _traces(service.handle.module)
    assert traces is not None and sorted(k[0][0][0] for k in traces.traced_shapes) == [1, 2, 3, 4]
    skip = {"decision_id"}
    batch = [_request(service)] * 6  # larger than warmed: decided eagerly, nothing traced
    got, want = service.decide(batch), eager.decide(batch)
    assert [a.model_dump(exclude=skip) for a in got] == [a.model_dump(exclude=skip) for a in want]
    assert len(traces.traced_shapes) == 4 and traces.eager_shapes == []


def test_the_gnn_trace_holds_its_dense_constants_instead_of_rebuilding_them() -> None:
    """The per-shape constants (``~eye(N)``, the index ``arange``s) are cached by the eager forward
    that runs before the trace, so the trace holds them as constants: no call rebuilds them."""
    module = _handle("gnn").module
    traces = trace_for_inference(module)
    assert traces is not None
    with torch.inference_mode():
        module._forward_inference({Columns.OBS: _flat_obs(module, 2, seed=0)})
    (traced,) = [t for t in traces._by_shape.values() if t is not None]
    graph = str(traced.inlined_graph)
    assert "aten::topk" in graph  # the graph is the encoder's
    assert "aten::eye" not in graph and "aten::arange" not in graph
