"""The human evaluation report (``report.md``, ``report.html``) and ``write_report``, which writes it
with ``report.json`` and the plots.

Markdown and HTML are rendered from one list of ``Block``s built from an ``EvaluationReport``, so
they carry the same content; only they may mention the run time (``report.json`` stays
deterministic). Policies are listed by Sharpe, best first (``EvaluationReport.ranked``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raytrade.envs.cash_rate import CashRate
from raytrade.envs.costs import COST_COMPONENTS
from raytrade.envs.evaluation.document import (
    REGIMES,
    EvaluationReport,
    Spread,
    build_report,
    write_report_json,
)
from raytrade.envs.evaluation.harness import EvaluationResult
from raytrade.envs.evaluation.moves import LARGE_MOVE
from raytrade.envs.evaluation.plots import write_plots

TITLE = "raytrade evaluation"


@dataclass(frozen=True)
class Block:
    """One piece of the human report: ``kind`` is h2, p, table or img."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _money(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _summary(report: EvaluationReport) -> Block:
    cfg, costs, replay = report.config, report.cost_model, report.replay
    window = f" over {cfg.walk_forward} folds" if cfg.walk_forward else f" on split {report.split!r}"
    bench = report.policies.get(report.benchmark)
    dated = () if bench is None else bench.timestamps
    if dated:  # the bars every policy's returns are dated by (one window for all: the benchmark's)
        window += f" (returns dated {dated[0]} to {dated[-1]}, {len(dated)} bars)"
    universe = "" if replay.universe is None else f" ({', '.join(replay.symbols)}: {replay.universe})"
    source = replay.spread_source
    spreads = "" if source is None else f"; spreads on bars without a quote: {source}"
    return Block(
        "p",
        f"Store {replay.root} (sha256 {replay.fingerprint_sha256[:16]}…, {replay.n_files} files{spreads}), "
        f"{len(replay.symbols)} symbols{universe}, {report.mode.replace('_', '-')} evaluation{window}, "
        f"{report.periods_per_year} periods per year. Every policy ran through the same simulator "
        f"and cost model (fees {costs.fee_bps_equity}/{costs.fee_bps_crypto} bps "
        f"equity/crypto, half-spread, tiered slippage with square-root impact, financing "
        f"{costs.financing_rate_annual:.2%} a year above 1x). Every window ends by closing the book at "
        "its last close with that cost model: returns and costs include the exit, and 'exit bps' "
        "says what it cost, in bps of the equity at the last close before it (summed over folds). "
        + _cash_line(cfg.simulator.cash_rate),
    )


def _cash_line(rate: CashRate) -> str:
    if rate.is_zero:
        return (
            "Cash earned 0 % and the Sharpe and Sortino ratios use a risk-free rate of 0 (a cash rate of "
            "0, the default): a risky policy's ratio is flattered by the yield it ignores, a mostly-cash "
            "one looks worse than it is."
        )
    return (
        f"Idle cash (equity not held long) earned {rate.describe()}: the Sharpe and Sortino ratios "
        "(and their differences) and the hit rate are of returns over that rate, every other figure of "
        "the returns themselves."
    )


def _leaderboard(report: EvaluationReport, names: Sequence[str]) -> Block:
    headers = (
        "policy",
        "total",
        "annual",
        "vol",
        "sharpe",
        "sortino",
        "max dd",
        "dd bars",
        "cvar 5%",
        "turnover",
        "costs",
        "exit bps",
        "hit rate",
        "calmar",
    )
    rows = []
    for n in names:
        p = report.policies[n]
        m = p.metrics
        rows.append(
            (
                report.label(n),
                _pct(m.total_return),
                _pct(m.annual_return),
                _pct(m.volatility),
                _f(m.sharpe),
                _f(m.sortino),
                _pct(m.max_drawdown),
                _f(m.max_drawdown_duration, 0),
                _pct(m.cvar_5),
                _f(m.turnover, 3),
                _money(m.costs_paid),
                _f(p.exit_cost_bps, 1),
                _pct(m.hit_rate),
                _f(m.calmar),
            )
        )
    return Block("table", headers=headers, rows=tuple(rows))


def _comparisons(report: EvaluationReport, names: Sequence[str]) -> list[Block]:
    boot = report.config.bootstrap
    rows = []
    for n in names:
        if n == report.benchmark:
            continue
        v = report.policies[n].vs_benchmark
        rows.append(
            (
                report.label(n),
                _f(v.sharpe_diff.estimate),
                f"[{_f(v.sharpe_diff.low)}, {_f(v.sharpe_diff.high)}]",
                _f(v.sortino_diff.estimate),
                f"[{_f(v.sortino_diff.low)}, {_f(v.sortino_diff.high)}]",
                str(v.sharpe_diff.n_valid),
            )
        )
    return [
        Block("h2", f"Difference to {report.benchmark} (stationary bootstrap)"),
        Block(
            "p",
            f"{boot.samples} paired resamples, mean block {boot.block_len} bars, "
            f"seed {boot.seed}, {boot.level:.0%} percentile intervals; "
            "n/a where the ratio is undefined (no dispersion or no downside).",
        ),
        Block(
            "table",
            headers=("policy", "Δ sharpe", "interval", "Δ sortino", "interval", "valid samples"),
            rows=tuple(rows),
        ),
    ]


