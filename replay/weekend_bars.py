"""An equity that trades on weekends is a 24/7 series stored under an equity's name: refused at ingest.

A symbol's asset class comes from its name (``replay.loop_rules.is_crypto_symbol``: ``BASE/QUOTE``,
a name ending in ``USD``, ``USDT`` or ``USDC``, a long coin-quoted pair) or from a ``crypto`` folder
of a CSV source. A crypto export under another name (``SUIEUR``, ``BTCTRY``, ``SOL``) is read as an
equity, and nothing downstream looks back: the simulator steps it on equity days, annualises it at
252 bars a year on its 365, credits and charges carry per bar (about 1.45x a year's worth), charges
it an equity's fee, and lets a policy short it and lever it 2x. A reviewer's SUIEUR returned 13.2 %
in cash over a span where the same prices as SUIUSDT earned 8.9 %.

A series that trades every day has bars on Saturdays and on Sundays; an exchange's week has one or
neither, whatever its clock: a weekday exchange stamped at local midnight east of UTC (Tokyo, Sydney,
Frankfurt in yfinance's ``+09:00``-style stamps) puts its Monday session on a UTC Sunday, a
Sunday-to-Thursday exchange (Tadawul) trades on Sundays, a US Friday after-hours bar stamped 00:00 UTC
lands on a UTC Saturday; none of them has both. So by UTC date, a symbol is refused when its new bars
hold at least :data:`MIN_EACH_DAY` on Saturdays and as many on Sundays, and their weekend bars are at
least :data:`MIN_WEEKEND_SHARE` of them (a daily 24/7 series shows 2/7, an hourly one the same); a few
stray weekend rows among an equity's weekdays are ``replay.lone_days``' warning, not this. One line
names the symbol, the counts, the first such bar and the names the loop reads as crypto; nothing is
written. (A first version counted a bar where its UTC and New York dates were both a weekend: it
refused every exchange east of UTC stamped at local midnight.)
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError

MIN_EACH_DAY: Final = 4
"""Bars on Saturdays, and on Sundays, a symbol's new bars must each hold to be refused (fewer: stray rows)."""

MIN_WEEKEND_SHARE: Final = 0.05
"""Share of a symbol's new bars that must fall on a weekend (a 24/7 series shows 2/7)."""


class WeekendEquityError(InputError):
    """An equity whose bars trade on weekends (module docstring)."""


def weekend_days(ts: pd.Series) -> np.ndarray:
    """Per stamp of ``ts`` (UTC): 5 on a UTC Saturday, 6 on a UTC Sunday, -1 on a weekday."""
    day = np.asarray(pd.DatetimeIndex(ts).dayofweek)
    return np.where(day >= 5, day, -1)


def refuse_weekend_equities(new: pd.DataFrame, origin: str | None = None) -> None:
    """Refuse the new bars ``new`` (``symbol``, ``ts`` UTC, ``asset_class``) when an equity among them
    trades on Saturdays and Sundays (module docstring). Raises :class:`WeekendEquityError` naming the
    first such symbol (by name)."""
    equities = new[new["asset_class"] == "equity"]
    if equities.empty:
        return
    day = pd.Series(weekend_days(equities["ts"]), index=equities.index)
    for symbol, days in day.groupby(equities["symbol"].astype(str), sort=True):
        saturdays, sundays = int((days == 5).sum()), int((days == 6).sum())
        weekend = saturdays + sundays
        if min(saturdays, sundays) >= MIN_EACH_DAY and weekend >= MIN_WEEKEND_SHARE * len(days):
            first = pd.Timestamp(equities.loc[days.index[days.to_numpy() >= 5], "ts"].min())
            prefix = f"{origin}: refused, nothing written: " if origin else ""
            raise WeekendEquityError(
                f"{prefix}{symbol!r}: {saturdays:,} of its {len(days):,} bars fall on a Saturday and "
                f"{sundays:,} on a Sunday (UTC; the first {first.isoformat()}): a series that trades every "
                "day, stored as an equity because its name is no crypto pair the loop knows (BASE/QUOTE, "
                "a name ending in USD, USDT or USDC, or a pair of more than 5 letters quoted in BTC or ETH); "
                "as an equity it would be stepped on weekdays, annualised at 252 bars a year, charged an "
                "equity's fee and allowed shorts and leverage. If it is a coin quoted in dollars or a "
                "stablecoin, name it so (e.g. SUIUSD); raytrade trades no pair quoted in another currency"
            )
