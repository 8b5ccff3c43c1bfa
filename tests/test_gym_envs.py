"""gymnasium wrappers: env checker, config validation, vector form, gate modes, seeding."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pydantic import ValidationError

from raytrade.envs.gym_envs import (
    GATED_ENV_ID,
    PORTFOLIO_ENV_ID,
    GatedSymbolEnv,
    GatedSymbolVectorEnv,
    PortfolioEnv,
    PortfolioVectorEnv,
    make_portfolio_env,
)
from raytrade.envs.synthetic_market import market_data_from_config

BASE: dict[str, Any] = {
    "data": {"kind": "synthetic", "n_assets": 4, "n_steps": 200, "seed": 0, "n_crypto": 1},
    "sim": {"episode_len": 30},
}


@pytest.mark.parametrize("env_id", [PORTFOLIO_ENV_ID, GATED_ENV_ID])
@pytest.mark.parametrize("flat", [False, True])
def test_check_env_passes_without_warnings(env_id: str, flat: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id, env_config={**BASE, "flat_obs": flat})
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_unknown_key_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="gross_kap"):
        PortfolioEnv({**BASE, "gross_kap": 2.0})


def test_negative_cap_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="per_asset_cap"):
        PortfolioEnv({**BASE, "sim": {"constraints": {"per_asset_cap": -0.1}}})


def test_window_longer_than_data_is_refused() -> None:
    with pytest.raises(ValueError, match="episode_len"):
        PortfolioEnv({**BASE, "sim": {"episode_len": 500}})


def test_missing_feature_column_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="no_such_feature"):
        PortfolioEnv({**BASE, "feature_columns": ["ret_1", "no_such_feature"]})
    with pytest.raises(ValueError, match="edge_bps_x"):
        GatedSymbolEnv({**BASE, "edge_column": "edge_bps_x"})


def test_unknown_data_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        market_data_from_config({"kind": "csv"})


def test_feature_selection_orders_columns() -> None:
    env = PortfolioEnv({**BASE, "feature_columns": ["vol_20", "ret_1"]})
    obs, _ = env.reset(seed=0)
    t = int(env.sim.t[0])
    names = env.data.feature_names
    expect = env.data.features[t][:, [names.index("vol_20"), names.index("ret_1")]]
    assert np.array_equal(obs["features"], expect)


def _rollout(env: gym.Env[Any, Any], seed: int, n: int) -> list[float]:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    out = []
    for _ in range(n):
        _, r, term, trunc, _ = env.step(env.action_space.sample())
        out.append(float(r))
        if term or trunc:
            env.reset()
    return out


@pytest.mark.parametrize("cls", [PortfolioEnv, GatedSymbolEnv])
def test_same_seed_same_rewards(cls: type[PortfolioEnv]) -> None:
    assert _rollout(cls(BASE), 3, 70) == _rollout(cls(BASE), 3, 70)


def test_vector_env_next_step_autoreset() -> None:
    venv = PortfolioVectorEnv({**BASE, "sim": {"episode_len": 3}}, num_envs=5)
    obs, _ = venv.reset(seed=0)
    assert obs["features"].shape == (5, 4, 8) and venv.observation_space.contains(obs)
    acts = np.zeros((5, 4), dtype=np.float32)
    dones = [venv.step(acts)[3].tolist() for _ in range(3)]
    assert dones[-1] == [True] * 5 and dones[0] == [False] * 5
    obs, rew, term, trunc, _ = venv.step(acts)  # the reset step: reward 0, fresh episodes
    assert rew.tolist() == [0.0] * 5 and not (term | trunc).any()
    assert (obs["portfolio"][:, 4] == 0).all() and np.allclose(obs["portfolio"][:, 0], 1.0)


def test_vector_env_info_reports_episode_costs_at_the_end_and_step_costs_on_request() -> None:
    acts = np.full((2, 4), 0.5, dtype=np.float32)
    quiet = PortfolioVectorEnv({**BASE, "sim": {"episode_len": 2}}, num_envs=2)
    quiet.reset(seed=0)
    assert quiet.step(acts)[4] == {}  # mid-episode: nothing to report
    info = quiet.step(acts)[4]
    assert info["_episode_cost_fee"].tolist() == [True, True]
    assert (info["episode_cost_fee"] > 0).all()
    np.testing.assert_array_equal(info["episode_cost_fee"], quiet.sim.episode_costs[:, 0])
    chatty = PortfolioVectorEnv({**BASE, "sim": {"episode_len": 2}, "step_info": True}, num_envs=2)
    chatty.reset(seed=0)
    step = chatty.step(acts)[4]
    assert (step["cost_fee"] > 0).all() and "episode_cost_fee" not in step
    np.testing.assert_array_equal(step["equity"], chatty.sim.equity)


def test_vector_env_matches_single_env_rows() -> None:
    venv = PortfolioVectorEnv(BASE, num_envs=1)
    env = PortfolioEnv(BASE)
    venv.reset(seed=4)
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.uniform(-1, 1, 4).astype(np.float32)
        r1 = env.step(a)[1]
        rv = venv.step(a[None])[1]
        assert rv[0] == r1


def test_make_vec_with_vector_entry_point_and_rllib_creator() -> None:
    venv = gym.make_vec(GATED_ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", env_config=BASE)
    assert isinstance(venv, GatedSymbolVectorEnv) and venv.num_envs == 3
    venv.reset(seed=0)
    venv.step(venv.action_space.sample())
    assert isinstance(make_portfolio_env({**BASE, "num_envs": 4}), PortfolioVectorEnv)
    assert isinstance(make_portfolio_env(BASE), PortfolioEnv)


def _gated(extra: dict[str, Any]) -> GatedSymbolEnv:
    cfg = {**BASE, "data": {**BASE["data"], "ragged": False}, **extra}
    env = GatedSymbolEnv(cfg)
    env.reset(seed=1)
    return env


def test_gate_probe_flat_and_aggressive_sizes() -> None:
    shorts_everywhere = {"sim": {**BASE["sim"], "constraints": {"crypto_long_only": False}}}
    env = _gated({"probe_weight": 0.002, **shorts_everywhere})
    # asset 0 probe long, 1 flat, 2 aggressive short, 3 (crypto) probe short; all at full size (level 3 of 4)
    _, _, _, _, info = env.step(np.array([1, 0, 3, 0, 0, 3, 3, 1, 3, 1, 1, 3]))
    w = info["target_weights"]
    t = int(env.sim.t[0]) - 1
    edge = abs(float(env.data.features[t, 2, env.data.feature_names.index("fc_mean")]))
    closes = env.data.close[t - 6 : t + 1, 2]  # the contract's sigma: the last 7 closes' simple returns
    sigma = float(np.std(closes[1:] / closes[:-1] - 1.0, ddof=1))
    kelly = min(0.15, 0.2 * edge / sigma**2)
    assert w[0] == 0.002 and w[1] == 0.0 and w[3] == -0.002
    assert w[2] == pytest.approx(-kelly, rel=1e-6)


def test_crypto_is_long_only_by_default() -> None:
    env = _gated({"probe_weight": 0.002})
    _, _, _, _, info = env.step(np.array([1, 1, 3, 0, 0, 3, 3, 1, 3, 1, 1, 3]))  # probe short on every asset
    w = info["target_weights"]
    assert w[0] == -0.002 and w[3] == 0.0  # the equity shorts, the crypto pair (asset 3) cannot


def test_gate_passive_unfilled_does_not_trade() -> None:
    env = _gated({"passive_fill_prob": 0.0})
    _, _, _, _, info = env.step(np.array([2, 0, 3, 2, 0, 3, 2, 1, 3, 2, 1, 3]))
    assert info["costs"]["fee"] == 0.0 and (env.sim.units == 0).all()


def test_gate_passive_fills_pay_no_spread_or_slippage_and_only_on_bars_that_trade_through() -> None:
    shorts_everywhere = {"sim": {**BASE["sim"], "constraints": {"crypto_long_only": False}}}
    env = _gated({"passive_fill_prob": 1.0, "kelly_scale": 1e6, **shorts_everywhere})
    t1 = int(env.sim.t[0]) + 1
    move = env.data.close[t1] - env.data.open[t1]
    # every asset passive, at full size: long, long, short, short
    _, _, _, _, info = env.step(np.array([2, 0, 3, 2, 0, 3, 2, 1, 3, 2, 1, 3]))
    c = info["costs"]
    assert c["spread"] == 0.0 and c["slippage"] == 0.0  # never a rebate
    sells = np.array([False, False, True, True])
    filled = env.sim.units[0] != 0
    # a resting buy fills only on a bar that closes below its open, a sell only on one that closes above
    assert (filled == np.where(sells, move > 0, move < 0)).all(), (filled, move)
    assert c["fee"] > 0 if filled.any() else c["fee"] == 0.0


def test_passive_fills_follow_the_adverse_move() -> None:
    from raytrade.envs.gym_envs import passive_fills

    open_ = np.array([[10.0, 10.0], [10.0, 10.0]])
    close = np.array([[10.0, 10.0], [9.0, 11.0]])  # bar 1: asset 0 falls, asset 1 rises
    buy = np.array([[True, True], [False, False]])
    out = passive_fills(buy, open_, close, np.array([1, 1]))
    assert out.tolist() == [[True, False], [False, True]]
    assert not passive_fills(buy, open_, open_, np.array([1, 1])).any()  # a flat bar fills nothing


def test_a_negative_passive_spread_multiplier_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="passive_spread_mult"):
        _gated({"passive_spread_mult": -0.5})


def test_throughput_benchmark_quick_mode(tmp_path: Path) -> None:
    from benchmarks.env_throughput import main

    out = main(["--quick", "--json", str(tmp_path / "bench.json")])
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["benchmark"] == "env_throughput" and out["core_asset_steps_per_s"] > 0
