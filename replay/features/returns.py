"""Returns and volatility group: multi-horizon log returns, realised vol and skew, ATR %, dollar volume.

Every value at row t uses closes/highs/lows up to and including t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.wide import Panel


def log_returns(close: pd.DataFrame) -> pd.DataFrame:
    """One-bar log returns of carried-forward closes (NaN on each symbol's first bar)."""
    return np.log(close).diff()


def returns_group(panel: Panel, cfg: FeatureConfig) -> dict[str, pd.DataFrame]:
    close = panel.filled("close")
    high, low = panel.filled("high"), panel.filled("low")
    r1 = log_returns(close)
    vol_short = r1.rolling(cfg.vol_short, min_periods=max(2, cfg.vol_short // 2)).std()
    vol_long = r1.rolling(cfg.vol_long, min_periods=max(3, cfg.vol_long // 2)).std()
    skew = r1.rolling(cfg.vol_long, min_periods=max(3, cfg.vol_long // 2)).skew()
    prev_close = close.shift(1)
    true_range = np.maximum(high - low, np.maximum((high - prev_close).abs(), (low - prev_close).abs()))
    true_range = true_range.where(prev_close.notna(), high - low)
    atr_pct = 100.0 * true_range.rolling(cfg.atr_window, min_periods=1).mean() / close
    dollar_volume = (
        (panel.raw["close"] * panel.raw["volume"]).rolling(cfg.dollar_volume_window, min_periods=1).mean()
    )
    return {
        "close": close,
        "ret_1": r1,
        "ret_5": np.log(close / close.shift(5)),
        "ret_20": np.log(close / close.shift(20)),
        "vol_20": vol_short,
        "vol_60": vol_long,
        "skew_60": skew,
        "atr_pct_14": atr_pct,
        "dollar_volume_20": dollar_volume,
    }
