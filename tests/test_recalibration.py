"""Forecast recalibration (walk-forward residual MLP per regime) and the adaptive consensus gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.envs.evaluation.kelly_lite import (
    CONSENSUS,
    KellyInputs,
    KellyLiteConfig,
    asset_flags,
    kelly_lite_decision,
)
from raytrade.replay.features.consensus import ConsensusGateConfig, adaptive_min_move
from raytrade.replay.features.recalibration import (
    RECAL_COLUMNS,
    SOURCE_COLUMNS,
    RecalibrationConfig,
    calibration_summary,
    recalibrate_quantiles,
)
from raytrade.replay.writer import ReplayWriter

Z = np.array([-1.6449, -0.6745, 0.0, 0.6745, 1.6449])  # standard normal quantiles of the five levels
WIDTH = (2.0, 1.4)  # outcome std / forecast std in regimes 0 and 1: both too narrow, by different factors
CFG = RecalibrationConfig(refit_every=150, min_train=100)


def _miscalibrated(n_bars: int = 450, n_symbols: int = 4, seed: int = 0):
    """A forecaster that states N(0, sigma) while outcomes are N(0, (WIDTH[regime] sigma)^2)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2020-01-01", periods=n_bars, freq="D", tz="UTC")
    symbols = [f"S{k}" for k in range(n_symbols)]
    sigma = np.exp(rng.normal(-4.0, 0.3, (n_bars, n_symbols)))
    regime = (rng.random((n_bars, n_symbols)) < 0.5).astype(np.float64)
    realised = np.full((n_bars, n_symbols), np.nan)
    realised[1:] = (
        np.where(regime[:-1] == 0, WIDTH[0], WIDTH[1]) * sigma[:-1] * rng.normal(size=(n_bars - 1, n_symbols))
    )
    frame = lambda a: pd.DataFrame(a, index=index, columns=symbols)  # noqa: E731
    quantiles = {c: frame(z * sigma) for c, z in zip(SOURCE_COLUMNS, Z, strict=True)}
    return quantiles, frame(regime), frame(realised)


def _stacked(frames: dict[str, pd.DataFrame], names: tuple[str, ...]) -> np.ndarray:
    return np.stack([frames[c].to_numpy() for c in names], -1).reshape(-1, len(names))


def test_calibration_summary_counts_coverage_and_pit_bins_exactly() -> None:
    q = np.tile([0.0, 1.0, 2.0, 3.0, 4.0], (4, 1))
    summary = calibration_summary(q, np.array([-1.0, 0.5, 2.5, 5.0]))
    assert summary == (4, 0.5, 0.25, (0.25, 0.25, 0.0, 0.25, 0.0, 0.25))


@pytest.fixture(scope="module")
def miscalibrated() -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """The synthetic forecaster's frames and their recalibration (4 fits: 2 refits x 2 regimes)."""
    quantiles, regime, realised = _miscalibrated()
    return quantiles, regime, realised, recalibrate_quantiles(quantiles, regime, realised, CFG)


def test_recalibration_improves_coverage_of_a_miscalibrated_forecaster(miscalibrated) -> None:
    quantiles, _, realised, recal = miscalibrated
    outcome = realised.shift(-1).to_numpy().reshape(-1)
    after_q = _stacked(recal, RECAL_COLUMNS)
    scored = np.isfinite(after_q).all(1)  # out-of-sample rows: those a model fitted on the past covers
    assert scored.sum() == 300 * 4
    before = calibration_summary(_stacked(quantiles, SOURCE_COLUMNS)[scored], outcome[scored])
    after = calibration_summary(after_q[scored], outcome[scored])
    assert abs(before.coverage_90 - 0.90) > 0.15
    assert abs(after.coverage_90 - 0.90) < 0.04
    assert after.pit_error < before.pit_error / 3


