"""Long <-> wide reshaping: features are computed on (time x symbol) frames of one asset class.

Each asset class gets its own calendar (the union of its symbols' timestamps), so equities and crypto
are never aligned on each other's days. A symbol's columns are NaN before its first bar; inside its
life a missing bar is carried from the last known value only where a price is needed (``ffill`` never
reaches back before the first bar). ``present`` marks the (ts, symbol) cells that have a real bar:
only those become feature rows.
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
