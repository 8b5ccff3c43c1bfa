"""Seeded synthetic market: the embedded default data of raytrade (no files, no keys needed).

Model (per bar, all seeded from one ``numpy.random.Generator``):

* a market-wide regime chain (calm / choppy / crisis, a Markov chain) scales volatility, moves the
  drift, raises correlation (crisis loads more on the market factor) and widens spreads;
* returns = regime drift + volatility x (beta x market + loading x sector + idiosyncratic) with
  Student-t(4) innovations scaled to unit variance (fat tails); symbols are grouped into sectors
  that share a factor (correlated clusters);
* OHLC: the open gaps from the previous close, high/low extend beyond open/close by a half-normal
  intrabar range; volume follows a per-symbol dollar-volume level that rises with |return|;
* top of book at each close: a spread that shrinks with liquidity and widens with the regime,
  bid/ask around the close and lognormal displayed sizes (so microstructure features are real);
* a fifth of the equities list later than the first bar (ragged universe); crypto symbols
  (suffix ``USD``) trade on a 7-day calendar, equities on business days;
* intraday stamps are bar opens on Alpaca's clock (New York standard time, UTC-5, all year): hourly
  bars on the clock hour, as Alpaca stamps both classes (its 09:00 stock bar holds the session's
  first half hour, 09:30-10:00), so equities are 14:00-20:00 UTC (7 bars to the 16:00 close) and
  hourly crypto, on the hour around the clock, shares every equity label; the simulator's loader
  refuses crypto stamped between the equity labels. Minute bars run from the 14:30 UTC open;
* macro series: a volatility index ``vix`` tracking the regime, its 3-month ``vix_3m``, and a
  ``curve_slope`` in percent.

Same arguments, same rows and values, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError

Freq = Literal["1d", "1h", "1m"]
BARS_PER_DAY: Final[dict[str, int]] = {"1d": 1, "1h": 7, "1m": 390}
_SESSION_OPEN: Final = pd.Timedelta(hours=14, minutes=30)
"""The equity session's open, UTC (09:30 New York standard time); it closes 6.5 h later."""
_REGIME_VOL: Final = np.array([1.0, 1.5, 2.4])
_REGIME_DRIFT_ANNUAL: Final = np.array([0.10, 0.0, -0.4])
_REGIME_MARKET_WEIGHT: Final = np.array([0.45, 0.55, 0.8])
_REGIME_SPREAD: Final = np.array([1.0, 1.6, 3.5])
# Daily transition matrix (rows: from calm, choppy, crisis).
_DAILY_TRANSITIONS: Final = np.array(
    [
        [0.985, 0.013, 0.002],
        [0.030, 0.955, 0.015],
        [0.010, 0.050, 0.940],
    ]
)


@dataclass(frozen=True)
class SyntheticMarket:
    """Bars (``replay.schema.BARS_SCHEMA`` columns) and macro series of one synthetic universe."""

    bars: pd.DataFrame
    macro: pd.DataFrame
    regimes: pd.Series  # market regime label per equity bar timestamp (for tests and plots)


def _calendar(start: pd.Timestamp, years: float, freq: Freq, crypto: bool) -> pd.DatetimeIndex:
    end = start + pd.DateOffset(days=round(365.25 * years)) - pd.Timedelta(days=1)
    days = pd.date_range(start, end, freq="D" if crypto else "B", tz="UTC")
    if freq == "1d":
        return days
    step = pd.Timedelta(hours=1) if freq == "1h" else pd.Timedelta(minutes=1)
    if crypto:
        per_day = 24 if freq == "1h" else 1440
        offsets = pd.TimedeltaIndex([step * i for i in range(per_day)])
    else:  # the session 14:30-21:00 UTC; an hourly bar opens on the clock hour (module docstring)
        first = _SESSION_OPEN.floor(step)
        offsets = pd.TimedeltaIndex([first + step * i for i in range(BARS_PER_DAY[freq])])
    stamps = (days.values[:, None] + offsets.values[None, :]).ravel()
    return pd.DatetimeIndex(stamps).tz_localize("UTC")


def _regime_path(n_days: int, rng: np.random.Generator) -> np.ndarray:
    states = np.empty(n_days, dtype=np.int8)
    state = 0
    draws = rng.random(n_days)
    cumulative = np.cumsum(_DAILY_TRANSITIONS, axis=1)
    for i in range(n_days):
        states[i] = state
        state = int(np.searchsorted(cumulative[state], draws[i], side="right"))
        state = min(state, 2)
    return states


