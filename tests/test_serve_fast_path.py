"""The service path's per-request savings change no answer: RLlib's per-call ``eval()`` walk skipped
only while every layer is in eval mode, a request's gates in one call, the answer validated in one
call. No Ray: untrained (seeded) modules of the catalog on a small synthetic market."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from raytrade.envs.gym_envs import GATE_MODES, PortfolioEnv
from raytrade.models.catalog import rl_module_spec
from raytrade.models.inference import inference_forward, policy_output, to_tensor
from raytrade.models.manifest import Manifest
from raytrade.models.registry_load import PolicyHandle
from raytrade.serve.caps import gate_reasons
from raytrade.serve.decide import _ZERO, DecisionService, Prepared, ServeConfig, _utc, serving_market_data
from raytrade.serve.schemas import (
    ActRequest,
    ActResponse,
    AppliedCaps,
    SymbolDecision,
    SymbolSnapshot,
    target_quantity,
)
from tests.test_registry import manifest_record

ENV_CONFIG: dict[str, Any] = {
    "data": {"kind": "synthetic", "n_assets": 6, "n_steps": 120, "seed": 0, "n_crypto": 1},
    "sim": {"episode_len": 32},
    "flat_obs": True,
}


def _handle(family: str) -> PolicyHandle:
    """A seeded, untrained module of ``family`` as ``models.load`` hands it out (eval mode)."""
    record = manifest_record(config={"env": "raytrade/PortfolioEnv-v0", "env_config": ENV_CONFIG})
    data = serving_market_data(Manifest.model_validate(record).env_config())
    record["data"] = {**record["data"], "symbols": list(data.symbols)}
    env = PortfolioEnv(ENV_CONFIG)
    torch.manual_seed(0)
    spec = rl_module_spec(family)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    module.eval()
    return PolicyHandle("alpha", 1, Path("unused"), Manifest.model_validate(record), module)


@pytest.fixture(scope="module", params=["ppo_mlp", "gnn"])
def service(request: pytest.FixtureRequest) -> DecisionService:
    handle = _handle(request.param)
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    return DecisionService(handle, data, ServeConfig(max_feature_age_hours=None))


def _request(service: DecisionService, **update: Any) -> ActRequest:
    symbols = list(service.data.symbols)
    body: dict[str, Any] = {
        "account": {"equity": 100_000.0, "cash": 70_000.0},
        "positions": [
            {"symbol": symbols[0], "qty": "10", "side": "long", "market_value": "20000"},
            {"symbol": symbols[1], "qty": "5", "side": "short", "market_value": "-9000"},
            {"symbol": "OUTSIDE", "qty": "1", "side": "long", "market_value": "1500"},
        ],
        "drawdown_pct": -0.02,
        "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in symbols},
        "as_of": service.closed_at(-1).isoformat(),  # observes the last bar: it has closed
    }
    body.update(update)
    return ActRequest.model_validate(body)


def _obs(service: DecisionService, request: ActRequest) -> Any:
    return service.env_observation([service.prepare(request, service.closed_at(-1))])


# ------------------------------------------------------------------------ RLlib's eval() walk


def _count_train_calls(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``train(mode)`` calls ``module`` gets from now on (``eval()`` is ``train(False)``)."""
    calls: list[bool] = []
    train = module.train

    def counted(mode: bool = True) -> Any:
        calls.append(mode)
        return train(mode)

    monkeypatch.setattr(module, "train", counted)
    return calls


