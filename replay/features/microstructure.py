"""Microstructure group: spread (quoted, else estimated from high/low), depth, imbalance, slope, fills.

* ``spread_bps``: (ask - bid) / mid in bps where the bar carries a positive two-sided quote
  (``spread_is_quoted`` True); otherwise the Corwin-Schultz (2012) high/low estimator over the bar
  and the one before it, negative estimates set to 0, averaged over the symbol's last
  ``spread_estimator_window`` real bars (``spread_is_quoted`` False). Both use only bars <= t. The
  estimator reads real bars only: a pair whose earlier row has no bar (the first bar after a hole in
  the symbol's bars on the class calendar) gives no estimate, and rows without a bar are not in the
  window, so after a hole the mean is that of the pairs before it. A carried-forward bar would read
  as a range the market never had (a repeated bar as a spread of |ln(high/low)|, the pair across the
  hole as the whole move during it: hundreds of bps, carried by the mean for weeks). A bar that traded
  nothing (volume 0: ``Panel.traded``) is a hole to the estimator too (its flat bar would read as a
  spread of 0, a thin name looking cheap exactly when it is not); its own row carries the estimate of
  the symbol's last traded bar (NaN before the first one: no quote, the gate stays shut).
  ``unquoted_spread_bps`` set (a stated spread): every bar without a quote has that spread instead of
  the estimate. On daily bars of volatile names the estimate reads mostly volatility (the benchmark
  ``benchmarks.spread_estimators``: about 23x a 5 bps spread at 3 % daily volatility), so a user who
  knows their names' spreads states them.
* ``depth_usd``: displayed notional at the touch, bid_size * bid + ask_size * ask.
* ``imbalance``: (bid_size - ask_size) / (bid_size + ask_size), in [-1, 1].
* ``book_slope``: half-spread in bps per $1M of displayed depth: what crossing the touch costs
  relative to how much it holds (a steeper book is more expensive to trade).
* ``fill_prob``: share of the last ``fill_prob_window`` bars s <= t where a passive buy at the
  previous bar's bid would have filled (low_s <= bid_{s-1}). A bar that traded nothing (volume 0:
  ``Panel.traded``) is a non-fill (0) whatever its low: nothing traded, so nothing could have
  filled a resting order. Read as a bar, its flat low (the last close, printed again) is a fill
  whenever that close was at or under the previous bid (a last trade at the bid, common in a thin
  name): a name that stops trading would read as easy to fill passively exactly when it is not. A
  row where the symbol has no bar, or the previous row no bid (no order was resting), is no
  observation (NaN, not in the share).
All quote-based columns are null when the bar has no quote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.wide import Panel, carry_last_traded, rolling_mean_over_bars

_CS_DENOM = 3.0 - 2.0 * np.sqrt(2.0)


def corwin_schultz_bps(high: pd.DataFrame, low: pd.DataFrame) -> pd.DataFrame:
    """Two-bar Corwin-Schultz spread estimate in bps for the pair (t-1, t); negatives become 0.

    NaN where either bar's high or low is NaN (no bar at t-1: the pair spans a hole)."""
    hl = np.log(high / low) ** 2
    beta = hl + hl.shift(1)
    gamma = np.log(np.maximum(high, high.shift(1)) / np.minimum(low, low.shift(1))) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_DENOM - np.sqrt(gamma / _CS_DENOM)
    spread = 2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha))
    return (spread.clip(lower=0.0)) * 1e4


def microstructure_group(panel: Panel, cfg: FeatureConfig) -> dict[str, pd.DataFrame]:
    bid, ask = panel.raw["bid"], panel.raw["ask"]
    bid_size, ask_size = panel.raw["bid_size"], panel.raw["ask_size"]
    quoted = (bid > 0) & (ask > 0) & (ask >= bid)
    mid = (bid + ask) / 2.0
    quoted_bps = ((ask - bid) / mid * 1e4).where(quoted)
    traded = panel.traded
    if cfg.unquoted_spread_bps is None:
        pairs = corwin_schultz_bps(panel.raw["high"].where(traded), panel.raw["low"].where(traded))
        estimated = carry_last_traded(
            rolling_mean_over_bars(pairs, traded, cfg.spread_estimator_window), traded, panel.present
        )
    else:
        estimated = pd.DataFrame(cfg.unquoted_spread_bps, index=bid.index, columns=bid.columns).where(
            panel.present
        )
    spread = quoted_bps.where(quoted, estimated)
    depth = (bid_size * bid + ask_size * ask).where(quoted)
    total_size = bid_size + ask_size
    imbalance = ((bid_size - ask_size) / total_size).where(quoted & (total_size > 0))
    slope = (spread / 2.0 / (depth / 1e6)).where(quoted & (depth > 0))
    prev_bid = bid.shift(1)
    filled = ((panel.raw["low"] <= prev_bid) & traded).astype("float64")
    filled = filled.where(prev_bid.notna() & panel.present)
    fill_prob = filled.rolling(cfg.fill_prob_window, min_periods=2).mean()
    return {
        "spread_bps": spread,
        "spread_is_quoted": quoted,
        "depth_usd": depth,
        "imbalance": imbalance,
        "book_slope": slope,
        "fill_prob": fill_prob,
    }