def _seeds(report: EvaluationReport, names: Sequence[str]) -> Block:
    """The Seeds table: per policy the number of runs and the seed ids they used (headed "seed ids", not
    "seeds", so a lone seed ``0`` does not read as "0 seeds"), then the spread over those runs."""
    rows = []
    for n in names:
        s = report.policies[n].seeds
        sharpe, total = s.summary.sharpe, s.summary.total_return
        rows.append(
            (
                n,
                str(len(s.seeds)),
                ",".join(str(x) for x in s.seeds),
                _f(sharpe.mean),
                _f(sharpe.std),
                _f(sharpe.min),
                _f(sharpe.max),
                _pct(total.mean),
                _pct(total.min),
                _pct(total.max),
            )
        )
    return Block(
        "table",
        headers=(
            *("policy", "runs", "seed ids"),
            *("sharpe mean", "std", "min", "max"),
            *("total mean", "min", "max"),
        ),
        rows=tuple(rows),
    )


def _regimes(report: EvaluationReport, names: Sequence[str]) -> Block:
    rows = tuple(
        (
            n,
            *(
                x
                for _, g in report.policies[n].regimes.by_name()
                for x in (str(g.n_bars), _pct(g.metrics.total_return), _f(g.metrics.sharpe))
            ),
        )
        for n in names
    )
    return Block(
        "table",
        headers=("policy", *(f"{r} {k}" for r in REGIMES for k in ("bars", "total", "sharpe"))),
        rows=rows,
    )


def _costs(report: EvaluationReport, names: Sequence[str]) -> Block:
    rows = tuple(
        (
            n,
            *(_money(v) for _, v in report.policies[n].costs.components()),
            _money(report.policies[n].interest),
        )
        for n in names
    )
    return Block("table", headers=("policy", *COST_COMPONENTS, "total", "interest earned"), rows=rows)


def _folds(report: EvaluationReport, names: Sequence[str]) -> list[Block]:
    folds = report.policies[names[0]].folds
    return [
        Block("h2", "Walk-forward folds (Sharpe per fold; pooled in the leaderboard)"),
        Block(
            "table",
            headers=("policy", *(f"{f.name} {f.test.start}..{f.test.end}" for f in folds)),
            rows=tuple(
                (
                    report.label(n),
                    *(
                        _f(f.metrics.sharpe) + (" IN-SAMPLE" if f.in_sample else "")
                        for f in report.policies[n].folds
                    ),
                )
                for n in names
            ),
        ),
    ]


def _over_draws(spread: Spread) -> str:
    """``mean [min, max]`` of a stress metric over its draws, as percentages."""
    return f"{_pct(spread.mean)} [{_pct(spread.min)}, {_pct(spread.max)}]"


def _stress(report: EvaluationReport, names: Sequence[str]) -> list[Block]:
    scenarios = report.stress_scenarios
    blocks = [
        Block(
            "h2",
            f"Stress scenarios (on split {report.split!r}, {report.config.scenario_config.draws} draws "
            "each; mean [min, max] over draws)",
        )
    ]
    blocks += [Block("p", f"{s}: refused: {sc.refused}") for s, sc in scenarios.items() if sc.refused]
    for metric, label in (("total_return", "total return"), ("max_drawdown", "max drawdown")):
        rows = tuple(
            (
                n,
                *(
                    "refused"
                    if sc.refused is not None
                    else _over_draws(getattr(report.policies[n].stress[s].summary, metric))
                    for s, sc in scenarios.items()
                ),
            )
            for n in names
        )
        blocks += [Block("p", f"Stress {label}:"), Block("table", headers=("policy", *scenarios), rows=rows)]
    return blocks


def _ruin(report: EvaluationReport, names: Sequence[str]) -> list[Block]:
    """One line per policy with a ruined run: the run and, for the main series, the date."""
    lines = []
    for n in names:
        p = report.policies[n]
        if p.ruined or p.ruined_runs:
            when = f" (main series on {p.ruin_date})" if p.ruined else ""
            lines.append(f"RUINED: {n}{when}: {', '.join(p.ruined_runs) or 'main series'}")
    if lines:
        lines.append("Metrics of a ruined run come from its series floored at -100 %, flat after the ruin.")
    return [Block("p", line) for line in lines]