def test_an_eval_mode_module_is_asked_without_rllibs_eval_walk_for_the_same_outputs(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = service.handle.module
    batch = {Columns.OBS: to_tensor(_obs(service, _request(service)))}
    with torch.inference_mode():
        expected = module.forward_inference(batch)
        calls = _count_train_calls(module, monkeypatch)
        got = inference_forward(module, batch, tuple(module.modules()))
    assert calls == []
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_a_layer_back_in_training_mode_gets_rllibs_own_forward_inference(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = service.handle.module
    batch = {Columns.OBS: to_tensor(_obs(service, _request(service)))}
    layers = tuple(module.modules())
    with torch.inference_mode():
        expected = module.forward_inference(batch)
        layers[-1].train()  # one submodule only: the top-level flag alone would not tell
        calls = _count_train_calls(module, monkeypatch)
        got = inference_forward(module, batch, layers)
    assert calls == [False]  # RLlib's eval(); the module was not training, so no train() after
    assert not any(layer.training for layer in layers)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_the_handles_decision_is_policy_output_without_the_walk(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = service.handle
    obs = _obs(service, _request(service))
    expected = policy_output(handle.module, obs, handle.env_config().action)  # RLlib's forward_inference

    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("forward_inference walks the module tree on every call")

    monkeypatch.setattr(handle.module, "forward_inference", refused)
    got = handle.act_with_inputs(obs)
    np.testing.assert_array_equal(got.action, expected.action)
    assert torch.equal(got.dist_inputs, expected.dist_inputs)


# ------------------------------------------------------------------------ gates, all rows at once


def test_a_requests_rows_are_gated_in_one_call_with_each_rows_own_cap() -> None:
    rows = [
        {"bid_price": 100.0, "ask_price": 100.09, "avg_dollar_vol": 2e9},  # mega cap: 8 bps
        {"bid_price": 100.0, "ask_price": 100.09, "avg_dollar_vol": 5e8},  # other stock: 25 bps
        {"bid_price": 100.0, "ask_price": 100.26},  # volume unknown: the strictest equity cap, 8 bps
        {"bid_price": 100.0, "ask_price": 100.34},  # crypto: 35 bps
        {"bid_price": 100.0, "ask_price": 100.36},  # crypto, over
        {"bid_price": 0.0, "ask_price": 100.0},
        {"bid_price": 100.0, "ask_price": 100.01, "trade_blocked": True, "block_reason": "halted"},
        {"bid_price": 100.0, "ask_price": 100.01, "trade_blocked": True},
    ]
    crypto = np.array([False, False, False, True, True, False, False, False])
    got = gate_reasons([SymbolSnapshot.model_validate(r) for r in rows], crypto)
    assert got == [
        "spread 9.0 bps > cap 8 bps",
        None,
        "spread 26.0 bps > cap 8 bps",
        None,
        "spread 35.9 bps > cap 35 bps",  # 0.36 / mid 100.18
        "no two-sided quote",
        "blocked by the trading loop: halted",
        "blocked by the trading loop: no reason given",
    ]
    assert gate_reasons([], np.array([], bool)) == []


def test_prepare_names_each_held_symbols_reason(service: DecisionService) -> None:
    symbols = list(service.data.symbols)
    close = service.data.close[-1]  # quoted at the last close: inside the quote band
    analysis: dict[str, Any] = {
        s: {"bid_price": 0.9999 * c, "ask_price": 1.0001 * c} for s, c in zip(symbols, close, strict=True)
    }
    analysis[symbols[1]] = {"bid_price": 0.99 * close[1], "ask_price": 1.01 * close[1]}  # 200 bps
    analysis[symbols[2]]["trade_blocked"] = True
    del analysis[symbols[3]]
    prepared = service.prepare(_request(service, analysis=analysis), service.closed_at(-1))
    listed = service.data.listed[-1]
    expected = {
        symbols[1]: "spread 200.0 bps > cap 8 bps",  # no avg_dollar_vol: the strictest equity cap
        symbols[2]: "blocked by the trading loop: no reason given",
        symbols[3]: "not in the request",
    }
    day = _utc(service.data.ts[-1]).date()
    expected |= {s: f"no bar at {day}" for i, s in enumerate(symbols) if not listed[i] and s not in expected}
    assert prepared.hold_reason == expected
    assert prepared.tradeable.tolist() == [s not in expected for s in symbols]
    assert prepared.unmanaged == ["OUTSIDE"]


# ------------------------------------------------------------------------ the answer, one validation


def _answer_symbol_by_symbol(
    service: DecisionService,
    p: Prepared,
    weights: np.ndarray,
    caps: AppliedCaps,
    modes: np.ndarray | None,
    confidence: np.ndarray,
    kill: bool,
) -> ActResponse:
    """The answer as the service built it before: a ``SymbolDecision`` per symbol (the rules stated
    plainly, numpy scalars read one by one)."""
    decisions = {}
    units = {q.symbol: -abs(q.qty) if q.side == "short" else abs(q.qty) for q in p.request.positions}
    for sym, i in service.universe.items():
        w = float(weights[i])
        held = sym in p.hold_reason
        mode = "hold" if held else GATE_MODES[int(modes[i])] if modes is not None else None
        mode = mode or ("flat" if abs(w) < _ZERO else "aggressive")
        reason = p.hold_reason.get(sym)
        if kill and not held and abs(w) < abs(p.w_now[i]) - _ZERO:
            reason = "kill switch: unwind only"
        decisions[sym] = SymbolDecision(
            target_weight=w,
            # kept where it is (held, or at its current weight): the units held, else the weight's
            target_qty=units.get(sym, 0.0)
            if held or w == float(p.w_now[i])
            else target_quantity(w, p.request.account.equity, p.request.reference_price(sym)),
            current_weight=float(p.w_now[i]),
            side="flat" if abs(w) < _ZERO else ("long" if w > 0 else "short"),
            gate_mode=mode,
            confidence=0.0 if held else float(confidence[i]),
            tradeable=not held,
            reason=reason,
        )
    return ActResponse(
        decision_id="fixed",
        model=service.model_ref,
        model_version=1,
        as_of=p.as_of,
        features_as_of=_utc(service.data.ts[p.bar]),
        decisions=decisions,
        gross_exposure=float(np.abs(weights).sum()),
        kill_switch_active=kill,
        kill_switch_rule="stateless",  # the request carries no kill-switch state
        unmanaged=p.unmanaged,
        caps=caps,
    )


@pytest.mark.parametrize("kill", [False, True])
@pytest.mark.parametrize("gated", [False, True])
def test_the_answer_is_the_one_built_symbol_by_symbol(
    service: DecisionService, kill: bool, gated: bool
) -> None:
    symbols = list(service.data.symbols)
    analysis: dict[str, Any] = {s: {"bid_price": 49.9, "ask_price": 50.0} for s in symbols}
    analysis[symbols[2]] = {"bid_price": 99.0, "ask_price": 101.0}
    del analysis[symbols[4]]
    p = service.prepare(_request(service, analysis=analysis), service.closed_at(-1))
    rng = np.random.default_rng(3)
    weights = np.where(rng.random(len(symbols)) < 0.3, 0.0, rng.normal(0, 0.1, len(symbols)))
    confidence, modes = rng.random(len(symbols)), (rng.integers(0, 4, len(symbols)) if gated else None)
    caps = service.config.caps.applied(("gross_cap",))
    got = service._response(p, weights, caps, modes, confidence, kill)
    expected = _answer_symbol_by_symbol(service, p, weights, caps, modes, confidence, kill)
    assert got.model_dump_json(exclude={"decision_id"}) == expected.model_dump_json(exclude={"decision_id"})
    assert len(got.decision_id) == 32


# ------------------------------------------------------------------------ the confidence in numpy


def _hostile_request(service: DecisionService, rng: np.random.Generator) -> ActRequest:
    """A random request: random positions (some outside the universe), blocked, wide, missing and
    absent quotes, a drawdown past the kill switch's trigger half the time, equity at its minimum."""
    symbols = list(service.data.symbols)
    equity = float(rng.choice([1.0, 100.0, 100_000.0]))
    analysis: dict[str, Any] = {}
    for s in symbols:
        kind = rng.integers(0, 6)
        if kind == 0:
            continue  # not in the request
        row: dict[str, Any] = {"bid_price": 99.99, "ask_price": 100.01}
        if kind == 1:
            row["trade_blocked"] = True
        elif kind == 2:
            row = {"bid_price": 99.0, "ask_price": 101.0}  # over the spread cap
        elif kind == 3:
            row = {"last_close": 50.0}  # no quote
        analysis[s] = row
    analysis = analysis or {symbols[0]: {"bid_price": 99.99, "ask_price": 100.01}}
    held = [s for s in [*symbols, "OUTSIDE"] if rng.random() < 0.4]
    positions = [
        {
            "symbol": s,
            "qty": "1",
            "side": (side := str(rng.choice(["long", "short"]))),
            "market_value": str((1 if side == "long" else -1) * rng.uniform(0, 0.6) * equity),
        }
        for s in held
    ]
    bar = int(rng.integers(len(service.data.ts) // 2, len(service.data.ts)))
    return ActRequest.model_validate(
        {
            "account": {"equity": equity},
            "positions": positions,
            "drawdown_pct": -float(rng.choice([0.0, 0.05, 0.3])),
            "analysis": analysis,
            "as_of": service.closed_at(bar).isoformat(),
        }
    )


def _torch_confidence(module: Any, dist_inputs: Any) -> np.ndarray:
    """The confidence as it was computed in torch before it moved to numpy (the reference)."""
    inputs = torch.as_tensor(dist_inputs).detach().double()  # serving passes the float64 array
    mean, log_std = inputs.chunk(2, dim=-1)
    return torch.erf(mean.abs() / (log_std.exp() * np.sqrt(2.0))).numpy()


def test_answers_with_the_numpy_confidence_are_the_torch_ones(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over about 90 random hostile requests in 20 batches of 1-8 (NaN features at some bars, held and
    blocked symbols, the kill switch active, equity 1.0): every answer equals the one the torch
    confidence gave, the confidence within 1e-12 and everything else exactly (decision ids apart),
    and keeps every rule a client checks an answer by (``serve.answer_check``)."""
    import dataclasses

    from raytrade.serve import decide
    from raytrade.serve.answer_check import answer_breach

    rng = np.random.default_rng(11)
    features = service.data.features.copy()
    features[rng.random(features.shape[:2]) < 0.05] = np.nan  # whole rows of some (bar, symbol)
    data = dataclasses.replace(service.data, features=features)
    hostile = DecisionService(
        service.handle, data, ServeConfig(max_feature_age_hours=None, kill_drawdown=0.1)
    )
    now = hostile.closed_at(-1)
    seen = {"fallback": 0, "kill": 0, "held": 0}
    for _ in range(20):
        prepared = [hostile.prepare(_hostile_request(hostile, rng), now) for _ in range(rng.integers(1, 9))]
        got = hostile.decide_prepared(prepared)
        for p, a in zip(prepared, got, strict=True):  # what a client holds an answer to, it keeps
            assert answer_breach(p.request, a, hostile.config.caps, hostile.config.loop_rules) is None
        seen["fallback"] += sum(a.fallback for a in got)
        seen["kill"] += sum(a.kill_switch_active for a in got)
        seen["held"] += sum(not d.tradeable for a in got if not a.fallback for d in a.decisions.values())
        with monkeypatch.context() as m:
            m.setattr(decide, "action_confidence", _torch_confidence)
            want = hostile.decide_prepared(prepared)
        for g, w in zip(got, want, strict=True):
            gd, wd = g.model_dump(exclude={"decision_id"}), w.model_dump(exclude={"decision_id"})
            g_conf = [d.pop("confidence") for d in gd["decisions"].values()]
            w_conf = [d.pop("confidence") for d in wd["decisions"].values()]
            np.testing.assert_allclose(g_conf, w_conf, rtol=0, atol=1e-12)
            assert all(0.0 <= c <= 1.0 for c in g_conf)
            assert gd == wd
    assert min(seen.values()) > 0, seen  # NaN features, the kill switch and held symbols all came up


def test_each_bars_channels_are_encoded_once_and_equal_the_encoders(service: DecisionService) -> None:
    """The per-bar cache of the encoded channels (``DecisionService._bar_channels``) changes no
    observation: over batches of random bars (repeats, NaN features, more bars than are kept) every
    observation is ``batched_observation``'s of the same state; a kept bar is read-only, and no more
    than ``ENCODED_BARS_KEPT`` are kept."""
    import dataclasses

    from raytrade.envs.gym_envs import batched_observation
    from raytrade.serve.decide import ENCODED_BARS_KEPT

    rng = np.random.default_rng(5)
    features = service.data.features.copy()
    features[rng.random(features.shape) < 0.1] = np.nan
    data = dataclasses.replace(service.data, features=features)
    cached = DecisionService(service.handle, data, ServeConfig(max_feature_age_hours=None))
    bars_seen = set()
    for _ in range(12):
        bars = rng.integers(len(data.ts) - 12, len(data.ts), rng.integers(1, 6))
        at = [cached.closed_at(int(bar)) for bar in bars]
        prepared = [cached.prepare(_request(cached, as_of=t.isoformat()), t) for t in at]
        assert [p.bar for p in prepared] == bars.tolist()
        bars_seen.update(bars.tolist())
        ob, _ = cached._observation(prepared)
        rb = cached.env_cfg.sim.kill_switch.release_after_bars
        want = batched_observation(
            ob, cached._feat_idx, rb, cached.env_cfg.flat_obs, cached.env_cfg.normalizer
        )
        assert np.array_equal(cached.env_observation(prepared), want, equal_nan=True)
    assert len(bars_seen) > ENCODED_BARS_KEPT >= len(cached._channels)
    kept = next(iter(cached._channels.values()))
    assert not kept.flags.writeable
