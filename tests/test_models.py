"""``models/``: shapes, exact constraints and masks, equivariance, the quantile loss, PPO runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from raytrade.envs.gym_envs import GatedSymbolEnv, PortfolioEnv
from raytrade.models.catalog import (
    FAMILIES,
    env_name,
    flops_per_decision,
    learner_class,
    ppo_config,
    rl_module_spec,
)
from raytrade.models.common import dummy_flat_obs, split_obs
from raytrade.models.distributional import (
    cvar_weights,
    quantile_huber_loss,
    quantile_taus,
    risk_value,
)
from raytrade.models.distributional_learner import QUANTILE_LOSS_KEY, DistributionalPPOLearner
from raytrade.models.gnn import feature_similarity, topk_edges

N_ASSETS = 6
WEIGHT_FAMILIES = ("ppo_mlp", "distributional", "gnn")
TINY_ENV: dict[str, Any] = {
    "data": {"kind": "synthetic", "n_assets": N_ASSETS, "n_steps": 200, "seed": 0},
    "sim": {"episode_len": 32},
}


def _env(family: str, flat: bool = True) -> PortfolioEnv:
    cls = GatedSymbolEnv if family == "gating" else PortfolioEnv
    return cls({**TINY_ENV, "flat_obs": flat})


def build(family: str, model_config: dict[str, Any] | None = None, flat: bool = True) -> Any:
    """The family's module on the tiny env's spaces (``Any``: tests use family-specific methods)."""
    torch.manual_seed(0)
    env = _env(family, flat)
    spec = rl_module_spec(family, model_config)
    spec.observation_space = env.observation_space
    spec.action_space = env.action_space
    return spec.build()


def obs_batch(n_features: int, batch: int = 5, seed: int = 1) -> torch.Tensor:
    """Random flat observations with assets 1 and 4 masked in every row, a random book."""
    obs = dummy_flat_obs(N_ASSETS, n_features, batch=batch, seed=seed) * 10
    nf = N_ASSETS * n_features
    g = torch.Generator().manual_seed(seed + 1)
    obs[:, nf : nf + N_ASSETS] = 0.2 * torch.randn(batch, N_ASSETS, generator=g)
    obs[:, nf + N_ASSETS + 1] = 0.0
    obs[:, nf + N_ASSETS + 4] = 0.0
    return obs


def permute_flat(obs: torch.Tensor, perm: torch.Tensor, n_features: int) -> torch.Tensor:
    p = split_obs(obs, n_features)
    return torch.cat(
        [
            p.features[:, perm].flatten(1),
            p.weights[:, perm],
            p.mask[:, perm].float(),
            p.portfolio,
        ],
        dim=-1,
    )


def amplify_scores(module: Any) -> None:
    """Scale the score head's last layer so scores are O(1..10) and the constraints bind."""
    head = module.policy.score_head if hasattr(module, "policy") else module.score_head
    last = [m for m in head if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.normal_(0.0, 3.0)


# ------------------------------------------------------------------------------------ forward passes


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shapes_are_right_and_finite(family: str) -> None:
    module = build(family)
    obs = obs_batch(module.n_features)
    width = (6 + 3 * 4) * N_ASSETS if family == "gating" else 2 * N_ASSETS  # gating: 4 size levels
    for out in (
        module.forward_inference({Columns.OBS: obs}),
        module.forward_exploration({Columns.OBS: obs}),
        module.forward_train({Columns.OBS: obs}),
    ):
        assert out[Columns.ACTION_DIST_INPUTS].shape == (5, width)
        assert torch.isfinite(out[Columns.ACTION_DIST_INPUTS]).all()
    values = module.compute_values({Columns.OBS: obs})
    assert values.shape == (5,)
    assert torch.isfinite(values).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_real_env_observation_runs(family: str) -> None:
    env = _env(family)
    module = build(family)
    ob, _ = env.reset(seed=0)
    out = module.forward_inference({Columns.OBS: torch.as_tensor(ob)[None]})
    assert torch.isfinite(out[Columns.ACTION_DIST_INPUTS]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_features_of_masked_assets_do_not_leak(family: str) -> None:
    module = build(family)
    f = module.n_features
    obs = obs_batch(f)
    feats = obs[:, : N_ASSETS * f].reshape(5, N_ASSETS, f)
    feats[:, [1, 4]] = float("nan")
    out = module.forward_train({Columns.OBS: obs})
    assert torch.isfinite(out[Columns.ACTION_DIST_INPUTS]).all()
    assert torch.isfinite(module.compute_values({Columns.OBS: obs})).all()


@pytest.mark.parametrize("family", WEIGHT_FAMILIES)
def test_dict_and_flat_observations_agree(family: str) -> None:
    flat_module, dict_module = build(family), build(family, flat=False)
    dict_module.load_state_dict(flat_module.state_dict())
    obs = obs_batch(flat_module.n_features)
    p = split_obs(obs, flat_module.n_features)
    as_dict = {"features": p.features, "weights": p.weights, "mask": p.mask.float(), "portfolio": p.portfolio}
    torch.testing.assert_close(flat_module.weights(obs), dict_module.weights(as_dict))


@pytest.mark.parametrize("family", WEIGHT_FAMILIES)
def test_weights_meet_constraints_and_masked_are_exactly_zero(family: str) -> None:
    proj = {"gross_cap": 1.5, "per_asset_cap": 0.4, "long_only": False}
    module = build(family, {"projection": proj})
    amplify_scores(module)
    obs = obs_batch(module.n_features, batch=16)
    w = module.weights(obs)
    assert w.shape == (16, N_ASSETS)
    assert (w.abs().sum(-1) <= 1.5 + 1e-5).all()
    assert (w.abs().sum(-1) >= 1.5 - 1e-4).any()  # the gross cap binds somewhere: the test has teeth
    assert (w.abs() <= 0.4 + 1e-6).all()
    assert (w[:, [1, 4]] == 0).all()


@pytest.mark.parametrize("family", WEIGHT_FAMILIES)
def test_inference_gives_the_distribution_and_no_projected_actions(family: str) -> None:
    """The decision is the Gaussian's mean, which the env (and RLlib's connector without exploration)
    bands and projects once: an inference output with projected weights as ``Columns.ACTIONS`` was
    projected twice there, and cost about 65 us a decision nobody read. ``weights()`` is still the
    projection of that mean."""
    from raytrade.models.common import project_scores
    from raytrade.models.inference import greedy_actions

    module = build(family)
    amplify_scores(module)
    obs = obs_batch(module.n_features)
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: obs})
        weights = module.weights(obs)
    assert set(out) == {Columns.ACTION_DIST_INPUTS}
    mean = torch.as_tensor(greedy_actions(module, out[Columns.ACTION_DIST_INPUTS]))
    nf = N_ASSETS * module.n_features  # the flat layout: features, weights, listed flags, portfolio
    listed = obs[:, nf + N_ASSETS : nf + 2 * N_ASSETS] > 0.5
    torch.testing.assert_close(project_scores(mean, listed, module.cfg.projection), weights)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), long_only=st.booleans(), cap=st.floats(0.05, 1.0))
