"""Long <-> wide reshaping: features are computed on (time x symbol) frames of one asset class.

Each asset class gets its own calendar (the union of its symbols' timestamps), so equities and crypto
are never aligned on each other's days. A symbol's columns are NaN before its first bar; inside its
life a missing bar is carried from the last known value only where a price is needed (``ffill`` never
reaches back before the first bar). ``present`` marks the (ts, symbol) cells that have a real bar:
only those become feature rows. Estimators that read a bar's range (the high/low spread, the ATR) must
not see carried rows: a repeated bar, or the pair (last bar, first bar after a hole), reads as a range
the market never had; they use ``raw`` and ``rolling_mean_over_bars``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "bid", "ask", "bid_size", "ask_size")


@dataclass(frozen=True)
class Panel:
    """Wide frames (index: calendar, columns: symbols) of one asset class."""

    asset_class: str
    raw: dict[str, pd.DataFrame]  # as stored, NaN where there is no bar
    present: pd.DataFrame  # bool: a bar exists at (ts, symbol)

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.present.index)

    @property
    def symbols(self) -> list[str]:
        return [str(c) for c in self.present.columns]

    def filled(self, name: str) -> pd.DataFrame:
        """``raw[name]`` carried forward inside each symbol's life (never before its first bar)."""
        return self.raw[name].ffill()


def to_panel(bars: pd.DataFrame, asset_class: str) -> Panel:
    """Pivot the bars of one asset class (long, unique (symbol, ts)) into a ``Panel``."""
    sub = bars[bars["asset_class"] == asset_class]
    close = sub.pivot(index="ts", columns="symbol", values="close").astype("float64").sort_index()
    raw = {
        name: (
            sub.pivot(index="ts", columns="symbol", values=name).astype("float64").reindex_like(close)
            if name in sub.columns
            else pd.DataFrame(np.nan, index=close.index, columns=close.columns)
        )
        for name in PRICE_COLUMNS
    }
    present = raw["close"].notna()
    return Panel(asset_class, raw, present)


def to_long(frames: dict[str, pd.DataFrame], present: pd.DataFrame) -> pd.DataFrame:
    """Stack wide frames into long rows (symbol, ts, one column per frame) where ``present``."""
    mask = present.to_numpy().ravel(order="F")
    symbols = np.repeat(np.asarray(present.columns, dtype=object), len(present.index))
    ts = np.tile(present.index.to_numpy(), len(present.columns))
    data: dict[str, object] = {"symbol": symbols[mask], "ts": ts[mask]}
    for name, frame in frames.items():
        values = frame.reindex(index=present.index, columns=present.columns).to_numpy()
        data[name] = values.ravel(order="F")[mask]
    out = pd.DataFrame(data)
    out["ts"] = pd.DatetimeIndex(out["ts"]).tz_convert("UTC") if out["ts"].dt.tz else out["ts"]
    return out


def rolling_mean_over_bars(values: pd.DataFrame, present: pd.DataFrame, window: int) -> pd.DataFrame:
    """Mean of ``values`` over each symbol's last ``window`` real bars (rows where ``present``).

    Rows without a bar are not in the window (their result is NaN), so a hole in one symbol's bars
    neither dilutes nor ages its window: the window after the hole holds the bars before it. NaN values
    on real bars are skipped; the mean is NaN only when the window holds no value. Causal: the value at
    a row reads that row and earlier ones only.
    """
    out = np.full(values.shape, np.nan)
    for j, symbol in enumerate(values.columns):
        rows = present[symbol].to_numpy(dtype=bool)
        out[rows, j] = values[symbol][rows].rolling(window, min_periods=1).mean().to_numpy()
    return pd.DataFrame(out, index=values.index, columns=values.columns)
