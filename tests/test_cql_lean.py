"""The lean CQL module and learner (``models.cql_lean``, ``models.cql_learner``) against a plain
transcription of RLlib's ``CQLTorchLearner`` (separate twin networks, the policy re-run on repeated
observations, one backward pass per optimiser), on one fixed batch in float64 (no Ray)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian

from raytrade.models.cql_lean import LeanCQLModule, squashed_gaussian
from raytrade.models.cql_learner import CQLDraws, CQLHyper, cql_losses

B, K, N, D = 5, 3, 2, 7
HYPER = CQLHyper(
    gamma=0.99,
    min_q_weight=5.0,
    temperature=0.7,
    deterministic_backup=True,
    behaviour_cloning=False,
    target_entropy=-float(N),
)


def lean_module() -> LeanCQLModule:
    torch.manual_seed(0)
    module = LeanCQLModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (N,), np.float32),
        model_config={"hidden": [6, 4], "twin_q": True, "num_actions": K},
    )
    module.make_target_networks()
    with torch.no_grad():  # targets that differ from the online nets, as after some updates
        for p in module.target_q.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module.double()


def fixed_batch() -> tuple[dict[str, torch.Tensor], CQLDraws]:
    g = torch.Generator().manual_seed(1)
    batch = {
        Columns.OBS: torch.randn(B, D, generator=g, dtype=torch.float64),
        Columns.NEXT_OBS: torch.randn(B, D, generator=g, dtype=torch.float64),
        Columns.ACTIONS: torch.rand(B, N, generator=g, dtype=torch.float64) * 1.8 - 0.9,
        Columns.REWARDS: torch.randn(B, generator=g, dtype=torch.float64) * 0.1,
        Columns.TERMINATEDS: torch.tensor([False, False, True, False, False]),
    }
    draws = CQLDraws(
        curr=torch.randn(B, N, generator=g, dtype=torch.float64),
        next=torch.randn(B, N, generator=g, dtype=torch.float64),
        curr_repeat=torch.randn(B, K, N, generator=g, dtype=torch.float64),
        next_repeat=torch.randn(B, K, N, generator=g, dtype=torch.float64),
        uniform=torch.rand(B, K, N, generator=g, dtype=torch.float64),
    )
    return batch, draws


# ------------------------------------------------------------------------ the reference (RLlib's)


def twin_q(module: LeanCQLModule, i: int, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Twin ``i`` as a plain MLP over ``[obs, action]`` (its first layer un-split), ``[rows]``."""
    q = module.q
    h = torch.relu(torch.cat([obs, actions], 1) @ torch.cat([q.w_obs[i], q.w_act[i]]) + q.b_in[i, 0])
    for j, (w, b) in enumerate(zip(q.weights, q.biases, strict=True)):
        h = h @ w[i] + b[i]
        h = torch.relu(h) if j < len(q.weights) - 1 else h
    return h[:, 0]


