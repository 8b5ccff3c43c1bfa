"""``raytrade nightly``: re-ingest what the source has new, evaluate every ``latest`` model and the
baselines, and append a dated section to ``marketsimulatorresults.md``.

Runs as a plain process or as a Ray job (the command is the same; nothing here needs a cluster)::

    raytrade submit -- raytrade nightly --replay /data/store --registry /data/registry \\
        --source csv --path /data/daily --reports /data/reports/nightly --results /data/results.md

Steps: (1) with ``--source``, ingest it into ``--replay`` (``replay.ingest.ingest_frames`` appends
only bars after each symbol's last stored bar, so a re-run adds nothing; adjusted prices rescaled by
a split or dividend are re-based onto the store's basis with a warning; a source that restates stored
bars otherwise, e.g. a corrected print, is refused unless ``--keep-stored-on-restatement``, which
keeps the stored bars and appends those symbols' new ones with a warning); (2) pin every registry
model's ``latest`` version (``registry/NAME/latest``); (3) ``raytrade evaluate`` those models and the
baselines into ``--reports/DATE``; (4) append the leaderboard with links to the report and to each
model's manifest. Bad input fails with one ``error: …`` line before anything is evaluated or appended.
A ``latest`` model whose training window (plus the embargo) reaches into the evaluated split is left
out of the night's evaluation (``raytrade evaluate`` would refuse it: in sample), with a ``warning:``
line and a "not evaluated: in sample" line in the section; the others and the baselines still run. So is a
``latest`` model trained on a symbol the store lacks, or on another universe than the first model's
(registry order; ``envs.evaluation.universe.ModelUniverseError``): one such model stopped the night.
Every policy is evaluated on the universe the ``latest`` models trained on (``raytrade evaluate``'s
rule: never a symbol an ingest added since), and the section says which universe and why; of models
trained on different universes, the first keeps its place and the others are left out, each named.

Registry: ``--registry`` must be an existing local folder; a folder that does not exist (a typo) and
a URI (``s3://…``: nightly reads local registries only) are refused before the ingest, so a night
never silently evaluates the baselines alone. An existing registry without versions is evaluated as
baselines only, and the section says so. Every version is loaded under the registry key when one is
set (``cluster.registry_access``): a version whose signature does not match is refused, unpickled.

One section per date: a run for a ``--date`` the store already records (``STORE/nightly.json``,
written after each night's section: ``cluster.nightly_record``), or whose ``## DATE nightly``
section the results file already holds (a retried job), does nothing, says where that night's report
and section were written and exits 0, leaving them as they are; the record is kept with the store
because ``--results`` and ``--reports`` default to paths relative to the working directory, so a
rerun from another folder used to evaluate and write the night again. ``--replace`` re-runs the
night and replaces that section in place (and ``REPORTS/DATE``, which it links to), and re-records
it. ``--date`` must be ``YYYY-MM-DD``.

A night that stops after its ingest (an evaluation error, a killed job) leaves its bars in the store,
and its retry ingests nothing new: what it stored, and its ingest's warnings, are kept in
``STORE/nightly-ingest.json`` (``cluster.nightly_record.PendingIngest``) until a section reports them,
so the next section written says what entered the store since the last one, naming the run that
stopped.

Stores sharing one results file and reports folder (the defaults are relative paths): the section
names its store absolutely, and a night whose date has another store's section in ``--results`` or
another store's ``REPORTS/DATE/report.json`` is refused in one line, ``--replace`` included
(:func:`check_night_owner`): the second store's night used to be "already done", or with
``--replace`` overwrote the first's while the first store's record still pointed at it. A section
whose ``Store`` line is relative (written before) counts as the running store's. The results file
has its own lock (``cluster.nightly_lock.results_lock``), held from that check to the record.

One nightly per store at a time: the run holds an exclusive lock on ``STORE/nightly.lock`` from
before it checks the record until it ends (``cluster.nightly_lock``), so a second one on the same
store (a cron overlap, a retried job) is refused at once with one line naming the store, the lock
file and the holder's pid, host and start time (exit 2), and touches nothing. The lock dies with
the process: a crashed run leaves none behind.

As a Ray job, submit it with ``raytrade submit`` (this checkout's code) and absolute paths: a
relative ``--replay`` (it holds the record), ``--reports`` or ``--results`` is refused inside a job
(``cluster.options.WrittenPathOption``), as it would land in the job's working directory, and so are
a relative ``--registry`` and ``--path`` it reads (``cluster.options.PathOption``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.evaluate import DEFAULT_POLICIES, report_warnings, run_evaluation, split_names
from raytrade.cluster.nightly_lock import nightly_lock, results_lock
from raytrade.cluster.nightly_record import (
    PendingIngest,
    read_pending_ingest,
    record_night,
    recorded_night,
    write_pending_ingest,
)
from raytrade.cluster.options import (
    LocalPath,
    cash_rate_of,
    cash_rate_options,
    path_option,
    written_path_option,
)
from raytrade.replay.credentials import shown_url
from raytrade.replay.errors import InputError
from raytrade.replay.remote import is_remote

if TYPE_CHECKING:
    from raytrade.cluster.ingest import SourceRequest
    from raytrade.envs.cash_rate import CashRate
    from raytrade.envs.evaluation.document import EvaluationReport, PolicyReport
    from raytrade.envs.evaluation.policies import Loader
    from raytrade.replay.ingest import IngestResult

RESULTS_FILE = "marketsimulatorresults.md"


def registry_folder(value: str | os.PathLike[str]) -> Path:
    """``--registry`` as the local folder nightly reads; ``InputError`` naming the option and the
    value for a URI (shown without user information) or a folder that does not exist."""
    text = os.fspath(value)
    if is_remote(text):
        raise InputError(
            f"--registry {shown_url(text)!r}: nightly reads a local registry folder, not a URI; "
            "mirror the registry to a folder and pass that"
        )
    if not Path(text).is_dir():
        raise InputError(f"--registry {text!r}: no such folder (an empty registry is an empty folder)")
    return Path(text)


def store_folder(replay: Path, source: str | None) -> None:
    """Make sure ``replay`` is a folder the night can lock (``cluster.nightly_lock``): made when
    ``source`` will ingest into it; without a source, a store that does not exist is refused, naming
    the option and the value (there is nothing to evaluate)."""
    if source is not None:
        replay.mkdir(parents=True, exist_ok=True)
    elif not replay.is_dir():
        raise InputError(f"--replay {str(replay)!r}: no such store folder (give --source to ingest one)")


def night(value: str | None) -> str:
    """``--date`` checked (``YYYY-MM-DD``), or today's date in UTC."""
    if value is None:
        return datetime.now(UTC).date().isoformat()
    try:
        parsed = datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError:
        parsed = None
    if parsed != value:  # strptime also takes 2026-1-5
        raise InputError(f"--date {value!r}: expected a date as YYYY-MM-DD")
    return value


