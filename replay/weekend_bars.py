"""An equity that trades on weekends is a 24/7 series stored under an equity's name: refused at ingest.

A symbol's asset class comes from its name (``replay.loop_rules.is_crypto_symbol``: ``BASE/QUOTE``,
a name ending in ``USD``, ``USDT`` or ``USDC``, a long coin-quoted pair) or from a ``crypto`` folder
of a CSV source. A crypto export under another name (``SUIEUR``, ``BTCTRY``, ``SOL``) is read as an
equity, and nothing downstream looks back: the simulator steps it on equity days, annualises it at
252 bars a year on its 365, credits and charges carry per bar (about 1.45x a year's worth), charges
it an equity's fee, and lets a policy short it and lever it 2x. A reviewer's SUIEUR returned 13.2 %
in cash over a span where the same prices as SUIUSDT earned 8.9 %.

US equities do not trade on Saturdays or Sundays, so such bars tell. A bar counts as a weekend bar
when both its UTC date and its New York date fall on one: a daily label at 00:00 UTC on a Saturday
is Friday evening in New York (an hourly equity's extended-hours bar stamped 00:00 UTC in winter is
Friday's 19:00), so neither alone would do. A daily 24/7 series at 00:00 UTC then shows its Sunday
bars (one in seven), an hourly one most of its weekend hours.

A symbol is refused when at least :data:`MIN_WEEKEND_BARS` of its new bars, and at least
:data:`MIN_WEEKEND_SHARE` of them, are weekend bars; a few stray weekend rows among an equity's
weekdays are ``replay.lone_days``' warning, not this. One line names the symbol, the count, the first
such bar and the names the loop reads as crypto; nothing is written.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError

MIN_WEEKEND_BARS: Final = 8
"""Weekend bars a symbol's new bars must hold to be refused (fewer are stray rows)."""

MIN_WEEKEND_SHARE: Final = 0.05
"""Share of a symbol's new bars that must be weekend bars (a daily 24/7 series shows 1/7)."""

NEW_YORK: Final = "America/New_York"


class WeekendEquityError(InputError):
    """An equity whose bars trade on weekends (module docstring)."""


def weekend_bars(ts: pd.Series) -> np.ndarray:
    """bool per stamp of ``ts`` (UTC): both its UTC date and its New York date are a Saturday or a
    Sunday (module docstring)."""
    stamps = pd.DatetimeIndex(ts)
    return np.asarray((stamps.dayofweek >= 5) & (stamps.tz_convert(NEW_YORK).dayofweek >= 5), dtype=bool)


def refuse_weekend_equities(new: pd.DataFrame, origin: str | None = None) -> None:
    """Refuse the new bars ``new`` (``symbol``, ``ts`` UTC, ``asset_class``) when an equity among them
    trades on weekends (module docstring). Raises :class:`WeekendEquityError` naming the first such
    symbol (by name)."""
    equities = new[new["asset_class"] == "equity"]
    if equities.empty:
        return
    weekend = pd.Series(weekend_bars(equities["ts"]), index=equities.index)
    by_symbol = weekend.groupby(equities["symbol"].astype(str), sort=True)
    for symbol, flags in by_symbol:
        count = int(flags.sum())
        if count >= MIN_WEEKEND_BARS and count >= MIN_WEEKEND_SHARE * len(flags):
            first = pd.Timestamp(equities.loc[flags.index[flags.to_numpy()], "ts"].min())
            prefix = f"{origin}: refused, nothing written: " if origin else ""
            raise WeekendEquityError(
                f"{prefix}{symbol!r}: {count:,} of its {len(flags):,} bars fall on a Saturday or Sunday "
                f"(the first {first.isoformat()}): a series that trades every day, stored as an equity "
                "because its name is no crypto pair the loop knows (BASE/QUOTE, a name ending in USD, "
                "USDT or USDC, or a pair of more than 5 letters quoted in BTC or ETH); as an equity it "
                "would be stepped on weekdays, annualised at 252 bars a year, charged an equity's fee "
                "and allowed shorts and leverage. If it is a coin quoted in dollars or a stablecoin, "
                "name it so (e.g. SUIUSD); raytrade trades no pair quoted in another currency"
            )