def target_q(module: LeanCQLModule, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    t = module.target_q
    out = []
    for i in range(2):
        h = torch.relu(torch.cat([obs, actions], 1) @ torch.cat([t.w_obs[i], t.w_act[i]]) + t.b_in[i, 0])
        for j, (w, b) in enumerate(zip(t.weights, t.biases, strict=True)):
            h = h @ w[i] + b[i]
            h = torch.relu(h) if j < len(t.weights) - 1 else h
        out.append(h[:, 0])
    return torch.min(out[0], out[1])


def sample(logits: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RLlib's squashed Gaussian, reparameterised with the given standard normal ``noise``."""
    dist = TorchSquashedGaussian.from_logits(logits)
    unsquashed = dist.loc + dist._dist.scale * noise
    return dist._squash(unsquashed), dist._squashed_logp(unsquashed)


def reference_losses(
    module: LeanCQLModule, batch: dict[str, torch.Tensor], draws: CQLDraws, log_alpha: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``CQLTorchLearner.compute_loss_for_module`` and ``DefaultCQLTorchRLModule._forward_train``,
    transcribed: the policy re-run on ``K`` repeated observations, each twin in its own passes."""
    obs, next_obs, actions = batch[Columns.OBS], batch[Columns.NEXT_OBS], batch[Columns.ACTIONS]
    logits, logits_next = module.pi(obs), module.pi(next_obs)
    a_res, logp_res = sample(logits, draws.curr)
    with torch.no_grad():
        a_next, _ = sample(logits_next, draws.next)
    q_curr = torch.min(
        *(twin_q(module, i, obs, a_res) for i in range(2))
    )  # Q's parameters must not get this gradient: checked through the per-loss gradients below
    q_target_next = target_q(module, next_obs, a_next).detach()

    def repeat(t: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(t.unsqueeze(1), K, dim=1).view(-1, *t.shape[1:])

    for p in module.pi.parameters():
        p.requires_grad = False
    rand_actions = -1.0 + 2.0 * draws.uniform.reshape(B * K, N)
    curr_actions, curr_logps = sample(module.pi(repeat(obs)), draws.curr_repeat.reshape(B * K, N))
    next_actions, next_logps = sample(module.pi(repeat(next_obs)), draws.next_repeat.reshape(B * K, N))
    for p in module.pi.parameters():
        p.requires_grad = True

    alpha = torch.exp(log_alpha)
    alpha_loss = -torch.mean(log_alpha * (logp_res.detach() + HYPER.target_entropy))
    out = {"alpha": alpha_loss, "actor": torch.mean(alpha.detach() * logp_res - q_curr)}
    target = (
        batch[Columns.REWARDS] + HYPER.gamma * (1.0 - batch[Columns.TERMINATEDS].double()) * q_target_next
    ).detach()
    random_density = torch.log(torch.pow(0.5, torch.tensor(N, dtype=torch.float64)))
    for i, name in enumerate(("critic", "critic_twin")):
        q_selected = twin_q(module, i, obs, actions)
        q_repeat = torch.cat(
            [
                twin_q(module, i, repeat(obs), rand_actions).view(B, K, 1) - random_density,
                twin_q(module, i, repeat(next_obs), next_actions).view(B, K, 1)
                - next_logps.view(B, K, 1).detach(),
                twin_q(module, i, repeat(obs), curr_actions).view(B, K, 1)
                - curr_logps.view(B, K, 1).detach(),
            ],
            dim=1,
        )
        cql = (
            torch.logsumexp(q_repeat / HYPER.temperature, dim=1).mean()
            * HYPER.min_q_weight
            * HYPER.temperature
        )
        cql = cql - q_selected.mean() * HYPER.min_q_weight
        out[name] = torch.nn.MSELoss()(q_selected, target) + cql
    return out


def optimiser_params(module: LeanCQLModule, log_alpha: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    return {
        "critic": list(module.q.parameters()),
        "critic_twin": list(module.q.parameters()),
        "actor": list(module.pi.parameters()),
        "alpha": [log_alpha],
    }


# ------------------------------------------------------------------------ tests


def test_squashed_gaussian_matches_rllibs_action_and_log_probability() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2 * N, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 4.0, 4.0])
    noise = torch.randn(4, N, generator=g, dtype=torch.float64)
    action, logp = squashed_gaussian(logits, noise)
    expected_action, expected_logp = sample(logits, noise)
    torch.testing.assert_close(action, expected_action, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logp, expected_logp, rtol=1e-12, atol=1e-12)
    # and RLlib's public logp of the interior actions agrees
    torch.testing.assert_close(
        logp, TorchSquashedGaussian.from_logits(logits).logp(action), rtol=1e-9, atol=1e-9
    )


def test_lean_losses_equal_rllibs_cql_losses_on_a_fixed_batch() -> None:
    module = lean_module()
    batch, draws = fixed_batch()
    log_alpha = torch.tensor([math.log(0.3)], dtype=torch.float64, requires_grad=True)
    fwd_out = module.forward_train(batch)
    lean = cql_losses(module, batch, fwd_out, draws, log_alpha, HYPER)
    ref = reference_losses(module, batch, draws, log_alpha)
    for name in ("actor", "critic", "critic_twin", "alpha"):  # float64: equal up to summation order
        torch.testing.assert_close(getattr(lean, name), ref[name], rtol=1e-12, atol=1e-12, msg=name)


def test_one_backward_of_the_summed_loss_gives_each_optimisers_rllib_gradient() -> None:
    """RLlib: one backward per optimiser (twin 1, twin 2, policy, alpha), each loss on its own
    parameters; lean: one backward of the sum. Same gradients, parameter by parameter."""
    module = lean_module()
    batch, draws = fixed_batch()
    log_alpha = torch.tensor([math.log(0.3)], dtype=torch.float64, requires_grad=True)
    ref = reference_losses(module, batch, draws, log_alpha)
    params = optimiser_params(module, log_alpha)
    expected: dict[int, torch.Tensor] = {}
    for name, loss in ref.items():
        grads = torch.autograd.grad(loss, params[name], retain_graph=True, allow_unused=True)
        for p, g in zip(params[name], grads, strict=True):
            if g is not None:  # twin 1's loss reaches the stacked tensors' first half only
                expected[id(p)] = expected.get(id(p), torch.zeros_like(p)) + g
    lean = cql_losses(module, batch, module.forward_train(batch), draws, log_alpha, HYPER)
    lean.total().backward()
    everything: list[Any] = [*module.q.parameters(), *module.pi.parameters(), log_alpha]
    assert all(p.grad is not None for p in everything)
    for p in everything:
        torch.testing.assert_close(p.grad, expected[id(p)], rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in module.target_q.parameters())


def test_behaviour_cloning_updates_clone_the_logged_actions() -> None:
    module = lean_module()
    batch, draws = fixed_batch()
    log_alpha = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    fwd_out = module.forward_train(batch)
    lean = cql_losses(module, batch, fwd_out, draws, log_alpha, HYPER._replace(behaviour_cloning=True))
    logits = module.pi(batch[Columns.OBS])
    _, logp_res = sample(logits, draws.curr)
    bc_logp = TorchSquashedGaussian.from_logits(logits).logp(batch[Columns.ACTIONS])
    torch.testing.assert_close(lean.actor, torch.mean(logp_res - bc_logp), rtol=1e-12, atol=1e-12)


def test_the_cql_spec_uses_the_lean_module_and_learner() -> None:
    from ray.rllib.algorithms.cql import CQLConfig

    from raytrade.models.cql_learner import LeanCQLLearner
    from raytrade.tune_specs.cql import HIDDEN, lean_cql

    config = lean_cql(CQLConfig(), HIDDEN)
    assert config.rl_module_spec.module_class is LeanCQLModule
    assert config.rl_module_spec.model_config == {"hidden": HIDDEN}
    assert config.learner_class is LeanCQLLearner


def test_the_module_refuses_an_action_box_other_than_minus_one_to_one() -> None:
    with pytest.raises(ValueError, match=r"needs a Box\(N\) action space in \[-1, 1\], got Box\(0.0, 1.0"):
        LeanCQLModule(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
            action_space=gym.spaces.Box(0.0, 1.0, (N,), np.float32),
            model_config={"hidden": [4]},
        )


CLIP = 0.1
"""Binds for every optimiser in every mode on the fixed batch (checked by the test)."""


@pytest.fixture(scope="module")
def clipping_learner() -> Any:
    """The ``cql`` spec's learner, built with ``grad_clip`` (no longer refused), its module holding
    :func:`lean_module`'s float64 parameters and log alpha ``log(0.3)``."""
    from ray.rllib.algorithms.cql import CQLConfig

    from raytrade.tune_specs.cql import lean_cql

    config = (
        lean_cql(CQLConfig(), [6, 4])
        .environment(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (N,), np.float32),
        )
        .training(grad_clip=CLIP, grad_clip_by="global_norm", num_actions=K)
    )
    learner = config.build_learner(env=None)
    module = learner.module["default_policy"].unwrapped()
    module.double()  # in place: the optimisers keep their parameters
    module.load_state_dict(lean_module().state_dict())
    learner.curr_log_alpha["default_policy"].data = torch.tensor([math.log(0.3)], dtype=torch.float64)
    return learner


def rllib_optimiser_grads(
    module: LeanCQLModule, log_alpha: torch.Tensor
) -> dict[str, dict[str, torch.Tensor]]:
    """The reference gradients as RLlib's four optimisers hold them: ``qf`` and ``qf_twin`` each a
    dict of its twin's own tensors (the first layer's weight un-split), ``policy``, ``alpha``."""
    batch, draws = fixed_batch()
    ref = reference_losses(module, batch, draws, log_alpha)
    q = module.q
    out: dict[str, dict[str, torch.Tensor]] = {}
    for i, (loss, optimiser) in enumerate(((ref["critic"], "qf"), (ref["critic_twin"], "qf_twin"))):
        g = dict(
            zip(
                (n for n, _ in q.named_parameters()),
                torch.autograd.grad(loss, list(q.parameters()), retain_graph=True),
                strict=True,
            )
        )
        twin = {"layer0.weight": torch.cat([g["w_obs"][i], g["w_act"][i]]), "layer0.bias": g["b_in"][i, 0]}
        for j in range(len(q.weights)):
            twin[f"layer{j + 1}.weight"], twin[f"layer{j + 1}.bias"] = (
                g[f"weights.{j}"][i],
                g[f"biases.{j}"][i],
            )
        out[optimiser] = twin
    pi = dict(module.pi.named_parameters())
    out["policy"] = dict(
        zip(pi, torch.autograd.grad(ref["actor"], list(pi.values()), retain_graph=True), strict=True)
    )
    out["alpha"] = {"log_alpha": torch.autograd.grad(ref["alpha"], [log_alpha])[0]}
    return out


def as_rllib_optimisers(
    module: LeanCQLModule, grads: dict[Any, torch.Tensor], log_alpha: torch.Tensor
) -> dict[str, dict[str, torch.Tensor]]:
    """The lean learner's gradients (by parameter) laid out as :func:`rllib_optimiser_grads`."""
    q = module.q
    out: dict[str, dict[str, torch.Tensor]] = {}
    for i, optimiser in enumerate(("qf", "qf_twin")):
        twin = {
            "layer0.weight": torch.cat([grads[q.w_obs][i], grads[q.w_act][i]]),
            "layer0.bias": grads[q.b_in][i, 0],
        }
        for j, (w, b) in enumerate(zip(q.weights, q.biases, strict=True)):
            twin[f"layer{j + 1}.weight"], twin[f"layer{j + 1}.bias"] = grads[w][i], grads[b][i]
        out[optimiser] = twin
    out["policy"] = {name: grads[p] for name, p in module.pi.named_parameters()}
    out["alpha"] = {"log_alpha": grads[log_alpha]}
    return out


@pytest.mark.parametrize("grad_clip_by", ["value", "norm", "global_norm"])
def test_the_learner_clips_each_optimisers_gradients_as_rllibs_cql_learner_does(
    clipping_learner: Any, grad_clip_by: str
) -> None:
    """RLlib clips per optimiser (twin 1, twin 2, policy, alpha); the lean learner holds both twins
    in one optimiser and must still clip each twin with its own norms."""
    from ray.rllib.utils.torch_utils import clip_gradients, compute_global_norm

    learner = clipping_learner
    module = learner.module["default_policy"].unwrapped()
    log_alpha = learner.curr_log_alpha["default_policy"]
    expected = rllib_optimiser_grads(module, log_alpha)
    unclipped = {name: {k: v.clone() for k, v in d.items()} for name, d in expected.items()}
    norms = {}  # what RLlib logs with log_gradients: the returned global norm, else the clipped one
    for name, grads in expected.items():
        norm = clip_gradients(grads, grad_clip=CLIP, grad_clip_by=grad_clip_by)
        norms[name] = norm if norm is not None else compute_global_norm(list(grads.values()))
    for name in expected:  # the clip binds for every optimiser
        assert any(not torch.equal(expected[name][k], unclipped[name][k]) for k in expected[name]), name

    batch, draws = fixed_batch()
    lean = cql_losses(module, batch, module.forward_train(batch), draws, log_alpha, HYPER)
    grads = learner.compute_gradients({"default_policy": lean.total()})
    config = (
        learner.config.copy(copy_frozen=False)
        .training(grad_clip=CLIP, grad_clip_by=grad_clip_by)
        .reporting(log_gradients=True)
    )
    clipped = learner.postprocess_gradients_for_module(
        module_id="default_policy", config=config, module_gradients_dict=grads
    )
    got = as_rllib_optimisers(module, clipped, log_alpha)
    for name, tensors in expected.items():
        for k, v in tensors.items():
            torch.testing.assert_close(got[name][k], v, rtol=1e-10, atol=1e-12, msg=f"{name} {k}")
        logged = learner.metrics.peek(("default_policy", f"gradients_{name}_global_norm"))
        torch.testing.assert_close(torch.as_tensor(logged), norms[name], rtol=1e-10, atol=1e-12, msg=name)


def test_clipping_both_twins_jointly_would_differ_from_rllibs_per_twin_clipping() -> None:
    """What the per-twin clip guards against: one global norm over the stacked twins scales twin 1
    by another factor than RLlib's ``qf`` optimiser does."""
    from ray.rllib.utils.torch_utils import clip_gradients

    from raytrade.models.cql_learner import clip_twin_gradients

    module = lean_module()
    batch, draws = fixed_batch()
    log_alpha = torch.tensor([math.log(0.3)], dtype=torch.float64, requires_grad=True)
    cql_losses(module, batch, module.forward_train(batch), draws, log_alpha, HYPER).total().backward()
    stacked = [p.grad for p in module.q.parameters()]
    joint = {i: g.clone() for i, g in enumerate(stacked)}
    clip_gradients(joint, grad_clip=CLIP, grad_clip_by="global_norm")
    per_twin, norms = clip_twin_gradients(stacked, CLIP, "global_norm")
    assert norms is not None and norms[0] != norms[1]
    assert not torch.allclose(joint[0][0], per_twin[0][0])


def test_the_actor_is_cloned_for_the_learners_first_bc_iters_updates_across_update_calls() -> None:
    """Each ``update`` call is one training iteration's; RLlib's count of updates (a ``sum`` metric)
    restarted at every call, so every iteration began with cloning again. The learner's own count
    spans its life: ``bc_iters = 2`` clones on the first two updates, then never."""
    from ray.rllib.algorithms.cql import CQLConfig
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from raytrade.tune_specs.cql import lean_cql

    config = (
        lean_cql(CQLConfig(), [6, 4])
        .environment(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (N,), np.float32),
        )
        .training(bc_iters=2, num_actions=K)
    )
    spaces = {"default_policy": (config.observation_space, config.action_space)}
    learner = config.build_learner(spaces=spaces)
    rng = np.random.default_rng(0)
    batch = SampleBatch(
        {
            "obs": rng.normal(size=(8, D)).astype(np.float32),
            "new_obs": rng.normal(size=(8, D)).astype(np.float32),
            "actions": rng.uniform(-0.5, 0.5, (8, N)).astype(np.float32),
            "rewards": rng.normal(size=8).astype(np.float32),
            "terminateds": np.zeros(8, bool),
            "truncateds": np.zeros(8, bool),
        }
    )
    cloned = []
    for _ in range(4):
        result = learner.update(batch=MultiAgentBatch({"default_policy": batch}, 8))
        cloned.append(float(result["default_policy"]["behaviour_cloning"].peek()))
    assert cloned == [1.0, 1.0, 0.0, 0.0]
