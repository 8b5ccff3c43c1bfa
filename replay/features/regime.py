"""Regime group: drawdown and its velocity, rolling historical VaR, volatility regime, correlation clusters.

* ``drawdown``: close / running peak of closes - 1 (<= 0), the peak over the symbol's own past.
* ``drawdown_velocity``: change of drawdown per bar over the last 5 bars.
* ``var_95_60``: historical 95 % VaR of one-bar log returns over ``vol_long`` bars, as a positive loss.
* ``vol_regime``: calm / choppy / crisis from the short realised vol over its rolling median
  (``regime_median_window`` bars): below ``regime_choppy_ratio`` calm, below ``regime_crisis_ratio``
  choppy, else crisis; ``vol_regime_code`` 0 / 1 / 2; null until the median exists.
* ``corr_cluster``: every ``cluster_every`` bars (counted from the calendar's first bar, so the
  schedule never depends on where the data ends) the symbols with enough returns in the last
  ``cluster_window`` bars are clustered by average-linkage on 1 - correlation, cut where the average
  correlation falls below ``cluster_min_corr``; ids are numbered by each cluster's first symbol in
  sorted order and held until the next recomputation. Null for symbols not clustered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.returns import log_returns
from raytrade.replay.features.wide import Panel

REGIME_LABELS = ("calm", "choppy", "crisis")


def correlation_clusters(returns: np.ndarray, min_corr: float) -> np.ndarray:
    """Cluster ids (0..k-1, numbered by first member) of the columns of ``returns`` [window, n]."""
    n = returns.shape[1]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    centered = returns - np.nanmean(returns, axis=0, keepdims=True)
    centered = np.nan_to_num(centered)
    norms = np.sqrt((centered**2).sum(axis=0))
    norms[norms == 0] = 1.0
    corr = np.clip((centered.T @ centered) / np.outer(norms, norms), -1.0, 1.0)
    dist = 1.0 - corr
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method="average")
    raw = fcluster(tree, t=1.0 - min_corr, criterion="distance")
    _, first_index = np.unique(raw, return_index=True)
    order = {label: rank for rank, label in enumerate(raw[np.sort(first_index)])}
    return np.array([order[label] for label in raw], dtype=np.int64)


def cluster_frame(r1: pd.DataFrame, present: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """``corr_cluster`` of one-bar log returns ``r1`` where ``present`` (the module's docstring)."""
    values = r1.to_numpy()
    alive = present.to_numpy()
    t, n = values.shape
    out = np.full((t, n), np.nan)
    min_obs = max(5, int(cfg.cluster_window * 2 / 3))
    for start in range(cfg.cluster_window - 1, t, cfg.cluster_every):
        window = values[start - cfg.cluster_window + 1 : start + 1]
        eligible = alive[start] & (np.isfinite(window).sum(axis=0) >= min_obs)
        if not eligible.any():
            continue
        ids = correlation_clusters(window[:, eligible], cfg.cluster_min_corr)
        block = np.full(n, np.nan)
        block[eligible] = ids
        out[start : start + cfg.cluster_every] = block
    return pd.DataFrame(out, index=r1.index, columns=r1.columns)


def regime_group(panel: Panel, cfg: FeatureConfig, vol_short: pd.DataFrame) -> dict[str, pd.DataFrame]:
    close = panel.filled("close")
    r1 = log_returns(close)
    drawdown = close / close.cummax() - 1.0
    velocity = (drawdown - drawdown.shift(5)) / 5.0
    var95 = -r1.rolling(cfg.vol_long, min_periods=max(3, cfg.vol_long // 2)).quantile(0.05)
    median = vol_short.rolling(cfg.regime_median_window, min_periods=cfg.vol_short * 3).median()
    ratio = vol_short / median
    code = pd.DataFrame(
        np.select(
            [
                ratio < cfg.regime_choppy_ratio,
                ratio < cfg.regime_crisis_ratio,
                ratio >= cfg.regime_crisis_ratio,
            ],
            [0.0, 1.0, 2.0],
            default=np.nan,
        ),
        index=ratio.index,
        columns=ratio.columns,
    )
    labels = code.apply(lambda col: col.map({0.0: "calm", 1.0: "choppy", 2.0: "crisis"}))
    return {
        "drawdown": drawdown,
        "drawdown_velocity": velocity,
        "var_95_60": var95,
        "vol_regime": labels,
        "vol_regime_code": code,
        "corr_cluster": cluster_frame(r1, panel.present, cfg),
    }
