"""A gated registry model through the evaluation harness (``raytrade evaluate --policy registry:...``):
its gate actions become the gated env's sizes, with the gate's own columns and lookback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import raytrade.models.inference as inference
from raytrade.envs.config import GatedEnvConfig, SimulatorConfig
from raytrade.envs.evaluation.harness import run_window
from raytrade.envs.evaluation.policies import registry_spec
from raytrade.envs.gate import STORE_GATE_COLUMN
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import replay_policy
from raytrade.envs.synthetic_market import synthetic_market_data

OBSERVED = ("ret_1", "vol_20")


def _data() -> MarketData:
    """Synthetic bars plus the store's gate flag (open everywhere) and narrow spreads."""
    from dataclasses import replace

    data = synthetic_market_data(n_assets=4, n_steps=80, seed=0)
    flag = np.ones((*data.features.shape[:2], 1), dtype=np.float32)
    return replace(
        data,
        features=np.concatenate([data.features, flag], axis=-1),
        feature_names=(*data.feature_names, STORE_GATE_COLUMN),
        feature_missing=None,
        spread_bps=data.spread_bps / 5,
    )


def test_a_gated_registry_model_is_evaluated_as_its_gate_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    # the model's greedy action: aggressive (3), long (0), full size (3) on every asset
    aggressive_long = np.tile(np.array([3, 0, 3]), data.n_assets)[None]
    monkeypatch.setattr(inference, "gate_actions", lambda module, obs: aggressive_long)
    cfg = GatedEnvConfig.model_validate({"feature_columns": list(OBSERVED)})
    handle = SimpleNamespace(
        feature_columns=OBSERVED,
        env_config=lambda: cfg,
        policy=lambda own: inference.module_policy(None, own, cfg),
    )
    spec = registry_spec("gate@1", Path("unused"), lambda ref, registry: handle)
    assert spec.feature_columns == (*OBSERVED, "fc_mean", STORE_GATE_COLUMN)  # what the gate reads
    assert spec.lookback_bars == 7  # the gate's sigma: the last 7 closes
    sim = SimulatorConfig(episode_len=data.n_steps - 1)
    # the evaluation closes the book at the window's end (harness): so does the expected replay
    expected = replay_policy(data, inference.gated_weights_policy(None, data, cfg), sim, close_at_end=True)
    assert np.abs(expected.weights).sum() > 1.0  # the gate does invest
    evaluated = run_window(spec, data, seed=0, sim=sim)
    np.testing.assert_allclose(evaluated.returns, expected.returns[0], rtol=0, atol=1e-12)