def test_ppo_mlp_weights_feasible_property(seed: int, long_only: bool, cap: float) -> None:
    module = build(
        "ppo_mlp", {"projection": {"gross_cap": 1.0, "per_asset_cap": cap, "long_only": long_only}}
    )
    amplify_scores(module)
    obs = obs_batch(module.n_features, batch=4, seed=seed)
    w = module.weights(obs)
    assert (w.abs().sum(-1) <= 1.0 + 1e-5).all()
    assert (w.abs() <= cap + 1e-6).all()
    assert (w[:, [1, 4]] == 0).all()
    if long_only:
        assert (w >= 0).all()


@pytest.mark.parametrize("family", ["ppo_mlp", "gnn"])
def test_permuting_assets_permutes_outputs(family: str) -> None:
    module = build(family)
    amplify_scores(module)
    f = module.n_features
    obs = obs_batch(f)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    obs_p = permute_flat(obs, perm, f)
    with torch.no_grad():
        mean = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS][:, :N_ASSETS]
        mean_p = module.forward_inference({Columns.OBS: obs_p})[Columns.ACTION_DIST_INPUTS][:, :N_ASSETS]
        torch.testing.assert_close(mean_p, mean[:, perm], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(module.weights(obs_p), module.weights(obs)[:, perm], atol=1e-5, rtol=1e-4)
        v = module.compute_values({Columns.OBS: obs})
        v_p = module.compute_values({Columns.OBS: obs_p})
        torch.testing.assert_close(v_p, v, atol=1e-5, rtol=1e-4)


def test_ppo_mlp_runs_on_more_assets_than_it_was_built_for() -> None:
    module = build("ppo_mlp")
    obs = dummy_flat_obs(32, module.n_features, batch=2)
    assert module.weights(obs).shape == (2, 32)


# ------------------------------------------------------------------------------------ distributional


def test_quantile_huber_loss_hand_computed() -> None:
    pred = torch.tensor([[0.0, 1.0, 2.0]])
    target = torch.tensor([1.5])
    taus = torch.tensor([1 / 6, 1 / 2, 5 / 6])
    # u = [1.5, 0.5, -0.5]; Huber(k=1) = [1.0, 0.125, 0.125]; |tau - 1{u<0}| = [1/6, 1/2, 1/6]
    # -> [1/6, 1/16, 1/48], sum 1/4, mean over K = 1/12
    assert quantile_huber_loss(pred, target, taus, kappa=1.0).item() == pytest.approx(1 / 12, abs=1e-7)
    # kappa = 0: pinball |u| weighted -> [1/4, 1/4, 1/12], sum 7/12, mean 7/36
    assert quantile_huber_loss(pred, target, taus, kappa=0.0).item() == pytest.approx(7 / 36, abs=1e-7)
    per = quantile_huber_loss(pred.repeat(2, 1), torch.tensor([1.5, 1.0]), taus, reduction="none")
    assert per.shape == (2,)
    # second row: u = [1, 0, -1] -> Huber [0.5, 0, 0.5] weighted [1/12, 0, 1/12] -> mean 1/18
    assert per[1].item() == pytest.approx(1 / 18, abs=1e-7)


def test_quantile_loss_minimiser_is_the_quantiles() -> None:
    """Fitting K free values to Uniform(0, 1) targets with the pinball loss recovers tau_k."""
    torch.manual_seed(0)
    taus = quantile_taus(4)
    q = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.Adam([q], lr=0.02)
    targets = torch.rand(4000)
    for _ in range(400):
        opt.zero_grad()
        quantile_huber_loss(q.expand(4000, -1), targets, taus, kappa=0.0).backward()
        opt.step()
    torch.testing.assert_close(q.detach()[0], taus, atol=0.03, rtol=0.0)


def test_quantile_taus_are_midpoints() -> None:
    torch.testing.assert_close(quantile_taus(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))


def test_cvar_weights_exact() -> None:
    torch.testing.assert_close(cvar_weights(4, 0.375), torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))
    torch.testing.assert_close(cvar_weights(4, 1.0), torch.full((4,), 0.25))
    assert cvar_weights(32, 0.1).sum().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="cvar_alpha"):
        cvar_weights(4, 0.0)


