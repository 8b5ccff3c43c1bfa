"""Gate stage 2: the contract's sigma and gate (``envs.gate``), per-mode sizing in the gated env, and
the gating module's mask and sizing heads (``models.gating``, ``models.gate_distribution``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from raytrade.envs.config import GatedEnvConfig
from raytrade.envs.gate import STORE_GATE_COLUMN, contract_gate
from raytrade.envs.gym_envs import GatedSymbolEnv, gate_orders
from raytrade.envs.market_data import MarketData
from raytrade.envs.synthetic_market import synthetic_market_data
from raytrade.models.catalog import rl_module_spec
from raytrade.models.common import dummy_flat_obs
from raytrade.models.gating import SIZED_MODES

N_ASSETS = 6
TINY_ENV: dict[str, Any] = {
    "data": {"kind": "synthetic", "n_assets": N_ASSETS, "n_steps": 200, "seed": 0},
    "sim": {"episode_len": 32},
    "flat_obs": True,
}
FLAT, PROBE, PASSIVE, AGGRESSIVE = range(4)


def market(close: np.ndarray, features: dict[str, np.ndarray], **extra: Any) -> MarketData:
    """A daily equity market ``[T, N]`` with the given closes and feature columns."""
    t, n = close.shape
    return MarketData(
        ts=np.datetime64("2024-01-01", "us") + np.arange(t) * np.timedelta64(1, "D"),
        symbols=tuple(f"S{j}" for j in range(n)),
        asset_class=("equity",) * n,
        open=close,
        close=close,
        listed=np.ones((t, n), dtype=bool),
        spread_bps=extra.get("spread_bps", np.full((t, n), 5.0)),
        dollar_volume=extra.get("dollar_volume", np.full((t, n), 2e9)),
        features=np.stack(list(features.values()), axis=-1).astype(np.float32),
        feature_names=tuple(features),
        regime_code=np.zeros((t, n), dtype=np.int8),
    )


def truncated(data: MarketData, bars: int) -> MarketData:
    """``data`` with every bar after the first ``bars`` removed."""
    fields = ("ts", "open", "close", "listed", "spread_bps", "dollar_volume", "features", "regime_code")
    return replace(data, **{f: getattr(data, f)[:bars] for f in fields}, feature_missing=None)


# ------------------------------------------------------------------------------------ envs.gate


def test_sigma_is_the_std_of_the_last_seven_closes_simple_returns() -> None:
    close = np.array([100, 101, 99, 102, 104, 103, 107, 106, 110], dtype=np.float64)[:, None]
    data = market(close, {"fc_mean": np.full(close.shape, 0.01)})
    sigma = contract_gate(data, GatedEnvConfig()).sigma[:, 0]
    assert np.isnan(sigma[:6]).all()  # fewer than 7 closes: unknown
    for t in (6, 7, 8):
        window = close[t - 6 : t + 1, 0]
        assert sigma[t] == pytest.approx(np.std(window[1:] / window[:-1] - 1.0, ddof=1), rel=1e-12)


def test_gate_and_sizing_at_t_use_no_data_after_t() -> None:
    data = synthetic_market_data(n_assets=5, n_steps=120, seed=3)
    full = contract_gate(data, GatedEnvConfig())
    for bars in (7, 40, 90):
        cut = contract_gate(truncated(data, bars), GatedEnvConfig())
        np.testing.assert_array_equal(cut.open, full.open[:bars])
        np.testing.assert_array_equal(cut.sigma, full.sigma[:bars])
        np.testing.assert_array_equal(cut.kelly, full.kelly[:bars])


def test_replica_gate_closes_on_spread_edge_and_no_move() -> None:
    # asset 0 passes; 1: spread 12 bps over the mega-cap cap of 8; 2: edge 12 bps under the
    # threshold max(6 + 10, 15) = 16 bps; 3: a move of 5 bps is under min_move (no consensus)
    rng = np.random.default_rng(0)
    close = 100 * np.cumprod(1 + 0.01 * rng.standard_normal((8, 4)), axis=0)
    edge = np.tile([0.003, 0.003, 0.0012, 0.0005], (8, 1))
    spread = np.tile([5.0, 12.0, 5.0, 5.0], (8, 1))
    data = market(close, {"fc_mean": edge, "spread_bps": spread}, spread_bps=spread)
    gate = contract_gate(data, GatedEnvConfig())
    assert not gate.open[:6].any()  # no sigma yet
    np.testing.assert_array_equal(gate.open[6:], [[True, False, False, False]] * 2)
    expected = np.minimum(0.15, 0.2 * edge[7] / gate.sigma[7] ** 2)
    np.testing.assert_allclose(gate.kelly[7], expected, rtol=1e-12)


def test_store_gate_column_decides_when_the_data_carries_it() -> None:
    rng = np.random.default_rng(1)
    close = 100 * np.cumprod(1 + 0.01 * rng.standard_normal((8, 2)), axis=0)
    tiny_edge = np.full((8, 2), 0.0001)  # the replica would close both
    flag = np.tile([1.0, 0.0], (8, 1))
    data = market(close, {"fc_mean": tiny_edge, STORE_GATE_COLUMN: flag})
    np.testing.assert_array_equal(contract_gate(data, GatedEnvConfig()).open[7], [True, False])


def test_gate_orders_size_the_chosen_mode_by_its_level() -> None:
    cfg = GatedEnvConfig(size_levels=4, probe_weight=0.002)
    kelly = np.array([[0.1, 0.1, 0.1, 0.0, 0.1]])
    # probe long level 1, passive short level 3, aggressive long level 0, aggressive on kelly 0, flat
    actions = np.array([[PROBE, 0, 1, PASSIVE, 1, 3, AGGRESSIVE, 0, 0, AGGRESSIVE, 0, 3, FLAT, 0, 3]])
    orders = gate_orders(actions, kelly, cfg)
    np.testing.assert_allclose(orders.target[0], [0.001, -0.1, 0.025, 0.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(orders.mode[0], [PROBE, PASSIVE, AGGRESSIVE, AGGRESSIVE, FLAT])


def test_gated_observation_ends_with_the_gate_channel() -> None:
    env = GatedSymbolEnv(TINY_ENV)
    obs, _ = env.reset(seed=0)
    f = env.observation_space.shape[0] // N_ASSETS - 2  # flat: N * (F + 2) + 5
    gate = obs[: N_ASSETS * f].reshape(N_ASSETS, f)[:, -1]
    expected = env._decoder.gate_channel()
    assert expected is not None
    np.testing.assert_array_equal(gate, expected[0].astype(np.float32))


# ------------------------------------------------------------------------------------ module


def build_module() -> Any:
    torch.manual_seed(0)
    env = GatedSymbolEnv(TINY_ENV)
    spec = rl_module_spec("gating")
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    return spec.build()


def crafted_obs(module: Any, batch: int, gate_open: bool) -> torch.Tensor:
    """Random states, every symbol listed, the gate channel open or closed for all of them."""
    f = module.n_features
    obs = dummy_flat_obs(N_ASSETS, f, batch=batch, seed=2) * 10
    feats = obs[:, : N_ASSETS * f].reshape(batch, N_ASSETS, f)
    feats[..., -1] = 1.0 if gate_open else 0.0
    obs[:, : N_ASSETS * f] = feats.reshape(batch, -1)
    return obs


def prefer(module: Any, mode: int, strength: float = 50.0) -> None:
    """Make the gate head's logit of ``mode`` ``strength`` above the others in every state."""
    last = [m for m in module.gate_head if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[mode] = strength


def sampled_modes(module: Any, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sampled modes ``[B, N]``, greedy modes of ``forward_inference`` ``[B, N]``)."""
    dist_cls = module.get_exploration_action_dist_cls()
    dist = dist_cls.from_logits(module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS])
    sample = torch.as_tensor(dist.sample()).reshape(len(obs), N_ASSETS, 3)
    inference = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    greedy = module.get_inference_action_dist_cls().from_logits(inference).to_deterministic().sample()
    return sample[..., 0], torch.as_tensor(greedy).reshape(len(obs), N_ASSETS, 3)[..., 0]


@pytest.mark.parametrize("preferred", [PASSIVE, AGGRESSIVE])
def test_closed_gate_never_chooses_passive_or_aggressive(preferred: int) -> None:
    module = build_module()
    prefer(module, preferred)
    sampled, greedy = sampled_modes(module, crafted_obs(module, 1000, gate_open=False))
    assert set(sampled.unique().tolist()) <= {FLAT, PROBE} and set(greedy.unique().tolist()) <= {FLAT, PROBE}
    assert set(module.decisions(crafted_obs(module, 50, gate_open=False)).mode.unique().tolist()) <= {0, 1}
    # the same policy with the gate open takes the preferred mode: the mask is what held it back
    sampled, greedy = sampled_modes(module, crafted_obs(module, 50, gate_open=True))
    assert (greedy == preferred).all() and (sampled == preferred).all()


def test_open_gate_leaves_every_mode_possible_and_unlisted_symbols_flat() -> None:
    module = build_module()
    obs = crafted_obs(module, 500, gate_open=True)
    nf = N_ASSETS * module.n_features
    obs[:, nf + N_ASSETS + 2] = 0.0  # symbol 2 unlisted
    sampled, greedy = sampled_modes(module, obs)
    assert (sampled[:, 2] == FLAT).all() and (greedy[:, 2] == FLAT).all()
    assert set(sampled[:, [0, 1, 3, 4, 5]].unique().tolist()) == {FLAT, PROBE, PASSIVE, AGGRESSIVE}


def test_actions_are_valid_and_logp_entropy_kl_finite_under_masks() -> None:
    module = build_module()
    obs = crafted_obs(module, 64, gate_open=False)
    obs[:, N_ASSETS * module.n_features + N_ASSETS + 1] = 0.0  # symbol 1 unlisted: only flat
    dist_inputs = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    dist = module.get_exploration_action_dist_cls().from_logits(dist_inputs)
    actions = torch.as_tensor(dist.sample())
    fields = actions.reshape(64, N_ASSETS, 3)
    assert actions.shape == (64, 3 * N_ASSETS)
    assert (fields[..., 1] < 2).all() and (fields[..., 2] < module.size_levels).all()
    for value in (dist.logp(actions), dist.entropy(), dist.kl(dist)):
        assert torch.isfinite(value).all()
    assert torch.equal(dist.kl(dist), torch.zeros(64))


def test_the_chosen_modes_sizing_head_produces_the_level() -> None:
    module = build_module()
    favourite = {"probe": 0, "passive": 2, "aggressive": 3}
    for mode, level in favourite.items():
        last = [m for m in module.sizing_heads[mode] if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[level] = 50.0
    obs = crafted_obs(module, 500, gate_open=True)
    dist_inputs = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    dist = module.get_exploration_action_dist_cls().from_logits(dist_inputs)
    actions = torch.as_tensor(dist.sample()).reshape(500, N_ASSETS, 3)
    for m, name in enumerate(SIZED_MODES, start=PROBE):
        chosen = actions[..., 0] == m
        assert chosen.any() and (actions[..., 2][chosen] == favourite[name]).all()
    assert (actions[..., 2][actions[..., 0] == FLAT] == 0).all()
    # logp = log p(mode) + log p(side) + log p_mode(level), the chosen head's level only
    x = dist_inputs.reshape(500, N_ASSETS, -1)
    k = module.size_levels
    mode, side, level = actions[..., 0], actions[..., 1], actions[..., 2]
    lp = torch.log_softmax(x[..., :4], -1).gather(-1, mode[..., None]).squeeze(-1)
    lp += torch.log_softmax(x[..., 4:6], -1).gather(-1, side[..., None]).squeeze(-1)
    heads = torch.log_softmax(x[..., 6:].reshape(500, N_ASSETS, 3, k), -1)
    head = heads.gather(-2, (mode - 1).clamp(min=0)[..., None, None].expand(-1, -1, 1, k)).squeeze(-2)
    lp += torch.where(mode > 0, head.gather(-1, level[..., None]).squeeze(-1), 0.0)
    assert torch.allclose(dist.logp(actions.flatten(1)), lp.sum(-1), rtol=1e-6, atol=1e-5)


def ppo_update_grads(module: Any, obs: torch.Tensor, entropy_coeff: float = 0.01) -> dict[str, float]:
    """One PPO step on a sampled batch (clipped surrogate + entropy bonus, random advantages): the
    absolute gradient summed over each sizing head's parameters."""
    with torch.no_grad():
        old = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        dist_cls = module.get_exploration_action_dist_cls()
        actions = torch.as_tensor(dist_cls.from_logits(old).sample())
        old_logp = dist_cls.from_logits(old).logp(actions)
    advantages = torch.randn(len(obs), generator=torch.Generator().manual_seed(0))
    module.zero_grad()
    dist = module.get_train_action_dist_cls().from_logits(
        module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    )
    ratio = torch.exp(dist.logp(actions) - old_logp)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages)
    (-(surrogate.mean() + entropy_coeff * dist.entropy().mean())).backward()
    return {
        name: float(sum(p.grad.abs().sum() for p in head.parameters() if p.grad is not None))
        for name, head in module.sizing_heads.items()
    }


