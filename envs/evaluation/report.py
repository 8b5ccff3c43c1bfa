"""Evaluation report: ``report.json`` (deterministic), ``report.md`` and ``report.html``, plots.

Contract
--------
* ``report.json`` holds, per policy, the per-period series it reports (``timestamps`` as ISO dates,
  net simple ``returns``, ``turnover``, ``costs_per_period`` in currency) and every metric computed
  from exactly those series with ``envs.metrics.summarize`` (so they recompute exactly); undefined
  values (NaN, inf) are ``null``. Same inputs give byte-identical JSON: no wall-clock times, keys in
  a fixed order, floats in Python's shortest round-trip form.
* Markdown and HTML are rendered from one list of blocks, so they carry the same content; only they
  may mention the run time.
* Bootstrap intervals of the Sharpe / Sortino *difference* to the benchmark use one seeded set of
  stationary-bootstrap indices for all policies (``envs.evaluation.stats``).
* Per-regime metrics use the market regime of the bar each return is earned at (calm / choppy /
  crisis from ``MarketData.regime_code``); each regime's returns are concatenated in time order, so
  its drawdown figures describe that concatenation, not a contiguous period.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytrade.envs.costs import COST_COMPONENTS
from raytrade.envs.evaluation.harness import EvaluationResult, PolicyResult, RunSeries
from raytrade.envs.evaluation.stats import difference_ci, stationary_indices
from raytrade.envs.metrics import drawdown_series, summarize

REPORT_SCHEMA = "raytrade.evaluation/1"
REGIMES: tuple[str, ...] = ("calm", "choppy", "crisis")
SEED_METRICS: tuple[str, ...] = (
    "total_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "cvar_5",
)
PLOTS: tuple[str, ...] = ("equity", "drawdown", "rolling_sharpe", "costs", "stress")


# --------------------------------------------------------------------------- numbers -> JSON


def _num(value: float) -> float | None:
    """A finite float, or None for NaN / inf (JSON has neither)."""
    v = float(value)
    return v if math.isfinite(v) else None


def _nums(values: np.ndarray) -> list[float | None]:
    return [_num(v) for v in np.asarray(values, dtype=np.float64).tolist()]


def iso_dates(ts: np.ndarray) -> list[str]:
    """ISO dates (``YYYY-MM-DD``), or ISO seconds when some bar is not at midnight (intraday)."""
    daily = bool((ts.astype("datetime64[D]") == ts).all())
    return [str(s) for s in np.datetime_as_string(ts, unit="D" if daily else "s")]


def series_metrics(series: RunSeries, periods_per_year: float) -> dict[str, float]:
    """``envs.metrics.summarize`` of the series' returns, turnover and per-period total costs."""
    return summarize(series.returns, periods_per_year, turnover=series.turnover, costs=series.costs.sum(-1))


def _metrics_json(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: _num(v) for k, v in metrics.items()}


def cost_breakdown(series: RunSeries) -> dict[str, float | None]:
    """Total cost per component and in all, currency."""
    totals = series.costs.sum(axis=0)
    out = {name: _num(v) for name, v in zip(COST_COMPONENTS, totals.tolist(), strict=True)}
    out["total"] = _num(float(totals.sum()))
    return out


def regime_metrics(series: RunSeries, periods_per_year: float) -> dict[str, Any]:
    """Metrics of the returns earned in each regime (see the module docstring)."""
    out: dict[str, Any] = {}
    for code, name in enumerate(REGIMES):
        m = series.regime == code
        sub = RunSeries(
            series.timestamps[m], series.returns[m], series.turnover[m], series.costs[m], series.regime[m]
        )
        out[name] = {"n_bars": int(m.sum()), "metrics": _metrics_json(series_metrics(sub, periods_per_year))}
    return out