def _heading(day: str) -> str:
    return f"## {day} nightly"


def _section_span(text: str, day: str) -> tuple[int, int] | None:
    """Where ``day``'s section lies in ``text``: from its heading line to the next ``## `` heading
    (or the end); None when there is none."""
    found = re.search(rf"^{re.escape(_heading(day))}$", text, flags=re.MULTILINE)
    if found is None:
        return None
    following = re.search(r"^## ", text[found.end() :], flags=re.MULTILINE)
    return found.start(), len(text) if following is None else found.end() + following.start()


def reported(results: Path, day: str) -> bool:
    """Whether ``results`` already holds ``day``'s section."""
    return results.is_file() and _section_span(results.read_text(), day) is not None


class NightOwnerError(InputError):
    """The results file's section, or the report folder, for the night is another store's."""


_STORE_LINE = re.compile(r"^Store `([^`]+)` \(sha256", flags=re.MULTILINE)


def section_store(text: str, day: str) -> Path | None:
    """The store whose night ``day``'s section in ``text`` reports (its ``Store `…``` line), when
    that names it absolutely; None without a section, or for a section written before nightly named
    stores absolutely (a relative root cannot be told from another folder's: such a section is
    taken as this store's, as it always was)."""
    span = _section_span(text, day)
    found = None if span is None else _STORE_LINE.search(text, span[0], span[1])
    if found is None or not Path(found.group(1)).is_absolute():
        return None
    return Path(found.group(1)).resolve()  # as the running store is named: through its links


