"""``replay.lone_days``: a daily equity bar on a day no other equity has is named at ingest.

The simulator steps equities on the union of their days, so one stray row (a Saturday, a day past
everyone's last bar) gives every other equity a hole, or at the end a last bar where its position is
closed. Listings, delistings, crypto's weekends and a store of two equities are not named.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.replay.lone_days import lone_equity_days

WEEKDAYS = pd.bdate_range("2026-03-02", "2026-03-18", tz="UTC")  # Monday .. Wednesday, 13 sessions


def _bars(rows: dict[str, pd.DatetimeIndex], crypto: tuple[str, ...] = ()) -> pd.DataFrame:
    frames = [
        pd.DataFrame({"symbol": s, "ts": ts, "asset_class": "crypto" if s in crypto else "equity"})
        for s, ts in rows.items()
    ]
    return pd.concat(frames, ignore_index=True)


def test_a_saturday_bar_and_a_day_past_everyones_end_are_named_and_nothing_else() -> None:
    saturday = pd.Timestamp("2026-03-07", tz="UTC")
    after = pd.Timestamp("2026-03-19", tz="UTC")  # Thursday: the others' files end on Wednesday
    rows = {
        "AAA": WEEKDAYS.append(pd.DatetimeIndex([saturday, after])).sort_values(),
        "BBB": WEEKDAYS,
        "CCC": WEEKDAYS[:10],  # its bars stop (a delisting): the days after are the others', not lone
        "LATE": WEEKDAYS[5:],  # a listing
        "SUIUSDT": pd.date_range("2026-03-01", "2026-03-19", tz="UTC"),  # crypto: every day
    }
    everything = _bars(rows, crypto=("SUIUSDT",))
    (named,) = lone_equity_days(everything, everything)
    assert (named.symbol, named.days) == ("AAA", (saturday, after))
    said = named.message()
    assert said.startswith(
        "AAA: 2 bars on 2026-03-07 (Saturday), 2026-03-19 (Thursday), a day no other equity"
    )
    assert "ingest into a fresh store" in said
    new_only = everything[everything["symbol"] == "BBB"]  # only the new bars are checked
    assert lone_equity_days(everything, new_only) == ()
    two = _bars({"AAA": rows["AAA"], "BBB": WEEKDAYS})  # one other equity: which one is odd is unknown
    assert lone_equity_days(two, two) == ()
    older = pd.bdate_range("2026-02-16", "2026-03-18", tz="UTC")  # a longer history than the others'
    early = _bars({"OLD": older, "BBB": WEEKDAYS, "CCC": WEEKDAYS, "DDD": WEEKDAYS})
    assert lone_equity_days(early, early) == ()  # its days before the others list are no stray rows


def test_ingest_warns_of_a_stray_saturday_row_naming_the_symbol_and_the_day(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for k, symbol in enumerate(("AAA", "BBB", "CCC")):
        days = list(WEEKDAYS.strftime("%Y-%m-%d")) + (["2026-03-21"] if symbol == "AAA" else [])
        lines = [
            f"{d},{10 + k + i * 0.1:.2f},{11 + k + i * 0.1:.2f},{9 + k:.2f},{10 + k:.2f},1000"
            for i, d in enumerate(days)
        ]
        (src / f"{symbol}.csv").write_text("Date,close,high,low,open,volume\n" + "\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main, ["ingest", "--source", "csv", "--path", str(src), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert "warning: AAA: a bar on 2026-03-21 (Saturday), a day no other equity has" in result.output