def test_risk_value_mixes_mean_and_cvar() -> None:
    q = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    w = cvar_weights(4, 0.5)  # CVaR_0.5 = mean(0, 1) = 0.5; mean = 1.5
    assert risk_value(q, w, 0.0).item() == pytest.approx(1.5)
    assert risk_value(q, w, 1.0).item() == pytest.approx(1.0)  # (1.5 + 0.5) / 2
    assert risk_value(q, w, 3.0).item() == pytest.approx(0.75)  # (1.5 + 1.5) / 4


def test_distributional_values_are_quantile_mean_and_quantiles_sorted() -> None:
    module = build("distributional", {"n_quantiles": 8})
    obs = obs_batch(module.n_features)
    q = module.compute_quantiles({Columns.OBS: obs})
    assert q.shape == (5, 8)
    assert (q[:, 1:] >= q[:, :-1]).all()
    torch.testing.assert_close(module.compute_values({Columns.OBS: obs}), q.mean(-1))
    risky = build("distributional", {"n_quantiles": 8, "cvar_weight": 1.0})
    assert (risky.compute_values({Columns.OBS: obs}) <= q.mean(-1) + 1e-6).all()


# ------------------------------------------------------------------------------------ gnn graph


def test_topk_edges_hand_example() -> None:
    sim = torch.tensor(
        [[[1.0, 0.9, 0.95, 0.1], [0.9, 1.0, 0.0, 0.2], [0.95, 0.0, 1.0, 0.3], [0.1, 0.2, 0.3, 1.0]]]
    )
    mask = torch.tensor([[True, True, False, True]])
    edge_index, attr = topk_edges(sim, mask, k=1)
    # asset 2 is masked: it neither sends nor receives; rows are (source, target)
    assert edge_index.tolist() == [[1, 0, 1], [0, 1, 3]]
    torch.testing.assert_close(attr[:, 0], torch.tensor([0.9, 0.9, 0.2]))
    # k larger than the listed neighbours: only the valid ones, batch offsets applied
    edge_index2, _ = topk_edges(sim.repeat(2, 1, 1), mask.repeat(2, 1), k=3)
    assert edge_index2.shape == (2, 12)
    assert not (edge_index2 % 4 == 2).any()