def test_one_update_gives_every_sizing_head_gradient() -> None:
    module = build_module()
    grads = ppo_update_grads(module, crafted_obs(module, 256, gate_open=True))
    assert all(g > 0 for g in grads.values()), grads


def test_heads_of_impossible_modes_learn_nothing_from_closed_gates() -> None:
    module = build_module()
    grads = ppo_update_grads(module, crafted_obs(module, 256, gate_open=False))
    assert grads["probe"] > 0 and grads["passive"] == 0.0 and grads["aggressive"] == 0.0


def test_serving_refuses_a_gate_policy_whose_actions_it_cannot_decode() -> None:
    from gymnasium import spaces

    from raytrade.serve.decide import DecisionService

    data = synthetic_market_data(n_assets=3, n_steps=50, seed=0)
    old_actions = spaces.MultiDiscrete([4, 2] * 3)  # mode and side only: before sizing levels
    handle = SimpleNamespace(
        env_config=lambda: GatedEnvConfig(),
        manifest=SimpleNamespace(data=SimpleNamespace(symbols=data.symbols)),
        module=SimpleNamespace(action_space=old_actions),
    )
    with pytest.raises(ValueError, match=r"action space MultiDiscrete\(\[4 2 4 2 4 2\]\) is not its env's"):
        DecisionService(handle, data)