def test_recalibration_never_uses_future_data(miscalibrated) -> None:
    quantiles, regime, realised, full = miscalibrated
    cut = 350
    truncated = recalibrate_quantiles(
        {c: f.iloc[:cut] for c, f in quantiles.items()}, regime.iloc[:cut], realised.iloc[:cut], CFG
    )
    for name in RECAL_COLUMNS:
        assert truncated[name].iloc[150:].notna().all().all()
        pd.testing.assert_frame_equal(full[name].iloc[:cut], truncated[name], check_exact=True)
    assert full[RECAL_COLUMNS[0]].iloc[:150].isna().all().all()  # before the first refit: no model yet


def _features_store(root: Path, quantiles, regime, realised) -> None:
    """A features table holding only what ``raytrade recalibrate`` reads."""
    frames = {"ret_1": np.log1p(realised), "vol_regime_code": regime, **quantiles}
    long = pd.concat({name: frame.stack(future_stack=True) for name, frame in frames.items()}, axis=1)
    long = long.rename_axis(["ts", "symbol"]).reset_index().sort_values(["symbol", "ts"], ignore_index=True)
    with ReplayWriter(root) as writer:
        writer.append_features(long.assign(asset_class="equity", close=1.0))


def test_recalibrate_command_prints_coverage_and_pit_before_and_after(tmp_path: Path) -> None:
    quantiles, regime, realised = _miscalibrated(n_bars=300, n_symbols=2)
    _features_store(tmp_path, quantiles, regime, realised)
    args = ["recalibrate", "--replay", str(tmp_path), "--refit-every", "150", "--min-train", "100"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:] if "->" in line}
    assert set(rows) == {"all", "regime"}  # "regime 0" / "regime 1" both start with "regime"
    assert rows["all"][1] == "298"  # 149 bars (150..298: a model exists, the outcome is known) x 2
    before, after = float(rows["all"][2]), float(rows["all"][4])
    assert before < 0.75 and abs(after - 0.90) < abs(before - 0.90)


# ------------------------------------------------------------------------ adaptive consensus gate


def test_adaptive_min_move_from_spread_cost_hit_rate_and_skew() -> None:
    index = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    frame = lambda values: pd.DataFrame({"A": values}, index=index)  # noqa: E731
    cfg = ConsensusGateConfig(
        window=4, min_resolved=2, edge_floor=0.05, skew_weight=0.5, floor=0.001, cap=0.05
    )
    got = adaptive_min_move(
        fc_mean=frame([0.01, 0.01, -0.01, 0.01, 0.01, -0.02]),
        fc_skew=frame([0.0, 0.0, 0.0, -1.0, 0.4, 0.4]),
        realised=frame([np.nan, 0.02, -0.01, -0.01, 0.03, 0.01]),
        spread_bps=frame([10.0, 10.0, 20.0, 20.0, 30.0, 30.0]),
        cfg=cfg,
    )["A"].to_numpy()
    # t2: hit rate 1/2 -> 2h-1 floored at 0.05, cost 13.33 bps; t3: h 2/3, cost 15 bps, adverse skew 1;
    # t4: h 3/4, cost 20 bps, no adverse skew; t5: h 3/4, cost 25 bps, a short with skew +0.4
    expected = [np.nan, np.nan, 0.0013333333 / 0.05, 0.0015 / (1 / 3) * 1.5, 0.002 / 0.5, 0.0025 / 0.5 * 1.2]
    np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_adaptive_min_move_is_never_below_the_static_floor() -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    frame = lambda values: pd.DataFrame({"A": values}, index=index)  # noqa: E731
    cfg = ConsensusGateConfig(window=3, min_resolved=2)
    got = adaptive_min_move(
        frame([0.01, 0.01, 0.01]), frame([0.0] * 3), frame([np.nan, 0.01, 0.01]), frame([0.1] * 3), cfg
    )
    assert got["A"].iloc[-1] == cfg.floor == 0.001


def _kelly_inputs(min_move: np.ndarray | None) -> KellyInputs:
    n = 3
    return KellyInputs(
        fc_mean=np.full(n, 0.003),
        consensus_ok=np.ones(n, dtype=bool),
        spread_bps=np.full(n, 2.0),
        dollar_volume=np.full(n, 1e8),
        sigma=np.full(n, 0.02),
        listed=np.ones(n, dtype=bool),
        min_move=min_move,
    )