def _out_of_sample(report: EvaluationReport, names: Sequence[str]) -> list[Block]:
    """IN-SAMPLE banners, unchecked-model warnings and validation overlaps, before any figure."""
    lines = []
    for n in names:
        sample = report.policies[n].sample
        if sample is None:
            continue
        if sample.status == "IN-SAMPLE":
            assert sample.train is not None
            lines.append(
                f"**IN-SAMPLE: {n} was evaluated on bars it trained on** (training window "
                f"{sample.train.start}..{sample.train.end}; windows {', '.join(sample.in_sample_windows)}). "
                "Its figures are not out-of-sample results and are no claim of skill."
            )
        if sample.warning is not None:
            lines.append(f"**Warning:** {sample.warning}.")
        if sample.validation_overlap and sample.validation is not None:
            lines.append(
                f"{n}: windows {', '.join(sample.validation_overlap)} overlap its validation window "
                f"{sample.validation.start}..{sample.validation.end}, on which its checkpoint was chosen: "
                "selection-biased."
            )
    return [Block("p", line) for line in lines]


MAX_MOVES_SHOWN = 30
"""Rows of the large-moves table; the rest are in ``report.json`` (``large_moves``)."""


def _large_moves(report: EvaluationReport) -> list[Block]:
    """The evaluated windows' large moves, largest first (``EvaluationReport.large_moves``)."""
    if not report.large_moves:
        return []
    moves = report.largest_moves()
    shown = moves[:MAX_MOVES_SHOWN]
    rows = tuple(
        (
            m.symbol,
            m.date,
            f"{m.move:+.1%}",
            m.window,
            "" if not m.bars_missing else f"after {m.bars_missing} bars",
        )
        for m in shown
    )
    more = len(moves) - len(shown)
    text = (
        f"{len(moves)} close-to-close moves of {LARGE_MOVE:.0%} or more in the evaluated windows (each "
        "symbol's close over its last real close; after a halt or a hole, the whole move at the reopen). "
        "Every policy lived through them; a result that rests on a few of them rests on little, and a "
        "move the market did not make is an error of the data (an unadjusted split looks like one)."
        + (f" The {more} smaller ones are in report.json (large_moves)." if more else "")
    )
    return [
        Block("h2", "Large moves in the evaluated windows"),
        Block("p", text),
        Block("table", headers=("symbol", "bar", "move", "window", "halt or hole"), rows=rows),
    ]


def _warnings(report: EvaluationReport) -> list[Block]:
    """What the figures cannot carry (``EvaluationReport.warnings``), before any figure."""
    return [Block("p", f"**Warning:** {line}.") for line in report.warnings]


def report_blocks(
    report: EvaluationReport, plots: Sequence[str], run_seconds: float | None = None
) -> list[Block]:
    """The human report, from the document and the plot files (paths relative to the report)."""
    names = report.ranked()
    blocks = [
        _summary(report),
        *_out_of_sample(report, names),
        *_warnings(report),
        Block("h2", "Leaderboard (net of costs)"),
        _leaderboard(report, names),
        *_ruin(report, names),
        *_comparisons(report, names),
        Block("h2", "Seeds"),
        _seeds(report, names),
        Block("h2", "By regime"),
        _regimes(report, names),
        Block("h2", "Costs by component, and interest earned on idle cash (not a cost: in the returns)"),
        _costs(report, names),
    ]
    if report.mode == "walk_forward":
        blocks += _folds(report, names)
    if report.stress_scenarios:
        blocks += _stress(report, names)
    blocks += _large_moves(report)
    if plots:  # --no-plots: no empty section
        blocks.append(Block("h2", "Plots"))
        blocks += [Block("img", text=p) for p in plots]
    if run_seconds is not None:
        blocks.append(Block("p", f"Run time {run_seconds:.1f} s."))
    return blocks


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    for b in blocks:
        if b.kind == "h2":
            lines += [f"## {b.text}", ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "img":
            lines += [f"![{Path(b.text).stem}]({b.text})", ""]
        elif b.kind == "table":
            lines.append("| " + " | ".join(b.headers) + " |")
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            lines += ["| " + " | ".join(row) + " |" for row in b.rows]
            lines.append("")
    return "\n".join(lines)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        f'<html><head><meta charset="utf-8"><title>{e(title)}</title>',
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for b in blocks:
        if b.kind == "h2":
            parts.append(f"<h2>{e(b.text)}</h2>")
        elif b.kind == "p":
            parts.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "img":
            parts.append(f'<p><img src="{e(b.text)}" alt="{e(Path(b.text).stem)}"></p>')
        elif b.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]


def write_report(
    result: EvaluationResult, out: Path, run_seconds: float | None = None, plots: bool = True
) -> tuple[ReportPaths, EvaluationReport]:
    """Write ``report.json``, ``report.md``, ``report.html`` and ``plots/*.png`` under ``out``;
    returns their paths and the document ``report.json`` holds."""
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(result)
    json_path = write_report_json(report, out / "report.json")
    pngs = write_plots(result, report, out / "plots") if plots else []
    rel = [p.relative_to(out).as_posix() for p in pngs]
    blocks = report_blocks(report, rel, run_seconds)
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(TITLE, blocks))
    page.write_text(render_html(TITLE, blocks))
    return ReportPaths(json_path, md, page, tuple(pngs)), report
