"""Incremental ingest: the features table equals one ingest of the same bars, whatever their order;
a daily append rewrites nothing; backfilled history is reported, not silently dropped."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from raytrade.replay import read_frame
from raytrade.replay.errors import InputError
from raytrade.replay.ingest import NotStored, ingest_frames
from raytrade.replay.sources.synthetic import SyntheticMarket, generate
from raytrade.replay.writer import ReplayWriter

LATE = "SYN000"  # listed three months into the year: a ragged symbol


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    market = generate(n_symbols=6, years=1.0, seed=4, n_crypto=1)
    first = market.bars.groupby("symbol")["ts"].min()
    assert first[LATE] > first.min()
    return market


def table(root: Path, name: str) -> pd.DataFrame:
    return read_frame(root, name).sort_values(["symbol", "ts"], ignore_index=True)


def parquet_bytes(root: Path, name: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / name).rglob("*.parquet"))}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_store(root: Path, reference: Path) -> None:
    for name in ("bars", "features"):
        pd.testing.assert_frame_equal(table(root, name), table(reference, name), check_exact=True)


@pytest.fixture(scope="module")
def one_pass(market: SyntheticMarket, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """One ingest of every bar, without and with the macro series (without: VIX proxies)."""
    roots = {}
    for with_macro in (False, True):
        root = tmp_path_factory.mktemp("one") / "store"
        ingest_frames(root, market.bars, market.macro if with_macro else None, show_progress=False)
        roots[with_macro] = root
    return roots


@pytest.mark.parametrize("with_macro", [False, True], ids=["vix-proxies", "macro-series"])
def test_a_late_symbol_ingested_second_gives_the_features_of_one_ingest(
    tmp_path: Path, market: SyntheticMarket, one_pass: dict[bool, Path], with_macro: bool
) -> None:
    macro = market.macro if with_macro else None
    late = (market.bars["symbol"] == LATE).to_numpy()
    ingest_frames(tmp_path, market.bars[~late], macro, show_progress=False)
    result = ingest_frames(tmp_path, market.bars[late], macro, show_progress=False)
    # the late symbol changes cross-sectional features (vix proxies, clusters, sector momentum) of
    # rows already stored: the table is rewritten, not only appended to
    assert result.features_changed > 0
    assert result.features_rewritten == len(market.bars)
    assert result.appended == {"bars": int(late.sum()), "features": int(late.sum())}
    assert_same_store(tmp_path, one_pass[with_macro])


def test_bars_of_one_symbol_arriving_late_give_the_features_of_one_ingest(
    tmp_path: Path, market: SyntheticMarket, one_pass: dict[bool, Path]
) -> None:
    bars = market.bars
    cutoff = bars["ts"].sort_values().unique()[-20]
    lagging = (bars["symbol"] == "SYN003") & (bars["ts"] >= cutoff - pd.Timedelta(days=10))
    ingest_frames(tmp_path, bars[~lagging & (bars["ts"] <= cutoff)], show_progress=False)
    result = ingest_frames(tmp_path, bars, show_progress=False)
    assert result.features_changed > 0
    assert result.skipped_bars == int((~lagging & (bars["ts"] <= cutoff)).sum())
    assert_same_store(tmp_path, one_pass[False])


def test_a_daily_append_of_every_symbol_appends_features_and_rewrites_nothing(
    tmp_path: Path, market: SyntheticMarket, one_pass: dict[bool, Path]
) -> None:
    bars = market.bars
    cutoff = bars["ts"].sort_values().unique()[-3]
    ingest_frames(tmp_path, bars[bars["ts"] < cutoff], market.macro, show_progress=False)
    stored = parquet_bytes(tmp_path, "features")
    result = ingest_frames(tmp_path, bars, market.macro, show_progress=False)
    new_rows = int((bars["ts"] >= cutoff).sum())
    assert (result.features_changed, result.features_rewritten) == (0, 0)
    assert result.appended["features"] == new_rows
    after = parquet_bytes(tmp_path, "features")
    assert stored.items() <= after.items() and len(after) > len(stored)  # old files untouched
    assert_same_store(tmp_path, one_pass[True])


def test_a_failed_rewrite_leaves_bars_and_features_as_they_were(
    tmp_path: Path, market: SyntheticMarket, one_pass: dict[bool, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    late = (market.bars["symbol"] == LATE).to_numpy()
    ingest_frames(tmp_path, market.bars[~late], show_progress=False)
    before = snapshot(tmp_path)

    def disk_full(self: ReplayWriter, frame: pd.DataFrame) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(ReplayWriter, "append_features", disk_full)
        with pytest.raises(OSError, match="No space"):
            ingest_frames(tmp_path, market.bars[late], show_progress=False)
    assert snapshot(tmp_path) == before  # the rewrite is staged before any bar is written
    ingest_frames(tmp_path, market.bars[late], show_progress=False)
    assert_same_store(tmp_path, one_pass[False])


def _fail_renames(monkeypatch: pytest.MonkeyPatch, which: Callable[[str], bool]) -> None:
    """Make ``os.replace(src, …)`` fail, as a crash at that point would, where ``which(src)``."""
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if which(str(src)):
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize(
    "which",
    [
        lambda src: ".rebuild-" in src and src.endswith("features"),  # the staged table into place
        lambda src: "bars/year=" in src,  # a bars file into place, after the batch's intent
        lambda src: src.endswith(".tmp-_swap.json"),  # the swap's intent into place: no swap began
    ],
    ids=["features-swap-after-live-moved-aside", "bars-commit-after-intent", "swap-intent-being-written"],
)
def test_an_ingest_interrupted_after_a_commit_point_is_finished_by_the_next(
    tmp_path: Path, market: SyntheticMarket, one_pass: dict[bool, Path], which: Callable[[str], bool]
) -> None:
    late = (market.bars["symbol"] == LATE).to_numpy()
    ingest_frames(tmp_path, market.bars[~late], show_progress=False)
    with pytest.MonkeyPatch.context() as patch:
        _fail_renames(patch, which)
        with pytest.raises(OSError, match="killed"):
            ingest_frames(tmp_path, market.bars[late], show_progress=False)
    result = ingest_frames(tmp_path, market.bars[late], show_progress=False)
    # the interrupted batch is rolled forward before the store is read: no bar is new any more
    assert result.skipped_bars == int(late.sum()) and "bars" not in result.appended
    leftovers = [
        p.name
        for p in tmp_path.iterdir()
        if p.name.startswith((".rebuild-", ".features-old-", "_swap", ".tmp-"))
    ]
    assert leftovers == []
    assert_same_store(tmp_path, one_pass[False])


def test_a_staged_rewrite_a_hard_crash_left_before_its_swap_is_deleted_by_the_next_ingest(
    tmp_path: Path, market: SyntheticMarket, one_pass: dict[bool, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.replay import ingest

    late = (market.bars["symbol"] == LATE).to_numpy()
    ingest_frames(tmp_path, market.bars[~late], show_progress=False)
    with monkeypatch.context() as patch:  # killed after staging, before the swap's intent: no cleanup ran
        patch.setattr(ingest, "_discard_staged", lambda *_: None)
        patch.setattr(ingest, "_swap_features", lambda *_: (_ for _ in ()).throw(OSError("killed")))
        with pytest.raises(OSError, match="killed"):
            ingest_frames(tmp_path, market.bars[late], show_progress=False)
    (staged,) = [p for p in tmp_path.iterdir() if p.name.startswith(".rebuild-")]
    assert any(staged.rglob("*.parquet"))  # a whole staged table was left behind
    (tmp_path / ".features-old-0badf00d").mkdir()  # and a moved-aside table of an older crash
    (tmp_path / ".cache").mkdir()  # not ours: kept
    ingest_frames(tmp_path, market.bars[late], show_progress=False)
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == [".cache"]
    assert_same_store(tmp_path, one_pass[False])


def test_a_swap_intent_this_code_did_not_write_is_refused_naming_it(
    tmp_path: Path, market: SyntheticMarket
) -> None:
    late = (market.bars["symbol"] == LATE).to_numpy()
    ingest_frames(tmp_path, market.bars[~late], show_progress=False)
    (tmp_path / "_swap.json").write_text('{"staged": ".rebuild-12')  # edited or corrupted by hand
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=r"_swap\.json.*not a features swap this code wrote"):
        ingest_frames(tmp_path, market.bars[late], show_progress=False)
    assert snapshot(tmp_path) == before  # nothing moved, nothing written


def test_backfilled_bars_older_than_the_store_are_reported_not_stored(tmp_path: Path) -> None:
    market = generate(n_symbols=2, years=0.2, seed=1)
    bars = market.bars[market.bars["symbol"] == "SYN001"].reset_index(drop=True)
    hole = bars.index[10:13]
    ingest_frames(tmp_path, bars.drop(index=hole), show_progress=False)
    result = ingest_frames(tmp_path, bars.iloc[8:13], show_progress=False)  # 2 stored + the 3 missing
    assert result.appended == {}
    assert result.skipped_bars == 2
    assert result.not_stored == (
        NotStored(
            "bars",
            "SYN001",
            3,
            bars["ts"].iloc[10],
            bars["ts"].iloc[12],
            bars["ts"].iloc[-1],
        ),
    )
    assert len(read_frame(tmp_path, "bars")) == len(bars) - 3  # append-only: history is not inserted
    line = result.summary_line()
    assert "already stored and skipped: 2" in line and "older bars NOT stored (append-only): 3" in line
    (warning,) = result.warnings()
    day = bars["ts"].dt.date
    assert warning.startswith(f"SYN001: 3 bars from {day.iloc[10]} to {day.iloc[12]} older than")
    assert "fresh store" in warning
