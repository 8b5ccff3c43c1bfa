"""Inference helpers every layer above ``models`` shares: a module's deterministic decision for an
env observation, and a module as a ``replay_policy`` policy.

* A Box policy's decision is its action distribution's deterministic sample (the mean), clipped to
  the action space ``[-1, 1]``: what RLlib's ``NormalizeAndClipActions`` sends to the env, and what
  the env bands and projects. A catalog module's ``weights(obs)`` (that action projected onto its own
  copy of the caps) is a diagnostic, not the decision (:func:`policy_output`).
* Observations are built by the env's own encoder (``envs.gym_envs``), never a copy of it.
* A tilt policy (``env_config.action.mode`` ``tilt:BASELINE``) acts in tilt units: its greedy action
  clipped to ``[-1, 1]`` goes through ``envs.actions`` around the baseline, as in the env.
* :func:`policy_output` is that decision and the action distribution's inputs from *one*
  ``forward_inference`` (serving needs both: the decision and its confidence), read from the
  distribution inputs, so no second forward is needed.
* RLlib's ``forward_inference`` puts the whole module tree in eval mode on every call (a walk that
  sets the flag on each submodule). :func:`inference_forward` skips that walk when the caller shows
  that every layer is already in eval mode (``models.load`` sets it once; ``PolicyHandle`` checks
  its cached layers per call, a tuple scan), so serving pays it never and the answer is the same.
* **A broken gated decision is not a flat one.** The argmax of a NaN row is index 0, "flat", so a
  gated policy whose distribution inputs are not finite (NaN weights, a NaN feature) would decide a
  finite all-flat book. :func:`broken_rows` names those rows: a replay or a score raises on them
  (:func:`gate_actions`, as the simulator raises on a Box policy's non-finite target) and serving
  holds every position (``serve.decide``, as for a non-finite Box action). For a Box policy it names
  the rows with a non-finite log-std (a finite mean, so a finite action): serving holds them too.
* :func:`single_threaded` runs a replay's decisions on one torch thread: a replay asks for one small
  batch per bar, where a second intra-op thread only adds synchronisation (on a loaded 2-core
  machine a PPO decision took 7.1 ms on 2 threads and 0.78 ms on 1, the same weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import gymnasium as gym
import numpy as np

from raytrade.envs.actions import ActionConfig, weight_orders
from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.config import GatedEnvConfig, PortfolioEnvConfig
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import Decision, Policy, Rollout, replay_policy
from raytrade.envs.simulator import Observation
from raytrade.models.tracing import ShapeTraces


def observation_arrays(
    ob: Observation, data: MarketData, env_cfg: PortfolioEnvConfig, gate: np.ndarray | None = None
) -> Any:
    """The env's observation (flat array or dict of arrays, leading batch dim) for a simulator
    ``Observation``, built exactly as ``PortfolioEnv`` builds it; a gated env's observation also
    needs its ``gate`` channel at the observed bar (``ActionDecoder.gate_channel``)."""
    from raytrade.envs.gym_envs import batched_observation, feature_index  # the env's own encoder, not a copy

    feat_idx = feature_index(data, env_cfg.feature_columns)
    rb = env_cfg.sim.kill_switch.release_after_bars
    return batched_observation(ob, feat_idx, rb, env_cfg.flat_obs, env_cfg.normalizer, gate)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block, the previous count restored after (also on
    an error). For bar-by-bar replays (evaluation, validation scoring): each decision is one small
    forward, too small to split across threads, so the second thread only waits on the first.
    Process-wide while it lasts, so not for a block that trains."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trace_for_inference(module: Any, on: bool = True) -> ShapeTraces | None:
    """Turn ``module``'s traced no-grad forward (its ``trace_inference()``, ``models.tracing``) on,
    or (``on`` False) off, where its family has one; the traces when on, else None. For a loaded
    policy that only answers."""
    trace = getattr(module, "trace_inference", None)
    return None if trace is None else trace(on)


def to_tensor(obs: Any) -> Any:
    """An env observation (array or dict of arrays) as float32 torch tensors."""
    import torch

    if isinstance(obs, Mapping):
        return {k: to_tensor(v) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs, dtype=np.float32))


def deterministic_actions(module: Any, obs: Any) -> np.ndarray:
    """The greedy env action ``[B, ...]`` of ``module`` (its action distribution's deterministic
    sample: the mean of a Gaussian, the argmax of each categorical), for a batch of observations."""
    import torch
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        dist_inputs = module.forward_inference({Columns.OBS: to_tensor(obs)})[Columns.ACTION_DIST_INPUTS]
        return greedy_actions(module, dist_inputs)


def greedy_actions(module: Any, dist_inputs: Any) -> np.ndarray:
    """The deterministic sample ``[B, ...]`` of ``module``'s action distribution with inputs
    ``dist_inputs`` (a ``forward_inference`` output's ``Columns.ACTION_DIST_INPUTS``). A diagonal
    Gaussian's is its mean, the first half of its inputs (RLlib's ``from_logits`` splits them into
    mean and log std): read directly, without building the distribution (about 20 us a decision)."""
    from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian

    cls = module.get_inference_action_dist_cls()
    if cls is TorchDiagGaussian and hasattr(dist_inputs, "shape"):
        return np.asarray(dist_inputs[..., : dist_inputs.shape[-1] // 2].cpu().numpy())
    dist = cls.from_logits(dist_inputs)
    return np.asarray(dist.to_deterministic().sample().cpu().numpy())


NON_FINITE_INPUTS: Final = "the policy's action distribution inputs contain NaN or inf"


def broken_rows(module: Any, dist_inputs: Any) -> np.ndarray:
    """``[B]`` bool: the rows whose decision is broken by their action distribution inputs alone.

    A discrete (gated) policy decides by argmax, and the argmax of a NaN row is index 0: mode "flat"
    (side long, level 0), a finite decision that sells every position. So a row any of whose
    inputs (mode, side or sizing logits) is NaN or inf is broken as a whole, as a non-finite Box
    action is: a diverged update's NaN weights, or one NaN feature, which the shared encoder's
    pooling carries into every symbol's logits. A Box policy's row is broken the same way: its
    deterministic action reads only the mean, so a NaN or inf log-std (a diverged update of the
    free log-std head) leaves a finite action from a network that is no longer sound, and a
    confidence that cannot be computed.
    """
    inputs = dist_inputs.detach().cpu().numpy() if hasattr(dist_inputs, "detach") else np.asarray(dist_inputs)
    return np.asarray(~np.isfinite(inputs).reshape(len(inputs), -1).all(-1), dtype=bool)


def gate_actions(module: Any, obs: Any) -> np.ndarray:
    """:func:`deterministic_actions` of a gated (discrete) policy, or ``ValueError`` when a row's
    distribution inputs are not finite (:func:`broken_rows`): a replay or a validation score of a
    broken gated decision fails, as a Box policy's non-finite target fails the simulator's step,
    instead of scoring the argmax's "flat" as a cash book."""
    import torch
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        dist_inputs = module.forward_inference({Columns.OBS: to_tensor(obs)})[Columns.ACTION_DIST_INPUTS]
        broken = broken_rows(module, dist_inputs)
        if broken.any():
            raise ValueError(
                f"{NON_FINITE_INPUTS} in {int(broken.sum())} of {len(broken)} rows (a diverged update "
                "or a NaN feature): a broken gated decision, not a flat one"
            )
        return greedy_actions(module, dist_inputs)