# ------------------------------------------------------------------------ a broken gated decision


def nan_weights(module: Any) -> Any:
    """``module`` with every parameter NaN (a diverged update)."""
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(float("nan"))
    return module


def test_a_gating_policy_with_nan_weights_fails_its_score_like_a_box_policy() -> None:
    from raytrade.envs.gym_envs import PortfolioEnv
    from raytrade.envs.rollout import replay_policy
    from raytrade.models.inference import module_policy
    from raytrade.tune_specs.objective import score_module

    # the argmax of a NaN row is "flat": scored, it was a cash book (objective 0.42, gross 0)
    with pytest.raises(ValueError, match=r"distribution inputs contain NaN or inf in 1 of 1 rows"):
        score_module(nan_weights(build_module()), TINY_ENV, gated=True)
    cfg = GatedEnvConfig.model_validate(TINY_ENV)
    data = synthetic_market_data(n_assets=N_ASSETS, n_steps=40, seed=3)
    with pytest.raises(ValueError, match="NaN or inf"):  # evaluation's replay (gated_weights_policy)
        replay_policy(data, module_policy(nan_weights(build_module()), data, cfg), cfg.sim)
    # the Box family's NaN: the same failure, from the simulator's step
    env = PortfolioEnv(TINY_ENV)
    spec = rl_module_spec("ppo_mlp")
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    with pytest.raises(ValueError, match="NaN or inf"):
        score_module(nan_weights(spec.build()), TINY_ENV)


