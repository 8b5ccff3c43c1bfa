"""Dirty prices at ingest: a bad open or a close that spikes and reverts refuses the ingest (one line:
symbol, date, column, value, rule; nothing stored), or ``--drop-bad-prints`` leaves those bars out
with a warning each; a stored bar the new bars show was a spike refuses even then; absurd prices and
volumes are refused as malformed rows; a long gap and a 5x move are warned of; real moves pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.replay import read_frame
from raytrade.replay.errors import InputError
from raytrade.replay.ingest import ingest_frames
from tests.test_ingest_cli import error_line, run

DAYS = pd.bdate_range("2024-01-02", "2024-12-31", tz="UTC")
EVENT = DAYS.get_loc(pd.Timestamp("2024-06-03", tz="UTC"))  # a Monday; the bar before is Friday's


def walk(symbol: str = "KGC", seed: int = 3) -> pd.DataFrame:
    """Daily bars of ``symbol`` on a seeded 2 %-a-day random walk around $15 on 1e6 shares, each open
    at the previous close (so a test sets an open or a close alone and keeps OHLC coherent)."""
    rng = np.random.default_rng(seed)
    close = 15 * np.exp(np.cumsum(rng.normal(0.0, 0.02, len(DAYS))))
    opening = np.r_[close[0], close[:-1]]
    frame = pd.DataFrame({"symbol": symbol, "ts": DAYS, "open": opening, "close": close, "volume": 1e6})
    return _coherent(frame.assign(asset_class="equity", source="csv"))


def _coherent(frame: pd.DataFrame) -> pd.DataFrame:
    """High and low around open and close (a valid bar whatever a test did to them)."""
    top = np.maximum(frame["open"], frame["close"])
    bottom = np.minimum(frame["open"], frame["close"])
    return frame.assign(high=top * 1.01, low=bottom * 0.99)


def write_csv(folder: Path, frame: pd.DataFrame) -> Path:
    """``frame`` as ``folder/SYMBOL.csv`` in the yahoo layout (Date,open,high,low,close,volume)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = frame.assign(Date=frame["ts"].dt.strftime("%Y-%m-%d"))
    columns = ["Date", "open", "high", "low", "close", "volume"]
    out[columns].to_csv(folder / f"{frame['symbol'].iloc[0]}.csv", index=False)
    return folder


def ingest(folder: Path, store: Path, *flags: str) -> tuple[int, str]:
    return run("ingest", "--source", "csv", "--path", str(folder), "--out", str(store), *flags)


def warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("warning: ")]


def test_an_open_at_a_cent_refuses_the_ingest_naming_symbol_date_column_value_and_rule(
    tmp_path: Path,
) -> None:
    """The reviewer's KGC bar: open = low = 0.01, close normal, OHLC coherent. It was stored without
    a word, and the simulator (which fills at the open) booked +28,628 %."""
    bars = walk()
    bars.loc[EVENT, "open"] = 0.01
    previous, close = bars["close"][EVENT - 1], bars["close"][EVENT]
    folder = write_csv(tmp_path / "src", _coherent(bars))
    code, out = ingest(folder, tmp_path / "store")
    assert code == 2, out
    line = error_line(out)
    assert line.startswith(f"error: {folder}: KGC 2024-06-03: open 0.01 is ")
    assert f"the previous close {previous:.6g} (2024-05-31) and " in line
    assert f"its own close {close:.6g}: more than 5x off both, the same way (open rule)" in line
    assert "--drop-bad-prints" in line
    assert not (tmp_path / "store" / "bars").exists()  # nothing stored


def test_an_open_off_by_a_decimal_place_is_a_bad_print(tmp_path: Path) -> None:
    """Open / 10 (still +195 % in the reviewer's evaluation) is caught as well."""
    bars = walk()
    bars.loc[EVENT, "open"] = bars["close"][EVENT - 1] / 10
    with pytest.raises(InputError, match=r"KGC 2024-06-03: open .* \(open rule\)"):
        ingest_frames(tmp_path / "store", _coherent(bars), show_progress=False)
    assert not (tmp_path / "store" / "bars").exists()


