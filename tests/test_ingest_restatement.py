"""A source that repeats a symbol's stored bars times one ratio (adjusted prices rescaled after a split
or dividend) is re-based: its new bars are stored on the store's basis, night after night. Any other
difference (a corrected print, a rescale that is not one ratio) is refused before anything is written;
``keep_stored_on_restatement`` keeps the stored bars and appends the new ones with a warning. Float
noise and cent rounding are not restatements; a revised volume is a warning, never a refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.replay import read_frame
from raytrade.replay.errors import InputError
from raytrade.replay.ingest import ingest_frames
from raytrade.replay.restatement import (
    RESTATEMENT_RTOL,
    Rebased,
    Restated,
    VolumeRevised,
    price_rounding_allowance,
)
from raytrade.replay.sources.synthetic import SyntheticMarket, generate
from tests.test_ingest_cli import error_line, run, write_folder
from tests.test_ingest_order import snapshot

PRICES = ["open", "high", "low", "close"]
SPLIT = "SYN001"


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate(n_symbols=2, years=0.3, seed=2)


def stored_and_new(bars: pd.DataFrame, new_days: int = 5) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The bars a first ingest stores (all but the last ``new_days`` dates) and the cutoff date."""
    cutoff = pd.Timestamp(sorted(bars["ts"].unique())[-new_days])
    return bars[bars["ts"] < cutoff].reset_index(drop=True), cutoff