def report_store(report_dir: Path) -> Path | None:
    """The store the report in ``report_dir`` evaluated (``report.json``'s ``replay.root``), when it
    names it absolutely; None when there is no readable report or its root is relative."""
    try:
        root = json.loads((report_dir / "report.json").read_text())["replay"]["root"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(root).resolve() if isinstance(root, str) and Path(root).is_absolute() else None


def check_night_owner(replay: Path, results: Path, report_dir: Path, day: str) -> None:
    """Refuse (``NightOwnerError``, one line naming the option and the value) a night whose section in
    ``results`` or whose ``report_dir`` belongs to another store: two stores sharing the default
    ``--results`` and ``--reports`` on one date would otherwise see the first's night as done, or with
    ``--replace`` overwrite it while the first store's record still points at it."""
    mine = replay.resolve()
    owner = section_store(results.read_text(), day) if results.is_file() else None
    if owner is not None and owner != mine:
        raise NightOwnerError(
            f"--results {str(results)!r}: its section '{_heading(day)}' is the night of the store "
            f"{owner}, not of --replay {str(mine)!r}: give each store its own --results and --reports "
            "(nothing done)"
        )
    owner = report_store(report_dir)
    if owner is not None and owner != mine:
        raise NightOwnerError(
            f"--reports {str(report_dir.parent)!r}: {report_dir} holds the night of the store {owner}, "
            f"not of --replay {str(mine)!r}: give each store its own --results and --reports (nothing done)"
        )


def night_done(replay: Path, results: Path, day: str) -> str | None:
    """Why ``day``'s night is not run again, naming where it went (None: it was not run): the store
    records it (``cluster.nightly_record``: whatever folder that run started in), or ``results``
    holds its section (a night run before the store kept a record)."""
    again = "nothing done (--replace re-runs the night and replaces it)"
    night = recorded_night(replay, day)
    if night is not None:
        return (
            f"the store {replay} records the night {day}: report {Path(night.report) / 'report.md'}, "
            f"section '{_heading(day)}' in {night.results}: {again}"
        )
    if reported(results, day):
        return f"{results} already holds the section '{_heading(day)}': {again}"
    return None


def write_section(results: Path, day: str, section: str) -> None:
    """Append ``section`` to ``results`` (created with its title), or put it in place of ``day``'s
    section when there is one; the file is replaced whole (no half-written file on a crash)."""
    text = (
        results.read_text()
        if results.exists()
        else "# Market simulator results\n\nOne section per nightly evaluation, newest last.\n\n"
    )
    span = _section_span(text, day)
    text = text + section if span is None else text[: span[0]] + section + text[span[1] :]
    staging = results.with_name(f".{results.name}.tmp")
    staging.write_text(text)
    os.replace(staging, results)


def latest_refs(registry: Path) -> list[str]:
    """``NAME@VERSION`` of every model's ``latest`` version (sorted by name; empty registry: [])."""
    from raytrade.models.registry import names, resolve

    return [f"{name}@{resolve(registry, name).name}" for name in names(registry)]


def source_request(
    source: str | None,
    path: Path | None,
    synthetic: dict[str, Any],
    keep_stored_on_restatement: bool,
    drop_bad_prints: bool = False,
) -> SourceRequest | None:
    """The ingest ``source`` asks for, validated (None: no source): bad input (``--years nan``) is
    refused before the night creates its store folder or lock."""
    from raytrade.cluster.ingest import SourceRequest

    if source is None:
        return None
    return SourceRequest.model_validate(
        {
            "source": source,
            "path": path,
            **synthetic,
            "keep_stored_on_restatement": keep_stored_on_restatement,
            "drop_bad_prints": drop_bad_prints,
        }
    )


def reingest(replay: Path, request: SourceRequest | None) -> IngestResult | None:
    """Ingest ``request``'s source into ``replay`` incrementally (None: no source)."""
    from raytrade.cluster.ingest import ingest_source

    if request is None:
        return None
    return ingest_source(replay, request, say=lambda _: None, show_progress=False)


def _link(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _cash_sentence(report: EvaluationReport) -> str:
    """What cash earned this night: sharpe and sortino of nights with different rates differ for it."""
    rate = report.config.simulator.cash_rate
    if rate.is_zero:
        return "Cash earned 0 %: sharpe and sortino are of the returns themselves (no --cash-rate)."
    return f"Idle cash earned {rate.describe()}: sharpe and sortino are of returns over it."


def results_section(
    date: str,
    report: EvaluationReport,
    report_dir: Path,
    results: Path,
    ingested: PendingIngest | None,
    left_out: dict[str, str] | None = None,
    carried: tuple[str, ...] = (),
) -> str:
    """The dated markdown section: data (``ingested``: what the night's ingest stored and its
    warnings, such as source bars it did not store, with those of the runs named by ``carried``, which
    stopped before their section; None: no source and nothing carried), the universe evaluated and
    why, the models left out because the split holds bars they trained on (``left_out``: policy ->
    why) and those whose out-of-sample could not be checked, leaderboard, links to the report and
    each model's manifest."""
    base = results.parent
    pol = report.policies
    ranked = report.ranked()  # by Sharpe; selection-biased and in-sample models after the clean ones
    bench = pol[report.benchmark]
    first, last = (bench.timestamps[0], bench.timestamps[-1]) if bench.timestamps else ("-", "-")
    if ingested is None:
        ingest = "no source given, store unchanged"
    else:
        ingest = ", ".join(f"{k} +{v:,}" for k, v in ingested.appended.items() if v) or "nothing new"
    if carried:
        ingest += (
            f" (with what the run of {', '.join(carried)} ingested: it stopped before writing its section)"
        )
    lines = [
        _heading(date),
        "",
        f"Store `{report.replay.root}` (sha256 `{report.replay.fingerprint_sha256[:16]}`), "
        f"ingest: {ingest}. Mode {report.mode}, split `{report.split}`, "
        f"benchmark `{report.benchmark}`.",
        "",
        f"Universe: {len(report.replay.symbols)} symbols ({', '.join(report.replay.symbols)}), "
        f"{report.replay.universe or 'every symbol of the store'}.",
        "",
        f"Evaluated: returns of {first}..{last} ({len(bench.returns)} bars).",
        "",
        *(
            [
                f"> **note:** this section is dated {date} and evaluates bars up to {last}, after its date "
                "(a night re-run later with --replace): its figures are not what that night could have "
                "seen.\n"
            ]
            if bench.timestamps and _after(last, date)
            else []
        ),
        *(f"> **ingest warning:** {w}\n" for w in (ingested.warnings if ingested else ())),
        *(f"> **not evaluated:** {why}\n" for why in (left_out or {}).values()),
        *(f"> **warning:** {w}\n" for w in report_warnings(report)),
        "Every window ends flat: returns and costs include closing the book at its last close "
        "(`exit bps`, of the equity at the last close before the exit); sections dated before 2026-12-04 "
        "were marked to market.",
        "",
        _cash_sentence(report),
        "",
        "| rank | policy | total | sharpe | sortino | max dd | cvar 5% | costs | exit bps | Δ sharpe [CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, name in enumerate(ranked, 1):
        m, d = pol[name].metrics, pol[name].vs_benchmark.sharpe_diff
        lines.append(
            f"| {rank} | {report.label(name)} | {_pct(m.total_return)} | {_f(m.sharpe)} | {_f(m.sortino)} | "
            f"{_pct(m.max_drawdown)} | {_pct(m.cvar_5)} | {m.costs_paid or 0:,.0f} | "
            f"{_f(pol[name].exit_cost_bps)} | {_f(d.estimate)} [{_f(d.low)}, {_f(d.high)}] |"
        )
    links = " · ".join(f"[{k}]({_link(report_dir / f'report.{k}', base)})" for k in ("md", "html", "json"))
    lines += ["", *_large_moves_line(report), f"Report: {links}", ""]
    models = [(n, p.manifest) for n, p in pol.items() if p.kind == "registry"]
    if models:
        lines.append("Models:")
        lines += [
            f"- `{n}` ({_status(pol[n])}): [manifest]({_link(Path(m), base)})"
            if m
            else f"- `{n}` ({_status(pol[n])})"
            for n, m in models
        ]
    elif left_out:
        lines.append("Models: none evaluated (every registry model left out above; baselines only).")
    else:
        lines.append("Models: none in the registry (baselines only).")
    return "\n".join(lines) + "\n\n"


SECTION_MOVES = 5
"""Large moves a night's section names (the report lists them all)."""


def _large_moves_line(report: EvaluationReport) -> list[str]:
    """The evaluated bars' largest moves (``EvaluationReport.large_moves``), a line and a blank."""
    if not report.large_moves:
        return []
    moves = report.largest_moves()
    named = ", ".join(
        f"{m.symbol} {m.move:+.1%} ({m.date}"
        + (f", after {m.bars_missing} bars without one)" if m.bars_missing else ")")
        for m in moves[:SECTION_MOVES]
    )
    more = f" (+{len(moves) - SECTION_MOVES} more in the report)" if len(moves) > SECTION_MOVES else ""
    return [f"Large moves in the evaluated bars (every policy lived through them): {named}{more}.", ""]


def _after(last: str, date: str) -> bool:
    """The evaluated bars run past the section's date: the last bar's UTC date is more than a day
    after it (a day of slack: an evening bar in New York is stamped the next UTC date)."""
    return datetime.fromisoformat(last[:10]) > datetime.fromisoformat(date) + timedelta(days=1)


def _status(policy: PolicyReport) -> str:
    """A registry model's out-of-sample status as the report has it (``sample.status``)."""
    return "status unknown" if policy.sample is None else policy.sample.status


def run_nightly(
    replay: Path,
    registry: str | os.PathLike[str],
    *,
    source: str | None = None,
    path: Path | None = None,
    synthetic: dict[str, Any] | None = None,
    keep_stored_on_restatement: bool = False,
    drop_bad_prints: bool = False,
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
    replace: bool = False,
    cash_rate: CashRate | None = None,
) -> Path | None:
    """Steps (1)-(4) of the module docstring, then the night recorded with the store, all under the
    store's nightly lock (``cluster.nightly_lock``: another nightly on the store refuses at once);
    returns the night's report folder, or None when the night was run before (:func:`night_done`)
    and ``replace`` is False (nothing done). ``cash_rate``: what idle cash earns and the ratios'
    risk-free rate (``raytrade evaluate``'s; None: 0 %)."""
    from raytrade.envs.evaluation.harness import InSampleError
    from raytrade.envs.evaluation.universe import ModelUniverseError

    folder = registry_folder(registry)
    day = night(date)
    request = source_request(source, path, synthetic or {}, keep_stored_on_restatement, drop_bad_prints)
    store_folder(replay, source)
    replay = replay.resolve()  # sections and reports name their store absolutely (check_night_owner)
    report_dir = reports / day
    with nightly_lock(replay), contextlib.ExitStack() as held:
        if not replace and recorded_night(replay, day) is not None:
            return None  # before the results lock: a rerun from another folder creates nothing there
        held.enter_context(results_lock(results))  # other stores' nightlies may share the results
        check_night_owner(replay, results, report_dir, day)
        if not replace and night_done(replay, results, day) is not None:
            return None
        # the registry first: a latest that names no version, a file that fails its hash or signature
        # refuses the night before the ingest writes anything (it used to fail after it)
        models = latest_refs(folder)
        if loader is None:
            from raytrade.cluster.registry_access import verify_under_key

            for ref in models:
                verify_under_key(ref, folder)
        earlier = read_pending_ingest(replay)  # what a run that stopped before its section stored
        ingested = reingest(replay, request)
        for warning in ingested.warnings() if ingested else []:
            click.echo(f"warning: {warning}", err=True)
        pending = earlier
        if ingested is not None:
            pending = earlier.plus(
                PendingIngest(appended=ingested.appended, warnings=tuple(ingested.warnings()), runs=(day,))
            )
            write_pending_ingest(replay, pending)
        policies = [*(baselines or split_names(DEFAULT_POLICIES)), *(f"registry:{ref}" for ref in models)]
        left_out: dict[str, str] = {}
        while True:
            try:
                report = run_evaluation(
                    replay,
                    [p for p in policies if p not in left_out],
                    report_dir,
                    split=split,
                    seeds=seeds,
                    scenarios=scenarios,
                    registry=folder,
                    bootstrap_samples=bootstrap_samples,
                    plots=plots,
                    loader=loader,
                    cash_rate=cash_rate,
                )
                break
            except InSampleError as exc:  # only registry models are ever in sample: the loop ends
                # evaluate's ways forward (--in-sample, ...) are not nightly's
                left_out |= {policy: f"in sample: {why}" for policy, why in exc.facts.items()}
            except ModelUniverseError as exc:  # one model the store cannot hold with the others
                if exc.policy in left_out or exc.policy not in policies:
                    raise
                left_out[exc.policy] = str(exc)
        for line in [*left_out.values(), *report_warnings(report)]:
            click.echo(f"warning: {line}", err=True)
        shown = pending if ingested is not None or not earlier.empty else None
        section = results_section(day, report, report_dir, results, shown, left_out, earlier.runs)
        write_section(results, day, section)
        write_pending_ingest(replay, PendingIngest())  # reported: the next section starts afresh
        record_night(replay, day, report_dir, results)
        return report_dir


@click.command("nightly")
@written_path_option(
    "--replay",
    type=LocalPath(),
    required=True,
    help="Replay store root (a local folder).",
)
@path_option(
    "--registry", required=True, help="Model registry folder (local; must exist, may hold no versions)."
)
@click.option("--source", type=click.Choice(["csv", "synthetic"]), help="Re-ingest this source first.")
@path_option("--path", "path", type=LocalPath(), help="csv: folder of CSVs.")
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
    "--drop-bad-prints",
    is_flag=True,
    help="A new bar with a bad print (an open, or a close that reverts, far off its neighbours: "
    "replay.bad_prints): leave it out (a hole) with a warning, every night the source still has it "
    "(default: refuse the ingest, evaluate nothing).",
)
@written_path_option(
    "--reports",
    type=LocalPath(),
    default=Path("reports/nightly"),
    show_default=True,
    help="Reports go to REPORTS/DATE.",
)
@written_path_option("--results", type=LocalPath(), default=Path(RESULTS_FILE), show_default=True)
@click.option("--date", help="Section date, YYYY-MM-DD (default: today, UTC).")
@click.option(
    "--replace",
    is_flag=True,
    help="The results already hold this date's section: re-run the night and replace that section "
    "and REPORTS/DATE (default: do nothing and say so).",
)
@click.option("--baselines", default=DEFAULT_POLICIES, show_default=True, help="Comma-separated baselines.")
@click.option("--scenarios", default=None, help="Comma-separated stress scenarios (default: all four).")
@click.option("--split", type=click.Choice(["train", "validation", "test", "all"]), default="test")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--bootstrap-samples", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (tiny-budget runs).")
@cash_rate_options()
@one_line_errors
def nightly_command(
    replay: Path,
    registry: str,
    source: str | None,
    path: Path | None,
    seed: int,
    n_symbols: int,
    n_crypto: int,
    years: float,
    keep_stored_on_restatement: bool,
    drop_bad_prints: bool,
    reports: Path,
    results: Path,
    date: str | None,
    replace: bool,
    baselines: str,
    scenarios: str | None,
    split: str,
    seeds: int,
    bootstrap_samples: int,
    no_plots: bool,
    cash_rate: float | None,
    cash_rates: Path | None,
) -> None:
    """Re-ingest, evaluate the registry's latest models and the baselines, append to RESULTS (one
    section per date: see --replace)."""
    synthetic = {"n_symbols": n_symbols, "years": years, "seed": seed, "n_crypto": n_crypto}
    day = night(date)
    report_dir = run_nightly(
        replay,
        registry,
        source=source,
        path=path,
        synthetic=synthetic,
        keep_stored_on_restatement=keep_stored_on_restatement,
        drop_bad_prints=drop_bad_prints,
        reports=reports,
        results=results,
        date=day,
        baselines=split_names(baselines),
        scenarios=None if scenarios is None else split_names(scenarios),
        split=split,
        seeds=seeds,
        bootstrap_samples=bootstrap_samples,
        plots=not no_plots,
        replace=replace,
        cash_rate=cash_rate_of(cash_rate, cash_rates),
    )
    if report_dir is None:
        click.echo(night_done(replay, results, day))
        return
    click.echo(f"report: {report_dir / 'report.md'}; wrote the section to {results}")