def seed_spread(policy: PolicyResult, periods_per_year: float) -> dict[str, Any]:
    """Per-seed key metrics and their mean / std (ddof 1) / min / max across seeds."""
    per_seed = {s: series_metrics(policy.by_seed[s], periods_per_year) for s in policy.seeds}
    summary: dict[str, Any] = {}
    for key in SEED_METRICS:
        values = np.array([per_seed[s][key] for s in policy.seeds], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[key] = {
            "mean": _num(finite.mean()) if finite.size else None,
            "std": _num(finite.std(ddof=1)) if finite.size > 1 else None,
            "min": _num(finite.min()) if finite.size else None,
            "max": _num(finite.max()) if finite.size else None,
        }
    return {
        "seeds": list(policy.seeds),
        "per_seed": [{"seed": s, "metrics": _metrics_json(per_seed[s])} for s in policy.seeds],
        "summary": summary,
    }


def _window_json(window: Any) -> dict[str, Any] | None:
    if window is None:
        return None
    return {
        "start": window.start.date().isoformat(),
        "end": window.end.date().isoformat(),
        "n_bars": window.n_bars,
    }


def build_report(result: EvaluationResult) -> dict[str, Any]:
    """The ``report.json`` document (see the module docstring)."""
    plan, cfg = result.plan, result.plan.config
    ppy = plan.periods_per_year
    bench = result.policies[cfg.benchmark].main.returns
    boot = cfg.bootstrap
    indices = stationary_indices(bench.size, boot.samples, boot.block_len, np.random.default_rng(boot.seed))
    policies: dict[str, Any] = {}
    for name, res in result.policies.items():
        main = res.main
        comparison = {}
        for ratio in ("sharpe", "sortino"):
            ci = difference_ci(main.returns, bench, ppy, ratio, indices, boot.level)
            comparison[f"{ratio}_diff"] = {
                "estimate": _num(ci.estimate),
                "low": _num(ci.low),
                "high": _num(ci.high),
                "n_valid": ci.n_valid,
            }
        policies[name] = {
            "kind": res.spec.kind,
            "stochastic": res.spec.stochastic,
            "manifest": res.spec.manifest,
            "timestamps": iso_dates(main.timestamps),
            "returns": _nums(main.returns),
            "turnover": _nums(main.turnover),
            "costs_per_period": _nums(main.costs.sum(-1)),
            "metrics": _metrics_json(series_metrics(main, ppy)),
            "costs": cost_breakdown(main),
            "regimes": regime_metrics(main, ppy),
            "seeds": seed_spread(res, ppy),
            "folds": [
                {
                    "name": w.name,
                    "train": _window_json(w.train),
                    "test": {
                        "start": iso_dates(w.data.ts[:1])[0],
                        "end": iso_dates(w.data.ts[-1:])[0],
                        "n_bars": w.data.n_steps,
                    },
                    "metrics": _metrics_json(series_metrics(run, ppy)),
                    "costs": cost_breakdown(run),
                }
                for w, run in zip(plan.windows, res.folds, strict=True)
            ],
            "stress": {
                sc: {"metrics": _metrics_json(series_metrics(run, ppy)), "costs": cost_breakdown(run)}
                for sc, run in res.stress.items()
            },
            "vs_benchmark": {"benchmark": cfg.benchmark, **comparison},
        }
    data = plan.split_data
    return {
        "schema": REPORT_SCHEMA,
        "replay": {
            "root": plan.root,
            "fingerprint_sha256": plan.fingerprint,
            "n_files": plan.n_files,
            "symbols": list(data.symbols),
            "asset_class": list(data.asset_class),
        },
        "mode": "split" if cfg.walk_forward is None else "walk_forward",
        "split": cfg.split,
        "periods_per_year": ppy,
        "config": cfg.model_dump(mode="json"),
        "cost_model": cfg.simulator.costs.model_dump(mode="json"),
        "stress_scenarios": {
            name: cfg.scenario_config.get(name).model_dump(mode="json") for name in cfg.scenarios
        },
        "benchmark": cfg.benchmark,
        "policies": policies,
    }


def report_json(report: Mapping[str, Any]) -> str:
    """Deterministic JSON text (``null`` for undefined numbers; NaN would be refused)."""
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- md / html blocks


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


def _ranked(report: Mapping[str, Any]) -> list[str]:
    def key(name: str) -> tuple[int, float]:
        s = report["policies"][name]["metrics"]["sharpe"]
        return (1, 0.0) if s is None else (0, -s)

    return sorted(report["policies"], key=key)


def report_blocks(
    report: Mapping[str, Any], plots: Sequence[str], run_seconds: float | None = None
) -> list[Block]:
    """The human report, from the JSON document and the plot files (relative paths)."""
    pol = report["policies"]
    names = _ranked(report)
    cfg = report["config"]
    costs, boot = report["cost_model"], cfg["bootstrap"]
    blocks = [
        Block(
            "p",
            f"Store {report['replay']['root']} (sha256 {report['replay']['fingerprint_sha256'][:16]}…, "
            f"{report['replay']['n_files']} files), {len(report['replay']['symbols'])} symbols, "
            f"{report['mode'].replace('_', '-')} evaluation"
            + (
                f" over {cfg['walk_forward']} folds"
                if cfg["walk_forward"]
                else f" on split {report['split']!r}"
            )
            + f", {report['periods_per_year']} periods per year. Every policy ran through the same simulator "
            f"and cost model (fees {costs['fee_bps_equity']}/{costs['fee_bps_crypto']} bps "
            f"equity/crypto, half-spread, tiered slippage with square-root impact, financing "
            f"{costs['financing_rate_annual']:.2%} a year above 1x).",
        ),
        Block("h2", "Leaderboard (net of costs)"),
        Block(
            "table",
            headers=(
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
                "hit rate",
                "calmar",
            ),
            rows=tuple(
                (
                    n,
                    _pct(m["total_return"]),
                    _pct(m["annual_return"]),
                    _pct(m["volatility"]),
                    _f(m["sharpe"]),
                    _f(m["sortino"]),
                    _pct(m["max_drawdown"]),
                    _f(m["max_drawdown_duration"], 0),
                    _pct(m["cvar_5"]),
                    _f(m["turnover"], 3),
                    _money(m["costs_paid"]),
                    _pct(m["hit_rate"]),
                    _f(m["calmar"]),
                )
                for n in names
                for m in (pol[n]["metrics"],)
            ),
        ),
        Block("h2", f"Difference to {report['benchmark']} (stationary bootstrap)"),
        Block(
            "p",
            f"{boot['samples']} paired resamples, mean block {boot['block_len']} bars, "
            f"seed {boot['seed']}, {boot['level']:.0%} percentile intervals; "
            "n/a where the ratio is undefined (no dispersion or no downside).",
        ),
        Block(
            "table",
            headers=("policy", "Δ sharpe", "interval", "Δ sortino", "interval", "valid samples"),
            rows=tuple(
                (
                    n,
                    _f(v["sharpe_diff"]["estimate"]),
                    f"[{_f(v['sharpe_diff']['low'])}, {_f(v['sharpe_diff']['high'])}]",
                    _f(v["sortino_diff"]["estimate"]),
                    f"[{_f(v['sortino_diff']['low'])}, {_f(v['sortino_diff']['high'])}]",
                    str(v["sharpe_diff"]["n_valid"]),
                )
                for n in names
                if n != report["benchmark"]
                for v in (pol[n]["vs_benchmark"],)
            ),
        ),
        Block("h2", "Seeds"),
        Block(
            "table",
            headers=("policy", "seeds", "sharpe mean", "std", "min", "max", "total mean", "min", "max"),
            rows=tuple(
                (
                    n,
                    ",".join(str(x) for x in s["seeds"]),
                    _f(s["summary"]["sharpe"]["mean"]),
                    _f(s["summary"]["sharpe"]["std"]),
                    _f(s["summary"]["sharpe"]["min"]),
                    _f(s["summary"]["sharpe"]["max"]),
                    _pct(s["summary"]["total_return"]["mean"]),
                    _pct(s["summary"]["total_return"]["min"]),
                    _pct(s["summary"]["total_return"]["max"]),
                )
                for n in names
                for s in (pol[n]["seeds"],)
            ),
        ),
        Block("h2", "By regime"),
        Block(
            "table",
            headers=("policy", *(f"{r} {k}" for r in REGIMES for k in ("bars", "total", "sharpe"))),
            rows=tuple(
                (
                    n,
                    *(
                        x
                        for r in REGIMES
                        for g in (pol[n]["regimes"][r],)
                        for x in (
                            str(g["n_bars"]),
                            _pct(g["metrics"]["total_return"]),
                            _f(g["metrics"]["sharpe"]),
                        )
                    ),
                )
                for n in names
            ),
        ),
        Block("h2", "Costs by component"),
        Block(
            "table",
            headers=("policy", *COST_COMPONENTS, "total"),
            rows=tuple(
                (n, *(_money(pol[n]["costs"][c]) for c in (*COST_COMPONENTS, "total"))) for n in names
            ),
        ),
    ]
    folds = pol[names[0]]["folds"]
    if report["mode"] == "walk_forward":
        blocks += [
            Block("h2", "Walk-forward folds (Sharpe per fold; pooled in the leaderboard)"),
            Block(
                "table",
                headers=("policy", *(f"{f['name']} {f['test']['start']}..{f['test']['end']}" for f in folds)),
                rows=tuple((n, *(_f(f["metrics"]["sharpe"]) for f in pol[n]["folds"])) for n in names),
            ),
        ]
    scenarios = list(report["stress_scenarios"])
    if scenarios:
        blocks += [
            Block("h2", f"Stress scenarios (on split {report['split']!r}; total return / max drawdown)"),
            Block(
                "table",
                headers=("policy", *scenarios),
                rows=tuple(
                    (
                        n,
                        *(
                            f"{_pct(pol[n]['stress'][s]['metrics']['total_return'])} / "
                            f"{_pct(pol[n]['stress'][s]['metrics']['max_drawdown'])}"
                            for s in scenarios
                        ),
                    )
                    for n in names
                ),
            ),
        ]
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


# --------------------------------------------------------------------------- plots


def write_plots(result: EvaluationResult, folder: Path, rolling_window: int = 63) -> list[Path]:
    """Equity (log), drawdowns, rolling Sharpe, cost breakdown and stress results as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    ppy = result.plan.periods_per_year
    pols = result.policies
    paths = {name: folder / f"{name}.png" for name in PLOTS}
    meta = {"Software": None}

    fig, ax = plt.subplots(figsize=(10, 5))
    for name, res in pols.items():
        ax.plot(res.main.timestamps, np.cumprod(1.0 + res.main.returns), label=name, lw=1)
    ax.set_yscale("log")
    ax.set_title("Equity (net of costs, log scale, start = 1)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.savefig(paths["equity"], dpi=90, metadata=meta)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, res in pols.items():
        ax.plot(res.main.timestamps, drawdown_series(res.main.returns), label=name, lw=1)
    ax.set_title("Drawdown")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.savefig(paths["drawdown"], dpi=90, metadata=meta)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, res in pols.items():
        r = res.main.returns
        w = max(2, min(rolling_window, r.size // 3))
        if r.size >= w:
            win = np.lib.stride_tricks.sliding_window_view(r, w)
            std = win.std(axis=1, ddof=1)
            rs = np.where(std > 0, win.mean(axis=1) / np.where(std > 0, std, 1.0) * math.sqrt(ppy), np.nan)
            ax.plot(res.main.timestamps[w - 1 :], rs, label=name, lw=1)
    ax.set_title(f"Rolling Sharpe ({rolling_window} bars or a third of the window)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.savefig(paths["rolling_sharpe"], dpi=90, metadata=meta)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    names = list(pols)
    bottom = np.zeros(len(names))
    for k, comp in enumerate(COST_COMPONENTS):
        vals = np.array([pols[n].main.costs[:, k].sum() for n in names])
        ax.bar(names, vals, bottom=bottom, label=comp)
        bottom += vals
    ax.set_title("Costs paid by component (currency)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.savefig(paths["costs"], dpi=90, metadata=meta)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    scenarios = list(result.plan.scenarios)
    width = 0.8 / max(len(names), 1)
    for k, n in enumerate(names):
        totals = [float(np.prod(1.0 + pols[n].stress[s].returns) - 1.0) for s in scenarios]
        ax.bar(np.arange(len(scenarios)) + k * width, totals, width, label=n)
    ax.set_xticks(np.arange(len(scenarios)) + 0.4 - width / 2, scenarios)
    ax.set_title("Stress scenarios: total return")
    ax.legend(fontsize=8)
    fig.savefig(paths["stress"], dpi=90, metadata=meta)
    plt.close(fig)
    return [paths[n] for n in PLOTS]


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]


def write_report(
    result: EvaluationResult, out: Path, run_seconds: float | None = None, plots: bool = True
) -> tuple[ReportPaths, dict[str, Any]]:
    """Write ``report.json``, ``report.md``, ``report.html`` and ``plots/*.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(result)
    json_path = out / "report.json"
    json_path.write_text(report_json(report))
    pngs = write_plots(result, out / "plots") if plots else []
    rel = [p.relative_to(out).as_posix() for p in pngs]
    blocks = report_blocks(report, rel, run_seconds)
    title = "raytrade evaluation"
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(title, blocks))
    page.write_text(render_html(title, blocks))
    return ReportPaths(json_path, md, page, tuple(pngs)), report
