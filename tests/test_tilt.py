"""Policies that start from the baseline: the tilt action mode (a zero action is the baseline exactly,
in the env, through the evaluation harness, in validation scoring and in serving), the no-trade band
and the turnover penalty."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from raytrade.cluster.tune import TuneOptions
from raytrade.envs.actions import ActionConfig, band_hold, tilt_orders, weight_orders
from raytrade.envs.baseline_weights import BaselineDecision
from raytrade.envs.config import PortfolioEnvConfig, SimulatorConfig
from raytrade.envs.evaluation.harness import run_window
from raytrade.envs.evaluation.policies import baseline_spec, registry_spec
from raytrade.envs.gym_envs import GatedSymbolEnv, PortfolioEnv
from raytrade.envs.market_data import MarketData
from raytrade.envs.rewards import RewardConfig, compute_reward, init_reward_state, turnover_penalty
from raytrade.envs.rollout import replay_policy
from raytrade.envs.simulator import MarketSimulator
from raytrade.envs.synthetic_market import synthetic_market_data
from raytrade.models.catalog import rl_module_spec
from raytrade.models.inference import module_policy
from raytrade.models.registry_load import PolicyHandle
from raytrade.serve.caps import MAX_GROSS, MAX_PER_SYMBOL, ExposureCaps
from raytrade.serve.decide import DecisionService, ServeConfig
from raytrade.serve.schemas import ActRequest
from raytrade.tune_specs import get_spec

BASELINES = ("equal_weight", "inverse_vol", "kelly_lite")
OBSERVED = ("ret_1", "vol_20", "fc_mean")  # a tilt policy's observed columns in the scoring tests
N_STEPS = 80  # 2020-01-01 .. 2020-03-20, daily: month starts at bars 0, 31 and 60


def _data() -> MarketData:
    """Synthetic bars plus the consensus flag kelly_lite reads (on everywhere), with spreads narrowed
    to a fifth (under the loop's 25 bps gate), so every baseline invests."""
    data = synthetic_market_data(n_assets=4, n_steps=N_STEPS, seed=0)
    ok = np.ones((*data.features.shape[:2], 1), dtype=np.float32)
    features = data.features.copy()
    features[..., data.feature_names.index("spread_bps")] *= 0.2
    return replace(
        data,
        spread_bps=data.spread_bps * 0.2,
        features=np.concatenate([features, ok], axis=-1),
        feature_names=(*data.feature_names, "fc_consensus_ok"),
    )


def _env_config(mode: str, **action: Any) -> dict[str, Any]:
    return {"action": {"mode": mode, **action}, "sim": {"episode_len": N_STEPS - 1}}


def _episode(env: PortfolioEnv, actions: Any) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Step one whole episode: ``actions(k)``; returns (target weights [T, N], returns [T], infos)."""
    env.reset(seed=0)
    weights, equity, infos = [], [env.cfg.sim.initial_equity], []
    done, k = False, 0
    while not done:
        _, _, terminated, truncated, info = env.step(actions(k))
        weights.append(info["target_weights"])
        equity.append(info["equity"])
        infos.append(info)
        done, k = terminated or truncated, k + 1
    eq = np.array(equity)
    return np.array(weights), eq[1:] / eq[:-1] - 1.0, infos


# ------------------------------------------------------------------------------ pure mapping


def test_tilt_targets_are_the_allocation_plus_the_bounded_tilt() -> None:
    cfg = ActionConfig(mode="tilt:equal_weight", max_tilt=0.1)
    base = BaselineDecision(np.full((1, 4), 0.25), np.ones((1, 4), dtype=bool))
    orders = weight_orders(cfg, np.array([[1.0, -1.0, 0.5, 3.0]]), np.zeros((1, 4)), base)
    np.testing.assert_allclose(orders.target, [[0.35, 0.15, 0.30, 0.35]], rtol=0, atol=1e-15)
    assert not orders.hold.any()  # every tilt is nonzero: every asset trades


def test_a_zero_tilt_holds_where_the_baseline_holds_and_only_there() -> None:
    cfg = ActionConfig(mode="tilt:inverse_vol", max_tilt=0.05)
    base = BaselineDecision(np.array([[0.5, 0.3, 0.2]]), np.array([[True, True, False]]))
    orders = tilt_orders(cfg, np.array([[0.0, 0.02, 0.0]]), np.zeros((1, 3)), base)
    assert orders.hold.tolist() == [[True, False, False]]
    np.testing.assert_allclose(orders.target, [[0.5, 0.32, 0.2]], rtol=0, atol=1e-15)


def test_a_tilt_mode_without_the_baseline_decision_is_refused() -> None:
    with pytest.raises(ValueError, match="tilt:kelly_lite"):
        weight_orders(ActionConfig(mode="tilt:kelly_lite"), np.zeros((1, 2)), np.zeros((1, 2)), None)


def test_max_tilt_and_mode_are_validated_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="max_tilt"):
        PortfolioEnvConfig.model_validate({"action": {"mode": "tilt:equal_weight", "max_tilt": 0.0}})
    with pytest.raises(ValidationError, match="mode"):
        PortfolioEnvConfig.model_validate({"action": {"mode": "tilt:buy_and_hold"}})


def test_the_band_holds_targets_within_it_and_is_off_at_zero() -> None:
    w_now = np.array([[0.50, 0.50, 0.0]])
    target = np.array([[0.52, 0.45, 0.0]])
    assert band_hold(target, w_now, 0.03).tolist() == [[True, False, True]]
    assert not band_hold(target, w_now, 0.0).any()


def test_turnover_penalty_is_the_coefficient_times_the_turnover() -> None:
    assert turnover_penalty(0.5, np.array([0.2, 0.0])).tolist() == [0.1, 0.0]
    g, dd = np.array([0.01, -0.02]), np.zeros(2)
    plain, _ = compute_reward(RewardConfig(scale=2.0), g, dd, init_reward_state(2))
    cfg = RewardConfig(scale=2.0, turnover_penalty=0.5)
    penalised, _ = compute_reward(cfg, g, dd, init_reward_state(2), np.array([0.2, 0.0]))
    np.testing.assert_allclose(plain - penalised, [2.0 * 0.5 * 0.2, 0.0], rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="turnover_penalty"):
        compute_reward(cfg, g, dd, init_reward_state(2))


# ------------------------------------------------------------------------------ the env


@pytest.mark.parametrize("baseline", BASELINES)
def test_a_zero_action_episode_is_the_baseline_run_by_the_evaluation_harness(baseline: str) -> None:
    data = _data()
    env = PortfolioEnv(_env_config(f"tilt:{baseline}"), data=data)
    weights, returns, _ = _episode(env, lambda k: np.zeros(4, dtype=np.float32))
    sim = SimulatorConfig(episode_len=N_STEPS - 1)
    spec = baseline_spec(baseline)
    harness = run_window(spec, data, seed=0, sim=sim)
    rollout = replay_policy(data, spec.make(data, 0), sim)
    assert np.abs(rollout.weights).sum() > 1.0  # the baseline does invest
    np.testing.assert_allclose(weights, rollout.weights[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(returns, rollout.returns[0], rtol=0, atol=1e-12)
    # the harness closes the book at the window's end (training does not): the last bar differs by it
    np.testing.assert_allclose(returns[:-1], harness.returns[:-1], rtol=0, atol=1e-12)
    closed = replay_policy(data, spec.make(data, 0), sim, close_at_end=True)
    np.testing.assert_allclose(harness.returns, closed.returns[0], rtol=0, atol=1e-12)


def test_a_flat_gate_is_the_baseline_too() -> None:
    data = _data()
    gated = GatedSymbolEnv(_env_config("tilt:inverse_vol"), data=data)
    weights = PortfolioEnv(_env_config("tilt:inverse_vol"), data=data)
    flat, _, _ = _episode(gated, lambda k: np.zeros(12, dtype=np.int64))  # mode 0 = flat, every symbol
    zero, _, _ = _episode(weights, lambda k: np.zeros(4, dtype=np.float32))
    np.testing.assert_allclose(flat, zero, rtol=0, atol=1e-12)


def test_a_full_tilt_moves_its_assets_exactly_max_tilt_off_the_allocation() -> None:
    data = _data()
    env = PortfolioEnv(_env_config("tilt:equal_weight", max_tilt=0.05), data=data)
    tilt = np.array([1.0, -1.0, 0.0, 0.0], dtype=np.float32)
    weights, _, _ = _episode(env, lambda k: tilt)
    listed = data.listed[:-1]
    allocation = np.where(listed, 1.0 / np.maximum(listed.sum(-1, keepdims=True), 1), 0.0)
    kept = (listed & data.listed[1:])[:, :2]  # an asset delisted at t + 1 is sold instead
    moved = (weights - allocation)[:, :2][kept]
    np.testing.assert_allclose(np.abs(moved), 0.05, rtol=0, atol=1e-12)


def test_a_move_inside_the_band_trades_nothing_and_pays_nothing() -> None:
    data = _data()
    env = PortfolioEnv({"action": {"no_trade_band": 0.02}, "sim": {"episode_len": 10}}, data=data)
    env.reset(seed=0)
    env.step(np.full(4, 0.2, dtype=np.float32))
    w_now = env.sim.weights()[0]
    nudge = np.where(data.listed[env.sim.t[0]], w_now + 0.015, 0.0).astype(np.float32)
    units = env.sim.units.copy()
    _, _, _, _, info = env.step(nudge)
    np.testing.assert_array_equal(env.sim.units, units)
    assert info["costs"]["fee"] == info["costs"]["spread"] == info["costs"]["slippage"] == 0.0


def test_the_turnover_penalty_reaches_the_reward_exactly() -> None:
    data = _data()
    plain = MarketSimulator(data, SimulatorConfig(episode_len=10), seed=0)
    taxed = MarketSimulator(
        data, SimulatorConfig(episode_len=10, reward=RewardConfig(turnover_penalty=0.25)), seed=0
    )
    target = np.where(data.listed[plain.t], 0.3, 0.0)
    before = plain.equity.copy()
    a, b = plain.step(target), taxed.step(target)
    turnover = np.abs(a.traded_notional).sum(-1) / before
    assert turnover[0] > 0.5
    np.testing.assert_allclose(a.reward - b.reward, 0.25 * turnover, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------ scoring, evaluate, serve


def _zero_module(env: PortfolioEnv) -> Any:
    """A ppo_mlp module whose Gaussian mean is exactly 0 (score head zeroed): a zero tilt."""
    torch.manual_seed(0)
    spec = rl_module_spec("ppo_mlp", {"hidden": 8, "head_hidden": 8})
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module: Any = spec.build()
    for p in module.policy.score_head.parameters():
        torch.nn.init.zeros_(p)
    module.eval()
    return module


def _handle(mode: str, data: MarketData) -> tuple[PolicyHandle, dict[str, Any]]:
    config = {**_env_config(mode), "flat_obs": True, "feature_columns": list(OBSERVED)}
    env = PortfolioEnv(config, data=data)
    manifest = SimpleNamespace(
        env_config=lambda: PortfolioEnvConfig.model_validate(config),
        data=SimpleNamespace(symbols=list(data.symbols)),
        features=SimpleNamespace(observed=None),
    )
    return PolicyHandle("tilt", 1, Path("unused"), manifest, _zero_module(env)), config  # type: ignore[arg-type]


def test_a_zero_tilt_module_scores_and_evaluates_as_the_baseline() -> None:
    data = _data()
    handle, config = _handle("tilt:kelly_lite", data)
    sim = SimulatorConfig(episode_len=N_STEPS - 1)
    expected = replay_policy(data, baseline_spec("kelly_lite").make(data, 0), sim)
    scored = replay_policy(data, module_policy(handle.module, data, PortfolioEnvConfig(**config)), sim)
    np.testing.assert_allclose(scored.returns, expected.returns, rtol=0, atol=1e-12)
    spec = registry_spec("tilt@1", Path("unused"), lambda ref, registry: handle)
    assert spec.feature_columns == (*OBSERVED, "fc_consensus_ok", "spread_bps")  # the baseline's inputs too
    assert spec.lookback_bars == 7  # kelly_lite's sigma needs 7 closes
    evaluated = run_window(spec, data, seed=0, sim=sim)
    closed = replay_policy(data, baseline_spec("kelly_lite").make(data, 0), sim, close_at_end=True)
    np.testing.assert_allclose(evaluated.returns, closed.returns[0], rtol=0, atol=1e-12)  # the harness closes


def test_a_served_zero_tilt_returns_the_baselines_weights() -> None:
    data = _data()
    handle, _ = _handle("tilt:inverse_vol", data)
    caps = ExposureCaps(
        per_symbol_cap=MAX_PER_SYMBOL, gross_cap=MAX_GROSS, leverage_cap=MAX_GROSS, max_gross_add=MAX_GROSS
    )
    service = DecisionService(handle, data, ServeConfig(max_feature_age_hours=None, caps=caps))
    bar = 31  # 2020-02-01: a month start, where inverse_vol rebalances
    as_of = service.closed_at(bar)  # the earliest as_of that observes the bar
    quotes = zip(data.symbols, data.close[bar].tolist(), strict=True)  # at the close: inside the quote band
    analysis = {s: {"bid_price": 0.9999 * c, "ask_price": 1.0001 * c, "spread_bps": 2.0} for s, c in quotes}
    request = ActRequest.model_validate(
        {
            "account": {"equity": 100_000.0},
            "drawdown_pct": 0.0,
            "analysis": analysis,
            "as_of": as_of.isoformat(),
        }
    )
    (answer,) = service.decide([request])
    vol = data.features[bar, :, data.feature_names.index("vol_20")].astype(np.float64)
    ok = data.listed[bar] & (vol > 0)
    expected = np.where(ok, 1.0 / np.where(ok, vol, 1.0), 0.0)
    expected /= expected.sum()
    served = [answer.decisions[s].target_weight for s in data.symbols]
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ raytrade tune


def test_tune_options_put_the_action_mode_in_the_env_config(synthetic_store: Path) -> None:
    opts = TuneOptions(
        spec="ppo",
        replay=synthetic_store,
        action_mode="tilt:kelly_lite",
        max_tilt=0.05,
        no_trade_band=0.01,
        turnover_penalty=0.3,
    )
    spec = get_spec("ppo")
    env_config = opts.env_config(spec, opts.budget(spec))
    cfg = PortfolioEnvConfig.model_validate(env_config)
    assert (cfg.action.mode, cfg.action.max_tilt, cfg.action.no_trade_band) == ("tilt:kelly_lite", 0.05, 0.01)
    assert cfg.sim.reward.turnover_penalty == 0.3
    assert env_config["data"]["extra_features"] == ["fc_mean", "fc_consensus_ok", "spread_bps"]
    assert "--action-mode tilt:kelly_lite --max-tilt 0.05" in opts.command()
    PortfolioEnv({**env_config, "flat_obs": True})  # the store carries what the baseline reads


def test_a_tilt_never_trades_a_symbol_the_baseline_locks() -> None:
    """kelly_lite holds a trade-blocked symbol at its drifted weight; a tilt around that weight, sent
    each bar, walked it 0.15 -> 0.55 in four bars (a review, 2026-12-05). A locked symbol is held
    whatever the tilt; the others tilt as before."""
    cfg = ActionConfig(mode="tilt:kelly_lite", max_tilt=0.1)
    base = BaselineDecision(
        allocation=np.array([[0.15, 0.05]]), hold=np.array([[True, False]]), locked=np.array([[True, False]])
    )
    out = tilt_orders(cfg, np.array([[0.1, 0.1]]), np.array([[0.15, 0.0]]), base)
    assert out.hold.tolist() == [[True, False]]
    np.testing.assert_allclose(out.target, [[0.25, 0.15]])  # the locked target is never filled
    free = tilt_orders(cfg, np.array([[0.1, 0.1]]), np.array([[0.15, 0.0]]), base._replace(locked=None))
    assert free.hold.tolist() == [[False, False]]