@pytest.mark.parametrize(
    ("factor", "run"),
    [(100.0, 1), (0.01 / 15, 1), (100.0, 2), (10.0, 2), (0.01 / 15, 2), (1 / 10, 5)],
    ids=["x100", "at-a-cent", "two-x100", "two-x10", "two-at-a-cent", "five-tenth"],
)
def test_closes_that_spike_and_revert_refuse_the_ingest(tmp_path: Path, factor: float, run: int) -> None:
    """A decimal error on one to five bars (the whole bar scaled, so each bar is coherent and its
    open is near its close) reverts: each bar of the run is a bad print."""
    bars = walk()
    span = slice(EVENT, EVENT + run - 1)
    bars.loc[span, ["open", "close"]] *= factor
    message = (
        "KGC 2024-06-03: close .* the close before .* \\(2024-05-31\\) and .* the close after .* which "
        "agree within 1.5x: a spike of more than 5x that reverts \\(spike rule\\)"
    )
    if run > 1:
        message += f".* \\(and {run - 1} more bad prints\\)"
    with pytest.raises(InputError, match=message):
        ingest_frames(tmp_path / "store", _coherent(bars), show_progress=False)


def test_drop_bad_prints_leaves_the_bars_out_and_names_each(tmp_path: Path) -> None:
    """A spike close (x100, one bar) and, a month later, a bad open: both bars become holes, each
    named in a warning; every other bar is stored as given."""
    bars = walk()
    bars.loc[EVENT, ["open", "close"]] *= 100
    bars.loc[EVENT + 20, "open"] = 0.01
    folder = write_csv(tmp_path / "src", _coherent(bars))
    code, out = ingest(folder, tmp_path / "store", "--drop-bad-prints")
    assert code == 0, out
    named = warnings(out)
    assert len(named) == 2, out
    assert named[0].startswith("warning: KGC 2024-06-03: bar NOT stored (--drop-bad-prints): close ")
    assert named[1].startswith("warning: KGC 2024-07-01: bar NOT stored (--drop-bad-prints): open 0.01 ")
    assert "it is a hole, and the simulator holds a position through it" in named[1]
    assert "bad prints NOT stored (--drop-bad-prints): 2" in out
    stored = read_frame(tmp_path / "store", "bars")
    kept = DAYS.delete([EVENT, EVENT + 20])
    assert stored["ts"].tolist() == kept.tolist()
    assert len(read_frame(tmp_path / "store", "features")) == len(kept)