def test_feature_similarity_is_a_correlation() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 7, 5, generator=g)
    mask = torch.ones(3, 7, dtype=torch.bool)
    sim = feature_similarity(feats, mask)
    torch.testing.assert_close(sim, sim.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(3, 7), atol=1e-5, rtol=0)
    assert (sim.abs() <= 1 + 1e-5).all()


# ------------------------------------------------------------------------------------ catalog


def test_catalog_names_and_learners() -> None:
    assert env_name("gating") == "raytrade/GatedSymbolEnv-v0"
    assert {env_name(f) for f in WEIGHT_FAMILIES} == {"raytrade/PortfolioEnv-v0"}
    assert learner_class("distributional") is DistributionalPPOLearner
    assert all(learner_class(f) is None for f in ("ppo_mlp", "gnn", "gating"))


def test_catalog_unknown_family_lists_families() -> None:
    with pytest.raises(ValueError, match="ppo_mlp.*distributional.*gnn.*gating"):
        rl_module_spec("transformer")


def test_unknown_model_config_key_is_named() -> None:
    with pytest.raises(ValidationError, match="hiden"):
        rl_module_spec("ppo_mlp", {"hiden": 32})
    with pytest.raises(ValidationError, match="n_quantiles"):
        rl_module_spec("distributional", {"n_quantiles": 0})


def test_ppo_config_copies_env_constraints_and_flat_obs() -> None:
    env = {**TINY_ENV, "sim": {"episode_len": 32, "constraints": {"gross_cap": 1.2, "long_only": True}}}
    cfg = ppo_config("ppo_mlp", env, train_batch_size_per_learner=64)
    assert cfg.env_config["flat_obs"] is True
    proj = cfg.rl_module_spec.model_config["projection"]
    assert proj == {"gross_cap": 1.2, "per_asset_cap": 1.0, "long_only": True}
    assert cfg.train_batch_size_per_learner == 64


