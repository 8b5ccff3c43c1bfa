"""The report lists the evaluated windows' large moves (schema /8, ``envs.evaluation.moves``).

A hostile-data review (2026-12-05): a −40 % day, a +20 % day, a halt and zero-volume days on a cut of
``../shared/data`` left no trace in the report, though every figure lived through them."""

from __future__ import annotations

import numpy as np

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.document import EvaluationReport, build_report, report_json
from raytrade.envs.evaluation.harness import EvaluationConfig, EvaluationPlan, EvalWindow, evaluate
from raytrade.envs.evaluation.moves import LARGE_MOVE, large_moves
from raytrade.envs.evaluation.policies import baseline_spec
from raytrade.envs.evaluation.render import MAX_MOVES_SHOWN, render_markdown, report_blocks
from raytrade.envs.market_data import MarketData

T = 40


def _hostile() -> MarketData:
    """Five equities on business days: A −40 % on bar 10; B +25 % on bar 12 and +19 % (not listed)
    on bar 20; C halted bars 15-17 and reopening −30 % on bar 18; D lists on bar 25 far above the
    others (a listing is no move); E's first bar closes +50 % over its close before the window
    (``close_before``: nothing is held over a window's first bar)."""
    ts = np.busday_offset("2024-01-01", np.arange(T), roll="forward").astype("datetime64[us]")
    close = np.full((T, 5), 100.0)
    close[10:, 0] *= 0.6
    close[12:, 1] *= 1.25
    close[20:, 1] *= 1.19
    close[18:, 2] *= 0.7
    close[:, 3] = 900.0
    close[:, 4] = 150.0
    listed = np.ones((T, 5), dtype=bool)
    listed[15:18, 2] = False  # the halt: its bars carry the last close
    close[15:18, 2] = close[14, 2]
    listed[:25, 3] = False
    return MarketData(
        ts=ts,
        symbols=("A", "B", "C", "D", "E"),
        asset_class=("equity",) * 5,
        open=close.copy(),
        close=close,
        listed=listed,
        spread_bps=np.full((T, 5), 5.0),
        dollar_volume=np.full((T, 5), 1e8),
        features=np.zeros((T, 5, 1), dtype=np.float32),
        feature_names=("ret_1",),
        regime_code=np.zeros((T, 5), dtype=np.int8),
        close_before=np.full((1, 5), 100.0),
        listed_before=np.array([[True, True, True, False, True]]),  # D had no bar before
    )


def test_every_move_of_a_fifth_or_more_is_listed_with_its_halt() -> None:
    data = _hostile()
    moves = large_moves(data)
    assert LARGE_MOVE == 0.20
    found = [(m.symbol, str(m.date)[:10], round(m.move, 6), m.bars_missing) for m in moves]
    assert found == [
        ("A", str(data.ts[10])[:10], -0.4, 0),
        ("B", str(data.ts[12])[:10], 0.25, 0),
        ("C", str(data.ts[18])[:10], -0.3, 3),
    ]


def test_the_report_lists_them_and_the_markdown_shows_them_largest_first() -> None:
    data = _hostile()
    specs = (baseline_spec("equal_weight"),)
    cfg = EvaluationConfig(scenarios=(), seeds=(0,), simulator=SimulatorConfig())
    plan = EvaluationPlan("mem", cfg, specs, (EvalWindow("test", data),), data, {}, {}, "0" * 64, 0)
    report = build_report(evaluate(plan))
    assert [(m.window, m.symbol, m.bars_missing) for m in report.large_moves] == [
        ("test", "A", 0),
        ("test", "B", 0),
        ("test", "C", 3),
    ]
    text = render_markdown("r", report_blocks(report, []))
    section = text.split("## Large moves in the evaluated windows")[1]
    assert section.index("| A |") < section.index("| C |") < section.index("| B |")
    assert f"| C | {str(data.ts[18])[:10]} | -30.0% | test | after 3 bars |" in section
    assert "3 close-to-close moves of 20% or more" in section
    again = EvaluationReport.model_validate_json(report_json(report))
    assert again.large_moves == report.large_moves
    from raytrade.cluster.nightly import _large_moves_line  # the night's section names them too

    line = _large_moves_line(report)[0]
    a, b, c = (str(data.ts[k])[:10] for k in (10, 12, 18))
    assert line == (
        "Large moves in the evaluated bars (every policy lived through them): "
        f"A -40.0% ({a}), C -30.0% ({c}, after 3 bars without one), B +25.0% ({b})."
    )


def test_a_long_list_is_cut_in_the_markdown_and_kept_whole_in_the_json() -> None:
    t = 2 * MAX_MOVES_SHOWN + 3
    ts = np.busday_offset("2024-01-01", np.arange(t), roll="forward").astype("datetime64[us]")
    close = 100.0 * np.cumprod(np.where(np.arange(t) % 2 == 0, 1.3, 1 / 1.3))[:, None]  # ±23-30 % a bar
    data = MarketData(
        ts=ts, symbols=("X",), asset_class=("equity",), open=close.copy(), close=close,
        listed=np.ones((t, 1), dtype=bool), spread_bps=np.full((t, 1), 5.0),
        dollar_volume=np.full((t, 1), 1e8), features=np.zeros((t, 1, 1), dtype=np.float32),
        feature_names=("ret_1",), regime_code=np.zeros((t, 1), dtype=np.int8),
    )  # fmt: skip
    cfg = EvaluationConfig(scenarios=(), seeds=(0,))
    plan = EvaluationPlan(
        "mem", cfg, (baseline_spec("equal_weight"),), (EvalWindow("test", data),), data, {}, {}, "0" * 64, 0
    )
    report = build_report(evaluate(plan))
    assert len(report.large_moves) == t - 1
    text = render_markdown("r", report_blocks(report, []))
    section = text.split("## Large moves in the evaluated windows")[1].split("## ")[0]
    assert section.count("| X |") == MAX_MOVES_SHOWN
    assert f"The {t - 1 - MAX_MOVES_SHOWN} smaller ones are in report.json (large_moves)." in section


def test_a_halt_that_began_before_the_window_counts_its_bars_there_too() -> None:
    """A review: a reopen whose last real close lies before the window counted only the window's
    missing bars."""
    t = 12
    ts = np.busday_offset("2024-01-01", np.arange(t), roll="forward").astype("datetime64[us]")
    close = np.full((t, 2), 100.0)
    close[3:, 1] = 70.0  # the reopen, 30 % lower
    listed = np.ones((t, 2), dtype=bool)
    listed[:3, 1] = False  # halted over the window's first three bars
    data = MarketData(
        ts=ts, symbols=("A", "H"), asset_class=("equity",) * 2, open=close.copy(), close=close, listed=listed,
        spread_bps=np.full((t, 2), 5.0), dollar_volume=np.full((t, 2), 1e8),
        features=np.zeros((t, 2, 1), dtype=np.float32), feature_names=("ret_1",),
        regime_code=np.zeros((t, 2), dtype=np.int8),
        close_before=np.full((4, 2), 100.0),
        listed_before=np.array([[True, True], [True, True], [True, False], [True, False]]),  # H halted here
    )  # fmt: skip
    (move,) = large_moves(data)
    assert (move.symbol, round(move.move, 6), move.bars_missing) == ("H", -0.3, 5)