def test_kelly_lite_adaptive_gate_blocks_moves_below_the_adaptive_threshold() -> None:
    static = KellyLiteConfig()
    adaptive = KellyLiteConfig(consensus_gate="adaptive")
    flags = asset_flags(["A", "B", "C"], ["equity"] * 3, static)
    inputs = _kelly_inputs(np.array([0.002, 0.004, np.nan]))  # C: unknown threshold
    decided = kelly_lite_decision(inputs, flags, adaptive)
    np.testing.assert_array_equal(decided.weights, [0.15, 0.0, 0.0])
    np.testing.assert_array_equal(decided.blocked, [0, CONSENSUS, CONSENSUS])
    np.testing.assert_array_equal(kelly_lite_decision(inputs, flags, static).weights, [0.15, 0.15, 0.15])
    assert adaptive.feature_columns() == (*static.feature_columns(), "fc_min_move_adaptive")
    with pytest.raises(ValueError, match="consensus_gate='adaptive' needs KellyInputs.min_move"):
        kelly_lite_decision(_kelly_inputs(None), flags, adaptive)


def test_a_store_built_with_recalibration_observes_the_recalibrated_quantiles(tmp_path: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data, resolve_feature_groups
    from raytrade.replay.features import FeatureConfig
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=3, years=1.6, seed=5)
    config = FeatureConfig(recalibration=RecalibrationConfig(refit_every=200, min_train=100, steps=20))
    ingest_frames(tmp_path, market.bars, market.macro, config=config, show_progress=False)
    columns = resolve_feature_groups("recalibrated")
    data = load_market_data(tmp_path, "all", feature_columns=columns)
    assert data.feature_names == RECAL_COLUMNS
    present = ~data.feature_missing
    assert not present[:200].any()  # before the first refit there is no model: null, flagged missing
    assert present[200:].any()
    q05, q95 = data.features[..., 0], data.features[..., 4]
    assert (q05[present[..., 0]] < q95[present[..., 0]]).all()


def test_kelly_lite_baseline_reads_the_adaptive_column_and_a_missing_value_blocks() -> None:
    from raytrade.envs.baseline_weights import baseline_context, baseline_decision
    from raytrade.envs.market_data import MarketData

    n_bars = 10
    close = 100.0 * (1 + 0.01 * (-1.0) ** np.arange(n_bars))[:, None].repeat(2, axis=1)
    names = ("fc_mean", "fc_consensus_ok", "spread_bps", "fc_min_move_adaptive")
    features = np.zeros((n_bars, 2, 4), dtype=np.float32)
    features[..., :3] = (0.003, 1.0, 2.0)
    features[:, 0, 3] = 0.002  # A: a known threshold below the 0.3 % move; B: missing (stored as 0)
    missing = np.zeros(features.shape, dtype=bool)
    missing[:, 1, 3] = True
    data = MarketData(
        ts=np.datetime64("2026-01-05", "us") + np.arange(n_bars).astype("timedelta64[D]"),
        symbols=("A", "B"),
        asset_class=("equity", "equity"),
        open=close,
        close=close,
        listed=np.ones((n_bars, 2), dtype=bool),
        spread_bps=np.full((n_bars, 2), 2.0),
        dollar_volume=np.full((n_bars, 2), 1e8),
        features=features,
        feature_names=names,
        regime_code=np.zeros((n_bars, 2), dtype=np.int8),
        feature_missing=missing,
    )
    ctx = baseline_context("kelly_lite", data, KellyLiteConfig(consensus_gate="adaptive"))
    decided = baseline_decision(
        ctx, np.array([8]), np.array([False]), np.ones((1, 2), dtype=bool), np.zeros((1, 2))
    )
    np.testing.assert_array_equal(decided.allocation, [[0.15, 0.0]])
    static = baseline_decision(
        baseline_context("kelly_lite", data),
        np.array([8]),
        np.array([False]),
        np.ones((1, 2), dtype=bool),
        np.zeros((1, 2)),
    )
    np.testing.assert_array_equal(static.allocation, [[0.15, 0.15]])
