"""The clock refusals say what the file holds and what to do for the data at hand (an intraday
review, 2026-12-05): a repeated hour across a daylight-saving fall-back named the parsed UTC time under
``ts``; hourly crypto off the equities' intraday labels was told to re-stamp as daily bars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raytrade.envs.replay_loader import OffCalendarBarsError, refuse_off_calendar_crypto
from raytrade.replay.sources.csv_dir import read_symbol_file
from raytrade.replay.validation import ReplayValidationError
from tests.test_crypto_stamps import _crypto_csv


def test_an_hour_written_twice_across_the_fall_back_is_named_as_the_file_writes_it(tmp_path: Path) -> None:
    stamps = ["2024-11-03T00:00:00-04:00", "2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-04:00"]
    with pytest.raises(ReplayValidationError) as caught:
        read_symbol_file(_crypto_csv(tmp_path / "crypto" / "BTCUSD.csv", stamps))
    message = str(caught.value)
    assert "row 3, column 'timestamp', value '2024-11-03T01:00:00-04:00': duplicate" in message


def test_hourly_crypto_off_the_equities_half_hour_labels_is_told_to_share_one_intraday_clock() -> None:
    days = pd.bdate_range("2024-03-04", periods=3, tz="UTC")
    labels = pd.DatetimeIndex(
        [d + pd.Timedelta(hours=14, minutes=30 + 60 * k) for d in days for k in range(7)]
    )
    crypto = pd.date_range(days[0], days[-1] + pd.Timedelta(hours=23), freq="h")
    bars = pd.DataFrame({"symbol": "BTCUSD", "ts": crypto, "asset_class": "crypto"})
    with pytest.raises(OffCalendarBarsError) as caught:
        refuse_off_calendar_crypto(bars, labels)
    message = str(caught.value)
    assert "'BTCUSD': 0 of its 72 bars are on a label" in message
    assert "on one clock (each bar at its open, both on the clock hour as Alpaca stamps them" in message
    assert "a daily bar at 00:00 UTC" not in message
