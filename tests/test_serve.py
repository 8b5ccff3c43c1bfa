"""Serving: the decision core against the simulator (no train/serve skew), its safety rules, and the
Ray Serve deployment over HTTP on 127.0.0.1 (auth, 422s, batching, hot swap without dropped requests)."""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from raytrade.cluster.promote import promote_command
from raytrade.envs.gym_envs import batched_observation, feature_index
from raytrade.envs.simulator import MarketSimulator
from raytrade.serve.caps import MAX_GROSS, MAX_PER_SYMBOL, ExposureCaps
from raytrade.serve.decide import DecisionService, RequestError, ServeConfig
from raytrade.serve.schemas import ActRequest
from tests.conftest import SmokeRun

TOKEN = "serve-token-for-tests-0123456789"
# and no quote band: these tests quote every symbol at 100 whatever its synthetic close (the band has
# its own tests, tests/test_serve_quote_band.py)
NEVER_STALE = ServeConfig(max_feature_age_hours=None, max_quote_move=None)
# Hard caps that never bind: the model's decision alone, to compare with the simulator's
UNCAPPED = NEVER_STALE.model_copy(
    update={
        "caps": ExposureCaps(
            per_symbol_cap=MAX_PER_SYMBOL,
            gross_cap=MAX_GROSS,
            leverage_cap=MAX_GROSS,
            max_gross_add=MAX_GROSS,
        )
    }
)


