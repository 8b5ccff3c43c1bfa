"""Crypto bars a store with equities never steps: those before its first equity session or after its
last, named at ingest.

A universe with equities steps on the equity calendar (``envs.replay_loader.market_calendar``: the
stamps where an equity traded), and crypto is observed at those labels. A crypto bar before the first
of them or after the last is on no step: it is never trained, validated or evaluated on. A reviewer's
store of two years of SUIUSDT next to seven months of PDD stepped 147 of SUI's 781 bars, and its
`buy_and_hold` Sharpe read 2.00 on those months against 0.58 over the coin's whole history, with
nothing said. An equity feed that stops (a failed download, a delisted last equity) stops the crypto
too, from that day.

New crypto bars more than :data:`SLACK` outside the equities' traded span (the store after the
ingest) are named per symbol with a warning; they are stored as given (the equities' history may be
backfilled into a fresh store, or the crypto ingested into a store of its own). The slack keeps a
weekend's or a holiday's crypto bars after Friday's session quiet: the next session's label steps
them (its last bar is moved onto it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd

SLACK: Final = pd.Timedelta(days=7)
"""How far outside the equities' span a crypto bar must lie to be named: more than a long weekend."""


@dataclass(frozen=True)
class UnsteppedCrypto:
    """``bars`` new bars of crypto ``symbol`` beyond :data:`SLACK` outside the equities' traded span
    ``first`` .. ``last``
    (``before`` of them earlier, the rest later)."""

    symbol: str
    bars: int
    before: int
    first: pd.Timestamp
    last: pd.Timestamp

    def message(self) -> str:
        where = (
            "before it"
            if self.before == self.bars
            else ("after it" if self.before == 0 else f"{self.before:,} before it, the rest after")
        )
        return (
            f"{self.symbol}: {self.bars:,} new bars lie over a week outside the equities' sessions "
            f"{self.first.date()} .. {self.last.date()} ({where}): a store with equities steps on their "
            "sessions, so these bars are never stepped (not trained, validated or evaluated on). Stored "
            "as given; to use them, ingest the crypto into a store of its own, or the equities' full "
            "history into a fresh store"
        )


def unstepped_crypto(all_bars: pd.DataFrame, new: pd.DataFrame) -> tuple[UnsteppedCrypto, ...]:
    """The crypto symbols of ``new`` with bars more than :data:`SLACK` outside the traded span of
    ``all_bars``' equities (the store after the ingest: columns ``symbol``, ``ts``, ``asset_class``,
    ``volume``), by symbol. None where the store holds no equity that traded (a crypto-only store
    steps on crypto's own days)."""
    equities = all_bars[(all_bars["asset_class"] == "equity") & (all_bars["volume"] > 0)]
    crypto = new[new["asset_class"] == "crypto"]
    if equities.empty or crypto.empty:
        return ()
    first, last = pd.Timestamp(equities["ts"].min()), pd.Timestamp(equities["ts"].max())
    outside = crypto[(crypto["ts"] < first - SLACK) | (crypto["ts"] > last + SLACK)]
    found = []
    for symbol, rows in outside.groupby(outside["symbol"].astype(str), sort=True):
        before = int((rows["ts"] < first).sum())
        found.append(UnsteppedCrypto(str(symbol), len(rows), before, first, last))
    return tuple(found)