def weights_action(module: Any, obs: Any, action: ActionConfig) -> np.ndarray:
    """The deterministic Box action ``[B, N]`` a module sends the env under ``action``: its greedy
    action clipped to ``[-1, 1]`` (weights in absolute mode, a tilt in tilt modes), which the env
    bands and projects (:func:`policy_output`)."""
    return policy_output(module, obs, action).action


class PolicyOutput(NamedTuple):
    """One ``forward_inference`` of a batch: the decision and the distribution inputs it came from."""

    action: np.ndarray
    """``[B, ...]``: the deterministic decision (the rule is :func:`policy_output`'s)."""
    dist_inputs: Any
    """``torch.Tensor [B, ...]``: the action distribution's inputs (``Columns.ACTION_DIST_INPUTS``)."""


def inference_forward(module: Any, batch: dict[str, Any], layers: tuple[Any, ...] | None = None) -> Any:
    """``module.forward_inference(batch)``'s output.

    RLlib's ``forward_inference`` is ``eval()`` (every submodule's ``training`` flag set to False),
    then ``_forward_inference``, then ``train()`` again if the module was training. When none of
    ``layers`` (``tuple(module.modules())``, cached by the caller) is training, that ``eval()``
    changes nothing, so ``_forward_inference`` alone is called: the same outputs without the walk.
    Otherwise (or without ``layers``) RLlib's own ``forward_inference`` runs.
    """
    if layers is not None and not any(layer.training for layer in layers):
        return module._forward_inference(batch)
    return module.forward_inference(batch)