def _promote(run_dir: Path, registry: Path) -> None:
    args = ["--run", str(run_dir), "--name", "alpha", "--registry", str(registry)]
    result = CliRunner().invoke(promote_command, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def registry(ppo_smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    reg = tmp_path_factory.mktemp("serve") / "registry"
    _promote(ppo_smoke_run, reg)
    return reg


@pytest.fixture(scope="module")
def service(registry: Path) -> DecisionService:
    from raytrade.serve.app import load_service

    return load_service("alpha", str(registry), NEVER_STALE)


def _utc(ts: np.datetime64) -> datetime:
    return datetime.fromtimestamp(ts.astype("datetime64[us]").astype(np.int64) / 1e6, tz=UTC)


def _request(
    service: DecisionService,
    bar: int = -1,
    positions: dict[str, float] | None = None,
    quoted: list[str] | None = None,
    drawdown: float = 0.0,
    equity: float = 100_000.0,
) -> ActRequest:
    """A request observing bar ``bar`` (dated when it closed: ``DecisionService.closed_at``) with
    ``positions`` given as weights (broker strings)."""
    symbols = list(service.data.symbols) if quoted is None else quoted
    pos = [
        {
            "symbol": sym,
            "qty": "10",
            "side": "long" if w > 0 else "short",
            "market_value": f"{w * equity:.2f}",
        }
        for sym, w in (positions or {}).items()
    ]
    gross = sum(w for w in (positions or {}).values())
    return ActRequest.model_validate(
        {
            "account": {"equity": equity, "cash": equity * (1 - gross)},
            "positions": pos,
            "drawdown_pct": drawdown,
            "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01, "spread_bps": 2.0} for s in symbols},
            "as_of": service.closed_at(bar).isoformat(),
        }
    )


def _targets(response: Any) -> np.ndarray:
    return np.array([d.target_weight for d in response.decisions.values()])


# ---------------------------------------------------------------------------------- decision core


def test_serving_sees_and_decides_what_the_simulator_would(service: DecisionService) -> None:
    service = DecisionService(service.handle, service.data, UNCAPPED)
    data, cfg = service.data, service.env_cfg
    bar = data.n_steps - cfg.sim.episode_len - 2
    request = _request(service, bar)
    prepared = service.prepare(request, datetime.now(UTC))

    sim = MarketSimulator(data, cfg.sim, n_envs=1)
    sim.reset(starts=np.array([bar]))
    rb = cfg.sim.kill_switch.release_after_bars
    env_obs = batched_observation(
        sim.observe(), feature_index(data, cfg.feature_columns), rb, cfg.flat_obs, cfg.normalizer
    )
    np.testing.assert_array_equal(service.env_observation([prepared]), env_obs)
    with pytest.raises(ValueError, match="env_observation needs at least one prepared request"):
        service.env_observation([])

    result = sim.step(np.clip(service.handle.act(env_obs), -1.0, 1.0))
    response = service.decide([request])[0]
    np.testing.assert_allclose(_targets(response), result.target_weights[0], rtol=0, atol=1e-12)
    assert response.features_as_of == _utc(data.ts[bar]) and not response.fallback
    assert response.observation is None  # only on request: it is most of the answer's bytes
    asked = request.model_copy(update={"observation": True})
    answer = service.decide([asked])[0]
    assert answer.observation == env_obs[0].tolist()  # what the live loop logs
    from raytrade.envs.experience import observation_spec  # ... with how the env encoded it

    assert (
        answer.observation_spec == observation_spec(cfg, data.feature_names)
        and len(answer.observation_spec) == 64
    )
    assert response.observation_spec is None
    assert response.model == "alpha@1"
    assert all(0.0 <= d.confidence <= 1.0 for d in response.decisions.values())


def test_a_store_that_gained_a_symbol_still_serves_the_trained_universe(
    registry: Path, synthetic_store: Path, tmp_path: Path
) -> None:
    import shutil

    from raytrade.models.registry import resolve
    from raytrade.replay import read_frame
    from raytrade.replay.ingest import ingest_frames
    from raytrade.serve.app import load_service

    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    bars = read_frame(store, "bars")
    newcomer = bars[bars["symbol"] == bars["symbol"].iloc[0]].assign(symbol="NEWCO")
    ingest_frames(store, newcomer, show_progress=False)
    reg = tmp_path / "registry"
    shutil.copytree(registry, reg)
    manifest_path = resolve(reg, "alpha") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["env_config"]["data"]["root"] = str(store)
    manifest_path.write_text(json.dumps(manifest))
    service = load_service("alpha", str(reg), NEVER_STALE)
    assert "NEWCO" not in service.universe and list(service.data.symbols) == manifest["data"]["symbols"]


def test_untradeable_symbols_are_held_and_count_against_the_gross_cap(service: DecisionService) -> None:
    a, b, *rest = service.data.symbols
    request = _request(service, positions={a: 0.9, b: -0.7}, quoted=[b, *rest])
    request = request.model_copy(
        update={
            "analysis": {**request.analysis, b: request.analysis[b].model_copy(update={"bid_price": None})}
        }
    )
    response = service.decide([request])[0]
    da, db = response.decisions[a], response.decisions[b]
    assert (da.target_weight, da.gate_mode, da.tradeable) == (pytest.approx(0.9), "hold", False)
    assert da.reason == "not in the request"
    assert (db.target_weight, db.gate_mode) == (pytest.approx(-0.7), "hold")
    assert db.reason == "no two-sided quote"
    cap = service.env_cfg.sim.constraints.gross_cap
    assert response.gross_exposure <= cap + 1e-9
    assert all(response.decisions[s].tradeable for s in rest)


def test_blocked_and_over_spread_symbols_are_held(service: DecisionService) -> None:
    a, b, c = service.data.symbols[:3]
    request = _request(service, positions={a: 0.1, b: -0.05})
    wide = {"bid_price": 99.0, "ask_price": 101.0}  # 200 bps: over every spread cap
    analysis = {
        **request.analysis,
        a: request.analysis[a].model_copy(update={"trade_blocked": True, "block_reason": "consensus"}),
        b: request.analysis[b].model_copy(update=wide),
        c: request.analysis[c].model_copy(update={"trade_blocked": True}),
    }
    response = service.decide([request.model_copy(update={"analysis": analysis})])[0]
    da, db, dc = (response.decisions[s] for s in (a, b, c))
    assert (da.target_weight, da.gate_mode, da.tradeable) == (pytest.approx(0.1), "hold", False)
    assert da.reason == "blocked by the trading loop: consensus"
    assert (db.target_weight, db.gate_mode, db.tradeable) == (pytest.approx(-0.05), "hold", False)
    assert db.reason is not None and db.reason.startswith("spread 200.0 bps > cap")
    assert (dc.target_weight, dc.gate_mode, dc.reason) == (
        0.0,
        "hold",
        "blocked by the trading loop: no reason given",
    )


def test_the_contracts_uniusd_row_is_held_when_served(service: DecisionService) -> None:
    contract = Path(__file__).resolve().parents[2] / "shared" / "contracts" / "trade_loop_decision.json"
    if not contract.is_file():
        pytest.skip(f"the trading-loop contract {contract} is not checked out next to this repository")
    from raytrade.serve.client import request_from_loop

    uni = request_from_loop(json.loads(contract.read_text())).analysis["UNIUSD"]
    a = service.data.symbols[0]  # the exact row, under a symbol of the model's universe
    request = _request(service, positions={a: 0.05})
    request = request.model_copy(update={"analysis": {**request.analysis, a: uni}})
    d = service.decide([request])[0].decisions[a]
    assert (d.target_weight, d.gate_mode, d.tradeable) == (pytest.approx(0.05), "hold", False)
    assert d.reason == "blocked by the trading loop: spread 50.8bps > cap 35.0bps; consensus"
    unblocked = {**request.analysis, a: uni.model_copy(update={"trade_blocked": False})}
    d = service.decide([request.model_copy(update={"analysis": unblocked})])[0].decisions[a]
    assert (d.gate_mode, d.tradeable) == ("hold", False)
    assert d.reason is not None and d.reason.startswith("spread 50.8 bps > cap")


def test_answers_are_held_to_the_hard_caps_and_record_them(service: DecisionService) -> None:
    request = _request(service)  # flat: every target weight is added gross
    free = DecisionService(service.handle, service.data, UNCAPPED).decide([request])[0]
    w_free = np.array([d.target_weight for d in free.decisions.values()])
    per_symbol, throttle = float(np.abs(w_free).max()) / 2, float(np.abs(w_free).sum()) / 4
    assert per_symbol > 0  # the model wants some risk, and more than these caps allow
    caps = ExposureCaps(per_symbol_cap=per_symbol, gross_cap=1.2, leverage_cap=2.0, max_gross_add=throttle)
    strict = DecisionService(service.handle, service.data, NEVER_STALE.model_copy(update={"caps": caps}))
    capped = strict.decide([request])[0]
    w = np.array([d.target_weight for d in capped.decisions.values()])
    assert np.all(np.abs(w) <= per_symbol + 1e-12) and float(np.abs(w).sum()) <= throttle + 1e-12
    assert capped.caps is not None and capped.caps.per_symbol_cap == per_symbol
    assert capped.caps.max_gross_add == throttle and "per_symbol_cap" in capped.caps.binding
    for d in capped.decisions.values():  # mid 100, equity 100k
        assert d.target_qty == pytest.approx(d.target_weight * 100_000.0 / 100.0)
    assert len({free.decision_id, capped.decision_id, strict.decide([request])[0].decision_id}) == 3


def test_kill_switch_only_unwinds(service: DecisionService) -> None:
    a, b = service.data.symbols[:2]
    trigger = service.env_cfg.sim.kill_switch.trigger_drawdown
    response = service.decide([_request(service, positions={a: 0.4, b: -0.3}, drawdown=-(trigger + 0.01))])[0]
    assert response.kill_switch_active
    for d in response.decisions.values():
        assert abs(d.target_weight) <= abs(d.current_weight) + 1e-12
        assert d.target_weight * d.current_weight >= 0.0
    calm = service.decide([_request(service, positions={a: 0.4, b: -0.3}, drawdown=-(trigger - 0.01))])[0]
    assert not calm.kill_switch_active
    # exactly at the trigger, as the loop computes it (equity / peak - 1 rounds just short of it)
    peak = 75_000.0
    exact = 60_000.0 / peak - 1.0 if trigger == 0.2 else -trigger * (1 - 1e-16)
    assert -exact < trigger  # rounded short of the trigger
    at = service.decide([_request(service, positions={a: 0.4, b: -0.3}, drawdown=exact)])[0]
    assert at.kill_switch_active


def test_unmanaged_positions_shrink_the_budget(service: DecisionService) -> None:
    response = service.decide([_request(service, positions={"OUTSIDE": 1.5})])[0]
    assert response.unmanaged == ["OUTSIDE"]
    cap = service.env_cfg.sim.constraints.gross_cap
    assert response.gross_exposure <= cap - 1.5 + 1e-9


def test_bad_requests_name_the_field(service: DecisionService) -> None:
    now = datetime.now(UTC)
    bad = _request(service).model_copy(
        update={"analysis": {"ZZZ": _request(service).analysis[service.data.symbols[0]]}}
    )
    with pytest.raises(RequestError) as err:
        service.prepare(bad, now)
    assert err.value.loc == ("analysis", "ZZZ") and "universe" in str(err.value)
    early = _request(service).model_copy(update={"as_of": _utc(service.data.ts[0]) - timedelta(days=30)})
    with pytest.raises(RequestError) as err:
        service.prepare(early, now)
    assert err.value.loc == ("as_of",)


def test_stale_features_hold_every_position(service: DecisionService) -> None:
    strict = DecisionService(service.handle, service.data, ServeConfig(max_feature_age_hours=24))
    a = service.data.symbols[0]
    request = _request(service, positions={a: 0.25, "OUTSIDE": 0.1})
    late = request.model_copy(update={"as_of": service.closed_at(-1) + timedelta(days=3)})
    response = strict.decide([late])[0]
    assert response.fallback and "old" in (response.reason or "")
    assert response.decisions[a].target_weight == pytest.approx(0.25)
    assert response.decisions["OUTSIDE"].target_weight == pytest.approx(0.1)
    assert all(d.gate_mode == "hold" for d in response.decisions.values())
    fresh = strict.decide([request])[0]  # as_of = when the last bar closed: fresh
    assert not fresh.fallback


def test_features_sessions_behind_hold_though_within_the_hours(service: DecisionService) -> None:
    """The 96-hour limit let a store three sessions behind decide in mid-week (Monday's bar on Friday
    night); on daily data more than one of the universe's bars missed is stale too."""
    from raytrade.replay.exchange_calendar import daily_bars_between

    sessions = DecisionService(service.handle, service.data, ServeConfig(max_feature_age_hours=1e6))
    unchecked = DecisionService(
        service.handle, service.data, ServeConfig(max_feature_age_hours=1e6, max_missed_bars=None)
    )
    last = service.closed_at(-1)
    bar_day = _utc(service.data.ts[-1]).date()
    seen = set()
    for days in range(1, 9):
        as_of = last.replace(hour=15) + timedelta(days=days)
        missed = daily_bars_between(bar_day, as_of.date(), crypto_only=False)
        request = _request(service).model_copy(update={"as_of": as_of})
        answer = sessions.decide([request])[0]
        assert answer.fallback == (missed > 1), (as_of, missed, answer.reason)
        if answer.fallback:
            assert f"and {missed} NYSE sessions closed after it" in (answer.reason or "")
            assert "max_missed_bars" in (answer.reason or "")
        assert not unchecked.decide([request])[0].fallback
        seen.add(missed > 1)
    assert seen == {False, True}


def test_a_store_whose_clock_changes_is_still_daily_to_the_missed_bars_rule(service: DecisionService) -> None:
    """05:00 UTC stamps, then a 00:00 UTC date label (19 h apart once), which serving's bar look-up
    calls daily: the missed-bars rule was off on it (20 h apart was its test) and decided on features
    of a store several sessions behind."""
    ts = service.data.ts.astype("datetime64[us]").copy()
    ts[:-1] += np.timedelta64(5, "h")
    shifted = DecisionService(
        service.handle, dataclasses.replace(service.data, ts=ts), ServeConfig(max_feature_age_hours=1e6)
    )
    as_of = shifted.closed_at(-1) + timedelta(days=6, hours=12)  # at least 3 sessions closed since
    answer = shifted.decide([_request(service).model_copy(update={"as_of": as_of})])[0]
    assert answer.fallback and "max_missed_bars" in (answer.reason or ""), answer.reason


class NaNActions:
    """A loaded handle whose every action is NaN (a corrupt checkpoint)."""

    def __init__(self, service: DecisionService) -> None:
        self.service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service.handle, name)

    def act_with_inputs(self, obs: Any) -> Any:
        out = self.service.handle.act_with_inputs(obs)
        return out._replace(action=np.full((len(obs), len(self.service.data.symbols)), np.nan))


def test_a_non_finite_action_holds_instead_of_trading(service: DecisionService) -> None:
    broken = DecisionService(NaNActions(service), service.data, NEVER_STALE)
    a = service.data.symbols[0]
    response = broken.decide([_request(service, positions={a: 0.2})])[0]
    assert response.fallback and "non-finite" in (response.reason or "")
    assert response.decisions[a].target_weight == pytest.approx(0.2)


class NaNLogStd(NaNActions):
    """A loaded Gaussian handle whose log-std is NaN and whose mean (so its action) is finite."""

    def act_with_inputs(self, obs: Any) -> Any:
        import torch

        out = self.service.handle.act_with_inputs(obs)
        mean, log_std = out.dist_inputs.clone().chunk(2, dim=-1)
        assert np.isfinite(np.asarray(out.action)).all()  # the action reads only the mean
        return out._replace(dist_inputs=torch.cat([mean, torch.full_like(log_std, float("nan"))], dim=-1))


def test_a_nan_log_std_holds_though_the_action_is_finite(service: DecisionService) -> None:
    a = service.data.symbols[0]
    request = _request(service, positions={a: 0.2})
    assert not service.decide([request])[0].fallback
    response = DecisionService(NaNLogStd(service), service.data, NEVER_STALE).decide([request])[0]
    assert response.fallback and "non-finite" in (response.reason or "")  # was: traded, confidence 0
    assert response.decisions[a].target_weight == pytest.approx(0.2)
    assert all(d.confidence == 0.0 and not d.tradeable for d in response.decisions.values())


def test_the_probe_decides_every_symbol_and_refuses_a_policy_falling_back(service: DecisionService) -> None:
    answer = service.probe()
    assert not answer.fallback and list(answer.decisions) == list(service.data.symbols)
    assert answer.as_of == service.closed_at(-1) and answer.features_as_of == _utc(service.data.ts[-1])

    with pytest.raises(RuntimeError, match=r"^alpha@\d+ fell back on a probe decision .*non-finite action"):
        DecisionService(NaNActions(service), service.data, NEVER_STALE).probe()


def test_attributions_are_gradient_times_input_of_the_symbols_own_features(service: DecisionService) -> None:
    import torch
    from ray.rllib.core.columns import Columns

    plain = _request(service)
    asked = plain.model_copy(update={"attributions": True})
    without, with_ = service.decide([plain, asked])
    assert all(d.attributions is None for d in without.decisions.values())
    names = service.observed_features
    n, f = len(service.data.symbols), len(names)
    obs = np.asarray(service.env_observation([service.prepare(asked, datetime.now(UTC))]), dtype=np.float32)

    def mean(x: np.ndarray, i: int) -> float:
        with torch.no_grad():
            out = service.handle.module.forward_inference({Columns.OBS: torch.as_tensor(x)})
        return float(out[Columns.ACTION_DIST_INPUTS][0, i])

    for i in (0, n // 2):
        got = with_.decisions[service.data.symbols[i]].attributions
        assert got is not None and len(got) == 3 and set(got) <= set(names)
        # market-wide columns (the same for every symbol at the bar) are never a symbol's own reason
        same_everywhere = {names[c] for c in range(f) if np.ptp(obs[0, : n * f].reshape(n, f)[:, c]) == 0}
        assert {"vix_level", "vix_term"} <= same_everywhere and not set(got) & same_everywhere
        values = list(got.values())
        assert [abs(v) for v in values] == sorted((abs(v) for v in values), reverse=True)
        name, value = next(iter(got.items()))
        k = i * f + names.index(name)
        eps = 1e-3 * max(abs(float(obs[0, k])), 1.0)
        up, down = obs.copy(), obs.copy()
        up[0, k] += eps
        down[0, k] -= eps
        numeric = (mean(up, i) - mean(down, i)) / (2 * eps) * float(obs[0, k])
        assert value == pytest.approx(numeric, rel=5e-2, abs=1e-6)


@pytest.fixture(scope="module")
def gated_service(smoke_runs: Callable[[str], SmokeRun], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session's smoke search of the ``gating`` spec (MultiDiscrete gate actions), promoted and
    ready to serve (the same search ``test_smoke_search[gating]`` checks)."""
    from raytrade.cluster.promote import promote
    from raytrade.serve.app import load_service

    work = tmp_path_factory.mktemp("gated")
    promote(smoke_runs("gating").run_dir, "gate", work / "registry")
    return load_service("gate", str(work / "registry"), NEVER_STALE)


@pytest.mark.ray
def test_a_gated_policy_is_served_with_modes_kelly_sizes_and_the_same_constraints(gated_service: Any) -> None:
    from raytrade.envs.config import GatedEnvConfig
    from raytrade.envs.gate import contract_gate
    from raytrade.envs.gym_envs import GATE_MODES, gate_orders

    service = DecisionService(gated_service.handle, gated_service.data, UNCAPPED)
    assert service.gated and isinstance(service.env_cfg, GatedEnvConfig)
    data, cfg = service.data, service.env_cfg
    bar = data.n_steps - cfg.sim.episode_len - 2
    request = _request(service, bar).model_copy(update={"attributions": True})
    response = service.decide([request])[0]
    assert not response.fallback

    # the same greedy gate actions, sized by the env's own rule and projected by the simulator's step
    sim = MarketSimulator(data, cfg.sim, n_envs=1)
    sim.reset(starts=np.array([bar]))
    rb = cfg.sim.kill_switch.release_after_bars
    gate = contract_gate(data, cfg)
    columns = feature_index(data, cfg.feature_columns)
    obs = batched_observation(sim.observe(), columns, rb, cfg.flat_obs, cfg.normalizer, gate.open[[bar]])
    np.testing.assert_array_equal(service.env_observation([service.prepare(request, datetime.now(UTC))]), obs)
    actions = np.asarray(service.handle.act(obs))
    orders = gate_orders(actions, gate.kelly[[bar]], cfg)
    result = sim.step(orders.target)
    np.testing.assert_allclose(_targets(response), result.target_weights[0], rtol=0, atol=1e-12)
    for i, d in enumerate(response.decisions.values()):
        assert d.gate_mode == GATE_MODES[int(orders.mode[0, i])]
        assert 0.0 <= d.confidence <= 1.0 and d.attributions is not None and len(d.attributions) == 3


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"account": {"equity": float("nan")}}, "equity"),
        ({"account": {"equity": float("inf")}}, "equity"),
        ({"drawdown_pct": 0.05}, "drawdown_pct"),
        ({"positions": [{"symbol": "X", "qty": "ten", "side": "long", "market_value": "1"}]}, "qty"),
        ({"analysis": {"X": {"bid_price": float("nan")}}}, "bid_price"),
        ({"as_of": "2026-01-05T10:00:00"}, "as_of"),
        (
            {"positions": [{"symbol": "X", "qty": "1", "side": "long", "market_value": "1"}] * 2},
            "appears twice",
        ),
        ({"as_of": "9999-12-31T23:59:59-01:00"}, "as_of"),
        ({"account": {"equity": 2e12}}, "equity"),
        ({"account": {"equity": 0.5}}, "equity"),
        (
            {"positions": [{"symbol": "X", "qty": "1", "side": "long", "market_value": "-1e13"}]},
            "market_value",
        ),
        ({"positions": [{"symbol": "X" * 33, "qty": "1", "side": "long", "market_value": "1"}]}, "symbol"),
        ({"analysis": {"X" * 33: {"bid_price": 1.0}}}, "analysis"),
        ({"analysis": {"X": {"block_reason": "x" * 513}}}, "block_reason"),
        (
            {
                "positions": [
                    {"symbol": f"S{i}", "qty": "1", "side": "long", "market_value": "1"} for i in range(2001)
                ]
            },
            "positions",
        ),
        ({"analysis": {f"S{i}": {} for i in range(2001)}}, "analysis"),
    ],
)
def test_schema_rejects_bad_input_naming_the_field(patch: dict[str, Any], field: str) -> None:
    body: dict[str, Any] = {
        "account": {"equity": 1000.0},
        "drawdown_pct": -0.01,
        "analysis": {"X": {"bid_price": 1.0, "ask_price": 1.01}},
    }
    body.update(patch)
    with pytest.raises(ValidationError) as err:
        ActRequest.model_validate(body)
    assert field in str(err.value)


def test_broker_strings_are_parsed() -> None:
    req = ActRequest.model_validate(
        {
            "account": {"equity": "104250.17", "cash": "41210.33"},
            "positions": [{"symbol": "NVDA", "qty": "40", "side": "long", "market_value": "7412.80"}],
            "drawdown_pct": "-0.021",
            "analysis": {"NVDA": {"bid_price": 185.29, "ask_price": 185.35}},
        }
    )
    assert req.account.equity == pytest.approx(104250.17) and req.positions[0].signed_value() == 7412.80


# ---------------------------------------------------------------------------------- HTTP (Ray Serve)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(registry: Path, ray_session: None) -> Iterator[str]:
    from ray import serve

    from raytrade.serve.app import APP_NAME, HttpConfig, ServiceConfig, build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServiceConfig(model="alpha", registry=str(registry), decide=NEVER_STALE, batch_wait_ms=20)
    http = HttpConfig(max_as_of_skew_s=None)  # the requests' as_of are the synthetic data's bars
    serve.run(build_app(config, TOKEN, replica_cpus=0.5, http=http), name=APP_NAME, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _headers(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.ray
def test_http_act_matches_the_decision_core(served: str, service: DecisionService) -> None:
    import httpx

    assert httpx.get(f"{served}/v1/health", timeout=10).json() == {"status": "ok"}
    health = httpx.get(f"{served}/v1/health", headers=_headers(), timeout=10).json()
    assert health["status"] == "ok" and health["model"] == "alpha@1"
    request = _request(service, positions={service.data.symbols[0]: 0.2})
    body = request.model_dump(mode="json")
    r = httpx.post(f"{served}/v1/act", json=body, headers=_headers(), timeout=10)
    assert r.status_code == 200, r.text
    expected = service.decide([request])[0]
    got = r.json()
    assert got["model"] == "alpha@1"
    for sym, d in expected.decisions.items():
        assert got["decisions"][sym]["target_weight"] == d.target_weight
    model = httpx.get(f"{served}/v1/model", headers=_headers(), timeout=10).json()
    assert model["symbols"] == list(service.data.symbols)


@pytest.mark.ray
def test_http_rejects_without_the_token_and_names_bad_fields(served: str, service: DecisionService) -> None:
    import httpx

    body = _request(service).model_dump(mode="json")
    assert httpx.post(f"{served}/v1/act", json=body, timeout=10).status_code == 401
    assert httpx.post(f"{served}/v1/act", json=body, headers=_headers("wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{served}/v1/model", timeout=10).status_code == 401

    nan_body = json.dumps(body).replace('"equity": 100000.0', '"equity": NaN')
    assert "NaN" in nan_body
    r = httpx.post(
        f"{served}/v1/act",
        content=nan_body,
        headers={**_headers(), "content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 422 and ["body", "account", "equity"] in [e["loc"] for e in r.json()["detail"]]

    unknown = {**body, "analysis": {"ZZZ": {"bid_price": 1.0, "ask_price": 1.1}}}
    r = httpx.post(f"{served}/v1/act", json=unknown, headers=_headers(), timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "analysis", "ZZZ"]


@pytest.mark.ray
def test_the_replica_checks_the_token_before_the_body_and_caps_its_size(served: str) -> None:
    import httpx

    huge = b"{" + b" " * (2 << 20)
    json_type = {"content-type": "application/json"}
    assert httpx.post(f"{served}/v1/act", content=huge, headers=json_type, timeout=30).status_code == 401
    r = httpx.post(f"{served}/v1/act", content=huge, headers={**_headers(), **json_type}, timeout=30)
    assert r.status_code == 413 and r.json() == {"detail": f"request body over {1 << 20} bytes"}
    assert httpx.get(f"{served}/openapi.json", headers=_headers(), timeout=10).status_code == 404


@pytest.mark.ray
def test_concurrent_requests_are_batched(served: str, service: DecisionService) -> None:
    import httpx

    body = _request(service).model_dump(mode="json")
    before = httpx.get(f"{served}/v1/health", headers=_headers(), timeout=10).json()

    def post(_: int) -> int:
        return httpx.post(f"{served}/v1/act", json=body, headers=_headers(), timeout=20).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(32)))
    after = httpx.get(f"{served}/v1/health", headers=_headers(), timeout=10).json()
    assert codes == [200] * 32
    assert after["requests"] - before["requests"] == 32
    assert after["batches"] - before["batches"] < 32  # several requests shared a forward


@pytest.mark.ray
@pytest.mark.slow
def test_hot_swap_to_a_new_version_drops_no_request(
    served: str, service: DecisionService, registry: Path, ppo_smoke_run: Path
) -> None:
    import httpx

    body = _request(service).model_dump(mode="json")
    seen: list[tuple[int, int]] = []  # (status, model_version)
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=20) as client:
            while not stop.is_set():
                r = client.post(f"{served}/v1/act", json=body, headers=_headers())
                seen.append(
                    (r.status_code, r.json().get("model_version", -1) if r.status_code == 200 else -1)
                )

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        time.sleep(0.5)
        _promote(ppo_smoke_run, registry)  # version 2 becomes latest; replicas follow it
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(v == 2 for _, v in seen):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=30)
    statuses = {s for s, _ in seen}
    versions = [v for _, v in seen]
    assert statuses == {200}, f"non-200 answers during the swap: {statuses}"
    assert 1 in versions and versions[-1] == 2
    first_new = versions.index(2)
    assert all(v == 2 for v in versions[first_new:]), "an old version answered after the swap"


@pytest.mark.ray
@pytest.mark.slow
def test_the_loops_client_trades_part_of_the_universe(served: str, service: DecisionService) -> None:
    """A loop that trades two of the model's symbols gets a real answer for them from the served model
    (the service's holds of the other symbols are dropped by the client, not taken for a bad answer)."""
    from pydantic import SecretStr

    from raytrade.serve.client import ClientConfig, PolicyClient

    two = list(service.data.symbols[:2])
    request = _request(service, quoted=two)
    assert len(service.decide([request])[0].decisions) == len(service.data.symbols)  # the service's own
    config = ClientConfig(base_url=served, timeout_s=5.0, total_deadline_s=10.0)
    with PolicyClient(config, SecretStr(TOKEN)) as client:
        answer = client.act(request)
    assert not answer.fallback, answer.reason
    assert list(answer.decisions) == two


@pytest.mark.parametrize("universe", ["part", "whole"])
def test_a_paper_cycle_against_the_served_model_trades_its_answer(
    served: str, service: DecisionService, tmp_path: Path, universe: str
) -> None:
    """The paper loop as ``raytrade live --paper`` runs it (PolicyClient, AlpacaBroker with the real
    alpaca-py clients on loopback fakes) against the served model: the answer is the model's, not a
    fallback, for the symbols the loop trades, and every order follows it."""
    from datetime import UTC, datetime

    from pydantic import SecretStr

    from raytrade.cluster.settings import Settings
    from raytrade.serve.alpaca_broker import AlpacaBroker
    from raytrade.serve.client import ClientConfig, PolicyClient
    from raytrade.serve.live import LiveLoop
    from tests.fake_alpaca import TEST_KEYS, FakeAlpaca
    from tests.fake_alpaca_trading import FakeAlpacaTrading

    equities = [
        s for s, c in zip(service.data.symbols, service.data.asset_class, strict=True) if c != "crypto"
    ]
    symbols = equities[:2] if universe == "part" else list(service.data.symbols)
    now = datetime.now(UTC)
    quote = {"t": now.isoformat().replace("+00:00", "Z"), "bp": 99.99, "bs": 5.0, "ap": 100.01, "as": 5.0}
    # 300 shares at 100: 23 % of equity, above the 15 % per-symbol cap whatever the model says
    held = equities[0]
    pairs = [f"{s[:-3]}/USD" for s in symbols if s not in equities]  # the service's SYC00USD is SYC00/USD
    book = {s: (99.99, 100.01) for s in [*equities, *pairs]}
    with (
        FakeAlpacaTrading(cash=100_000, positions={held: 300}, quotes=book) as trading,
        FakeAlpaca() as data,
    ):
        data.stock_quotes = {s: {**quote, "bx": "V", "ax": "V", "c": ["R"], "z": "C"} for s in equities}
        levels = {"b": [{"p": 99.99, "s": 50.0}], "a": [{"p": 100.01, "s": 50.0}]}
        data.crypto_orderbooks = {pair: {"t": quote["t"], **levels} for pair in pairs}
        settings = Settings(
            alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1], alpaca_data_url=data.url
        )
        broker = AlpacaBroker(settings.alpaca_access(), trading_url=trading.url)
        config = ClientConfig(base_url=served, timeout_s=5.0, total_deadline_s=10.0)
        with (
            PolicyClient(config, SecretStr(TOKEN)) as client,
            LiveLoop(broker, client, symbols, tmp_path / "state.json", reset=True) as loop,
        ):
            loop.start()
            report = loop.cycle(now)
    assert not report.answer.fallback, report.answer.reason
    # the served model (the module's replica follows the registry's latest alpha, which other tests promote)
    assert report.answer.model.startswith("alpha@") and set(report.answer.decisions) == set(symbols)
    assert report.rejected == {} and len(report.submitted) == len(report.plans)
    assert any(p.symbol == held and p.side == "sell" for p in report.plans), report.plans
    quoted = {s for s, d in report.answer.decisions.items() if d.tradeable}
    assert quoted == set(symbols), "a symbol with a quote was not tradeable"
    for plan in report.plans:  # each order moves its symbol toward the model's target
        d = report.answer.decisions[plan.symbol]
        assert (plan.side == "buy") == (d.target_weight > d.current_weight), (plan, d)


def test_a_killed_replica_means_holds_then_recovery_never_an_exception(
    served: str, service: DecisionService
) -> None:
    import ray
    from pydantic import SecretStr

    from raytrade.serve.client import ClientConfig, PolicyClient

    a = service.data.symbols[0]
    request = _request(service, positions={a: 0.3})
    replicas = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::") and "PolicyService" in actor["name"]
    ]
    assert replicas, "no Serve replica found"
    config = ClientConfig(base_url=served, timeout_s=1.0, retries=1, total_deadline_s=4.0)  # rule read + act
    answers = []
    with PolicyClient(config, SecretStr(TOKEN)) as client:
        assert not client.act(request).fallback
        ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            answer = client.act(request)  # must never raise
            answers.append(answer)
            if answer.fallback:
                assert answer.decisions[a].target_weight == pytest.approx(0.3)
                assert all(d.gate_mode == "hold" for d in answer.decisions.values())
            elif any(x.fallback for x in answers) or len(answers) >= 20:
                break  # recovered (or Serve routed around the dead replica without a gap)
            time.sleep(0.1)
    assert not answers[-1].fallback, "the service did not come back within 90 s"


# ---------------------------------------------------------------------------------- HTTP in process


def _client(service: DecisionService, **http: Any) -> Any:
    """The service's real FastAPI app (create_api) over a DirectBackend: the HTTP surface without Ray."""
    from fastapi.testclient import TestClient

    from raytrade.serve.app import DirectBackend, HttpConfig, create_api

    return TestClient(create_api(DirectBackend(service, TOKEN), HttpConfig(**http)))


def test_in_process_act_matches_the_decision_core(service: DecisionService) -> None:
    request = _request(service, positions={service.data.symbols[0]: 0.2})
    with _client(service, max_as_of_skew_s=None) as client:
        r = client.post("/v1/act", json=request.model_dump(mode="json"), headers=_headers())
    assert r.status_code == 200, r.text
    expected = service.decide([request])[0]
    assert [d["target_weight"] for d in r.json()["decisions"].values()] == _targets(expected).tolist()


def test_health_says_only_that_it_is_up_without_the_token(service: DecisionService) -> None:
    with _client(service) as client:
        assert client.get("/v1/health").json() == {"status": "ok"}
        assert client.get("/v1/health", headers=_headers("wrong")).json() == {"status": "ok"}
        full = client.get("/v1/health", headers=_headers()).json()
    assert full["model"] == "alpha@1" and full["requests"] == 0 and "data_last_bar" in full


def test_docs_are_off_unless_asked_for(service: DecisionService) -> None:
    paths = ("/docs", "/redoc", "/openapi.json")
    with _client(service) as client:
        assert [client.get(p, headers=_headers()).status_code for p in paths] == [404, 404, 404]
        assert [client.get(p).status_code for p in paths] == [401, 401, 401]
    with _client(service, docs=True) as client:
        assert [client.get(p).status_code for p in paths] == [200, 200, 200]
        document = client.get("/openapi.json").json()
    assert document["paths"].keys() >= {"/v1/act", "/v1/health", "/v1/model"}
    # the act route reads its body itself: the request's models are still documented, every $ref resolves
    body = document["paths"]["/v1/act"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = document["components"]["schemas"]
    assert body == {"$ref": "#/components/schemas/ActRequest"}
    assert "422" in document["paths"]["/v1/act"]["post"]["responses"]
    assert components["ActRequest"]["properties"].keys() >= {"account", "positions", "analysis", "as_of"}
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs and refs <= components.keys(), refs - components.keys()


def test_a_body_that_is_not_json_or_not_a_request_is_422_naming_the_field(service: DecisionService) -> None:
    json_type = {**_headers(), "content-type": "application/json"}
    with _client(service, max_as_of_skew_s=None) as client:
        r = client.post("/v1/act", content=b"{not json", headers=json_type)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
        assert r.json()["detail"][0]["loc"][0] == "body"
        body = _request(service).model_dump(mode="json")
        r = client.post("/v1/act", json={**body, "account": {"equity": "lots"}}, headers=_headers())
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "account", "equity"], r.text
        r = client.post("/v1/act", content=b"[1, 2]", headers=json_type)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"], r.text
        r = client.post("/v1/act", json={**body, "account": {"equity": "250000"}}, headers=_headers())
        assert r.status_code == 200, r.text  # a broker's number as a string, as Alpaca sends them
        # what FastAPI's own JSON parsing took is still taken: a byte-order mark, UTF-16
        raw = json.dumps(body)
        for encoded in (b"\xef\xbb\xbf" + raw.encode(), raw.encode("utf-16")):
            assert client.post("/v1/act", content=encoded, headers=json_type).status_code == 200
        # and a body that is not sent as JSON is refused, as it was
        for kind in (
            {"content-type": "text/plain"},
            {"content-type": "application/x-www-form-urlencoded"},
            {},
        ):
            r = client.post("/v1/act", content=raw.encode(), headers={**_headers(), **kind})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"], (kind, r.text)
        assert (
            client.post(
                "/v1/act",
                content=raw.encode(),
                headers={**json_type, "content-type": "application/json; charset=utf-8"},
            ).status_code
            == 200
        )


def test_a_body_nested_deeper_than_python_recurses_is_422_not_500(service: DecisionService) -> None:
    """pydantic-core refuses it, and the json.loads fallback raised RecursionError: a 500."""
    json_type = {**_headers(), "content-type": "application/json"}
    body = json.dumps(_request(service).model_dump(mode="json"))
    nested = body.replace('"account": {', '"account": {"x": ' + "[" * 5000 + "]" * 5000 + ", ", 1)
    with _client(service, max_as_of_skew_s=None) as client:
        for raw in (b"[" * 100_000 + b"]" * 100_000, nested.encode()):
            r = client.post("/v1/act", content=raw, headers=json_type)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body", r.text[:200]


def test_the_token_is_checked_before_a_malformed_or_huge_body(service: DecisionService) -> None:
    huge = b'{"account": {"equity": 1}, "pad": "' + b"x" * (2 << 20) + b'"}'
    json_type = {"content-type": "application/json"}
    with _client(service) as client:
        assert client.post("/v1/act", content=b"{not json", headers=json_type).status_code == 401
        assert client.post("/v1/act", content=huge, headers=json_type).status_code == 401
        r = client.post("/v1/act", content=huge, headers={**_headers(), **json_type})
        assert r.status_code == 413 and r.json() == {"detail": f"request body over {1 << 20} bytes"}
        r = client.post("/v1/act", content=b"{not json", headers={**_headers(), **json_type})
        assert r.status_code == 422


def test_as_of_far_from_the_server_clock_or_out_of_range_is_422(service: DecisionService) -> None:
    body = _request(service).model_dump(mode="json")
    now = datetime.now(UTC)
    with _client(service) as client:  # default: 15 minutes of skew
        for as_of in (now - timedelta(days=1), now + timedelta(minutes=16)):
            r = client.post("/v1/act", json={**body, "as_of": as_of.isoformat()}, headers=_headers())
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "as_of"], r.text
        r = client.post("/v1/act", json={**body, "as_of": "9999-12-31T23:59:59-01:00"}, headers=_headers())
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "as_of"], r.text
        r = client.post("/v1/act", json={**body, "as_of": now.isoformat()}, headers=_headers())
        assert r.status_code == 200, r.text


