"""``raytrade nightly``: re-ingest what the source has new, evaluate every ``latest`` model and the
baselines, and append a dated section to ``marketsimulatorresults.md``.

Runs as a plain process or as a Ray job (the command is the same; nothing here needs a cluster)::

    ray job submit --working-dir . -- raytrade nightly --replay store --registry registry \\
        --source csv --path data/daily

Steps: (1) with ``--source``, ingest it into ``--replay`` (``replay.ingest.ingest_frames`` appends
only bars after each symbol's last stored bar, so a re-run adds nothing; adjusted prices rescaled by
a split or dividend are re-based onto the store's basis with a warning; a source that restates stored
bars otherwise, e.g. a corrected print, is refused unless ``--keep-stored-on-restatement``, which
keeps the stored bars and appends those symbols' new ones with a warning); (2) pin every registry
model's ``latest`` version (``registry/NAME/latest``); (3) ``raytrade evaluate`` those models and the
baselines into ``--reports/DATE``; (4) append the leaderboard with links to the report and to each
model's manifest. Bad input fails with one ``error: …`` line before anything is evaluated or appended.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.evaluate import DEFAULT_POLICIES, run_evaluation, split_names
from raytrade.cluster.options import LocalPath

if TYPE_CHECKING:
    from raytrade.envs.evaluation.document import EvaluationReport
    from raytrade.envs.evaluation.policies import Loader
    from raytrade.replay.ingest import IngestResult

RESULTS_FILE = "marketsimulatorresults.md"


def latest_refs(registry: Path) -> list[str]:
    """``NAME@VERSION`` of every model's ``latest`` version (sorted by name; empty registry: [])."""
    from raytrade.models.registry import names, resolve

    return [f"{name}@{resolve(registry, name).name}" for name in names(registry)]


def reingest(
    replay: Path,
    source: str | None,
    path: Path | None,
    synthetic: dict[str, Any],
    keep_stored_on_restatement: bool = False,
) -> IngestResult | None:
    """Ingest ``source`` into ``replay`` incrementally (None: no source)."""
    from raytrade.cluster.ingest import SourceRequest, ingest_source

    if source is None:
        return None
    request = SourceRequest.model_validate(
        {
            "source": source,
            "path": path,
            **synthetic,
            "keep_stored_on_restatement": keep_stored_on_restatement,
        }
    )
    return ingest_source(replay, request, say=lambda _: None, show_progress=False)