def policy_output(
    module: Any, obs: Any, action: ActionConfig, layers: tuple[Any, ...] | None = None
) -> PolicyOutput:
    """``module``'s deterministic decision for a batch of env observations under ``action``, and its
    action distribution inputs, from one ``forward_inference`` (torch inference mode;
    :func:`inference_forward` with ``layers``).

    The decision: a Box policy's greedy action (the Gaussian's mean) clipped to ``[-1, 1]``, the
    action the env receives for the mean, in every action mode; the simulator (a replay, a
    validation score) or the service then applies the no-trade band to it and projects it onto the
    full constraints once, as the env does. Until 2026-12-05 a weights module gave its ``weights()``
    here, already projected onto its own copy of the caps (no kill switch, no crypto sleeve, no crypto
    shorts), which were then projected again: under the kill switch or with crypto the book differed
    from the env's (targets [0.2, 0.667, 0.667] for the env's [0.2, 0.8, 0.9]), and the no-trade band
    compared projected weights where training compares the action (it held 96 % of asset-bars in
    scoring and serving, 0 % in training, at a band of 0.01). Any other action space: its greedy
    action as is (the gated family's mode, side, size).
    """
    import torch
    from ray.rllib.core.columns import Columns

    with torch.inference_mode():
        tensors = to_tensor(obs)
        out = inference_forward(module, {Columns.OBS: tensors}, layers)
        inputs = out[Columns.ACTION_DIST_INPUTS]
        if not isinstance(module.action_space, gym.spaces.Box):
            decided = greedy_actions(module, inputs)
        else:  # the env's action for the mean: clipped, then projected once by whoever trades it
            decided = np.clip(greedy_actions(module, inputs).astype(np.float64), -1.0, 1.0)
    return PolicyOutput(decided, inputs)


