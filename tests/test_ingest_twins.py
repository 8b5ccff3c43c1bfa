"""One instrument under two names (an old ticker's file kept beside the new ticker's whole history):
ingest names the pair. Stored silently, each got its own share of every book, so together they passed
the per-symbol cap (a reviewer's copy of KGC as KGCN: `buy_and_hold` +72.1 % against +49.6 %)."""

from __future__ import annotations

from pathlib import Path

from tests.test_ingest_bad_prints import DAYS, ingest, walk, warnings, write_csv


def test_a_copy_of_a_symbol_under_another_name_is_named(tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "src", walk("KGC"))
    write_csv(folder, walk("KGCN").iloc[: len(DAYS) // 2])  # the old ticker: the first half, the same closes
    write_csv(folder, walk("AEM", seed=4))
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    (line,) = [w for w in warnings(out) if "closed at the same price" in w]
    assert (
        f"KGC and KGCN closed at the same price on {len(DAYS) // 2:,} of the {len(DAYS) // 2:,} bars" in line
    )
    assert "AEM" not in line


def test_names_that_close_alike_now_and_then_are_not_twins(tmp_path: Path) -> None:
    kgc, other = walk("KGC"), walk("AEM", seed=4)
    other.loc[:30, ["open", "close", "high", "low"]] = kgc.loc[
        :30, ["open", "close", "high", "low"]
    ].to_numpy()
    folder = write_csv(tmp_path / "src", kgc)
    write_csv(folder, other)  # 31 of 251 bars alike: 12 %
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    assert not [w for w in warnings(out) if "closed at the same price" in w]