@pytest.mark.parametrize("flags", [(), ("--drop-bad-prints",)], ids=["plain", "drop"])
def test_a_stored_spike_the_new_bars_revert_is_named_and_the_new_bars_stored(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """The newest bar of an ingest has no close after it: a spike there is stored. The next ingest's
    bars show it reverts; the store is append-only and keeps it, and says so. As first written this
    refused, with or without the flag, and so did every later ingest of the store, for good."""
    bars = walk()
    bars.loc[EVENT, ["open", "close"]] *= 100
    bars = _coherent(bars)
    store = tmp_path / "store"
    code, out = ingest(write_csv(tmp_path / "first", bars[: EVENT + 1]), store)
    assert code == 0, out  # the spike is the newest bar: not judged yet
    code, out = ingest(write_csv(tmp_path / "all", bars), store, *flags)
    assert code == 0, out
    (line,) = [w for w in warnings(out) if "STORED" in w]
    assert "KGC 2024-06-03: the STORED bar's close " in line
    assert "the store is append-only and keeps it" in line and "a fresh store (a new --out)" in line
    assert len(read_frame(store, "bars")) == len(DAYS)  # the later bars are stored
    code, out = ingest(write_csv(tmp_path / "all", bars), store)
    assert code == 0, out  # and the next ingest goes on


@pytest.mark.parametrize(
    ("column", "value", "shown", "reason"),
    [
        ("price", 1e300, "'open', value 1e+300", "above 1e+09: not a price"),
        ("price", 1e-300, "'open', value 1e-300", "below 1e-12: not a price"),
        ("volume", 1e307, "'volume', value 1e+307", "above 1e+18: not a traded size"),
    ],
)
def test_absurd_prices_and_volumes_are_refused_as_malformed_rows(
    tmp_path: Path, column: str, value: float, shown: str, reason: str
) -> None:
    """A whole bar at 1e300 overflowed every evaluation; 1e-300 and a volume of 1e307 too."""
    bars = walk()
    bars.loc[EVENT, ["open", "high", "low", "close"] if column == "price" else column] = value
    folder = write_csv(tmp_path / "src", bars)
    code, out = ingest(folder, tmp_path / "store")
    assert code == 2, out
    line = error_line(out)
    assert f"KGC.csv: bars: row {EVENT + 1}, column {shown}: {reason}" in line, line
    assert not (tmp_path / "store" / "bars").exists()


@pytest.mark.parametrize(
    ("open_factor", "close_factor", "lasting"),
    [
        (0.6, 0.6, True),  # a -40 % gap that holds
        (1.0, 1.2, True),  # a +20 % day
        (1.0, 0.3, True),  # a -70 % day that stays down
        (1.0, 3.0, True),  # a 3x day that stays up
        (3.0, 3.1, True),  # a 3x opening gap that holds
        (0.6, 0.6, False),  # a -40 % day that comes back the next day
        (3.5, 1.1, True),  # a low-float runner opening 3.5x after a halt, closing +10 %
        (1.0, 4.0, False),  # a coin's 4x pump, dumped the next day
    ],
    ids=[
        "gap-down-40",
        "up-20",
        "down-70-stays",
        "up-3x-stays",
        "gap-up-3x",
        "down-40-reverts",
        "runner",
        "pump",
    ],
)
def test_real_moves_are_stored_without_a_word(
    tmp_path: Path, open_factor: float, close_factor: float, lasting: bool
) -> None:
    bars = walk()
    previous = bars["close"][EVENT - 1]
    end = None if lasting else EVENT
    bars.loc[EVENT:end, ["open", "close"]] *= close_factor
    bars.loc[EVENT, "open"] = previous * open_factor
    bars.loc[EVENT + 1, "open"] = bars["close"][EVENT]
    folder = write_csv(tmp_path / "src", _coherent(bars))
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    assert warnings(out) == []
    assert len(read_frame(tmp_path / "store", "bars")) == len(DAYS)


def test_a_reverse_split_with_its_volume_signature_is_warned_as_a_split_only(tmp_path: Path) -> None:
    bars = walk()
    bars.loc[EVENT:, ["open", "close"]] *= 10
    bars.loc[EVENT:, "volume"] /= 10
    code, out = ingest(write_csv(tmp_path / "src", _coherent(bars)), tmp_path / "store")
    assert code == 0, out
    (warned,) = warnings(out)
    assert "KGC: the bar of 2024-06-03 looks like a 1:10 reverse split left unadjusted" in warned


def test_a_price_unit_change_on_unchanged_volume_is_warned(tmp_path: Path) -> None:
    """Pence to pounds: /100 from one day on, the volume as it was (not a split's signature)."""
    bars = walk()
    bars.loc[EVENT:, ["open", "close"]] /= 100
    code, out = ingest(write_csv(tmp_path / "src", _coherent(bars)), tmp_path / "store")
    assert code == 0, out
    (warned,) = warnings(out)
    ratio = bars["close"][EVENT] / bars["close"][EVENT - 1]
    assert warned == (
        f"warning: KGC: the close of 2024-06-03 is {ratio:.4g}x the previous bar's (2024-05-31; volume 1x), "
        "not the signature of a split: a unit change or a bad print? check the source; stored as given"
    )


def _relisted(gap_sessions: int) -> pd.DataFrame:
    """A year of bars, no bar for ``gap_sessions`` NYSE sessions, then a year at 4x the price: another
    issuer under the ticker (the reviewer's KGC: 753 sessions, then +598 % at the reopen; 4x here keeps
    the reopen under the big-move warning's 5x, so the gap's warning is the one said)."""
    from raytrade.replay.exchange_calendar import nyse_holidays

    sessions = pd.bdate_range("2020-01-02", "2026-12-31", tz="UTC", freq="C", holidays=nyse_holidays())
    days = sessions[:252].append(sessions[252 + gap_sessions : 2 * 252 + gap_sessions])
    noise = np.exp(np.cumsum(np.random.default_rng(4).normal(0.0, 0.02, len(days))))
    close = np.r_[np.full(252, 15.0), np.full(252, 60.0)] * noise
    frame = pd.DataFrame({"symbol": "KGC", "ts": days, "open": close, "close": close, "volume": 1e6})
    return _coherent(frame.assign(asset_class="equity", source="csv"))


def test_a_gap_of_more_than_a_year_of_sessions_is_warned_as_a_halt(tmp_path: Path) -> None:
    code, out = ingest(write_csv(tmp_path / "src", _relisted(753)), tmp_path / "store")
    assert code == 0, out
    (warned,) = warnings(out)
    assert warned.startswith("warning: KGC: no bar for 753 bars between 2020-12-30 and 2023-12-29 (then ")
    assert warned.endswith(
        "read as a halt: a position is held through it; if another issuer reused the ticker, give them "
        "separate files/symbols"
    )


def test_a_gap_of_less_than_a_year_is_not_warned(tmp_path: Path) -> None:
    code, out = ingest(write_csv(tmp_path / "src", _relisted(200)), tmp_path / "store")
    assert code == 0, out
    assert warnings(out) == []


def test_the_alpaca_source_goes_through_the_same_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every source ends in the one ingest path: a BTCUSD open that lost a digit refuses an Alpaca
    ingest (real alpaca-py client, fake server on 127.0.0.1)."""
    from tests.fake_alpaca import FakeAlpaca, use_fake_alpaca

    with FakeAlpaca() as fake:
        bar = fake.crypto_bars["BTC/USD"][1]  # 2024-01-03: open 45010.75 after a close of 45010.75
        bar["o"] = bar["l"] = 4501.0
        use_fake_alpaca(monkeypatch, fake.url)
        code, out = run(
            "ingest", "--source", "alpaca", "--symbols", "BTCUSD", "--start", "2024-01-01",
            "--end", "2024-01-05", "--out", str(tmp_path / "store"),
        )  # fmt: skip
    assert code == 2, out
    assert error_line(out).startswith(
        "error: alpaca: BTCUSD 2024-01-03: open 4501 is 0.1x the previous close"
    )
    assert not (tmp_path / "store" / "bars").exists()


def test_the_real_bars_ingest_at_once_and_in_two_parts_without_a_word(
    shared_data: Path, tmp_path: Path
) -> None:
    """The 31 files of ../shared/data (30 stocks, SUIUSDT): no refusal, no warning, nothing dropped,
    ingested whole, and as their first 700 rows then the whole files (an incremental ingest)."""
    code, out = ingest(shared_data, tmp_path / "whole", "--drop-bad-prints")
    assert code == 0, out
    assert warnings(out) == [] and "bad prints" not in out
    half = tmp_path / "half"
    for path in shared_data.rglob("*.csv"):
        part = half / path.relative_to(shared_data)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text("".join(path.read_text().splitlines(keepends=True)[:701]))
    for folder in (half, shared_data):
        code, out = ingest(folder, tmp_path / "parts")
        assert code == 0, out
        assert warnings(out) == []
    whole, parts = (read_frame(tmp_path / s, "bars") for s in ("whole", "parts"))
    assert len(whole) == len(parts) > 40_000


def test_nightly_takes_drop_bad_prints_to_its_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A night refused on a bad print said "pass --drop-bad-prints", which nightly did not have; the
    README's way round (one manual `ingest --drop-bad-prints`, then the night) failed the same night
    again: the dropped bar, later than the store's last, was new to the night's ingest."""
    import raytrade.cluster.nightly as nightly

    seen: dict[str, object] = {}
    monkeypatch.setattr(nightly, "run_nightly", lambda *a, **kw: seen.update(kw))
    registry = tmp_path / "registry"
    registry.mkdir()
    args = ["nightly", "--replay", str(tmp_path / "store"), "--registry", str(registry), "--source", "csv"]
    code, out = run(*args, "--path", str(tmp_path), "--drop-bad-prints", "--no-plots")
    assert code == 0, out
    assert seen["drop_bad_prints"] is True
    request = nightly.source_request("csv", tmp_path, {}, False, drop_bad_prints=True)
    assert request is not None and request.drop_bad_prints


def test_a_split_on_unchanged_volume_is_warned_by_its_move(tmp_path: Path) -> None:
    """A 10:1 split the source did not adjust, its volume not restated: not a split's signature, and its
    close moves a little under 10x, so the big-move warning at 10x (as first written) let it pass in
    silence; at the bad-print factor (5x) it is named."""
    bars = walk()
    bars.loc[EVENT:, ["open", "close"]] /= 10
    code, out = ingest(write_csv(tmp_path / "src", _coherent(bars)), tmp_path / "store")
    assert code == 0, out
    (warned,) = warnings(out)
    assert warned.startswith("warning: KGC: the close of 2024-06-03 is 0.")
    assert "not the signature of a split: a unit change or a bad print?" in warned