def _link(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def results_section(
    date: str, report: EvaluationReport, report_dir: Path, results: Path, ingested: IngestResult | None
) -> str:
    """The dated markdown section: data (with the ingest's warnings: source bars it did not store),
    leaderboard, links to the report and each model's manifest."""
    base = results.parent
    pol = report.policies
    ranked = sorted(pol, key=lambda n: (pol[n].metrics.sharpe is None, -(pol[n].metrics.sharpe or 0)))
    if ingested is None:
        ingest = "no source given, store unchanged"
    else:
        ingest = ", ".join(f"{k} +{v:,}" for k, v in ingested.appended.items() if v) or "nothing new"
    lines = [
        f"## {date} nightly",
        "",
        f"Store `{report.replay.root}` (sha256 `{report.replay.fingerprint_sha256[:16]}`), "
        f"ingest: {ingest}. Mode {report.mode}, split `{report.split}`, "
        f"benchmark `{report.benchmark}`.",
        "",
        *(f"> **ingest warning:** {w}\n" for w in (ingested.warnings() if ingested else [])),
        "| rank | policy | total | sharpe | sortino | max dd | cvar 5% | costs | Δ sharpe [CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, name in enumerate(ranked, 1):
        m, d = pol[name].metrics, pol[name].vs_benchmark.sharpe_diff
        lines.append(
            f"| {rank} | {name} | {_pct(m.total_return)} | {_f(m.sharpe)} | {_f(m.sortino)} | "
            f"{_pct(m.max_drawdown)} | {_pct(m.cvar_5)} | {m.costs_paid or 0:,.0f} | "
            f"{_f(d.estimate)} [{_f(d.low)}, {_f(d.high)}] |"
        )
    links = " · ".join(f"[{k}]({_link(report_dir / f'report.{k}', base)})" for k in ("md", "html", "json"))
    lines += ["", f"Report: {links}", ""]
    models = [(n, p.manifest) for n, p in pol.items() if p.kind == "registry"]
    if models:
        lines.append("Models:")
        lines += [f"- `{n}`: [manifest]({_link(Path(m), base)})" if m else f"- `{n}`" for n, m in models]
    else:
        lines.append("Models: none in the registry (baselines only).")
    return "\n".join(lines) + "\n\n"


def run_nightly(
    replay: Path,
    registry: Path,
    *,
    source: str | None = None,
    path: Path | None = None,
    synthetic: dict[str, Any] | None = None,
    keep_stored_on_restatement: bool = False,
    reports: Path = Path("reports/nightly"),
    results: Path = Path(RESULTS_FILE),
    date: str | None = None,
    baselines: list[str] | None = None,
    scenarios: list[str] | None = None,
    split: str = "test",
    seeds: int = 3,
    bootstrap_samples: int = 1000,
    plots: bool = True,
    loader: Loader | None = None,
) -> Path:
    """Steps (1)-(4) of the module docstring; returns the night's report folder."""
    day = date or datetime.now(UTC).date().isoformat()
    ingested = reingest(replay, source, path, synthetic or {}, keep_stored_on_restatement)
    for warning in ingested.warnings() if ingested else []:
        click.echo(f"warning: {warning}", err=True)
    models = latest_refs(registry) if registry.is_dir() else []
    policies = [*(baselines or split_names(DEFAULT_POLICIES)), *(f"registry:{ref}" for ref in models)]
    report_dir = reports / day
    report = run_evaluation(
        replay,
        policies,
        report_dir,
        split=split,
        seeds=seeds,
        scenarios=scenarios,
        registry=registry,
        bootstrap_samples=bootstrap_samples,
        plots=plots,
        loader=loader,
    )
    section = results_section(day, report, report_dir, results, ingested)
    if not results.exists():
        results.write_text(
            "# Market simulator results\n\nOne section per nightly evaluation, newest last.\n\n"
        )
    with results.open("a") as fh:
        fh.write(section)
    return report_dir


@click.command("nightly")
@click.option("--replay", type=LocalPath(), required=True, help="Replay store root (a local folder).")
@click.option("--registry", type=click.Path(path_type=Path), required=True, help="Model registry folder.")
@click.option("--source", type=click.Choice(["csv", "synthetic"]), help="Re-ingest this source first.")
@click.option("--path", "path", type=click.Path(path_type=Path), help="csv: folder of CSVs.")
@click.option("--seed", type=int, default=0, show_default=True, help="synthetic: random seed.")
@click.option("--n-symbols", type=click.IntRange(min=1), default=20, show_default=True, help="synthetic.")
@click.option("--n-crypto", type=click.IntRange(min=0), default=0, show_default=True, help="synthetic.")
@click.option("--years", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True)
@click.option(
    "--keep-stored-on-restatement",
    is_flag=True,
    help="A symbol whose stored bars the source restates other than by one ratio (a corrected print; "
    "a uniform split or dividend rescale is always re-based): keep them as they are and append its new "
    "bars, with a warning (default: refuse the ingest, evaluate nothing).",
)
@click.option(
    "--reports",
    type=click.Path(path_type=Path),
    default=Path("reports/nightly"),
    show_default=True,
    help="Reports go to REPORTS/DATE.",
)
@click.option("--results", type=click.Path(path_type=Path), default=Path(RESULTS_FILE), show_default=True)
@click.option("--date", help="Section date (default: today, UTC).")
@click.option("--baselines", default=DEFAULT_POLICIES, show_default=True, help="Comma-separated baselines.")
@click.option("--scenarios", default=None, help="Comma-separated stress scenarios (default: all four).")
@click.option("--split", type=click.Choice(["train", "validation", "test", "all"]), default="test")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--bootstrap-samples", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (tiny-budget runs).")
@one_line_errors
def nightly_command(
    replay: Path,
    registry: Path,
    source: str | None,
    path: Path | None,
    seed: int,
    n_symbols: int,
    n_crypto: int,
    years: float,
    keep_stored_on_restatement: bool,
    reports: Path,
    results: Path,
    date: str | None,
    baselines: str,
    scenarios: str | None,
    split: str,
    seeds: int,
    bootstrap_samples: int,
    no_plots: bool,
) -> None:
    """Re-ingest, evaluate the registry's latest models and the baselines, append to RESULTS."""
    synthetic = {"n_symbols": n_symbols, "years": years, "seed": seed, "n_crypto": n_crypto}
    report_dir = run_nightly(
        replay,
        registry,
        source=source,
        path=path,
        synthetic=synthetic,
        keep_stored_on_restatement=keep_stored_on_restatement,
        reports=reports,
        results=results,
        date=date,
        baselines=split_names(baselines),
        scenarios=None if scenarios is None else split_names(scenarios),
        split=split,
        seeds=seeds,
        bootstrap_samples=bootstrap_samples,
        plots=not no_plots,
    )
    click.echo(f"report: {report_dir / 'report.md'}; appended a section to {results}")
