"""A source that restates stored rows (adjusted prices rescaled after a split or dividend, a corrected
print) is refused before anything is written, instead of splicing two price bases; float noise is not
a restatement; ``keep_stored_on_restatement`` skips the restated symbols' new bars with a warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.replay import read_frame
from raytrade.replay.errors import InputError
from raytrade.replay.ingest import RESTATEMENT_RTOL, Restated, ingest_frames
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


def test_a_split_restatement_is_refused_naming_symbol_date_and_ratio_and_nothing_is_written(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, _ = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    before = snapshot(tmp_path)
    source = split_2_for_1(market.bars, SPLIT)
    with pytest.raises(InputError) as refused:
        ingest_frames(tmp_path, source, origin="yahoo", show_progress=False)
    message = str(refused.value)
    assert "\n" not in message
    ours = stored[stored["symbol"] == SPLIT]
    first = ours["ts"].min().date()
    close = ours["close"].iloc[0]
    assert message.startswith("yahoo: refused, nothing written")
    assert (
        f"{SPLIT}: {len(ours)} stored bars differ from the source (first {first}: stored close "
        f"{close:.6g}, source close {close / 2:.6g}, ratio 0.5000: looks like a split or re-adjustment)"
    ) in message
    assert "SYN000" not in message  # unchanged: not named
    assert "fresh store (a new --out)" in message and "--keep-stored-on-restatement" in message
    assert snapshot(tmp_path) == before  # refused before anything was written


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


def test_keep_stored_skips_the_restated_symbols_new_bars_and_stores_the_others(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    stored, cutoff = stored_and_new(market.bars)
    ingest_frames(tmp_path, stored, show_progress=False)
    source = split_2_for_1(market.bars, SPLIT)
    result = ingest_frames(tmp_path, source, show_progress=False, keep_stored_on_restatement=True)
    new = market.bars[market.bars["ts"] >= cutoff]
    skipped = int((new["symbol"] == SPLIT).sum())
    assert result.appended["bars"] == len(new) - skipped > 0
    bars = read_frame(tmp_path, "bars")
    assert bars.loc[bars["symbol"] == SPLIT, "ts"].max() < cutoff  # no bar on the new basis
    assert bars.loc[bars["symbol"] == "SYN000", "ts"].max() == new["ts"].max()
    ours = stored[stored["symbol"] == SPLIT]
    (restated,) = result.restated
    assert restated == Restated(
        "bars",
        SPLIT,
        len(ours),
        ours["ts"].min(),
        "close",
        ours["close"].iloc[0],
        ours["close"].iloc[0] / 2,
        skipped,
    )
    (warning,) = result.warnings()
    assert warning.startswith(f"{SPLIT}: {len(ours)} stored bars differ from the source")
    assert f"its {skipped} new bars NOT stored" in warning and "fresh store" in warning
    assert (
        f"restated symbols kept as stored: 1 (their new bars NOT stored: {skipped})" in result.summary_line()
    )
    features = read_frame(tmp_path, "features")
    assert len(features) == len(bars)  # the features follow the stored bars


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


def test_the_cli_refuses_a_restatement_with_one_error_line_and_exit_status_2(tmp_path: Path) -> None:
    first = write_folder(tmp_path / "first", {"AAA.csv": CSV, "BBB.csv": CSV})
    store = tmp_path / "store"
    assert run("ingest", "--source", "csv", "--path", str(first), "--out", str(store))[0] == 0
    before = snapshot(store)
    split = write_folder(tmp_path / "split", {"AAA.csv": HALVED, "BBB.csv": NEXT})
    code, out = run("ingest", "--source", "csv", "--path", str(split), "--out", str(store))
    assert code == 2
    line = error_line(out)
    assert (
        "AAA: 3 stored bars differ from the source (first 2024-01-02: stored close 10.5, source close 5.25, "
        "ratio 0.5000: looks like a split or re-adjustment)"
    ) in line
    assert "BBB" not in line and "ingest all the data into a fresh store (a new --out)" in line
    assert snapshot(store) == before

    code, out = run(
        "ingest", "--source", "csv", "--path", str(split), "--out", str(store), "--keep-stored-on-restatement"
    )
    assert code == 0, out
    assert "warning: AAA: 3 stored bars differ from the source" in out
    assert "its 1 new bar NOT stored" in out and "bars +1" in out
    bars = read_frame(store, "bars")
    assert bars.groupby("symbol")["ts"].max().dt.strftime("%Y-%m-%d").to_dict() == {
        "AAA": "2024-01-04",
        "BBB": "2024-01-05",
    }


def test_nightly_refuses_a_restating_source_before_evaluating(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raytrade.cluster.nightly import nightly_command

    first = write_folder(tmp_path / "first", {"AAA.csv": CSV})
    store = tmp_path / "store"
    assert run("ingest", "--source", "csv", "--path", str(first), "--out", str(store))[0] == 0
    before = snapshot(store)
    split = write_folder(tmp_path / "split", {"AAA.csv": HALVED})
    args = ["--replay", str(store), "--registry", str(tmp_path / "registry"), "--source", "csv"]
    args += ["--path", str(split), "--results", str(tmp_path / "r.md"), "--reports", str(tmp_path / "rep")]
    result = CliRunner().invoke(nightly_command, args)
    assert result.exit_code == 2
    assert "ratio 0.5000: looks like a split or re-adjustment" in error_line(result.output)
    assert snapshot(store) == before and not (tmp_path / "r.md").exists()
