"""``replay.bad_prints.find_bad_prints`` and ``replay.odd_moves`` as pure functions: what each rule
finds, with its figures; what it cannot judge (the newest bar, a run longer than 5); and that the real
bars of ../shared/data and synthetic markets give nothing, ingested at once or in two parts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raytrade.replay.bad_prints import BAD_PRINT_FACTOR, BadPrint, find_bad_prints
from raytrade.replay.odd_moves import big_moves, long_gaps
from raytrade.replay.sources.csv_dir import read_csv_folder
from raytrade.replay.sources.synthetic import generate
from raytrade.serve.caps import MAX_QUOTE_MOVE

DAYS = pd.bdate_range("2024-06-03", periods=8, tz="UTC")


def bars(opens: list[float], closes: list[float], symbol: str = "AAA") -> pd.DataFrame:
    n = len(closes)
    return pd.DataFrame({"symbol": symbol, "ts": DAYS[:n], "open": opens, "close": closes, "volume": 1e6})


def test_a_spike_close_is_found_with_the_closes_around_it() -> None:
    found = find_bad_prints(None, bars([10, 10, 10, 10, 10], [10, 10, 1000, 11, 11]))
    assert found == (BadPrint("AAA", DAYS[2], "close", 1000.0, 10.0, DAYS[1], 11.0, DAYS[3]),)
    assert found[0].rule() == (
        "close 1000 is 100x the close before 10 (2024-06-04) and 90.9x the close after 11 (2024-06-06), "
        "which agree within 1.5x: a spike of more than 5x that reverts (spike rule)"
    )


def test_an_open_is_judged_against_the_last_close_that_is_no_bad_print() -> None:
    """Close x100 on one bar, the next bar opening where that close was: the open is off both the
    last good close and its own close, so both bars are bad prints."""
    found = find_bad_prints(None, bars([10, 10, 10, 1000, 10], [10, 10, 1000, 11, 11]))
    assert [(p.ts, p.column, p.before_ts) for p in found] == [
        (DAYS[2], "close", DAYS[1]),
        (DAYS[3], "open", DAYS[1]),
    ]


def test_an_open_off_one_neighbour_only_is_a_real_gap() -> None:
    """An open 5x the previous close and at its own close is a jump that holds; an open at the
    previous close and 5x below its own close is a day that ran up."""
    assert find_bad_prints(None, bars([10, 50, 50], [10, 51, 52])) == ()
    assert find_bad_prints(None, bars([10, 10, 50], [10, 50, 52])) == ()


def test_the_newest_bar_cannot_be_judged_and_the_next_batch_finds_it_stored() -> None:
    all_bars = bars([10, 10, 10, 10], [10, 10, 1000, 11])
    stored, new = all_bars[:3], all_bars[3:]
    assert find_bad_prints(None, stored) == ()  # no close after the spike yet
    (found,) = find_bad_prints(stored, new)
    assert (found.ts, found.stored) == (DAYS[2], True)


def test_a_run_longer_than_five_closes_is_not_a_spike() -> None:
    def run_of(k: int) -> pd.DataFrame:  # whole bars scaled: each opens at its own close
        closes = [10.0] + [1000.0] * k + [10.0]
        return bars(closes, closes)

    assert len(find_bad_prints(None, run_of(5))) == 5
    assert find_bad_prints(None, run_of(6)) == ()


def test_the_quote_band_is_stricter_than_the_ingest_rule() -> None:
    """A band holds a symbol for a cycle; a bad print refuses a whole ingest (at 3x, real runners,
    pumps and sub-penny ticks were refused)."""
    assert MAX_QUOTE_MOVE == 3.0 and BAD_PRINT_FACTOR == 5.0


@pytest.mark.parametrize("split_at", [None, 700], ids=["at-once", "in-two-parts"])
def test_the_real_bars_give_no_bad_print_gap_or_big_move(shared_data: Path, split_at: int | None) -> None:
    real = read_csv_folder(shared_data)
    assert real["symbol"].nunique() >= 31 and set(real["asset_class"]) == {"equity", "crypto"}
    first = None if split_at is None else real.groupby("symbol").head(split_at)
    new = real if first is None else real.drop(first.index)
    assert find_bad_prints(first, new) == ()
    assert long_gaps(real, first, new) == ()
    assert big_moves(first, new, ()) == ()


def test_synthetic_markets_give_no_bad_print_gap_or_big_move() -> None:
    for freq, years in (("1d", 5.0), ("1h", 0.5)):
        market = generate(n_symbols=50, years=years, freq=freq, seed=1, n_crypto=2).bars
        assert find_bad_prints(None, market) == ()
        assert long_gaps(market, None, market) == ()
        assert big_moves(None, market, ()) == ()


def test_a_thin_names_quiet_session_on_minute_bars_is_no_long_gap() -> None:
    """On minute bars 252 bars are hours: a name without a trade for one session was warned of as a
    gap "if another issuer reused the ticker". The gap must span more than 252 days too."""
    sessions = [
        pd.Timestamp(d, tz="UTC") + pd.Timedelta(hours=14, minutes=30)
        for d in pd.bdate_range("2024-06-03", periods=3)
    ]
    minutes = pd.DatetimeIndex([s + pd.Timedelta(minutes=m) for s in sessions for m in range(390)])
    busy = pd.DataFrame({"symbol": "SPY", "ts": minutes, "close": 500.0, "asset_class": "equity"})
    thin = busy[busy["ts"].dt.date != sessions[1].date()].assign(symbol="ILQ", close=2.0)  # no trade day 2
    bars = pd.concat([busy, thin], ignore_index=True).assign(volume=100.0)
    assert long_gaps(bars, None, bars) == ()
