"""Configuration of the feature builders: windows in bars, thresholds in the trading loop's units."""

from __future__ import annotations

from typing import Final

from pydantic import ConfigDict, Field

from raytrade.replay.features.recalibration import RecalibrationConfig
from raytrade.replay.loop_rules import LoopRules

MAX_STATED_SPREAD_BPS: Final = 10_000.0
"""Upper bound (exclusive) of a stated spread: 100 % of the price; the simulator costs at most
``envs.costs.CostConfig.max_spread_bps`` of any spread anyway."""


class FeatureConfig(LoopRules):
    """Windows (bars) and trading-loop constants the feature groups use. Defaults: DESIGN §4."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vol_short: int = Field(20, ge=2, description="bars of the short realised-volatility window")
    vol_long: int = Field(60, ge=5, description="bars of the long volatility / skew / VaR window")
    atr_window: int = Field(14, ge=2, description="bars of the average true range")
    dollar_volume_window: int = Field(20, ge=1, description="bars of the average dollar volume")
    spread_estimator_window: int = Field(
        20, ge=1, description="bars averaged by the high/low spread estimator"
    )
    unquoted_spread_bps: float | None = Field(
        None,
        gt=0,
        lt=MAX_STATED_SPREAD_BPS,
        description="full spread in bps stated for every bar without a quote, in place of the high/low "
        "estimate (None: the estimate); a store records it (replay.feature_settings)",
    )
    fill_prob_window: int = Field(20, ge=2, description="bars of the passive fill-probability estimate")
    regime_median_window: int = Field(
        252, ge=20, description="bars of the volatility median the regime compares to"
    )
    regime_choppy_ratio: float = Field(1.25, gt=1.0, description="vol / median vol at which choppy starts")
    regime_crisis_ratio: float = Field(2.0, gt=1.0, description="vol / median vol at which crisis starts")
    cluster_every: int = Field(21, ge=1, description="bars between correlation-cluster recomputations")
    cluster_window: int = Field(60, ge=10, description="bars of returns the correlation clusters use")
    cluster_min_corr: float = Field(0.3, ge=0.0, le=1.0, description="average correlation joining a cluster")
    forecast_halflife: float = Field(10.0, gt=0.0, description="bars: half-life of the baseline drift")
    forecast_vol_halflife: float = Field(20.0, gt=0.0, description="bars: half-life of the baseline std")
    forecast_drift_shrink: float = Field(0.5, ge=0.0, le=1.0, description="shrinkage of the baseline drift")
    forecast_resid_window: int = Field(120, ge=20, description="bars of standardised residuals for quantiles")
    calibration_window: int = Field(60, ge=10, description="resolved forecasts the calibration residual uses")
    min_history: int = Field(
        20, ge=2, description="traded bars (volume > 0) a symbol needs before its gate can open"
    )
    dd_reduce: float = Field(-0.10, lt=0.0, description="drawdown at which the trigger says reduce")
    dd_halt: float = Field(-0.20, lt=0.0, description="drawdown at which the trigger says halt")
    recalibration: RecalibrationConfig | None = Field(
        None,
        description="walk-forward forecast recalibration (fc_recal_q*; seconds of CPU torch per build); "
        "None: those columns stay null",
    )