def test_flops_per_decision_counts_and_scales_with_assets() -> None:
    module = build("ppo_mlp")
    f8, f32 = flops_per_decision(module, 8), flops_per_decision(module, 32)
    assert f8 > 0 and isinstance(f8, int)
    assert f32 > 3 * f8  # the per-asset encoder dominates: ~linear in N
    assert flops_per_decision(build("gnn"), 8) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_round_trip_gives_the_same_outputs(family: str, tmp_path: Path) -> None:
    module = build(family)
    module.save_to_path(tmp_path / family)
    restored = RLModule.from_checkpoint(tmp_path / family)
    obs = obs_batch(module.n_features)
    a = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    b = restored.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(a, b)


def test_inference_latency_benchmark_quick(tmp_path: Path) -> None:
    from benchmarks.inference_latency import main

    results = main(["--quick", "--json", str(tmp_path / "lat.json")])
    assert (tmp_path / "lat.json").exists()
    assert set(results["families"]) == set(WEIGHT_FAMILIES)
    assert all(r["median_us"] > 0 and r["madds_per_decision"] > 0 for r in results["families"].values())


# ------------------------------------------------------------------------------------ PPO with Ray


def _train_once(family: str, **model: Any) -> dict[str, Any]:
    cfg = ppo_config(
        family,
        TINY_ENV,
        model or None,
        num_envs_per_env_runner=2,
        train_batch_size_per_learner=128,
        minibatch_size=64,
        num_epochs=1,
    )
    algo = cfg.build_algo()
    try:
        return algo.train()["learners"][DEFAULT_MODULE_ID]
    finally:
        algo.stop()


def _finite(x: Any) -> bool:
    return bool(np.isfinite(float(x)))


@pytest.mark.ray
def test_distributional_ppo_trains_one_iteration(ray_session: None) -> None:
    res = _train_once("distributional", n_quantiles=16, cvar_weight=0.5)
    for key in (QUANTILE_LOSS_KEY, "policy_loss", "vf_loss", "total_loss", "entropy"):
        assert _finite(res[key]), key
    assert float(res[QUANTILE_LOSS_KEY]) > 0
    assert math.isclose(float(res["vf_loss"]), float(res[QUANTILE_LOSS_KEY]))


@pytest.mark.ray
@pytest.mark.parametrize("family", ["ppo_mlp", "gnn", "gating"])
def test_ppo_trains_one_iteration(ray_session: None, family: str) -> None:
    res = _train_once(family)
    for key in ("policy_loss", "vf_loss", "total_loss"):
        assert _finite(res[key]), key


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.filterwarnings("ignore:Using a target size")  # RLlib's TQC broadcasts quantile pairs on purpose
def test_tqc_smoke_budget_samples_and_updates_one_batch_per_iteration(ray_session: None) -> None:
    from raytrade.tune_specs.tqc import SPEC

    # The tqc spec's smoke budget on the tiny env (its episode is the budget's 32 bars): one fragment
    # of 32 env steps and one update of 32 replayed steps per iteration, the first included (learning
    # starts at its last step). RLlib's defaults made 32 updates from the second iteration on (a
    # one-step fragment, one update each) and repeated steps until a second had passed.
    assert TINY_ENV["sim"]["episode_len"] == SPEC.smoke.episode_len
    cfg = SPEC.build(TINY_ENV, SPEC.smoke).training(actor_lr=3e-4, critic_lr=3e-4, gamma=0.99)
    algo = cfg.build_algo()
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    for res in results:
        assert res["env_runners"]["num_env_steps_sampled"] == 32
        assert res["num_training_step_calls_per_iteration"] == 1
        learner = res["learners"][DEFAULT_MODULE_ID]
        assert learner["num_module_steps_trained"] == 32  # one update of a full batch
        assert _finite(learner["qf_loss"]) and _finite(learner["policy_loss"])
