"""``models.inference.single_threaded``: replays decide on one torch thread, with the same numbers.

The experiment runs its validation scoring and its evaluation inside ``single_threaded`` (one small
forward per bar, where a second intra-op thread only adds synchronisation); these tests pin that
the thread count is restored and that the evaluation's every series is bit-identical to the one
decided on two threads, for a learned policy and the baselines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raytrade.envs.config import PortfolioEnvConfig
from raytrade.envs.evaluation.harness import EvaluationConfig, EvaluationResult, evaluate, prepare
from raytrade.envs.gym_envs import PortfolioEnv
from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import load_market_data
from raytrade.envs.scenarios import ScenarioConfig
from raytrade.models.catalog import rl_module_spec
from raytrade.models.inference import module_policy, single_threaded

OBSERVED = ("ret_1", "vol_20")


def test_single_threaded_sets_one_thread_and_restores_the_count() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"), single_threaded():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class _Handle:
    """A learned PPO policy as the harness's handle: ``policy(data)`` is ``models.inference``'s
    replay policy, as ``cluster.experiment.WalkForwardPolicy`` gives it for a fold's model."""

    feature_columns = OBSERVED

    def __init__(self, module: Any, config: PortfolioEnvConfig) -> None:
        self.module, self.config = module, config

    def env_config(self) -> PortfolioEnvConfig:
        return self.config

    def act(self, observation: Any) -> Any:
        raise TypeError("policy(data) only")

    def policy(self, data: MarketData) -> Any:
        return module_policy(self.module, data, self.config)


def _handle(store: Path) -> _Handle:
    config = {"flat_obs": True, "feature_columns": list(OBSERVED)}
    env = PortfolioEnv(config, data=load_market_data(store, "all", feature_columns=OBSERVED))
    torch.manual_seed(0)
    spec = rl_module_spec("ppo_mlp", {"hidden": 16, "head_hidden": 16})
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module: Any = spec.build()
    module.eval()
    return _Handle(module, PortfolioEnvConfig.model_validate(config))


def _evaluate(store: Path, handle: _Handle) -> EvaluationResult:
    cfg = EvaluationConfig(
        walk_forward=2,
        seeds=(0,),
        scenarios=("flash_crash",),
        scenario_config=ScenarioConfig(draws=1),
    )
    names = ["kelly_lite", "equal_weight", "inverse_vol", "buy_and_hold", "registry:learned"]
    plan = prepare(store, names, cfg, registry=store, loader=lambda ref, registry: handle)
    return evaluate(plan)


def _series(result: EvaluationResult) -> dict[str, np.ndarray]:
    out = {}
    for name, res in result.policies.items():
        runs = {"main": res.main, **{f"fold{k}": f for k, f in enumerate(res.folds)}}
        runs |= {f"{s}{k}": r for s, draws in res.stress_draws.items() for k, r in enumerate(draws)}
        for run, series in runs.items():
            for field in ("returns", "turnover", "costs"):
                out[f"{name} {run} {field}"] = getattr(series, field)
    return out


def test_evaluation_on_one_thread_is_bit_identical_to_two(synthetic_store: Path) -> None:
    handle = _handle(synthetic_store)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = _series(_evaluate(synthetic_store, handle))
        with single_threaded():
            one = _series(_evaluate(synthetic_store, handle))
    finally:
        torch.set_num_threads(before)
    assert len(two) == 5 * (1 + 2 + 1) * 3  # 5 policies x (pooled, 2 folds, 1 draw) x 3 series
    assert any(np.abs(v).sum() > 0 for k, v in two.items() if k.startswith("registry:learned fold0 turn"))
    assert one.keys() == two.keys()
    for key, series in two.items():
        np.testing.assert_array_equal(one[key], series, err_msg=key)


def test_module_rollout_and_raytrade_evaluate_replay_on_one_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``select``/``promote`` (through ``module_rollout``) and ``raytrade evaluate`` replay inside
    ``single_threaded``: the replay sees one thread, the caller its own count again after."""
    from types import SimpleNamespace

    import raytrade.envs.evaluation.harness as harness
    import raytrade.envs.evaluation.render as render
    import raytrade.tune_specs.objective as objective
    from raytrade.cluster.evaluate import run_evaluation

    seen: list[int] = []

    def record(*_: Any, **__: Any) -> str:
        seen.append(torch.get_num_threads())
        return "replayed"

    monkeypatch.setattr(objective, "env_config_from_dict", lambda *_: SimpleNamespace(sim="sim"))
    monkeypatch.setattr(objective, "module_policy", lambda *_: None)
    monkeypatch.setattr(objective, "replay_policy", record)
    monkeypatch.setattr(harness, "prepare", lambda *_, **__: "plan")
    monkeypatch.setattr(harness, "evaluate", record)
    monkeypatch.setattr(render, "write_report", lambda *_, **__: (None, "report"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert objective.module_rollout(None, {}, None) == ("replayed", "sim")  # type: ignore[arg-type]
        assert run_evaluation(tmp_path, ["cash"], tmp_path / "out") == "report"
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
