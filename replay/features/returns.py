"""Returns and volatility group: multi-horizon log returns, realised vol and skew, ATR %, dollar volume.

Every value at row t uses closes/highs/lows up to and including t. ``atr_pct_14`` reads real bars
only: the true range of a bar whose previous calendar row has no bar (the first bar after a hole) is
its own high - low, as on a symbol's first bar, and the average runs over the symbol's last
``atr_window`` real bars; carried-forward rows would add the move during the hole as one bar's range.
A bar that traded nothing (volume 0: ``Panel.traded``) is a hole to the ATR too, its flat range of 0
no market's; its own row carries the ``atr_pct_14`` of the symbol's last traded bar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.wide import Panel, carry_last_traded, rolling_mean_over_bars, rolling_over_bars


def log_returns(close: pd.DataFrame) -> pd.DataFrame:
    """One-bar log returns of carried-forward closes (NaN on each symbol's first bar)."""
    return np.log(close).diff()


def returns_group(panel: Panel, cfg: FeatureConfig) -> dict[str, pd.DataFrame]:
    close = panel.filled("close")
    traded = panel.traded
    high, low = panel.raw["high"].where(traded), panel.raw["low"].where(traded)
    r1 = log_returns(close)
    # the dispersion estimators read traded bars only: a halt printed at the last close (zero volume),
    # or a hole carried forward, is no bar of zero return (35 flat halted bars made a stock's vol_20 13x
    # too small, and inverse_vol put three quarters of its book in it); a traded bar's return runs
    # from the symbol's previous traded close, across the hole
    traded_close = panel.raw["close"].where(traded)
    r_traded = np.log(traded_close / traded_close.ffill().shift(1))
    short, long = cfg.vol_short, cfg.vol_long
    vol_short = carry_last_traded(
        rolling_over_bars(r_traded, traded, short, max(2, short // 2), "std"), traded, panel.present
    )
    vol_long = carry_last_traded(
        rolling_over_bars(r_traded, traded, long, max(3, long // 2), "std"), traded, panel.present
    )
    skew = carry_last_traded(
        rolling_over_bars(r_traded, traded, long, max(3, long // 2), "skew"), traded, panel.present
    )
    prev_close = panel.raw["close"].where(traded).shift(1)
    true_range = np.maximum(high - low, np.maximum((high - prev_close).abs(), (low - prev_close).abs()))
    true_range = true_range.where(prev_close.notna(), high - low)
    atr = 100.0 * rolling_mean_over_bars(true_range, traded, cfg.atr_window) / close
    atr_pct = carry_last_traded(atr, traded, panel.present)
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
