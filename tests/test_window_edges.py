"""``envs.evaluation.edges``: what a window's edges hide, named in the report.

A halt over a window's end (its book valued and closed at the stale close, the reopen's move in no
window) and a large move on a pooled fold's first bar (held by no fold) are facts of the data that
no policy's figures carry: the report's ``warnings`` say so, and ``FoldReport.halted_at_end`` lists
the halts. Built by hand (no store), then once end to end through ``raytrade evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.document import build_report
from raytrade.envs.evaluation.edges import EDGE_MOVE, first_bar_moves, halts_at_end
from raytrade.envs.evaluation.harness import (
    EvaluationConfig,
    EvaluationPlan,
    EvalWindow,
    edged,
    evaluate,
    slice_window,
)
from raytrade.envs.evaluation.policies import PolicySpec
from raytrade.envs.market_data import MarketData
from raytrade.envs.simulator import Observation
from raytrade.replay.splits import TimeWindow

T, HALT, REOPEN = 40, 16, 22
"""BBB has no bar on rows HALT..REOPEN-1 and reopens on REOPEN at 60 % of its last close."""


def _halted() -> MarketData:
    ts = np.datetime64("2025-01-01", "us") + np.arange(T) * np.timedelta64(1, "D")
    close = 100.0 * (1.0 + 0.002 * np.arange(T))[:, None] * np.array([1.0, 2.0])
    close[REOPEN:, 1] *= 0.6
    close[HALT:REOPEN, 1] = close[HALT - 1, 1]  # a hole carries the last close (MarketData's contract)
    open_ = np.vstack([close[:1], close[:-1]])
    open_[REOPEN, 1] = close[REOPEN, 1] * 1.001
    listed = np.ones((T, 2), dtype=bool)
    listed[HALT:REOPEN, 1] = False
    return MarketData(
        ts=ts,
        symbols=("AAA", "BBB"),
        asset_class=("equity", "equity"),
        open=open_,
        close=close,
        listed=listed,
        spread_bps=np.full((T, 2), 10.0),
        dollar_volume=np.full((T, 2), 5e7),
        features=np.zeros((T, 2, 1), dtype=np.float32),
        feature_names=("ret_1",),
        regime_code=np.zeros((T, 2), dtype=np.int8),
        listed_after=np.array([False, False]),
    )


def _window(data: MarketData, name: str, lo: int, hi: int) -> MarketData:
    ts = pd.DatetimeIndex(data.ts).tz_localize("UTC")
    return slice_window(data, TimeWindow(name, ts[lo], ts[hi - 1], hi - lo))


def test_a_halt_over_a_windows_end_is_named_with_its_reopen_and_a_later_windows_first_bar_move() -> None:
    data = _halted()
    first = _window(data, "test_0", 0, HALT + 3)  # ends inside the halt
    (halt,) = halts_at_end(first, data)
    assert (halt.symbol, halt.last_date, halt.reopen_date) == ("BBB", data.ts[HALT - 1], data.ts[REOPEN])
    assert halt.move == pytest.approx(data.open[REOPEN, 1] / data.close[HALT - 1, 1] - 1.0, rel=1e-12)
    assert -0.40 < halt.move < -0.38  # 60 % of the price, less the drift over the halt
    (unknown,) = halts_at_end(first)  # no data after it: the reopen is not known
    assert unknown.reopen_date is None and unknown.move is None
    assert halts_at_end(_window(data, "all", 0, HALT - 2), data) == ()  # every symbol trades to its end

    second = _window(data, "test_1", REOPEN, T)
    (move,) = first_bar_moves(second)  # BBB over its last close before the halt; AAA's 0.2 % is not named
    assert (move.symbol, move.date) == ("BBB", data.ts[REOPEN])
    assert move.move == pytest.approx(data.close[REOPEN, 1] / data.close[HALT - 1, 1] - 1.0, rel=1e-12)
    assert first_bar_moves(second, threshold=abs(move.move) + 1e-9) == ()
    assert abs(move.move) >= EDGE_MOVE


def test_the_report_lists_the_halt_and_warns_of_both_edges_and_a_plain_window_of_neither() -> None:
    data = _halted()

    def hold_both(obs: Observation) -> np.ndarray:
        return np.where(obs.mask, 0.45, 0.0)

    specs = tuple(
        PolicySpec(name=n, kind="baseline", make=lambda d, s: hold_both) for n in ("p", "equal_weight")
    )
    sim = SimulatorConfig(episode_len=T)
    cfg = EvaluationConfig(scenarios=(), seeds=(0,), simulator=sim)
    windows = (
        edged("test_0", _window(data, "test_0", 0, HALT + 3), None, data),
        edged("test_1", _window(data, "test_1", REOPEN, T), None, data),
    )
    plan = EvaluationPlan("mem", cfg, specs, windows, data, {}, {}, "0" * 64, 0)
    report = build_report(evaluate(plan))
    fold0, fold1 = report.policies["p"].folds
    (halt,) = fold0.halted_at_end
    assert (halt.symbol, halt.last_date, halt.reopen_date) == ("BBB", "2025-01-16", "2025-01-23")
    assert halt.move is not None and halt.move == pytest.approx(windows[0].halted_at_end[0].move)
    assert fold1.halted_at_end == ()
    said = " | ".join(report.warnings)
    assert (
        "BBB is halted over the end of test_0 (last bar 2025-01-16): a position still held was valued and "
        f"closed at that close, which nothing traded at; it reopens 2025-01-23 at {halt.move:+.1%} from "
        "that close, a move in no window"
    ) in said
    assert "test_1 starts on 2025-01-23, a bar the pooled account holds nothing over" in said
    assert f"BBB {windows[1].first_bar_moves[0].move:+.1%} moved then" in said

    small = windows[0].halted_at_end[0]  # the same halt reopening 5 % lower: listed, not warned of
    quiet = (dataclasses.replace(windows[0], halted_at_end=(dataclasses.replace(small, move=-0.05),)),)
    calm = build_report(evaluate(EvaluationPlan("mem", cfg, specs, quiet, data, {}, {}, "0" * 64, 0)))
    assert calm.policies["p"].folds[0].halted_at_end[0].move == -0.05
    assert not any("halted" in w for w in calm.warnings)

    plain = EvaluationPlan("mem", cfg, specs, (EvalWindow("test", data),), data, {}, {}, "0" * 64, 0)
    assert not any("halted" in w or "holds nothing" in w for w in build_report(evaluate(plain)).warnings)


def test_raytrade_evaluate_names_a_halt_over_a_folds_end_that_reopens_40_percent_lower(
    tmp_path: Path,
) -> None:
    """End to end: a generated store where SYN001 has no bar over the last 5 bars of walk-forward fold 0
    and reopens 40 % lower on fold 1's first bar; the report names the halt and the first-bar move."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=3, years=2.0, seed=11)
    clean = tmp_path / "clean"
    ingest_frames(clean, market.bars, market.macro, show_progress=False)
    runner = CliRunner()
    args = ["--walk-forward", "3", "--scenarios", "", "--policies", "buy_and_hold", "--no-plots"]
    done = runner.invoke(main, ["evaluate", "--replay", str(clean), "--out", str(tmp_path / "r0"), *args])
    assert done.exit_code == 0, done.output
    folds = json.loads((tmp_path / "r0" / "report.json").read_text())["policies"]["buy_and_hold"]["folds"]
    start = pd.Timestamp(folds[1]["test"]["start"], tz="UTC")
    bars = market.bars.copy()
    days = sorted(bars["ts"].unique())
    at = days.index(start)
    mine = bars["symbol"] == "SYN001"
    bars = bars[~(mine & bars["ts"].isin(days[at - 5 : at]))].copy()  # a halt over fold 0's last 5 bars
    later = (bars["symbol"] == "SYN001") & (bars["ts"] >= start)
    prices = [c for c in ("open", "high", "low", "close", "vwap", "bid", "ask") if c in bars.columns]
    bars.loc[later, prices] *= 0.6
    hostile = tmp_path / "hostile"
    ingest_frames(hostile, bars, market.macro, show_progress=False)
    done = runner.invoke(main, ["evaluate", "--replay", str(hostile), "--out", str(tmp_path / "r1"), *args])
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    (halt,) = report["policies"]["buy_and_hold"]["folds"][0]["halted_at_end"]
    assert halt["symbol"] == "SYN001" and halt["reopen_date"] == start.strftime("%Y-%m-%d")
    assert halt["move"] == pytest.approx(-0.4, abs=0.08)
    assert any(w.startswith("SYN001 is halted over the end of test_0") for w in report["warnings"])
    assert any(
        w.startswith(f"test_1 starts on {start:%Y-%m-%d}") and "SYN001 -" in w for w in report["warnings"]
    )
    assert "SYN001 is halted over the end of test_0" in done.output  # the console warns too