def _act_bodies(symbols: list[str]) -> Any:
    """Hypothesis strategy: /v1/act bodies shaped like ActRequest, with values from valid to hostile."""
    from datetime import timezone

    from hypothesis import strategies as st

    numbers = st.one_of(
        st.floats(-2e12, 2e12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**20), 10**20),
        st.sampled_from(["40", "-61.70", "1e308", "-1e-308", "nan", "inf", "", " 7 ", "ten"]),
        st.none(),
        st.booleans(),
    )
    symbol = st.one_of(st.sampled_from(symbols), st.text(max_size=40))
    # a valid request's symbols: printable ASCII without spaces (the schema's SYMBOL_PATTERN)
    ticker = st.one_of(
        st.sampled_from(symbols),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=32),
    )
    offsets = st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    )
    as_of = st.one_of(
        st.none(),
        st.builds(lambda d, o: d.replace(tzinfo=timezone(o)).isoformat(), st.datetimes(), offsets),
        st.datetimes().map(datetime.isoformat),
        st.text(max_size=30),
        st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]),
    )
    position = st.fixed_dictionaries(
        {
            "symbol": symbol,
            "qty": numbers,
            "side": st.sampled_from(["long", "short", "x"]),
            "market_value": numbers,
        },
        optional={"current_price": numbers, "unrealized_pl": numbers},
    )
    fields = ("bid_price", "ask_price", "spread_bps", "last_close", "expected_move_pct", "kelly_fraction")
    snapshot = st.fixed_dictionaries(
        {},
        optional={
            **dict.fromkeys(fields, numbers),
            "trade_blocked": st.booleans(),
            "block_reason": st.one_of(st.none(), st.text(max_size=20)),
        },
    )
    account = st.fixed_dictionaries(
        {"equity": numbers}, optional={"cash": numbers, "buying_power": numbers, "last_equity": numbers}
    )
    hostile = st.fixed_dictionaries(
        {
            "account": account,
            "positions": st.lists(position, max_size=5),
            "drawdown_pct": st.one_of(st.floats(-1.0, 0.0), numbers),
            "analysis": st.dictionaries(symbol, snapshot, max_size=len(symbols) + 2),
        },
        optional={"as_of": as_of, "attributions": st.booleans()},
    )
    # valid requests with extreme values reach the decision core: finite weights, no 5xx
    values = st.floats(-1e12, 1e12)  # the schema's bounds (beyond them: test_schema_rejects_bad_input...)
    prices = st.one_of(st.none(), values)
    valid = st.fixed_dictionaries(
        {
            "account": st.fixed_dictionaries(
                {"equity": st.floats(1.0, 1e12)},
                optional={"cash": values, "buying_power": st.floats(0, 1e12)},
            ),
            "positions": st.lists(
                st.fixed_dictionaries(
                    {
                        "symbol": ticker,
                        "qty": values,
                        "side": st.sampled_from(["long", "short"]),
                        "market_value": values,
                    }
                ).map(_long_signs),
                max_size=5,
                unique_by=lambda p: p["symbol"],
            ),
            "drawdown_pct": st.floats(-1.0, 0.0),
            "analysis": st.dictionaries(
                st.sampled_from(symbols),
                st.fixed_dictionaries(
                    {"bid_price": prices, "ask_price": prices, "trade_blocked": st.booleans()}
                ),
                min_size=1,
            ),
        },
        optional={
            "as_of": st.one_of(
                st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)).map(
                    lambda d: d.replace(tzinfo=UTC).isoformat()
                ),
                st.builds(lambda d, o: d.replace(tzinfo=timezone(o)).isoformat(), st.datetimes(), offsets),
                st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]),
            ),
            "attributions": st.booleans(),
        },
    )
    body = st.one_of(valid, hostile)
    return st.one_of(body.map(lambda b: json.dumps(b).encode()), st.binary(max_size=200))


