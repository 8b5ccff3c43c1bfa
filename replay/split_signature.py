"""New bars that look like a stock split left unadjusted in raw prices: the rule ``replay.ingest``
applies to every bar it appends, against the previous bar of the same symbol (stored or in the same
batch).

A split of ``new:old`` shares (4:1, or 1:10 in reverse) moves the price by ``p = old / new`` and
the share volume by ``1 / p`` overnight. A source that does not adjust its history for it serves the
split day as a ``-75 %`` bar, and every return, drawdown and regime after it books that loss. A true
crash of that size exists too, so the price alone does not tell them apart; the volume does: a crash
trades many times the usual shares, a split trades the usual dollar volume, so its share volume moves
by about ``1 / p`` and no more. A bar is *suspected* when, against the previous bar,

* its close ratio ``c`` is within ``PRICE_TOLERANCE`` (in log) of the ``p`` of the nearest
  ``COMMON_SPLITS`` entry (the split day's own move, up to about +-15 %),
* its open gaps the same way: ``open / previous close`` within ``PRICE_TOLERANCE`` of ``p``, and
* its volume ratio ``v`` is within half of ``|log p|`` of ``1 / p`` in log (nearer ``1 / p`` than 1,
  and no further beyond it): ``|log v + log p| <= |log p| / 2`` (for a 4:1 split, volume x2 to x8;
  a -40 % day on the usual volume is not a 3:2 split, nor is a crash on 20 times the usual volume a
  4:1 one).

A suspected bar is reported, never refused or changed (``SuspectedSplit.message``): the rule can
mistake a real event for a split, and nothing is lost by keeping the bar and saying so. On the 30
real split-adjusted symbols of ``../shared/data/yahoo`` (2020-2026: crashes down to -48 % and jumps
up to +72 %) it suspects no bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.neighbours import with_stored_tail

COMMON_SPLITS: Final[tuple[tuple[int, int], ...]] = (
    *((k, 1) for k in (2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 40, 50, 100)),
    (3, 2),
    *((1, k) for k in (2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 40, 50, 100)),
    (2, 3),
)
"""Splits as ``(new, old)`` shares per holding: forward ``k:1`` and ``3:2``, reverse ``1:k`` and
``2:3``. Closer ratios (5:4) are not listed: a 20 % move on 25 % more volume is an ordinary day."""

PRICE_TOLERANCE: Final[float] = float(np.log(1.15))
"""How far (in log) a suspected bar's close and open ratios may be from the split's price ratio."""

_PRICE_RATIOS: Final[np.ndarray] = np.array([old / new for new, old in COMMON_SPLITS])


@dataclass(frozen=True)
class SuspectedSplit:
    """A new bar of ``symbol`` at ``ts`` whose close is ``close_ratio`` times the previous bar's (at
    ``previous``), its open ``open_ratio`` times that close and its volume ``volume_ratio`` times
    that volume: the signature of a ``new:old`` split (``split``) left unadjusted (module
    docstring). Stored as given."""

    symbol: str
    ts: pd.Timestamp
    previous: pd.Timestamp
    split: tuple[int, int]
    close_ratio: float
    open_ratio: float
    volume_ratio: float

    def message(self) -> str:
        """The warning, e.g. ``AAA: the bar of 2024-10-01 looks like a 4:1 split left unadjusted
        (close 0.25x the previous bar's of 2024-09-30, open 0.25x its close, volume 4x): ...``."""
        new, old = self.split
        kind = "split" if new > old else "reverse split"
        return (
            f"{self.symbol}: the bar of {self.ts.date()} looks like a {new}:{old} {kind} left unadjusted "
            f"(close {self.close_ratio:.4g}x the previous bar's of {self.previous.date()}, open "
            f"{self.open_ratio:.4g}x its close, volume {self.volume_ratio:.4g}x): stored as given, so "
            f"returns, drawdown and evaluation book a {self.close_ratio - 1:+.1%} day; if the source's "
            "prices are not split-adjusted, ingest split-adjusted data into a fresh store (a new --out)"
        )


def suspected_splits(stored: pd.DataFrame | None, new: pd.DataFrame) -> tuple[SuspectedSplit, ...]:
    """The bars of ``new`` (columns symbol, ts, open, close, volume; prices > 0) that carry the
    signature of an unadjusted split against the previous bar of their symbol: the symbol's last bar
    of ``stored`` (bars already in the store, all older than ``new``'s) or the one before it in
    ``new``. Ordered by symbol and ts (module docstring)."""
    if new.empty:
        return ()
    bars = with_stored_tail(stored, new, ["symbol", "ts", "open", "close", "volume"])
    before = bars.groupby("symbol", sort=False).shift(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        close = np.log(bars["close"].to_numpy(float) / before["close"].to_numpy(float))
        gap = np.log(bars["open"].to_numpy(float) / before["close"].to_numpy(float))
        volume = np.log(bars["volume"].to_numpy(float) / before["volume"].to_numpy(float))
    nearest = np.log(_PRICE_RATIOS)[
        np.argmin(np.abs(np.nan_to_num(close)[:, None] - np.log(_PRICE_RATIOS)[None, :]), axis=1)
    ]
    with np.errstate(invalid="ignore"):
        suspected = (
            bars["_new"].to_numpy(bool)
            & (np.abs(close - nearest) <= PRICE_TOLERANCE)
            & (np.abs(gap - nearest) <= PRICE_TOLERANCE)
            & (np.abs(volume + nearest) <= np.abs(nearest) / 2)
        )
    out = []
    for i in np.flatnonzero(suspected):
        split = COMMON_SPLITS[int(np.argmin(np.abs(np.log(_PRICE_RATIOS) - nearest[i])))]
        out.append(
            SuspectedSplit(
                str(bars["symbol"].iat[i]),
                pd.Timestamp(bars["ts"].iat[i]),
                pd.Timestamp(before["ts"].iat[i]),
                split,
                float(np.exp(close[i])),
                float(np.exp(gap[i])),
                float(np.exp(volume[i])),
            )
        )
    return tuple(out)