def _student_t(rng: np.random.Generator, shape: tuple[int, ...], df: float = 4.0) -> np.ndarray:
    return rng.standard_t(df, size=shape) / np.sqrt(df / (df - 2.0))


def _simulate_class(
    ts: pd.DatetimeIndex,
    day_index: np.ndarray,
    regimes_daily: np.ndarray,
    symbols: list[str],
    asset_class: str,
    periods_per_year: float,
    rng: np.random.Generator,
    ragged: bool,
) -> pd.DataFrame:
    t, n = len(ts), len(symbols)
    regime = regimes_daily[day_index]
    n_sectors = max(1, round(np.sqrt(n) / 2))
    sector = rng.integers(0, n_sectors, size=n)
    beta = rng.uniform(0.6, 1.4, size=n)
    loading = rng.uniform(0.3, 0.8, size=n)
    annual_vol = rng.uniform(0.15, 0.40, size=n) * (2.0 if asset_class == "crypto" else 1.0)
    bar_vol = annual_vol / np.sqrt(periods_per_year)

    market = _student_t(rng, (t, 1))
    sectors = _student_t(rng, (t, n_sectors))[:, sector]
    idio = _student_t(rng, (t, n))
    w_m = _REGIME_MARKET_WEIGHT[regime][:, None]
    mixed = np.sqrt(w_m) * beta * market + np.sqrt((1 - w_m) * 0.5) * loading * sectors
    mixed += np.sqrt((1 - w_m) * 0.5) * idio
    mixed /= mixed.std(axis=0, keepdims=True) + 1e-12
    vol = bar_vol[None, :] * _REGIME_VOL[regime][:, None]
    drift = (_REGIME_DRIFT_ANNUAL[regime] / periods_per_year)[:, None] - 0.5 * vol**2
    log_ret = drift + vol * mixed

    start_price = np.exp(rng.uniform(np.log(5.0), np.log(500.0), size=n))
    close = start_price * np.exp(np.cumsum(log_ret, axis=0))
    gap = 0.3 * vol * rng.standard_normal((t, n))
    prev_close = np.vstack([start_price[None, :], close[:-1]])
    open_ = prev_close * np.exp(gap)
    wick = np.abs(rng.standard_normal((t, n, 2))) * vol[:, :, None] * 0.6
    high = np.maximum(open_, close) * np.exp(wick[:, :, 0])
    low = np.minimum(open_, close) * np.exp(-wick[:, :, 1])

    dollar_volume_level = np.exp(rng.uniform(np.log(2e6), np.log(2e9), size=n)) / BARS_PER_DAY.get("1d", 1)
    activity = np.exp(0.35 * np.abs(log_ret) / vol + 0.25 * rng.standard_normal((t, n)))
    dollar_volume = dollar_volume_level * activity * (1 + 0.5 * (regime[:, None] > 0))
    volume = np.round(dollar_volume / close)

    base_spread = np.clip(12.0 / np.sqrt(dollar_volume_level / 1e7), 0.8, 60.0)
    if asset_class == "crypto":
        base_spread = base_spread * 2.0
    spread_bps = base_spread * _REGIME_SPREAD[regime][:, None] * np.exp(0.25 * rng.standard_normal((t, n)))
    half = spread_bps / 2e4
    bid, ask = close * (1 - half), close * (1 + half)
    top_shares = dollar_volume_level / close / 2000.0
    bid_size = np.round(top_shares * np.exp(0.5 * rng.standard_normal((t, n)))) + 1
    ask_size = np.round(top_shares * np.exp(0.5 * rng.standard_normal((t, n)))) + 1
    vwap = (open_ + high + low + close) / 4.0
    trade_count = np.maximum(1, np.round(volume / 100.0))

    first_bar = np.zeros(n, dtype=np.int64)
    if ragged and n >= 5:
        late = rng.choice(n, size=n // 5, replace=False)
        first_bar[late] = rng.integers(1, max(2, t // 2), size=late.size)
    listed = np.arange(t)[:, None] >= first_bar[None, :]

    frame = pd.DataFrame(
        {
            "symbol": np.repeat(np.array(symbols, dtype=object)[None, :], t, axis=0).ravel(order="F"),
            "ts": np.tile(ts.values, n),
            "open": open_.ravel(order="F"),
            "high": high.ravel(order="F"),
            "low": low.ravel(order="F"),
            "close": close.ravel(order="F"),
            "volume": volume.ravel(order="F"),
            "vwap": vwap.ravel(order="F"),
            "trade_count": trade_count.ravel(order="F").astype(np.int64),
            "bid": bid.ravel(order="F"),
            "ask": ask.ravel(order="F"),
            "bid_size": bid_size.ravel(order="F"),
            "ask_size": ask_size.ravel(order="F"),
        }
    )
    frame = frame[listed.ravel(order="F")].reset_index(drop=True)
    frame["ts"] = (
        pd.DatetimeIndex(frame["ts"]).tz_localize("UTC") if frame["ts"].dt.tz is None else frame["ts"]
    )
    frame["asset_class"] = asset_class
    frame["source"] = "synthetic"
    return frame


def generate(
    n_symbols: int = 20,
    years: float = 3.0,
    freq: Freq = "1d",
    seed: int = 0,
    n_crypto: int = 0,
    start: str = "2018-01-01",
) -> SyntheticMarket:
    """A seeded synthetic universe of ``n_symbols`` equities plus ``n_crypto`` crypto pairs."""
    if n_symbols < 1 or n_crypto < 0:
        raise ValueError(f"n_symbols must be >= 1 and n_crypto >= 0, got {n_symbols} and {n_crypto}")
    if years <= 0:
        raise ValueError(f"years must be > 0, got {years}")
    if freq not in BARS_PER_DAY:
        raise ValueError(f"freq must be one of {sorted(BARS_PER_DAY)}, got {freq!r}")
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start, tz="UTC")
    all_days = pd.date_range(
        start_ts, start_ts + pd.DateOffset(days=round(365.25 * years)), freq="D", tz="UTC"
    )
    regimes_daily = _regime_path(len(all_days), rng)

    def day_index(ts: pd.DatetimeIndex) -> np.ndarray:
        return np.asarray((ts.normalize() - all_days[0]).days, dtype=np.int64)

    eq_ts = _calendar(start_ts, years, freq, crypto=False)
    if eq_ts.empty:
        raise InputError(
            f"years={years:g} ({round(365.25 * years)} days from {start_ts.date()}) spans no weekday: "
            "no equity bar to generate; give more years"
        )
    per_year = 252.0 * BARS_PER_DAY[freq]
    equities = [f"SYN{i:03d}" for i in range(n_symbols)]
    frames = [
        _simulate_class(eq_ts, day_index(eq_ts), regimes_daily, equities, "equity", per_year, rng, True)
    ]
    if n_crypto:
        cr_ts = _calendar(start_ts, years, freq, crypto=True)
        cr_per_year = 365.0 * (1 if freq == "1d" else 24 if freq == "1h" else 1440)
        cryptos = [f"SYC{i:02d}USD" for i in range(n_crypto)]
        frames.append(
            _simulate_class(
                cr_ts, day_index(cr_ts), regimes_daily, cryptos, "crypto", cr_per_year, rng, False
            )
        )
    bars = pd.concat(frames, ignore_index=True).sort_values(
        ["symbol", "ts"], kind="stable", ignore_index=True
    )

    days = pd.date_range(start_ts, eq_ts[-1].normalize(), freq="B", tz="UTC")
    reg = regimes_daily[day_index(days)]
    noise = rng.standard_normal((len(days), 3))
    vix = np.empty(len(days))
    vix3m = np.empty(len(days))
    slope = np.empty(len(days))
    level, level3m, s = 14.0, 15.0, 1.0
    for i in range(len(days)):
        level = 0.85 * level + 0.15 * 13.0 * _REGIME_VOL[reg[i]] + 0.8 * noise[i, 0]
        level3m = 0.95 * level3m + 0.05 * (level + 1.5) + 0.3 * noise[i, 1]
        s = 0.99 * s + 0.01 * (1.2 - 0.8 * (reg[i] == 2)) + 0.03 * noise[i, 2]
        vix[i], vix3m[i], slope[i] = max(level, 8.0), max(level3m, 9.0), s
    macro = pd.concat(
        [
            pd.DataFrame({"symbol": name, "ts": days, "value": values, "source": "synthetic"})
            for name, values in (("curve_slope", slope), ("vix", vix), ("vix_3m", vix3m))
        ],
        ignore_index=True,
    )
    labels = np.array(["calm", "choppy", "crisis"], dtype=object)[regimes_daily[day_index(eq_ts)]]
    return SyntheticMarket(bars=bars, macro=macro, regimes=pd.Series(labels, index=eq_ts, name="regime"))