def _long_signs(position: dict[str, Any]) -> dict[str, Any]:
    """A valid position: a long's qty and market_value are >= 0 (a short's may have either sign)."""
    if position["side"] != "long":
        return position
    return position | {"qty": abs(position["qty"]), "market_value": abs(position["market_value"])}


def test_fuzzed_act_requests_never_get_a_5xx(service: DecisionService) -> None:
    from hypothesis import HealthCheck, given, settings

    from raytrade.serve.answer_check import answer_breach
    from raytrade.serve.schemas import ActRequest, ActResponse

    statuses: dict[int, int] = {}
    with _client(service, max_as_of_skew_s=None) as client:

        @settings(
            max_examples=200,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(_act_bodies(list(service.data.symbols)))
        def check(content: bytes) -> None:
            r = client.post(
                "/v1/act", content=content, headers={**_headers(), "content-type": "application/json"}
            )
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (content[:300], r.text[:300])
            if r.status_code == 200:
                answer = ActResponse.model_validate(r.json())
                weights = [(d.target_weight, d.current_weight) for d in answer.decisions.values()]
                assert np.isfinite(weights).all() and np.isfinite(answer.gross_exposure), weights
                # and it keeps every rule a client holds an answer to (serve.answer_check)
                request = ActRequest.model_validate_json(content)
                assert answer_breach(request, answer, service.config.caps) is None, content[:300]

        started = time.monotonic()
        check()
    assert time.monotonic() - started < 120
    # 400: bytes that are not JSON; 422: JSON that is not a valid request
    assert set(statuses) <= {200, 400, 422} and statuses.get(200, 0) >= 25, statuses


# ---------------------------------------------------------------------------------- CLI


def test_serve_cli_refuses_without_a_token_or_with_an_unknown_model(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster.cli import main

    monkeypatch.delenv("RAYTRADE_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    result = CliRunner().invoke(main, ["serve", "--model", "alpha", "--registry", str(registry)])
    assert result.exit_code == 2 and "RAYTRADE_SERVE_TOKEN" in result.output

    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", TOKEN)
    result = CliRunner().invoke(main, ["serve", "--model", "nope", "--registry", str(registry)])
    assert result.exit_code == 2 and "available: alpha" in result.output
    assert TOKEN not in result.output


# ---------------------------------------------------------------------------------- replica reloads


def _wait_idle(holder: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    time.sleep(0.05)
    while holder.loading.locked() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """A replica's load freezes the heap (``serve.heap``); the test process gets it back unfrozen."""
    yield
    gc.unfreeze()


def test_a_replica_follows_latest_and_keeps_serving_when_a_version_cannot_be_loaded(
    registry: Path, ppo_smoke_run: Path, tmp_path: Path, unfrozen: None
) -> None:
    import shutil

    from raytrade.serve.app import PolicyHolder, ServiceConfig

    reg = tmp_path / "registry"
    shutil.copytree(registry, reg)
    holder = PolicyHolder()
    first = holder.configure(ServiceConfig(model="alpha", registry=str(reg), decide=NEVER_STALE))
    assert not holder.refresh() and holder.service is first  # nothing changed: no reload

    _promote(ppo_smoke_run, reg)  # a new latest: followed in the background
    assert holder.refresh()
    _wait_idle(holder)
    second = holder.service
    assert second is not None and second is not first and second.handle.version == first.handle.version + 1

    _promote(ppo_smoke_run, reg)
    newest = reg / "alpha" / str(second.handle.version + 1)
    shutil.rmtree(newest / "module")  # a broken promotion: latest has no weights
    assert holder.refresh()
    _wait_idle(holder)
    assert holder.service is second, "a broken version replaced a working one"
    assert not holder.refresh(), "the same broken version is loaded again and again"
    assert gc.get_freeze_count() > 0, "the loaded heap was not frozen"


def test_a_promote_landing_while_a_replica_loads_is_followed(
    registry: Path, ppo_smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """The replica read its sources after the load: it served version 1 recorded as 2, and no refresh
    ever saw a change until latest moved again."""
    import shutil

    from raytrade.serve.app import PolicyHolder, ServiceConfig

    reg = tmp_path / "registry"
    shutil.copytree(registry, reg)
    holder = PolicyHolder()
    real = PolicyHolder._load

    def promoted_meanwhile(self: PolicyHolder, cfg: ServiceConfig, new_version: bool = False) -> Any:
        service = real(self, cfg, new_version)
        _promote(ppo_smoke_run, reg)  # lands after the load resolved latest
        return service

    monkeypatch.setattr(PolicyHolder, "_load", promoted_meanwhile)
    first = holder.configure(ServiceConfig(model="alpha", registry=str(reg), decide=NEVER_STALE))
    monkeypatch.setattr(PolicyHolder, "_load", real)
    assert holder.refresh(), "the version promoted during the load is never followed"
    _wait_idle(holder)
    assert holder.service is not None and holder.service.handle.version == first.handle.version + 1


def test_the_health_probes_signature_reads_a_manifest_once_per_stamp(
    registry: Path, synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serve's health probe computes the signature every few seconds on the replica's event loop:
    the manifest (~1 ms to parse) is read once, and again only when the file changes."""
    import os
    import shutil

    from raytrade.models import manifest as manifest_module
    from raytrade.models.registry import resolve
    from raytrade.serve import app as app_module

    reg = tmp_path / "registry"
    shutil.copytree(registry, reg)
    reads: list[str] = []
    real = manifest_module.read_manifest
    monkeypatch.setattr(
        manifest_module, "read_manifest", lambda folder: reads.append(str(folder)) or real(folder)
    )
    cfg = app_module.ServiceConfig(model="alpha@1", registry=str(reg), decide=NEVER_STALE)
    first = app_module._source_signature(cfg)
    assert app_module._source_signature(cfg) == first and len(reads) == 1

    path = resolve(reg, "alpha@1") / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["env_config"]["data"]["root"] = str(synthetic_store)  # another store
    stamp = path.stat().st_mtime_ns
    path.write_text(json.dumps(manifest))
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    moved = app_module._source_signature(cfg)
    files = sorted((synthetic_store / "features").glob("year=*/part-*.parquet"))
    assert len(reads) == 2 and moved == (None, len(files), max(f.stat().st_mtime_ns for f in files))


def test_a_replica_refuses_a_version_that_fails_its_probe(
    registry: Path, ppo_smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    import shutil

    from raytrade.serve.app import PolicyHolder, ServiceConfig

    reg = tmp_path / "registry"
    shutil.copytree(registry, reg)
    holder = PolicyHolder()
    first = holder.configure(ServiceConfig(model="alpha", registry=str(reg), decide=NEVER_STALE))
    _promote(ppo_smoke_run, reg)

    monkeypatch.setattr(DecisionService, "probe", _falls_back)
    assert holder.refresh()
    _wait_idle(holder)
    assert holder.service is first, "a version that failed its probe replaced a working one"


def _falls_back(self: DecisionService, batch_sizes: int = 1) -> Any:
    from raytrade.serve.decide import ProbeFellBack

    raise ProbeFellBack(f"{self.model_ref} fell back on a probe decision")


def test_new_bars_of_the_same_version_are_served_even_when_the_probe_falls_back(
    registry: Path, synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """Refusing them would keep the previous bars' features trading; served, every request holds."""
    import os
    import shutil

    from raytrade.models.registry import resolve
    from raytrade.serve.app import PolicyHolder, ServiceConfig

    store, reg = tmp_path / "store", tmp_path / "registry"
    shutil.copytree(synthetic_store, store)
    shutil.copytree(registry, reg)
    manifest_path = resolve(reg, "alpha@1") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["env_config"]["data"]["root"] = str(store)
    manifest_path.write_text(json.dumps(manifest))
    holder = PolicyHolder()
    first = holder.configure(ServiceConfig(model="alpha@1", registry=str(reg), decide=NEVER_STALE))
    monkeypatch.setattr(DecisionService, "probe", _falls_back)
    newest = max((store / "features").glob("year=*/part-*.parquet"), key=lambda f: f.stat().st_mtime_ns)
    os.utime(newest, ns=(newest.stat().st_atime_ns, newest.stat().st_mtime_ns + 10**9))  # "new bars"
    assert holder.refresh()
    _wait_idle(holder)
    assert holder.service is not first and holder.service is not None
