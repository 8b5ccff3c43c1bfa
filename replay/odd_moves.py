"""New bars stored with a warning: a long gap inside a symbol's life, a close move of more than 5x.

Neither is refused: a long halt and a real 5x day exist, and nothing is lost by keeping the bar and
saying so. Both are judged against the symbol's previous bar (stored, or the one before it in the
batch), so each is named once, by the ingest that brings the later bar.

* **long gap**: more than ``LONG_GAP_BARS`` (252, a year of sessions) bars of the store's calendar
  between two bars of one symbol, over more than as many days (on minute bars 252 bars are a few
  hours: a thin name's quiet session was named). The simulator reads it as a halt: a position is
  held through it and books the whole move at the reopen. When another issuer reused the ticker (a
  relisting years later at five times the price), that is a profit or loss nobody could have had.
  The bars between are counted on the store's calendar (the stamps of the symbol's asset class,
  after the ingest), and for daily bars at least the NYSE sessions between (equities) or the days
  (crypto), so a store of one symbol sees its gap too.
* **big move**: a close more than ``BIG_MOVE`` (5x) times, or less than a fifth of, the previous
  close, on a bar ``replay.split_signature`` does not suspect as a split: a price unit change (pence to
  pounds: /100 on unchanged volume), a spike on the newest bar (``replay.bad_prints`` cannot judge it
  before the next bar), a split on a volume that did not move.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.bad_prints import BAD_PRINT_FACTOR, when
from raytrade.replay.exchange_calendar import nyse_holidays
from raytrade.replay.neighbours import with_stored_tail

LONG_GAP_BARS: Final[int] = 252
"""A gap inside a symbol's life longer than this many bars of the calendar is named."""

BIG_MOVE: Final[float] = BAD_PRINT_FACTOR
"""A close-to-close move by more than this factor (either way) not suspected as a split is named: the
bad-print factor, so a move as large as a bad print is said where that rule cannot judge it (the
newest bar, a move that does not revert). At 10x, as first written, moves of 5x to 10x (a 10:1 split
whose volume the source did not restate moves its close a little under 10x) passed in silence."""

_DAILY: Final = pd.Timedelta(hours=20)  # bars at least this far apart (median) are daily


@dataclass(frozen=True)
class LongGap:
    """``symbol`` has no bar for ``bars`` bars of the calendar between ``previous`` and ``ts``."""

    symbol: str
    previous: pd.Timestamp
    ts: pd.Timestamp
    bars: int
    close_ratio: float

    def message(self) -> str:
        return (
            f"{self.symbol}: no bar for {self.bars:,} bars between {when(self.previous)} and {when(self.ts)} "
            f"(then the close is {self.close_ratio:.4g}x the last one before): read as a halt: a position is "
            "held through it; if another issuer reused the ticker, give them separate files/symbols"
        )


@dataclass(frozen=True)
class BigMove:
    """``symbol``'s close at ``ts`` is ``close_ratio`` times the previous bar's (at ``previous``)."""

    symbol: str
    previous: pd.Timestamp
    ts: pd.Timestamp
    close_ratio: float
    volume_ratio: float

    def message(self) -> str:
        return (
            f"{self.symbol}: the close of {when(self.ts)} is {self.close_ratio:.4g}x the previous bar's "
            f"({when(self.previous)}; volume {self.volume_ratio:.4g}x), not the signature of a split: a "
            "unit change or a bad print? check the source; stored as given"
        )


