"""Risk-budget group: the loop's kelly_lite sizing, leverage cap, concentration, drawdown trigger, financing.

* ``kelly_lite`` = min(cap, max(0, scale x edge / sigma^2)) with edge = |fc_mean| and sigma the
  standard deviation of the simple returns of the last ``kelly_sigma_closes`` closes; 0 where the
  gate is closed (the loop sizes blocked symbols at zero).
* ``concentration``: the symbol's share of the summed kelly_lite of its asset class at ts (0 when
  nothing is sized).
* ``dd_trigger_state``: 0 normal, 1 reduce (drawdown <= ``dd_reduce``), 2 halt (<= ``dd_halt``).
* ``financing_bps``: one bar's financing of 1x borrowed notional, the annual rate over the panel's
  bars per year (``features.wide.periods_per_year``: 252 or 365 days times its bars per day; it was
  a day's on every intraday bar, 7x an hourly equity bar's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.wide import Panel, periods_per_year


def kelly_lite(edge: pd.DataFrame, sigma: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """min(cap, max(0, scale * edge / sigma^2)); NaN where sigma is unknown or zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = cfg.kelly_scale * edge / sigma**2
    return raw.where(sigma > 0).clip(lower=0.0, upper=cfg.kelly_cap)


def risk_group(
    panel: Panel, cfg: FeatureConfig, fc_mean: pd.DataFrame, gate_open: pd.DataFrame, drawdown: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    close = panel.filled("close")
    simple = close.pct_change(fill_method=None)
    sigma = simple.rolling(cfg.kelly_sigma_closes - 1, min_periods=cfg.kelly_sigma_closes - 1).std()
    kelly = kelly_lite(fc_mean.abs(), sigma, cfg).where(gate_open.astype(bool), 0.0)
    kelly = kelly.where(panel.present)
    total = kelly.sum(axis=1)
    concentration = kelly.div(total.where(total > 0), axis=0).fillna(0.0).where(kelly.notna())
    crypto = panel.asset_class == "crypto"
    shape_frame = lambda v: pd.DataFrame(v, index=panel.index, columns=panel.symbols)  # noqa: E731
    state = np.where(drawdown <= cfg.dd_halt, 2, np.where(drawdown <= cfg.dd_reduce, 1, 0))
    return {
        "kelly_lite": kelly,
        "leverage_cap": shape_frame(cfg.leverage_cap_crypto if crypto else cfg.leverage_cap_equity),
        "concentration": concentration,
        "dd_trigger_state": shape_frame(state).where(drawdown.notna()),
        "financing_bps": shape_frame(
            cfg.financing_annual / periods_per_year(panel.index, panel.asset_class) * 1e4
        ),
    }
