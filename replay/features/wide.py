"""Long <-> wide reshaping: features are computed on (time x symbol) frames of one asset class.

Each asset class gets its own calendar (the union of its symbols' timestamps), so equities and crypto
are never aligned on each other's days. A symbol's columns are NaN before its first bar; inside its
life a missing bar is carried from the last known value only where a price is needed (``ffill`` never
reaches back before the first bar). ``present`` marks the (ts, symbol) cells that have a real bar:
only those become feature rows. Estimators that read a bar's range (the high/low spread, the ATR) must
not see carried rows: a repeated bar, or the pair (last bar, first bar after a hole), reads as a range
the market never had; they use ``raw`` and ``rolling_mean_over_bars``. Nor may they see a bar that
traded nothing (``Panel.traded``): vendors print a halted or dead day at the previous close with
open = high = low = close and volume 0, a zero range that is no market's; such a bar is a hole to
them, and its own row carries the estimate of the symbol's last traded bar (``carry_last_traded``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

    @property
    def traded(self) -> pd.DataFrame:
        """bool: a bar that traded exists at (ts, symbol): ``present`` and volume > 0.

        A bar with volume 0, or without a volume once the symbol has had one (at this bar or an
        earlier one), is not a traded bar: its range is not the market's. Bars of a symbol with no
        volume so far (a source that has none: stored bars always have one) all count as traded, as
        before volume was read here. Causal: a row reads that row and earlier ones only."""
        volume = self.raw["volume"]
        has_volume = volume.notna().cummax()
        return self.present & ((volume > 0) | ~has_volume)

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
    return rolling_over_bars(values, present, window, 1, "mean")


def rolling_over_bars(
    values: pd.DataFrame,
    bars: pd.DataFrame,
    window: int,
    min_periods: int,
    stat: Literal["mean", "std", "skew"],
) -> pd.DataFrame:
    """``stat`` of ``values`` over each symbol's last ``window`` rows where ``bars`` (NaN on the other
    rows), with at least ``min_periods`` values: a hole (or a halt) neither dilutes the window nor
    stands in it as a bar of no change. Causal."""
    out = np.full(values.shape, np.nan)
    for j, symbol in enumerate(values.columns):
        rows = bars[symbol].to_numpy(dtype=bool)
        rolled = values[symbol][rows].rolling(window, min_periods=min_periods)
        out[rows, j] = getattr(rolled, stat)().to_numpy()
    return pd.DataFrame(out, index=values.index, columns=values.columns)


def carry_last_traded(values: pd.DataFrame, traded: pd.DataFrame, present: pd.DataFrame) -> pd.DataFrame:
    """``values`` where ``traded``; on a present but untraded row, the value at the symbol's last traded
    row (NaN when it has none yet); NaN elsewhere (no bar).

    An untraded bar (``Panel.traded``) is a hole to the range estimators, but it is a bar: its feature
    row gets what the estimator said on the last bar that traded, as the first bar after a hole
    starts from the window before it. Causal: reads that row and earlier ones only. The three frames
    share one index and one column order (a ``Panel``'s)."""
    for name, frame in (("traded", traded), ("present", present)):
        if not (frame.index.equals(values.index) and frame.columns.equals(values.columns)):
            raise ValueError(f"carry_last_traded: {name} is not aligned with values (index and columns)")
    rows = np.arange(len(values.index))[:, None]
    traded_np = traded.to_numpy(dtype=bool)
    last = np.maximum.accumulate(np.where(traded_np, rows, -1), axis=0)
    vals = values.to_numpy(dtype=np.float64)
    carried = np.take_along_axis(vals, np.maximum(last, 0), axis=0)
    carried[last < 0] = np.nan
    carried[~present.to_numpy(dtype=bool)] = np.nan
    return pd.DataFrame(carried, index=values.index, columns=values.columns)


def periods_per_year(index: pd.DatetimeIndex, asset_class: str) -> float:
    """Bars per year of a calendar: days per year (252 equities / 365 crypto) x median bars per day."""
    days = 365.0 if asset_class == "crypto" else 252.0
    if len(index) < 2:
        return days
    per_day = pd.Series(1, index=index).groupby(index.normalize()).size().median()
    return days * float(per_day)