def _previous_bars(stored: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """``new``'s bars with their symbol's previous bar (stored or new) as ``prev_*`` columns, only
    the rows of ``new`` kept."""
    bars = with_stored_tail(stored, new, ["symbol", "ts", "close", "volume", "asset_class"])
    before = bars.groupby("symbol", sort=False)[["ts", "close", "volume"]].shift(1)
    bars = bars.assign(prev_ts=before["ts"], prev_close=before["close"], prev_volume=before["volume"])
    return bars[bars["_new"].to_numpy(bool) & bars["prev_ts"].notna().to_numpy()].reset_index(drop=True)


def _nanos(stamps: pd.Series) -> np.ndarray:
    """UTC stamps as int64 nanoseconds (one unit whatever the column's)."""
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def _daily(bars: pd.DataFrame, symbol: str) -> bool:
    """Are ``symbol``'s bars daily (a median spacing of 20 h or more)?"""
    spacing = bars.loc[bars["symbol"] == symbol, "ts"].sort_values().diff().median()
    return bool(pd.notna(spacing) and spacing >= _DAILY)


def long_gaps(all_bars: pd.DataFrame, stored: pd.DataFrame | None, new: pd.DataFrame) -> tuple[LongGap, ...]:
    """The gaps of more than ``LONG_GAP_BARS`` bars that end on a bar of ``new`` (module docstring);
    ``all_bars``: the store's bars after the ingest (its calendar)."""
    if new.empty:
        return ()
    pairs = _previous_bars(stored, new)
    calendars = {
        str(c): np.unique(_nanos(rows["ts"])) for c, rows in all_bars.groupby("asset_class", observed=True)
    }
    out = []
    for (symbol, asset_class), rows in pairs.groupby(["symbol", "asset_class"], sort=True, observed=True):
        calendar = calendars[str(asset_class)]
        prev, ts = _nanos(rows["prev_ts"]), _nanos(rows["ts"])
        between = np.searchsorted(calendar, ts, "left") - np.searchsorted(calendar, prev, "right")
        first, last = (t.astype("datetime64[ns]").astype("datetime64[D]") for t in (prev, ts))
        # sessions (days for crypto) between: a daily symbol alone in its class counts its gap too; a
        # gap of fewer than LONG_GAP_BARS days cannot count more of them, so the spacing is not read
        if (last - first).astype(int).max() > LONG_GAP_BARS and _daily(all_bars, str(symbol)):
            if asset_class == "crypto":
                days = (last - first).astype(int) - 1
            else:
                days = np.busday_count(first + 1, last, holidays=nyse_holidays())
            between = np.maximum(between, days)
        # and more than that many days: on intraday bars 252 bars are hours, a quiet name's session off
        span_days = (last - first).astype(int)
        for i in np.flatnonzero((between > LONG_GAP_BARS) & (span_days > LONG_GAP_BARS)):
            out.append(
                LongGap(
                    str(symbol),
                    pd.Timestamp(rows["prev_ts"].iat[i]),
                    pd.Timestamp(rows["ts"].iat[i]),
                    int(between[i]),
                    float(rows["close"].iat[i] / rows["prev_close"].iat[i]),
                )
            )
    return tuple(out)


def big_moves(
    stored: pd.DataFrame | None, new: pd.DataFrame, splits: Iterable[tuple[str, pd.Timestamp]]
) -> tuple[BigMove, ...]:
    """The bars of ``new`` whose close moved more than ``BIG_MOVE`` times against the previous bar,
    except the ``(symbol, ts)`` in ``splits`` (suspected splits: warned of already)."""
    if new.empty:
        return ()
    pairs = _previous_bars(stored, new)
    ratio = pairs["close"].to_numpy(float) / pairs["prev_close"].to_numpy(float)
    named = set(splits)
    out = []
    for i in np.flatnonzero((ratio > BIG_MOVE) | (ratio < 1 / BIG_MOVE)):
        key = (str(pairs["symbol"].iat[i]), pd.Timestamp(pairs["ts"].iat[i]))
        if key in named:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            volume = float(np.float64(pairs["volume"].iat[i]) / np.float64(pairs["prev_volume"].iat[i]))
        out.append(BigMove(key[0], pd.Timestamp(pairs["prev_ts"].iat[i]), key[1], float(ratio[i]), volume))
    return tuple(out)


TWIN_SHARE: Final[float] = 0.9
"""Two symbols are twins when they closed at the same price on this share of the bars they share."""

TWIN_MIN_BARS: Final[int] = 20
"""...and on at least this many bars (two names closing alike on a few bars is chance)."""

TWIN_MIN_PRICES: Final[int] = 10
"""...at this many different prices at least: two stablecoins at 1.0000, two shells at 0.0001 close
alike every bar without being one instrument."""

TWIN_CROWD: Final[int] = 8
"""A price more symbols than this share on one bar (a SPAC universe pinned at $10) is no evidence of
twins, and its pairs (k(k-1)/2 of them) are not counted: 520 names near $10 took 19 s and 1.9 GB."""


@dataclass(frozen=True)
class TwinSymbols:
    """``symbol`` and ``twin`` closed at the same price on ``same`` of the ``shared`` bars (stamps)
    they both have."""

    symbol: str
    twin: str
    same: int
    shared: int

    def message(self) -> str:
        return (
            f"{self.symbol} and {self.twin} closed at the same price on {self.same:,} of the {self.shared:,} "
            "bars they share: one instrument under two names (an old ticker's file kept beside the new "
            "one's)? Each gets its own share of every book, so together they pass the per-symbol cap; "
            "keep one; stored as given"
        )


def twin_symbols(all_bars: pd.DataFrame, new: pd.DataFrame) -> tuple[TwinSymbols, ...]:
    """The pairs of symbols of ``all_bars`` (the store after the ingest) that closed alike on at least
    ``TWIN_SHARE`` of their shared bars and ``TWIN_MIN_BARS`` of them, at ``TWIN_MIN_PRICES``
    different prices or more (prices more than ``TWIN_CROWD`` symbols share on a bar not counted),
    named when the new bars add to either (so each ingest that adds to a twin names it again, whatever
    the new bar's close: a crowd's price on the night left a pair unnamed)."""
    if new.empty or all_bars["symbol"].nunique() < 2:
        return ()
    bars = all_bars[["symbol", "ts", "close"]].assign(symbol=all_bars["symbol"].astype(str))
    code, names = pd.factorize(bars["symbol"])
    closes = bars.assign(code=code, key=np.round(bars["close"].to_numpy(float), 10))
    alike = closes[closes.duplicated(["ts", "key"], keep=False)]
    crowded = alike.groupby(["ts", "key"])["code"].transform("size") > TWIN_CROWD
    crowds = {
        c: set(zip(pd.DatetimeIndex(r["ts"]).asi8, r["key"], strict=True))
        for c, r in alike[crowded].groupby("code")
    }
    alike = alike[~crowded]
    if alike.empty:
        return ()
    # every pair of symbols closing at the same price on the same stamp (a group of k: k(k-1)/2)
    left = alike[["ts", "key", "code"]]
    pairs = left.merge(left, on=["ts", "key"], suffixes=("", "_twin"))
    pairs = pairs[pairs["code"] < pairs["code_twin"]]
    same = pairs.groupby(["code", "code_twin"]).size()
    same = same[same >= TWIN_MIN_BARS]
    if same.empty:
        return ()
    fresh = set(new["symbol"].astype(str))
    stamps = {c: set(pd.DatetimeIndex(rows["ts"]).asi8) for c, rows in bars.assign(code=code).groupby("code")}
    out = []
    for (a, b), count in same.items():
        # a bar both closed at a crowd's price is neither evidence nor counter-evidence: not shared
        shared = len(stamps[a] & stamps[b]) - len(crowds.get(a, set()) & crowds.get(b, set()))
        if count < TWIN_SHARE * shared:
            continue
        mine = pairs[(pairs["code"] == a) & (pairs["code_twin"] == b)]
        if mine["key"].nunique() < TWIN_MIN_PRICES:
            continue
        if names[a] not in fresh and names[b] not in fresh:
            continue
        out.append(TwinSymbols(str(names[a]), str(names[b]), int(count), shared))
    return tuple(sorted(out, key=lambda t: (t.symbol, t.twin)))