def gated_weights_policy(module: Any, data: MarketData, cfg: GatedEnvConfig) -> Policy:
    """A gating module as target weights: its greedy (mode, side, level) sized by the gated env's
    ``gate_orders`` with the contract's kelly at each episode's bar, observing the contract's gate
    channel as in training (``envs.gate``; ``passive`` executes as ``aggressive``). Under a tilt
    action mode the sizes are a tilt around the baseline, and a no-trade band holds, exactly as the
    gated env's ``ActionDecoder`` maps them (a ``Decision``), so a flat gate replays the baseline.
    A decision with non-finite distribution inputs raises ``ValueError`` (:func:`gate_actions`).
    :func:`module_policy` of a gated env config is this."""
    from raytrade.envs.actions import Orders, band_hold, tilt_orders
    from raytrade.envs.evaluation.policies import step_index
    from raytrade.envs.gate import contract_gate
    from raytrade.envs.gym_envs import gate_orders

    gate, action = contract_gate(data, cfg), cfg.action
    ctx = None if action.baseline is None else baseline_context(action.baseline, data, action.kelly_lite)

    def sizes(ob: Observation, t: Any) -> np.ndarray:
        actions = gate_actions(module, observation_arrays(ob, data, cfg, gate.open[t]))
        return np.asarray(gate_orders(actions, gate.kelly[t], cfg).target, dtype=np.float64)

    def policy(ob: Observation) -> np.ndarray | Decision:
        t = step_index(ob, data)
        target = sizes(ob, t)
        if ctx is None and action.no_trade_band == 0:
            return target
        if ctx is None:
            orders = Orders(target, band_hold(target, ob.weights, action.no_trade_band))
        else:
            orders = tilt_orders(
                action, target, ob.weights, baseline_decision(ctx, t, t == 0, ob.mask, ob.weights)
            )
        return Decision(weights=np.where(orders.hold, ob.weights, orders.target), hold=orders.hold)

    return policy


def module_policy(module: Any, data: MarketData, env_cfg: PortfolioEnvConfig) -> Policy:
    """``replay_policy``-compatible policy of ``module`` over a replay from bar 0 of ``data``:
    ``Observation -> weights [B, N]``, or a ``Decision`` (weights and holds) when ``env_cfg.action``
    tilts around a baseline or has a no-trade band, mapped exactly as the env maps actions
    (``envs.actions``)."""
    if isinstance(env_cfg, GatedEnvConfig):
        return gated_weights_policy(module, data, env_cfg)
    action = env_cfg.action
    if action.baseline is None and action.no_trade_band == 0:

        def policy(ob: Observation) -> np.ndarray:  # the action: the simulator projects it, as the env's
            return weights_action(module, observation_arrays(ob, data, env_cfg), action)

        return policy
    from raytrade.envs.evaluation.policies import step_index

    ctx = None if action.baseline is None else baseline_context(action.baseline, data, action.kelly_lite)

    def decide(ob: Observation) -> Decision:
        a = weights_action(module, observation_arrays(ob, data, env_cfg), action)
        t = step_index(ob, data)
        base = None if ctx is None else baseline_decision(ctx, t, t == 0, ob.mask, ob.weights)
        orders = weight_orders(action, a, ob.weights, base)
        return Decision(weights=np.where(orders.hold, ob.weights, orders.target), hold=orders.hold)

    return decide


def replay_gated(module: Any, data: MarketData, cfg: GatedEnvConfig, close_at_end: bool = False) -> Rollout:
    """The replay (one episode) of ``module``'s greedy gate actions over all of ``data``
    (``close_at_end``: the book closed at the last bar, as ``replay_policy`` closes it; the tuning
    objective asks for it, ``tune_specs.objective.CLOSE_AT_END``).

    Gate actions (mode, side, sizing level) go through the gated env's own action decoder and the
    same simulator, one episode from the first bar, like ``replay_policy``; the decoder also gives
    the observation's gate channel at the simulator's bar, as the env does. A decision with
    non-finite distribution inputs raises ``ValueError`` (:func:`gate_actions`): the replay of a
    broken module fails, as a Box policy's does on its non-finite target, and is never scored as flat.
    """
    from raytrade.envs.gym_envs import ActionDecoder

    decoders: list[ActionDecoder] = []

    def make_step(simulator: Any) -> Any:
        decoders.append(ActionDecoder(cfg, data, simulator))
        return decoders[0].step

    def policy(ob: Observation) -> np.ndarray:
        return gate_actions(module, observation_arrays(ob, data, cfg, decoders[0].gate_channel()))

    return replay_policy(data, policy, cfg.sim, make_step=make_step, close_at_end=close_at_end)
