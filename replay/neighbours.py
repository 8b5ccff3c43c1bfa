"""New bars beside the stored ones they are judged against (a split's signature, a bad print, a gap or
a move): one frame of each new symbol's last stored bars and its new ones."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def with_stored_tail(
    stored: pd.DataFrame | None, new: pd.DataFrame, columns: Sequence[str], tail: int = 1
) -> pd.DataFrame:
    """``new``'s ``columns`` after the last ``tail`` bars of ``stored`` (None: none) of each of its
    symbols, sorted by symbol and ts (stable), symbols as ``str``, with a bool column ``_new`` marking
    the rows of ``new``."""
    parts = [new[list(columns)].assign(_new=True)]
    if stored is not None and len(stored):
        held = stored[stored["symbol"].isin(new["symbol"].unique())]
        last = held.sort_values("ts").groupby("symbol", observed=True).tail(tail)
        parts.insert(0, last[list(columns)].assign(_new=False))
    bars = pd.concat(parts, ignore_index=True)
    bars["symbol"] = bars["symbol"].astype(str)
    return bars.sort_values(["symbol", "ts"], kind="stable", ignore_index=True)