def split_2_for_1(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """The source after a 2:1 split of ``symbol``: its whole history on the new basis (prices halved,
    volume doubled), as a split-adjusted vendor serves it."""
    out = bars.copy()
    rows = out["symbol"] == symbol
    for column in [*PRICES, "vwap", "bid", "ask"]:
        out.loc[rows, column] = out.loc[rows, column] / 2
    out.loc[rows, "volume"] = out.loc[rows, "volume"] * 2
    return out


def adjusted(bars: pd.DataFrame, symbol: str, factor: float, before: pd.Timestamp) -> pd.DataFrame:
    """The source as a dividend-adjusting vendor serves it after an ex-date ``before``: ``symbol``'s
    prices before it times ``factor``, volume as it was (Yahoo adjusts volume for splits only)."""
    out = bars.copy()
    rows = (out["symbol"] == symbol) & (out["ts"] < before)
    for column in [*PRICES, "vwap", "bid", "ask"]:
        out.loc[rows, column] = out.loc[rows, column] * factor
    return out


def test_a_split_on_the_first_new_bar_is_rebased_continuous_and_warned(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, cutoff = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    # a 2:1 split at cutoff: from then on the symbol trades at half the price and twice the shares, and
    # the split-adjusted source halves the history before it too -- all of it is market.bars halved
    source = split_2_for_1(market.bars, SPLIT)
    result = ingest_frames(tmp_path, source, origin="yahoo", show_progress=False)
    ours = (source["symbol"] == SPLIT).to_numpy()
    new = source[ours & (source["ts"] >= cutoff).to_numpy()]
    compared = int((stored["symbol"] == SPLIT).sum())
    assert result.rebased == (Rebased(SPLIT, 0.5, cutoff, len(new), compared),)
    assert result.restated == () and result.volume_revised == ()
    assert result.appended["bars"] == int((market.bars["ts"] >= cutoff).sum())
    bars = read_frame(tmp_path, "bars")
    mine = bars[bars["symbol"] == SPLIT].sort_values("ts", ignore_index=True)
    # on the store's (pre-split) basis: the new bars' prices doubled, volumes halved
    kept = mine[mine["ts"] >= cutoff].reset_index(drop=True)
    np.testing.assert_allclose(kept[PRICES].to_numpy(), new[PRICES].to_numpy() / 0.5, rtol=1e-12)
    np.testing.assert_allclose(kept["volume"], new["volume"].to_numpy() * 0.5, rtol=1e-12)
    # dollar volume unchanged by the conversion
    np.testing.assert_allclose(
        kept["close"] * kept["volume"], (new["close"] * new["volume"]).to_numpy(), rtol=1e-12
    )
    # the close-to-close return across the split is the source's, not a fake -50 %
    at = int(mine["ts"].searchsorted(cutoff))
    stored_return = mine["close"][at] / mine["close"][at - 1] - 1
    before = source[ours & (source["ts"] < cutoff).to_numpy()]["close"].iloc[-1]
    assert stored_return == pytest.approx(new["close"].iloc[0] / before - 1, rel=1e-9)
    assert stored_return > -0.25
    (warning,) = result.warnings()
    assert warning == (
        f"{SPLIT}: re-based: the source's prices are the stored ones times 0.5 on all {compared} stored bars "
        f"it repeats (a split or dividend re-adjustment); its {len(new)} new bars from {cutoff.date()} "
        "stored on the store's basis (prices divided by 0.5, volume multiplied by it: returns and dollar "
        "volume as the source's)"
    )
    assert f"re-based symbols (new bars on the store's basis): 1 ({len(new)} bars)" in result.summary_line()
    assert len(read_frame(tmp_path, "features")) == len(bars)


def test_a_dividend_readjustment_is_rebased(tmp_path: Path, market: SyntheticMarket) -> None:
    stored, cutoff = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    source = adjusted(market.bars, SPLIT, 0.996, cutoff)  # a 0.4 % dividend, ex-date on the first new bar
    result = ingest_frames(tmp_path, source, show_progress=False)
    (rebased,) = result.rebased
    assert (rebased.symbol, rebased.first_new) == (SPLIT, cutoff)
    assert rebased.ratio == pytest.approx(0.996, rel=1e-12)
    assert result.restated == () and result.volume_revised == ()  # the volume is not dividend-adjusted
    bars = read_frame(tmp_path, "bars")
    mine = bars[bars["symbol"] == SPLIT].sort_values("ts", ignore_index=True)
    at = int(mine["ts"].searchsorted(cutoff))
    theirs = source[source["symbol"] == SPLIT].sort_values("ts", ignore_index=True)
    # the store's return across the ex-date is the adjusted source's (a total return)
    assert mine["close"][at] / mine["close"][at - 1] == pytest.approx(
        theirs["close"][at] / theirs["close"][at - 1], rel=1e-12
    )
    np.testing.assert_allclose(mine["close"][at:], theirs["close"][at:] / 0.996, rtol=1e-12)


def test_nights_after_a_dividend_and_then_a_split_rebase_each_time_without_duplicates(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    bars = market.bars
    days = [pd.Timestamp(d) for d in sorted(bars["ts"].unique())]
    ex_dividend, ex_split = days[-4], days[-2]
    ingest_frames(tmp_path, bars[bars["ts"] < ex_dividend], show_progress=False)

    def night(last: pd.Timestamp) -> pd.DataFrame:
        """Yahoo's history up to ``last``: a 0.4 % dividend at ex_dividend, a 2:1 split at ex_split."""
        source = bars[bars["ts"] <= last]
        if last >= ex_split:  # post-split trading at half the price, the history before it halved
            source = split_2_for_1(source, SPLIT)
        return adjusted(source, SPLIT, 0.996, ex_dividend)

    for last, ratio, appended in [
        (days[-4], 0.996, 2),  # the ex-dividend night
        (days[-3], 0.996, 2),  # the next night: the same ratio, re-based again
        (days[-3], 0.996, 0),  # a re-run: nothing new, nothing duplicated
        (days[-2], 0.498, 2),  # the split night: both events in one ratio
        (days[-1], 0.498, 2),
    ]:
        result = ingest_frames(tmp_path, night(last), show_progress=False)
        assert result.restated == () and result.volume_revised == (), last
        (rebased,) = result.rebased
        assert rebased.ratio == pytest.approx(ratio, rel=1e-12) and rebased.rows == appended // 2
        assert result.appended.get("bars", 0) == appended
    stored = read_frame(tmp_path, "bars").sort_values(["symbol", "ts"], ignore_index=True)
    assert not stored.duplicated(["symbol", "ts"]).any() and len(stored) == len(bars)
    truth = bars.sort_values(["symbol", "ts"], ignore_index=True)
    mine = (stored["symbol"] == SPLIT).to_numpy()
    after = mine & (stored["ts"] >= ex_dividend).to_numpy()
    # one basis, the store's: the pre-dividend, pre-split prices, continued by total returns
    np.testing.assert_allclose(stored["close"][after], truth["close"][after] / 0.996, rtol=1e-12)
    np.testing.assert_array_equal(stored["close"][~after], truth["close"][~after])
    # dollar volume as traded, whatever the basis
    np.testing.assert_allclose(
        stored["close"] * stored["volume"], truth["close"] * truth["volume"], rtol=1e-12
    )


def test_a_split_restated_beyond_one_ratio_is_refused_naming_symbol_dates_and_ratio(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, _ = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    before = snapshot(tmp_path)
    source = split_2_for_1(market.bars, SPLIT)
    bad = source.index[source["symbol"] == SPLIT][3]
    source.loc[bad, ["close", "high"]] = source.loc[bad, "high"] * 1.01  # and one corrected print
    with pytest.raises(InputError) as refused:
        ingest_frames(tmp_path, source, origin="yahoo", show_progress=False)
    message = str(refused.value)
    day = source.loc[bad, "ts"].date()
    old, new = market.bars.loc[bad, "close"], source.loc[bad, "close"]
    assert "\n" not in message and message.startswith("yahoo: refused, nothing written")
    assert (
        f"{SPLIT}: 1 stored bar differs from the source, on the basis 0.5 the other stored rows agree at "
        f"(first {day}: stored close {old:.6g}, source close {new:.6g}, ratio {new / old:.4f}: looks like a "
        f"corrected print; differing: {day})"
    ) in message
    assert "SYN000" not in message and "--keep-stored-on-restatement" in message
    assert snapshot(tmp_path) == before

    result = ingest_frames(tmp_path, source, show_progress=False, keep_stored_on_restatement=True)
    (restated,) = result.restated
    assert restated.basis == 0.5 and result.rebased == ()
    assert "appended divided by 0.5 (--keep-stored-on-restatement)" in result.warnings()[0]
    mine = read_frame(tmp_path, "bars").query(f"symbol == '{SPLIT}'").sort_values("ts")
    truth = market.bars[market.bars["symbol"] == SPLIT].sort_values("ts")
    np.testing.assert_allclose(mine["close"], truth["close"], rtol=1e-12)  # no -50 % splice


def test_one_corrected_print_is_refused_naming_its_date(tmp_path: Path, market: SyntheticMarket) -> None:
    stored, _ = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    before = snapshot(tmp_path)
    source = market.bars.copy()
    bad = source.index[(source["symbol"] == "SYN000")][20]
    source.loc[bad, ["close", "high"]] = source.loc[bad, "high"] * 1.01  # a vendor's corrected close
    day = source.loc[bad, "ts"].date()
    with pytest.raises(InputError, match=rf"SYN000: 1 stored bar differs from the source \(first {day}: "):
        ingest_frames(tmp_path, source, show_progress=False)
    assert snapshot(tmp_path) == before


def test_a_small_dividend_readjustment_is_refused_too(tmp_path: Path, market: SyntheticMarket) -> None:
    stored, _ = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    source = market.bars.copy()
    rows = (source["symbol"] == SPLIT) & (source["ts"] < source["ts"].min() + pd.Timedelta(days=30))
    source.loc[rows, PRICES] *= 0.9999  # a 0.01 % dividend: history before the ex-date rescaled
    with pytest.raises(InputError, match=rf"{SPLIT}: {int(rows.sum())} stored bars differ.*ratio 0\.9999"):
        ingest_frames(tmp_path, source, show_progress=False)


def test_csv_rounding_below_the_tolerance_is_not_a_restatement(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, cutoff = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    source = market.bars.copy()
    for column in [*PRICES, "volume"]:  # the stored values as a csv with 6 significant digits
        rounded = source[column].map(lambda v: float(f"{v:.6g}"))
        assert ((rounded - source[column]).abs() <= RESTATEMENT_RTOL * source[column].abs()).all()
        source[column] = rounded
    assert not np.allclose(source["close"], market.bars["close"], rtol=1e-9, atol=0)  # it is rounded
    result = ingest_frames(tmp_path, source, show_progress=False)
    new = int((market.bars["ts"] >= cutoff).sum())
    assert result.appended["bars"] == new and result.skipped_bars == len(stored) and result.restated == ()
    bars = read_frame(tmp_path, "bars").sort_values(["symbol", "ts"], ignore_index=True)
    kept = bars[bars["ts"] < cutoff].reset_index(drop=True)
    expected = stored.sort_values(["symbol", "ts"], ignore_index=True)
    np.testing.assert_array_equal(kept["close"], expected["close"])  # the stored values win


def test_keep_stored_keeps_a_corrected_print_and_appends_the_new_bars_as_given_with_a_warning(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, cutoff = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    source = market.bars.copy()
    bad = source.index[(source["symbol"] == "SYN000")][20]
    source.loc[bad, ["close", "high"]] = source.loc[bad, "high"] * 1.01  # a vendor's corrected close
    with pytest.raises(InputError, match="refused, nothing written"):
        ingest_frames(tmp_path, source, show_progress=False)
    result = ingest_frames(tmp_path, source, show_progress=False, keep_stored_on_restatement=True)
    new = market.bars[market.bars["ts"] >= cutoff]
    assert result.appended["bars"] == len(new) and result.rebased == ()
    bars = read_frame(tmp_path, "bars").sort_values(["symbol", "ts"], ignore_index=True)
    expected = market.bars.sort_values(["symbol", "ts"], ignore_index=True)  # stored kept, new as given
    np.testing.assert_array_equal(bars[[*PRICES, "volume"]], expected[[*PRICES, "volume"]])
    day = source.loc[bad, "ts"]
    (restated,) = result.restated
    appended = int((new["symbol"] == "SYN000").sum())
    assert restated == Restated(
        "bars",
        "SYN000",
        1,
        (day,),
        "close",
        market.bars.loc[bad, "close"],
        source.loc[bad, "close"],
        1.0,
        appended,
    )
    (warning,) = result.warnings()
    assert warning.startswith(f"SYN000: 1 stored bar differs from the source (first {day.date()}: ")
    assert f"differing: {day.date()})" in warning
    assert (
        f"the stored rows were kept as they are and its {appended} new bars appended as the source gives "
        "them (--keep-stored-on-restatement)"
    ) in warning
    assert "restated symbols kept as stored, new rows appended: 1" in result.summary_line()
    assert len(read_frame(tmp_path, "features")) == len(bars)  # the features follow the stored bars


def test_a_revised_volume_of_the_last_stored_bar_is_a_warning_not_a_refusal(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, cutoff = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    source = market.bars.copy()
    last = source.index[(source["symbol"] == "SYN000") & (source["ts"] < cutoff)][-1]
    source.loc[last, "volume"] = source.loc[last, "volume"] * 1.07  # the vendor's revised volume
    result = ingest_frames(tmp_path, source, show_progress=False)
    assert result.appended["bars"] == int((market.bars["ts"] >= cutoff).sum())
    assert result.restated == () and result.rebased == ()
    volume = market.bars.loc[last, "volume"]
    assert result.volume_revised == (
        VolumeRevised("SYN000", 1, source.loc[last, "ts"], volume, source.loc[last, "volume"]),
    )
    (warning,) = result.warnings()
    assert warning.startswith("SYN000: 1 stored bar's volume differs from the source's, prices agreeing")
    assert "the stored volume was kept" in warning
    bars = read_frame(tmp_path, "bars")
    assert (
        bars.loc[(bars["symbol"] == "SYN000") & (bars["ts"] == source.loc[last, "ts"]), "volume"].item()
        == volume
    )


def test_a_restated_macro_series_is_refused(tmp_path: Path, market: SyntheticMarket) -> None:
    stored, _ = stored_and_new(market.bars)
    macro_stored = market.macro[market.macro["ts"] < stored["ts"].max()]
    ingest_frames(tmp_path, stored, macro_stored, show_progress=False)
    before = snapshot(tmp_path)
    macro = market.macro.copy()
    macro.loc[macro["symbol"] == "vix", "value"] *= 1.1  # a rebased series
    with pytest.raises(InputError, match=r"vix: \d+ stored macro rows differ .*ratio 1\.1000"):
        ingest_frames(tmp_path, market.bars, macro, show_progress=False)
    assert snapshot(tmp_path) == before


CSV = """Date,open,high,low,close,volume
2024-01-02,10.2,11.0,10.0,10.5,1000
2024-01-03,10.5,11.2,10.4,10.8,1200
2024-01-04,10.8,10.9,10.1,10.6,900
"""
HALVED = """Date,open,high,low,close,volume
2024-01-02,5.1,5.5,5.0,5.25,2000
2024-01-03,5.25,5.6,5.2,5.4,2400
2024-01-04,5.4,5.45,5.05,5.3,1800
2024-01-05,5.3,5.5,5.2,5.45,2000
"""
NEXT = CSV + "2024-01-05,10.6,11.0,10.5,10.9,1100\n"
CORRECTED = NEXT.replace("2024-01-03,10.5,11.2,10.4,10.8,", "2024-01-03,10.5,11.2,10.4,10.9,")


def test_the_cli_rebases_a_split_and_refuses_a_correction_with_one_error_line(tmp_path: Path) -> None:
    first = write_folder(tmp_path / "first", {"AAA.csv": CSV, "BBB.csv": CSV})
    store = tmp_path / "store"
    assert run("ingest", "--source", "csv", "--path", str(first), "--out", str(store))[0] == 0
    before = snapshot(store)
    corrected = write_folder(tmp_path / "corrected", {"AAA.csv": NEXT, "BBB.csv": CORRECTED})
    code, out = run("ingest", "--source", "csv", "--path", str(corrected), "--out", str(store))
    assert code == 2
    line = error_line(out)
    assert (
        "BBB: 1 stored bar differs from the source (first 2024-01-03: stored close 10.8, source close 10.9, "
        "ratio 1.0093: looks like a corrected print; differing: 2024-01-03)"
    ) in line
    assert "AAA" not in line and "ingest all the data into a fresh store (a new --out)" in line
    assert snapshot(store) == before

    split = write_folder(tmp_path / "split", {"AAA.csv": HALVED, "BBB.csv": NEXT})
    code, out = run("ingest", "--source", "csv", "--path", str(split), "--out", str(store))
    assert code == 0, out
    assert "warning: AAA: re-based: the source's prices are the stored ones times 0.5 on all 3" in out
    assert "bars +2" in out
    bars = read_frame(store, "bars")
    aaa = bars[(bars["symbol"] == "AAA") & (bars["ts"] == pd.Timestamp("2024-01-05", tz="UTC"))]
    assert aaa[["open", "high", "low", "close", "volume"]].to_numpy().tolist() == [
        [10.6, 11.0, 10.4, 10.9, 1000.0]
    ]


def test_the_cli_keeps_a_correction_and_appends_with_the_flag(tmp_path: Path) -> None:
    first = write_folder(tmp_path / "first", {"BBB.csv": CSV})
    store = tmp_path / "store"
    assert run("ingest", "--source", "csv", "--path", str(first), "--out", str(store))[0] == 0
    corrected = write_folder(tmp_path / "corrected", {"BBB.csv": CORRECTED})
    code, out = run(
        "ingest",
        "--source",
        "csv",
        "--path",
        str(corrected),
        "--out",
        str(store),
        "--keep-stored-on-restatement",
    )
    assert code == 0, out
    assert "warning: BBB: 1 stored bar differs from the source" in out
    assert "its 1 new bar appended as the source gives them" in out and "bars +1" in out
    bars = read_frame(store, "bars").sort_values("ts")
    assert bars["close"].tolist() == [10.5, 10.8, 10.6, 10.9]  # the stored close kept, the new bar added


def test_nightly_refuses_a_restating_source_before_evaluating(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raytrade.cluster.nightly import nightly_command
    from raytrade.cluster.nightly_lock import LOCK_FILE

    first = write_folder(tmp_path / "first", {"AAA.csv": CSV})
    store = tmp_path / "store"
    assert run("ingest", "--source", "csv", "--path", str(first), "--out", str(store))[0] == 0
    before = snapshot(store)
    corrected = write_folder(tmp_path / "corrected", {"AAA.csv": CORRECTED})
    (tmp_path / "registry").mkdir()  # an empty registry: nightly refuses one that does not exist
    args = ["--replay", str(store), "--registry", str(tmp_path / "registry"), "--source", "csv"]
    args += [
        "--path",
        str(corrected),
        "--results",
        str(tmp_path / "r.md"),
        "--reports",
        str(tmp_path / "rep"),
    ]
    result = CliRunner().invoke(nightly_command, args)
    assert result.exit_code == 2
    assert "ratio 1.0093: looks like a corrected print" in error_line(result.output)
    after = snapshot(store)
    # the run's lock file (its pid and start: cluster.nightly_lock) is left beside the tables by design
    assert json.loads(after.pop(LOCK_FILE))["pid"] == os.getpid()
    assert after == before and not (tmp_path / "r.md").exists()


def flat_bars(symbol: str, closes: np.ndarray) -> pd.DataFrame:
    """Daily equity bars of ``symbol`` whose open, high, low and close are ``closes``, volume 1e6."""
    ts = pd.bdate_range("2024-01-02", periods=len(closes), tz="UTC")
    frame = pd.DataFrame({"symbol": symbol, "ts": ts, "volume": 1e6, "asset_class": "equity"})
    for column in PRICES:
        frame[column] = closes
    return frame.assign(source="csv")


def test_the_rounding_allowance_is_half_a_tick_of_the_price_level_and_at_most_half_a_percent() -> None:
    prices = np.array([30.0, 1.0, 0.03, 0.0312, 0.0003, 30.004, 0.03123])
    np.testing.assert_allclose(
        price_rounding_allowance(prices),
        # cent grid, cent grid, 4 decimals, 4 decimals, 4 decimals capped at 0.5 %, off-grid, off-grid
        [0.005, 0.005, 0.00005, 0.00005, 0.0003 * 0.005, 0.0, 0.0],
        rtol=1e-12,
    )


def test_a_penny_stock_restated_by_one_cent_is_a_restatement_not_rounding(tmp_path: Path) -> None:
    closes = np.full(80, 0.03)
    ingest_frames(tmp_path, flat_bars("PNY", closes), show_progress=False)
    before = snapshot(tmp_path)
    closes[40:] = 0.04  # +33 %: one cent, as the cent rounding of a $30 stock would be 0.03 %
    with pytest.raises(InputError, match=r"PNY: 40 stored bars differ from the source \(first 2024-02-27: "):
        ingest_frames(tmp_path, flat_bars("PNY", closes), show_progress=False)
    assert snapshot(tmp_path) == before


def test_a_penny_stock_rescaled_and_rounded_to_4_decimals_is_rebased(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    closes = np.round(0.03 * np.exp(np.cumsum(rng.normal(0, 0.02, 60))), 4)
    ingest_frames(tmp_path, flat_bars("PNY", closes[:50]), show_progress=False)
    # a 1:2 re-adjustment of the history (prices halved), the vendor's prices rounded to 4 decimals
    result = ingest_frames(tmp_path, flat_bars("PNY", np.round(closes / 2, 4)), show_progress=False)
    (rebased,) = result.rebased
    assert rebased.ratio == pytest.approx(0.5, rel=0.01) and rebased.rows == 10 and result.restated == ()


def test_float_noise_on_a_penny_stock_is_the_same_bar(tmp_path: Path) -> None:
    closes = np.full(30, 0.03)
    ingest_frames(tmp_path, flat_bars("PNY", closes), show_progress=False)
    noisy = flat_bars("PNY", closes.astype(np.float32).astype(float) * (1 + 1e-7))  # a float32 csv
    result = ingest_frames(tmp_path, noisy, show_progress=False)
    assert result.skipped_bars == 30 and result.restated == () and result.rebased == ()


def test_a_30_dollar_stock_keeps_its_cent_of_rounding_and_refuses_a_restatement(tmp_path: Path) -> None:
    closes = np.full(80, 30.004)  # stored off the cent grid (a vendor's 4 decimals)
    ingest_frames(tmp_path, flat_bars("BIG", closes), show_progress=False)
    result = ingest_frames(tmp_path, flat_bars("BIG", np.full(80, 30.0)), show_progress=False)  # to cents
    assert result.skipped_bars == 80 and result.restated == () and result.rebased == ()
    closes[40:] = 40.0
    with pytest.raises(InputError, match=r"BIG: 40 stored bars differ from the source"):
        ingest_frames(tmp_path, flat_bars("BIG", closes), show_progress=False)
