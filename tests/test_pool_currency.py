"""Walk-forward folds pooled as one account report that account's amounts in currency. Each fold runs
from fresh equity; its costs, exit cost and interest are scaled by what the pooled account had grown
to at the fold's start. They used to be summed as run: on 30 real stocks over three folds, where the
account ended at about 3.5x, `equal_weight`'s pooled costs read $1,995 against the $3,467 the one
account paid (a reviewer's independent backtest)."""

from __future__ import annotations

import numpy as np
import pytest

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.harness import pool, run_folds
from raytrade.envs.evaluation.policies import baseline_spec
from raytrade.envs.market_data import MarketData


def _window(close: np.ndarray, ts: np.ndarray) -> MarketData:
    n, k = close.shape
    return MarketData(
        ts=ts,
        symbols=tuple(f"S{i}" for i in range(k)),
        asset_class=("equity",) * k,
        open=close,
        close=close,
        listed=np.ones((n, k), dtype=bool),
        spread_bps=np.full((n, k), 10.0),
        dollar_volume=np.full((n, k), 5e7),
        features=np.zeros((n, k, 1), dtype=np.float32),
        feature_names=("ret_1",),
        regime_code=np.zeros((n, k), dtype=np.int8),
    )


def test_pooled_costs_are_the_one_accounts_not_each_fresh_folds() -> None:
    t = 60
    ts = np.busday_offset("2024-01-01", np.arange(2 * t), roll="forward").astype("datetime64[us]")
    rng = np.random.default_rng(0)
    close = 50.0 * np.cumprod(1.01 + 0.01 * rng.standard_normal((2 * t, 3)), axis=0)  # the account doubles
    first, second = run_folds(
        baseline_spec("equal_weight"),
        [_window(close[:t], ts[:t]), _window(close[t:], ts[t:])],
        0,
        SimulatorConfig(),
    )
    grown = float(np.prod(1.0 + first.returns))
    assert grown > 1.5
    pooled = pool((first, second))
    np.testing.assert_allclose(pooled.costs[: len(first.returns)], first.costs, rtol=1e-12)
    np.testing.assert_allclose(pooled.costs[len(first.returns) :], second.costs * grown, rtol=1e-12)
    assert pooled.exit_cost == pytest.approx(first.exit_cost + second.exit_cost * grown, rel=1e-12)
    assert pooled.costs.sum() > first.costs.sum() + second.costs.sum() * 1.5  # before: the plain sum
    np.testing.assert_array_equal(pooled.returns, np.concatenate([first.returns, second.returns]))
