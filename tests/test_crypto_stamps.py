"""Daily crypto bars stamped on another clock than the equity dates are refused, never dropped.

Next to equities the simulator observes crypto at the equity calendar's labels (daily: 00:00 UTC of
the date). A crypto file stamped at midnight New York (05:00 UTC) matched no label and silently
dropped out of the universe; now ingest refuses the file and the loader refuses such a store.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raytrade.envs.replay_loader import OffCalendarBarsError, load_market_data
from raytrade.replay.sources.csv_dir import read_symbol_file
from raytrade.replay.validation import ReplayValidationError

CRYPTO = "SYC00USD"
FEATURES = ("vol_20",)


def _store(root: Path, crypto_shift: pd.Timedelta, equity_shift: pd.Timedelta | None = None) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=2, years=0.5, seed=3, n_crypto=1).bars
    crypto = bars["asset_class"] == "crypto"
    assert bars.loc[crypto, "symbol"].unique().tolist() == [CRYPTO]
    bars.loc[crypto, "ts"] += crypto_shift
    if equity_shift is not None:
        bars.loc[~crypto, "ts"] += equity_shift
    ingest_frames(root, bars.sort_values(["symbol", "ts"], ignore_index=True), None, show_progress=False)
    return root


def test_crypto_stamped_at_midnight_utc_loads_next_to_equities(tmp_path: Path) -> None:
    data = load_market_data(_store(tmp_path / "store", pd.Timedelta(0)), "all", feature_columns=FEATURES)
    j = data.symbols.index(CRYPTO)
    assert data.listed[:, j].sum() == data.n_steps  # crypto trades on every equity date


def test_crypto_stamped_five_hours_late_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = _store(tmp_path / "store", pd.Timedelta(hours=5))
    with pytest.raises(OffCalendarBarsError) as caught:
        load_market_data(root, "test", feature_columns=FEATURES)
    message = str(caught.value)
    assert f"'{CRYPTO}': 0 of its" in message  # the symbol, and none of its bars on a label
    assert "stamped at 05:00 UTC" in message and "labels (stamped at 00:00 UTC)" in message
    assert "00:00 UTC of the date it opens" in message  # what to do
    equities = load_market_data(root, "test", symbols=["SYN000", "SYN001"], feature_columns=FEATURES)
    assert equities.listed.any()


def test_equities_at_new_york_midnight_next_to_daily_crypto_are_refused_naming_the_equities_clock(
    tmp_path: Path,
) -> None:
    """Alpaca's daily equities are stamped at midnight New York (05:00 UTC in winter); daily crypto can
    only be stamped at 00:00 UTC. The fix is on the equities' side, and the message says so instead of
    asking for crypto at 00:00 UTC, which it already is."""
    root = _store(tmp_path / "store", pd.Timedelta(0), equity_shift=pd.Timedelta(hours=5))
    with pytest.raises(OffCalendarBarsError) as caught:
        load_market_data(root, "all", feature_columns=FEATURES)
    message = str(caught.value)
    assert f"'{CRYPTO}': 0 of its" in message and "stamped at 00:00 UTC" in message
    assert "equities' daily bars are stamped at 05:00 UTC" in message
    assert "plain session dates" in message and "00:00 UTC of the date it opens" not in message


def test_crypto_only_store_on_its_own_clock_loads(tmp_path: Path) -> None:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=1, years=0.5, seed=3, n_crypto=1).bars
    bars = bars[bars["asset_class"] == "crypto"].copy()
    bars["ts"] += pd.Timedelta(hours=5)  # e.g. Alpaca's daily crypto bars (midnight US Central)
    ingest_frames(tmp_path / "store", bars.reset_index(drop=True), None, show_progress=False)
    data = load_market_data(tmp_path / "store", "all", feature_columns=FEATURES)
    assert data.listed.all()


def _crypto_csv(path: Path, stamps: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{s},1.0,1.2,0.9,1.1,1000" for s in stamps]
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def test_ingest_refuses_a_daily_crypto_file_not_stamped_at_midnight_utc(tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=5, freq="D")
    late = [f"{d:%Y-%m-%d}T00:00:00-05:00" for d in days]
    with pytest.raises(ReplayValidationError) as caught:
        read_symbol_file(_crypto_csv(tmp_path / "crypto" / "SUIUSDT.csv", late))
    message = str(caught.value)
    assert "row 1" in message and "2024-01-01T00:00:00-05:00" in message
    assert "5 of the file's 5 bars are stamped at 05:00 UTC" in message and "00:00 UTC" in message
    utc = [f"{d:%Y-%m-%d}T00:00:00+00:00" for d in days]
    assert len(read_symbol_file(_crypto_csv(tmp_path / "ok" / "crypto" / "SUIUSDT.csv", utc))) == 5


def test_ingest_keeps_hourly_crypto_and_offset_equity_dates(tmp_path: Path) -> None:
    hours = pd.date_range("2024-01-01 05:00", periods=6, freq="h")
    hourly = [f"{h:%Y-%m-%dT%H:%M:%S}+00:00" for h in hours]
    assert len(read_symbol_file(_crypto_csv(tmp_path / "crypto" / "BTCUSD.csv", hourly))) == 6
    days = pd.date_range("2024-01-01", periods=5, freq="D")
    equity = [f"{d:%Y-%m-%d}T00:00:00-05:00" for d in days]  # crypto rule only
    assert len(read_symbol_file(_crypto_csv(tmp_path / "AAPL.csv", equity))) == 5


def test_an_ingest_of_a_pair_quoted_in_a_coin_warns_that_its_prices_are_not_dollars(tmp_path: Path) -> None:
    """ETHBTC's bars are in BTC: the simulator would take its returns for dollar returns, silently."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=2, years=0.25, seed=3, n_crypto=1).bars
    bars["symbol"] = bars["symbol"].replace({CRYPTO: "SYCOINBTC"})
    result = ingest_frames(
        tmp_path / "store", bars.sort_values(["symbol", "ts"], ignore_index=True), None, show_progress=False
    )
    assert result.priced_in_coin == ("SYCOINBTC",)
    (warning,) = [w for w in result.warnings() if "SYCOINBTC" in w]
    assert "quoted in BTC: its prices and returns are in BTC" in warning
    again = ingest_frames(
        tmp_path / "other",
        generate(n_symbols=2, years=0.25, seed=3, n_crypto=1).bars,
        None,
        show_progress=False,
    )
    assert again.priced_in_coin == () and not any("quoted in" in w for w in again.warnings())