def gated_service(module: Any, data: MarketData | None = None) -> Any:
    """A ``DecisionService`` of ``module`` (trained on ``TINY_ENV``'s gated env) over ``data``
    (default: the env's own), through a real ``PolicyHandle``."""
    from raytrade.models.registry_load import PolicyHandle
    from raytrade.serve.decide import DecisionService, ServeConfig, serving_market_data

    cfg = GatedEnvConfig.model_validate(TINY_ENV)
    data = serving_market_data(cfg) if data is None else data
    manifest = SimpleNamespace(data=SimpleNamespace(symbols=data.symbols), env_config=lambda: cfg)
    module.eval()
    handle = PolicyHandle("gate", 1, Path("unused"), manifest, module)  # type: ignore[arg-type]
    return DecisionService(handle, data, ServeConfig(max_feature_age_hours=None))


def held_request(service: Any) -> Any:
    """A request observing the data's last bar (dated when it closed), every symbol quoted, long 0.1
    in the first three."""
    from raytrade.serve.schemas import ActRequest

    equity, held = 100_000.0, service.data.symbols[:3]
    positions = [
        {"symbol": s, "qty": "100", "side": "long", "market_value": f"{0.1 * equity:.2f}"} for s in held
    ]
    as_of = service.closed_at(-1)
    return ActRequest.model_validate(
        {
            "account": {"equity": equity, "cash": 0.7 * equity},
            "positions": positions,
            "drawdown_pct": 0.0,
            "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in service.data.symbols},
            "as_of": as_of,
        }
    )


