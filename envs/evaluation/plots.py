"""Evaluation plots: equity, drawdowns, rolling Sharpe, cost breakdown and stress results as PNGs.

Drawn from the replayed series (``EvaluationResult``), except the stress plot, which draws the
report document's figures over each scenario's draws (mean with min-max whiskers) so that plot and
table show the same numbers; matplotlib's Agg backend and no ``Software`` metadata, so the same run
gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raytrade.envs.costs import COST_COMPONENTS
from raytrade.envs.evaluation.document import EvaluationReport
from raytrade.envs.evaluation.harness import EvaluationResult
from raytrade.envs.metrics import drawdown_series, sharpe_rows

PLOTS: tuple[str, ...] = ("equity", "drawdown", "rolling_sharpe", "costs", "stress")
"""File stems under the plots folder, in the order the report shows them."""


def write_plots(
    result: EvaluationResult, report: EvaluationReport, folder: Path, rolling_window: int = 63
) -> list[Path]:
    """Equity (log), drawdowns, rolling Sharpe, cost breakdown and stress results as PNGs;
    ``report`` is ``build_report(result)``."""
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
        r = res.main.excess  # over the cash rate, as the report's Sharpe
        w = max(2, min(rolling_window, r.size // 3))
        if r.size >= w:
            rs = sharpe_rows(np.lib.stride_tricks.sliding_window_view(r, w), ppy)
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
    scenarios = report.stress_scenarios
    width = 0.8 / max(len(names), 1)
    ran = [s for s, sc in scenarios.items() if sc.refused is None]
    x = np.array([list(scenarios).index(s) for s in ran], dtype=np.float64)
    for k, n in enumerate(names):
        mean, low, high = stress_bars(report, n, ran)
        ax.bar(x + k * width, mean, width, label=n)
        ax.errorbar(x + k * width, mean, yerr=(mean - low, high - mean), fmt="none", ecolor="k", lw=0.8)
    labels = [s if sc.refused is None else f"{s}\n(refused)" for s, sc in scenarios.items()]
    ax.set_xticks(np.arange(len(scenarios)) + 0.4 - width / 2, labels)
    draws = report.config.scenario_config.draws
    ax.set_title(f"Stress scenarios: total return, mean over {draws} draws (whiskers: min-max)")
    ax.legend(fontsize=8)
    fig.savefig(paths["stress"], dpi=90, metadata=meta)
    plt.close(fig)
    return [paths[n] for n in PLOTS]


def stress_bars(
    report: EvaluationReport, policy: str, scenarios: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max total return over the draws of each scenario (NaN where undefined): the
    bars and whiskers of the stress plot."""
    spreads = [report.policies[policy].stress[s].summary.total_return for s in scenarios]

    def column(name: str) -> np.ndarray:
        values = (getattr(sp, name) for sp in spreads)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    return column("mean"), column("min"), column("max")
