"""A split left unadjusted in raw prices (close / k and volume x k overnight) is reported at ingest,
against the previous bar stored or in the same batch; the bar is kept. Real crashes and jumps of
split-adjusted data, and a -40 % day on the usual volume, are not reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.replay import read_frame
from raytrade.replay.ingest import ingest_frames
from raytrade.replay.sources.csv_dir import read_csv_folder
from raytrade.replay.sources.synthetic import generate
from raytrade.replay.split_signature import SuspectedSplit, suspected_splits
from tests.test_ingest_cli import run

DAYS = pd.bdate_range("2024-01-02", "2024-12-31", tz="UTC")
EVENT = DAYS.get_loc(pd.Timestamp("2024-10-01", tz="UTC"))


def bars(symbol: str, price_factor: float = 1.0, volume_factor: float = 1.0, seed: int = 5) -> pd.DataFrame:
    """Daily bars of ``symbol`` on a seeded 1 %-a-day random walk around $200 on 2e6 shares, whose
    prices from 2024-10-01 on are times ``price_factor`` (the open too) and volumes times
    ``volume_factor``. Two symbols of one store need two seeds: one walk twice is one instrument
    under two names, which ingest names (``replay.odd_moves.twin_symbols``)."""
    rng = np.random.default_rng(seed)
    close = 200 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, len(DAYS))))
    volume = np.full(len(DAYS), 2e6)
    close[EVENT:] *= price_factor
    volume[EVENT:] *= volume_factor
    frame = pd.DataFrame({"symbol": symbol, "ts": DAYS, "open": close, "close": close, "volume": volume})
    return frame.assign(high=close * 1.01, low=close * 0.99, asset_class="equity", source="csv")


def test_an_unadjusted_4_for_1_split_is_suspected_with_its_ratios() -> None:
    split = bars("AAA", 1 / 4, 4)
    ratio = split["close"][EVENT] / split["close"][EVENT - 1]
    assert suspected_splits(None, pd.concat([bars("BBB"), split])) == (
        SuspectedSplit("AAA", DAYS[EVENT], DAYS[EVENT - 1], (4, 1), ratio, ratio, 4.0),
    )


def test_a_reverse_split_against_the_last_stored_bar_is_suspected() -> None:
    reverse = bars("AAA", 10, 1 / 10)
    stored, new = reverse[:EVENT], reverse[EVENT:]
    (found,) = suspected_splits(stored, new)
    assert (found.ts, found.previous, found.split) == (DAYS[EVENT], DAYS[EVENT - 1], (1, 10))
    assert found.volume_ratio == pytest.approx(0.1, rel=1e-12)
    # the next night, the split day stored: its bar is the previous one, and nothing is suspected
    assert suspected_splits(reverse[: EVENT + 1], reverse[EVENT + 1 :]) == ()


@pytest.mark.parametrize(
    ("price_factor", "volume_factor", "suspected"),
    [
        (0.6, 1.0, False),  # -40 % on the usual volume: not a 3:2 split
        (0.25, 20.0, False),  # a -75 % crash on 20 times the usual volume: not a 4:1 split
        (0.25, 1.0, False),  # -75 % on the usual volume: the volume did not move like a split's
        (0.5, 2.0, True),  # a 2:1 split left unadjusted
        (2 / 3, 1.5, True),  # a 3:2 one
    ],
)
def test_a_big_move_is_a_split_only_when_the_volume_moves_by_the_inverse_ratio(
    price_factor: float, volume_factor: float, suspected: bool
) -> None:
    assert (suspected_splits(None, bars("AAA", price_factor, volume_factor)) != ()) == suspected


def test_the_real_split_adjusted_bars_give_no_warning(shared_data: Path) -> None:
    real = read_csv_folder(shared_data)
    assert real["symbol"].nunique() >= 30 and len(real) > 30_000
    assert suspected_splits(None, real) == ()


def test_synthetic_markets_give_no_warning() -> None:
    market = generate(n_symbols=50, years=5.0, seed=1, n_crypto=2)
    assert suspected_splits(None, market.bars) == ()


def test_the_ingest_warns_keeps_the_bar_and_says_so_in_the_summary(tmp_path: Path) -> None:
    source = pd.concat([bars("AAA", 1 / 4, 4), bars("BBB", seed=6)], ignore_index=True)
    first = ingest_frames(tmp_path, source[source["ts"] < DAYS[EVENT]], show_progress=False)
    assert first.warnings() == []
    result = ingest_frames(tmp_path, source, show_progress=False)  # the night of the split
    (warning,) = result.warnings()
    assert warning.startswith("AAA: the bar of 2024-10-01 looks like a 4:1 split left unadjusted (close 0.2")
    assert "previous bar's of 2024-09-30" in warning and "volume 4x" in warning
    assert "bars that look like an unadjusted split, stored as given: 1" in result.summary_line()
    stored = read_frame(tmp_path, "bars")
    assert len(stored) == len(source)  # kept: a true -75 % day exists


def test_the_cli_prints_the_warning_and_exits_0(tmp_path: Path) -> None:
    folder = tmp_path / "src" / "yahoo"
    folder.mkdir(parents=True)
    for symbol, frame in [("AAA", bars("AAA", 1 / 4, 4)), ("BBB", bars("BBB", seed=6))]:
        out = frame.assign(Date=frame["ts"].dt.strftime("%Y-%m-%d"))
        out[["Date", "open", "high", "low", "close", "volume"]].to_csv(folder / f"{symbol}.csv", index=False)
    code, out = run(
        "ingest", "--source", "csv", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "s")
    )
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: AAA: the bar of 2024-10-01 looks like a 4:1"
    )


def test_nightly_reports_a_suspected_split_in_its_section_and_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raytrade.cluster.nightly import run_nightly

    source = pd.concat([bars("AAA", 1 / 4, 4), bars("BBB"), bars("CCC", 1.02)], ignore_index=True)
    folder = tmp_path / "csv"
    folder.mkdir()
    for symbol, rows in source.groupby("symbol"):
        out = rows.assign(Date=rows["ts"].dt.strftime("%Y-%m-%d"))
        out[["Date", "open", "high", "low", "close", "volume"]].to_csv(folder / f"{symbol}.csv", index=False)
    ingest_frames(tmp_path / "store", source[source["ts"] < DAYS[EVENT]], show_progress=False)
    results = tmp_path / "results.md"
    (tmp_path / "empty-registry").mkdir()  # nightly refuses a registry folder that does not exist
    run_nightly(
        tmp_path / "store",
        tmp_path / "empty-registry",
        source="csv",
        path=folder,
        reports=tmp_path / "reports",
        results=results,
        date="2025-01-02",
        baselines=["cash", "equal_weight"],
        scenarios=[],
        seeds=1,
        bootstrap_samples=20,
        plots=False,
    )
    warning = "AAA: the bar of 2024-10-01 looks like a 4:1 split left unadjusted"
    assert f"> **ingest warning:** {warning}" in results.read_text()
    assert f"warning: {warning}" in capsys.readouterr().err