def assert_holds_everything(answer: Any) -> None:
    from raytrade.serve.decide import NON_FINITE_ACTION

    assert answer.fallback and answer.reason == NON_FINITE_ACTION
    held = {s: d for s, d in answer.decisions.items() if d.current_weight != 0}
    assert len(held) == 3
    for d in answer.decisions.values():  # no sell, no buy, no NaN confidence
        assert d.target_weight == pytest.approx(d.current_weight)
        assert (d.gate_mode, d.tradeable, d.confidence, d.reason) == ("hold", False, 0.0, NON_FINITE_ACTION)


def test_serving_holds_everything_when_the_gating_policy_has_nan_weights() -> None:
    from raytrade.serve.decide import ProbeFellBack

    healthy = gated_service(build_module())
    assert not healthy.decide([held_request(healthy)])[0].fallback
    broken = gated_service(nan_weights(build_module()))
    assert_holds_everything(broken.decide([held_request(broken)])[0])  # was: every position sold
    with pytest.raises(ProbeFellBack, match="non-finite action"):
        broken.probe()


def test_one_nan_feature_of_one_symbol_holds_the_whole_answer() -> None:
    from raytrade.serve.decide import serving_market_data

    data = serving_market_data(GatedEnvConfig.model_validate(TINY_ENV))
    features = data.features.copy()
    features[-1, N_ASSETS - 1, 0] = np.nan  # a symbol nobody holds
    service = gated_service(build_module(), replace(data, features=features))
    request = held_request(service)
    obs = service.env_observation([service.prepare(request, datetime.now(UTC))])
    inputs = service.handle.act_with_inputs(obs).dist_inputs
    assert torch.isnan(inputs).reshape(N_ASSETS, -1).any(-1).all()  # the pooled encoder spreads it
    assert_holds_everything(service.decide([request])[0])
