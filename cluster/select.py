"""``raytrade select``: one winner across searches (any spec), chosen on one validation window.

Each RUN_DIR is a finished ``raytrade tune`` run; its candidate is the checkpoint ``raytrade
promote`` would copy (``cluster.promote.best_row``: the leaderboard's best trial with a checkpoint).

Design decisions
----------------
* **Same window, same store, or nothing.** The runs must have been searched on the same store state
  (their run files' data fingerprints, ``replay.fingerprint``) with the same objective, the store
  evaluated now (``--replay``, else the runs' own) must still hold exactly those bytes (a store
  that grew since has moved its validation split away from the window the runs were scored on),
  their validation windows (first and last bar, bars, symbols) must be identical, and they must
  trade in the same market (costs, constraints, account: the simulator config less what is the
  policy's own, reward, kill switch and episode length). Anything else is refused with one line
  naming the runs and what differs, before any checkpoint is loaded.
* **Scored as a search scores.** Every candidate is replayed deterministically on that window
  through the simulator it trained with (``tune_specs.objective.module_rollout``, the path a search's
  validation score takes), against the ``equal_weight`` benchmark replayed once on the same bars,
  every book closed at the window's last bar (``tune_specs.objective.CLOSE_AT_END``).
  The ranking and the paired bootstrap intervals are ``tune_specs.selection``'s (pure functions).
* **A search scored under an older rule is re-scored, not refused.** A run searched before the
  objective closed the book recorded its scores marked to market (its run file's
  ``objective.book_end``, absent: ``"marked"``). The runs' objectives are compared without that
  field: every candidate is re-scored here under the current rule, so they are ranked on the same
  terms; each candidate records the rule of its ``search_objective`` (``search_book_end``) beside
  the selection's own (``Selection.book_end``), and ``select.md`` says when they differ.
* **Outputs.** ``select.json`` (a ``models.manifest.Selection``, the document the manifest embeds),
  ``select.md`` and ``select.png`` (each candidate's objective with its interval against
  ``equal_weight``, the benchmark at 0) in ``--out``; the table is printed.
* **Offline candidates and cash.** An offline candidate is also compared with each behaviour policy
  of the experience its search read (``cluster.select_behaviour``: its objective minus theirs, paired
  bootstrap at the claim's Bonferroni-adjusted level for the same N, "not distinguishable" when the
  interval holds 0); a winner whose mean gross exposure on
  the window is below ``tune_specs.selection.CASH_GROSS_EXPOSURE`` gets one line beside the claim
  (its score is cash's). Both are in ``select.md`` and printed (``warning:`` unless above it).
  An offline candidate whose behaviour policies saw bars of this window or of the test split
  (``models.training_window.behaviour_in_sample``, the rule ``raytrade tune`` warns by) learnt what
  they knew: one ``IN-SAMPLE`` line per policy, naming the candidate, the policy and the splits, in
  ``select.md`` and printed as ``warning:``, recorded in ``select.json``
  (``SelectionCandidate.behaviour_in_sample``); ``select.md`` then no longer calls the test split
  unseen for it (:func:`in_sample_note`).
* **Promotion.** ``--promote NAME`` promotes the winner's run through ``cluster.promote.promote``
  (``raytrade promote``'s code path, which re-scores the same checkpoint on validation and test),
  with the comparison recorded in the manifest's ``selection``. The winner is promoted whatever its
  interval against the benchmark; a winner that does not beat ``equal_weight`` is warned about.
* **The claim.** Whether the winner beats ``equal_weight`` (``Selection.claim``, printed, in
  ``select.md``, the manifest) is ``tune_specs.selection.benchmark_claim``: its objective interval
  and the interval of ``sharpe(winner) - sharpe(equal_weight)`` must both lie above 0, each at the
  Bonferroni-adjusted level ``1 - (1 - level) / N`` (the best of N noisy scores clears a nominal
  interval far more often than 1 - level). N is every checkpoint compared on this window to produce
  the winner (:func:`claim_candidates`): each run's candidate is already its search's best checkpoint
  by the same validation objective, so N sums each run's leaderboard count
  (``cluster.run_file.checkpoints_compared``: every trial's checkpoints with a finite score); the
  choice among the runs' candidates is among those checkpoints and adds none. A run started with
  ``--init`` from a version whose checkpoint was chosen on this same window adds that version's
  checkpoints (its run file's ``provenance.init_validation``, ``cluster.run_file.compared_with_init``);
  when they were not recorded the claim is refused as for an older leaderboard. Bonferroni over many
  correlated checkpoints is conservative; it is kept because it is honest without modelling their
  correlation. A run whose leaderboard does not record the count (an older run) gets no claim at all
  (``Selection.claim_refused`` naming it), never a claim adjusted for fewer comparisons than were
  made. The claim is in-sample for the choice; the out-of-sample check is the test split
  (``raytrade evaluate --split test``). The table's per-candidate intervals stay at the nominal level.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
import numpy as np

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import (
    LocalPath,
    path_argument,
    path_option,
    registry_option,
    written_path_option,
)
from raytrade.cluster.promote import best_row, load_module, promote, trial_config, utc_time
from raytrade.cluster.run_file import (
    LeaderboardRow,
    RunFile,
    checkpoints_compared,
    compared_with_init,
    read_leaderboard,
    read_run_file,
)
from raytrade.cluster.select_behaviour import behaviour_lines, behaviour_policies, compare_with_behaviour
from raytrade.cluster.settings import registry_hmac_key
from raytrade.envs.cash_rate import rates_agree
from raytrade.envs.config import SimulatorConfig, env_config_from_dict
from raytrade.envs.evaluation.stats import BootstrapConfig, DifferenceCI
from raytrade.envs.market_data import MarketData
from raytrade.models.manifest import (
    BehaviourComparison,
    BehaviourInSample,
    ScoreInterval,
    Selection,
    SelectionCandidate,
    SelectionClaim,
    SelectionWindow,
)
from raytrade.models.training_window import behaviour_in_sample, in_sample_sentence
from raytrade.replay.errors import InputError
from raytrade.tune_specs.objective import (
    BOOK_END,
    benchmark_rollout,
    held_out_data,
    module_rollout,
    score_excess,
)
from raytrade.tune_specs.selection import (
    BenchmarkClaim,
    RankedCandidate,
    benchmark_claim,
    cash_line,
    rank_candidates,
)

SELECT_JSON: Final = "select.json"
SELECT_MD: Final = "select.md"
SELECT_PLOT: Final = "select.png"
BENCHMARK: Final = "equal_weight"
SPLIT: Final = "validation"
_MARKET_FIELDS: Final = (
    "initial_equity",
    "min_equity_fraction",
    "maintenance_margin",
    "days_per_bar",
    "costs",
    "cash_rate",
    "constraints",
)
"""The simulator fields every candidate must share: the market and account, not the policy's own."""


class SelectionError(InputError):
    """Runs that cannot be compared (different stores, windows, objectives or markets)."""


@dataclass(frozen=True)
class Candidate:
    """A run folder resolved to its best checkpoint, the config that checkpoint trained with, and how
    many checkpoints its search compared on the validation window to pick it (None: the leaderboard
    does not say, an older run)."""

    run_dir: Path
    run: RunFile
    row: LeaderboardRow
    config: dict[str, Any]
    compared: int | None

    @property
    def label(self) -> str:
        return self.run_dir.name

    @property
    def gated(self) -> bool:
        from raytrade.envs.gym_envs import GATED_ENV_ID

        return self.config.get("env") == GATED_ENV_ID

    def env_config(self, root: Path) -> dict[str, Any]:
        """The trial's env config, reading the store at ``root``."""
        env_config: dict[str, Any] = dict(self.config["env_config"])
        env_config["data"] = {**env_config["data"], "root": str(root)}
        return env_config


def load_candidates(run_dirs: list[Path]) -> list[Candidate]:
    """Each run folder's best checkpoint (one line naming the folder when it has none, or when its
    leaderboard counts no checkpoint compared although it names one)."""
    resolved = [Path(r).resolve() for r in run_dirs]
    repeated = sorted({str(r) for r in resolved if resolved.count(r) > 1})
    if repeated:
        raise SelectionError(f"run {repeated[0]!r} is given more than once")
    candidates = []
    for run_dir in resolved:
        row = best_row(run_dir)
        config = trial_config(run_dir, row)
        if config.get("env_config", {}).get("data", {}).get("kind") != "replay":
            raise SelectionError(f"run {str(run_dir)!r} did not train on a replay store")
        compared = checkpoints_compared(read_leaderboard(run_dir))
        if compared == 0:
            raise SelectionError(
                f"run {str(run_dir)!r}: its leaderboard names checkpoint {row.checkpoint!r} but counts 0 "
                "checkpoints_compared"
            )
        run = read_run_file(run_dir)
        candidates.append(Candidate(run_dir, run, row, config, compared_with_init(run, compared)))
    names = [c.label for c in candidates]
    if len(set(names)) != len(names):
        raise SelectionError(f"run folders must have distinct names, got {names}")
    return candidates


def _listing(candidates: list[Candidate], describe: dict[str, str]) -> str:
    return "; ".join(f"{c.label}: {describe[c.label]}" for c in candidates)


def check_comparable_searches(candidates: list[Candidate]) -> None:
    """Refuse runs searched on different store states or with different objectives."""
    stores = {c.label: f"{c.run.replay} @ {c.run.provenance.data_sha256[:12]}" for c in candidates}
    if len({c.run.provenance.data_sha256 for c in candidates}) > 1:
        raise SelectionError(f"runs were searched on different replay stores: {_listing(candidates, stores)}")
    # book_end is left out: every candidate is re-scored here under the current rule (module docstring)
    objectives = {c.label: c.run.objective.model_dump_json(exclude={"book_end"}) for c in candidates}
    if len(set(objectives.values())) > 1:
        raise SelectionError(
            f"runs were scored with different objectives: {_listing(candidates, objectives)}"
        )


def evaluation_store(candidates: list[Candidate], replay: Path | None) -> tuple[Path, str, int]:
    """(store root, fingerprint, files) the candidates are replayed on: ``replay``, else the runs'
    store; refused when its bytes are no longer those the runs were searched on."""
    from raytrade.replay.fingerprint import data_fingerprint

    if replay is None:
        roots = sorted({c.run.replay for c in candidates})
        if len(roots) > 1:
            raise SelectionError(f"runs name different store folders {roots}: pass --replay ROOT")
        replay = Path(roots[0])
    root = replay.resolve()
    if not root.is_dir():
        raise SelectionError(f"replay store {str(root)!r} does not exist")
    sha, files = data_fingerprint(root)
    searched = candidates[0].run.provenance.data_sha256
    if sha != searched:
        runs = ", ".join(c.label for c in candidates)
        raise SelectionError(
            f"the store {str(root)!r} is not the one runs {runs} were searched on (fingerprint now "
            f"{sha[:12]}, at the searches {searched[:12]}): their validation windows are not its own"
        )
    return root, sha, files


def window_of(data: MarketData) -> tuple[str, str, int, str]:
    """(first bar, last bar, bars, symbols digest) of a window: what two windows must share."""
    start, end = (str(np.datetime_as_string(t, unit="s")) for t in (data.ts[0], data.ts[-1]))
    digest = hashlib.sha256("\0".join(data.symbols).encode()).hexdigest()[:8]
    return start, end, int(data.n_steps), f"{len(data.symbols)} symbols #{digest}"


def market_of(sim: SimulatorConfig) -> dict[str, Any]:
    """The simulator fields every candidate must share (``_MARKET_FIELDS`` but the cash rate, which
    :func:`common_window` compares on the window's days), flattened to dotted keys."""
    dumped = sim.model_dump(mode="json", include={f for f in _MARKET_FIELDS if f != "cash_rate"})
    return _flat(dumped)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}


def market_difference(candidates: list[Candidate], markets: dict[str, dict[str, Any]]) -> str:
    """The market fields on which the candidates differ, each with every candidate's value."""
    keys = sorted({k for m in markets.values() for k in m})
    differing = [k for k in keys if len({json.dumps(m.get(k)) for m in markets.values()}) > 1]
    return "; ".join(
        f"{k.rstrip('.')}: " + ", ".join(f"{c.label} {markets[c.label].get(k)!r}" for c in candidates)
        for k in differing
    )


def common_window(candidates: list[Candidate], root: Path) -> tuple[MarketData, SimulatorConfig]:
    """The validation window every candidate was scored on, and the simulator config of the first
    (the benchmark's); refused when the windows or the markets differ, or when idle cash earned
    another rate on one of the window's days (``envs.cash_rate.rates_agree``)."""
    windows, markets, data, sims = {}, {}, {}, {}
    for c in candidates:
        env_config = c.env_config(root)
        data[c.label] = held_out_data(env_config, SPLIT)
        windows[c.label] = window_of(data[c.label])
        sims[c.label] = env_config_from_dict(env_config, gated=c.gated).sim
        markets[c.label] = market_of(sims[c.label])
    if len(set(windows.values())) > 1:
        described = {k: f"{s}..{e} ({n} bars, {sym})" for k, (s, e, n, sym) in windows.items()}
        raise SelectionError(
            f"runs were scored on different {SPLIT} windows: {_listing(candidates, described)}"
        )
    if len({json.dumps(m, sort_keys=True) for m in markets.values()}) > 1:
        raise SelectionError(
            "runs simulate different markets (costs, constraints, account): "
            f"{market_difference(candidates, markets)}"
        )
    first = candidates[0]
    days = data[first.label].ts.astype("datetime64[D]").tolist()
    start, end = days[min(1, len(days) - 1)], days[-1]  # the first day cash earns over, the last
    rates = {c.label: sims[c.label].cash_rate for c in candidates}
    if not all(rates_agree(rates[first.label], rate, start, end) for rate in rates.values()):
        said = {k: r.describe() for k, r in rates.items()}
        raise SelectionError(
            f"runs credit idle cash different rates on the {SPLIT} window ({start}..{end}): "
            f"{_listing(candidates, said)}; their Sharpe ratios are over different rates"
        )
    return data[first.label], sims[first.label]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _interval(ci: DifferenceCI) -> ScoreInterval:
    return ScoreInterval(estimate=ci.estimate, low=_finite(ci.low), high=_finite(ci.high), n_valid=ci.n_valid)


def claim_candidates(candidates: list[Candidate]) -> int | None:
    """N of the winner's claim: every checkpoint compared on the validation window to produce the
    candidates (each run's ``Candidate.compared``, summed; the choice among the candidates is among
    those). None when a run's leaderboard does not say: the claim cannot be adjusted."""
    counts = [c.compared for c in candidates]
    return None if any(n is None for n in counts) else sum(n for n in counts if n is not None)


def _uncounted_init(c: Candidate) -> str | None:
    """The ``--init`` version of ``c``'s run when it was chosen on this window among checkpoints not
    recorded (``Provenance.init_validation``); None otherwise."""
    init = c.run.provenance.init_validation
    return init.version if init is not None and init.checkpoints_compared is None else None


def claim_refusal(candidates: list[Candidate]) -> str:
    """Why no claim is made: the runs whose leaderboards do not count their compared checkpoints, or
    whose ``--init`` version was chosen on this window among checkpoints not counted."""
    inits = [(c, version) for c in candidates if (version := _uncounted_init(c)) is not None]
    if inits:
        named = "; ".join(f"run {str(c.run_dir)!r} started from {version} (--init)" for c, version in inits)
        return (
            f"{named}, whose checkpoint was chosen on this {SPLIT} window among checkpoints not recorded, "
            "so the winner's interval cannot be adjusted for that choice; judge the winner out of sample "
            "with `raytrade evaluate --split test`"
        )
    unknown = [repr(str(c.run_dir)) for c in candidates if c.compared is None]
    whose = f"run {unknown[0]}" if len(unknown) == 1 else f"runs {', '.join(unknown)}"
    return (
        f"the leaderboard of {whose} does not record how many checkpoints its search compared on "
        f"this {SPLIT} window (written before checkpoints_compared), so the winner's interval cannot be "
        "adjusted for that choice; re-run the search, or judge the winner out of sample with "
        "`raytrade evaluate --split test`"
    )


def winner_claim(
    candidates: list[Candidate],
    returns: np.ndarray,
    benchmark: np.ndarray,
    periods_per_year: float,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
    risk_free: np.ndarray | None = None,
) -> tuple[SelectionClaim | None, str | None]:
    """(claim, None) about the winner's per-bar ``returns`` against the benchmark's, adjusted for
    :func:`claim_candidates`, its Sharpe ratios over ``risk_free`` (what cash earned per bar; None: 0);
    (None, the reason) when that count is unknown."""
    n = claim_candidates(candidates)
    if n is None:
        return None, claim_refusal(candidates)
    claim = benchmark_claim(returns, benchmark, periods_per_year, cvar_penalty, bootstrap, n, risk_free)
    return claim_record(claim), None


def claim_record(claim: BenchmarkClaim) -> SelectionClaim:
    """``tune_specs.selection``'s claim as the manifest stores it (the Sharpe interval None where the
    difference is undefined on the window), its N counting checkpoints (:func:`claim_candidates`)."""
    sharpe = claim.sharpe
    return SelectionClaim(
        candidates=claim.n_candidates,
        counted="checkpoints",
        level=claim.level,
        objective=_interval(claim.objective),
        sharpe=_interval(sharpe) if math.isfinite(sharpe.estimate) else None,
        beats=claim.beats,
    )


def _record(
    c: Candidate,
    ranked: RankedCandidate,
    metrics: dict[str, float],
    behaviour: tuple[list[BehaviourComparison] | None, str | None] = (None, None),
    seen: list[BehaviourInSample] | None = None,
) -> SelectionCandidate:
    """The document of candidate ``c``: its ranking, what it held and paid on the window, and an
    offline candidate's ``behaviour`` (its comparisons with its behaviour policies, or why none) and
    the behaviour policies that ``seen`` the held-out bars (``models.training_window``)."""
    assert c.row.checkpoint is not None  # best_row keeps rows with a checkpoint
    return SelectionCandidate(
        run=str(c.run_dir),
        spec=c.run.spec,
        family=c.run.family,
        trial=c.row.trial,
        checkpoint=c.row.checkpoint,
        iteration=c.row.iteration,
        objective=ranked.objective,
        search_objective=_finite(c.row.objective),
        search_book_end=c.run.objective.book_end,
        checkpoints_compared=c.compared,
        vs_winner=_interval(ranked.vs_winner),
        vs_benchmark=_interval(ranked.vs_benchmark),
        **{k: _finite(metrics[k]) for k in ("excess_return", "gross_exposure", "turnover", "costs")},
        vs_behaviour=behaviour[0],
        behaviour_unknown=behaviour[1],
        behaviour_in_sample=seen or None,
    )


def check_promotable(candidates: list[Candidate], root: Path) -> None:
    """Refuse ``--promote`` with a store other than the runs' own: promotion re-scores the winner on
    the store its search recorded (``raytrade promote``'s path), so the two must be the same folder."""
    for c in candidates:
        if c.run.replay != str(root):
            raise SelectionError(
                f"--promote re-scores the winner on the store its search recorded: run {c.label} names "
                f"{c.run.replay!r}, not {str(root)!r}"
            )


def run_select(
    run_dirs: list[Path],
    out: Path,
    replay: Path | None = None,
    bootstrap: BootstrapConfig | None = None,
    promoting: bool = False,
) -> Selection:
    """Compare the runs' best checkpoints on their common validation window; write ``select.json``,
    ``select.md`` and ``select.png`` into ``out``; return the comparison (winner first).
    ``promoting``: refuse, before any work, what the promotion of the winner would refuse."""
    boot = bootstrap or BootstrapConfig()
    candidates = load_candidates(run_dirs)
    check_comparable_searches(candidates)
    root, sha, files = evaluation_store(candidates, replay)
    if promoting:
        check_promotable(candidates, root)
    data, sim = common_window(candidates, root)
    cvar_penalty = candidates[0].run.objective.cvar_penalty
    bench = benchmark_rollout(data, sim)
    returns: dict[str, np.ndarray] = {}
    metrics: dict[str, dict[str, float]] = {}
    behaviour: dict[str, tuple[list[BehaviourComparison] | None, str | None]] = {}
    for c in candidates:
        assert c.row.checkpoint is not None  # best_row keeps rows with a checkpoint
        rollout, own_sim = module_rollout(
            load_module(c.run_dir / c.row.checkpoint), c.env_config(root), data, c.gated
        )
        returns[c.label] = rollout.returns[0]
        metrics[c.label] = score_excess(rollout, bench, data, own_sim, cvar_penalty)
        policies, unknown = behaviour_policies(c.run)
        compared = None
        if policies is not None:
            compared = compare_with_behaviour(
                policies, returns[c.label], bench.returns[0], data, c.env_config(root), SPLIT, own_sim,
                cvar_penalty, boot, claim_candidates(candidates),
            )  # fmt: skip
        behaviour[c.label] = (compared, unknown)
    ranked = rank_candidates(returns, bench.returns[0], data.periods_per_year, cvar_penalty, boot)
    claim, refused = winner_claim(
        candidates,
        returns[ranked[0].name],
        bench.returns[0],
        data.periods_per_year,
        cvar_penalty,
        boot,
        bench.risk_free,  # the common window's sim: every candidate's cash earned this
    )
    by_label = {c.label: c for c in candidates}
    validation_end = utc_time(data.ts[-1])
    rows = [
        _record(
            by_label[r.name],
            r,
            metrics[r.name],
            behaviour[r.name],
            behaviour_in_sample(by_label[r.name].run.provenance.experience, validation_end),
        )
        for r in ranked
    ]
    window = SelectionWindow(
        split=SPLIT,
        start=utc_time(data.ts[0]),
        end=utc_time(data.ts[-1]),
        bars=data.n_steps,
        symbols=list(data.symbols),
        store_sha256=sha,
        store_files=files,
    )
    selection = Selection(
        window=window,
        benchmark=BENCHMARK,
        cvar_penalty=cvar_penalty,
        book_end=BOOK_END,
        bootstrap=boot,
        cash_rate=sim.cash_rate,
        winner=rows[0].run,
        candidates=rows,
        claim=claim,
        claim_refused=refused,
    )
    write_outputs(selection, out)
    return selection


# ------------------------------------------------------------------------------ outputs


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "undefined" if value is None else format(value, fmt)


def _ci(ci: ScoreInterval) -> str:
    return f"[{_num(ci.low)}, {_num(ci.high)}]"


TABLE_COLUMNS: Final = (
    "candidate",
    "spec",
    "trial",
    "objective",
    "CI vs winner",
    "CI vs equal_weight",
    "gross",
    "turnover",
    "costs",
)


def table_rows(selection: Selection) -> list[list[str]]:
    """One row of cells per candidate, best first, in the order of ``TABLE_COLUMNS``."""
    return [
        [
            Path(c.run).name,
            c.spec,
            c.trial,
            f"{c.objective:.3f}",
            _ci(c.vs_winner),
            _ci(c.vs_benchmark),
            _num(c.gross_exposure),
            _num(c.turnover, ".4f"),
            _num(c.costs, ".5f"),
        ]
        for c in selection.candidates
    ]


def format_table(selection: Selection) -> str:
    """The comparison as a fixed-width table (left-aligned names, right-aligned figures)."""
    rows = [list(TABLE_COLUMNS), *table_rows(selection)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def _counted(selection: Selection) -> str:
    """What the claim's N counts, in words (each run's share when it counts checkpoints)."""
    claim = selection.claim
    assert claim is not None
    if claim.counted == "runs":  # written before the count: each search's own choice left out
        return f"{claim.candidates} runs only, not the checkpoints each search compared on this window"
    shares = " + ".join(f"{Path(c.run).name} {c.checkpoints_compared}" for c in selection.candidates)
    return f"{claim.candidates} checkpoints compared on this window: {shares}"


def claim_line(selection: Selection) -> str:
    """Whether the winner beats the benchmark, at the level adjusted for every checkpoint compared."""
    claim, name = selection.claim, Path(selection.winner).name
    if selection.claim_refused is not None:
        return f"{name}: no claim made against {selection.benchmark}: {selection.claim_refused}"
    if claim is None:  # a selection written before the claim was recorded
        return f"{name}: no adjusted claim recorded against {selection.benchmark}"
    sharpe = "undefined" if claim.sharpe is None else _ci(claim.sharpe)
    return (
        f"{name} {'beats' if claim.beats else 'does not beat'} {selection.benchmark}: at the "
        f"{claim.level:.2%} level (Bonferroni: {selection.bootstrap.level:.0%} adjusted for "
        f"{_counted(selection)}), objective {_ci(claim.objective)} and "
        f"Sharpe minus {selection.benchmark}'s {sharpe}; beating needs both above 0"
    )


def runner_up_line(selection: Selection) -> str | None:
    """The line beside the claim when the window cannot tell the winner from the runner-up (the
    runner-up's paired interval against the winner reaches 0): the ranking then rests on a point
    estimate within the noise, and the choice between them is a coin toss on these bars. None when
    it tells them apart, or there is no runner-up."""
    if len(selection.candidates) < 2:
        return None
    second = selection.candidates[1]
    gap = second.vs_winner
    if gap.high is not None and gap.high < 0:
        return None
    return (
        f"the window cannot tell {Path(selection.winner).name} from the runner-up {Path(second.run).name} "
        f"(trial {second.trial}): it trails by {_ci(gap)} (paired), so the choice rests on a point estimate "
        "within the noise"
    )


def winner_cash_line(selection: Selection) -> str | None:
    """The line beside the claim when the winner held (almost) only cash on the window
    (``tune_specs.selection.cash_line``); None otherwise."""
    line = cash_line(selection.candidates[0].gross_exposure)
    return None if line is None else f"{Path(selection.winner).name} {line}"


def behaviour_section(selection: Selection) -> list[str]:
    """``select.md``'s lines on the offline candidates against their behaviour policies
    (``cluster.select_behaviour``): a heading, the lines as a list, a blank line; none without
    offline candidates."""
    lines = behaviour_lines(selection)
    if not lines:
        return []
    head = (
        "Behaviour policies (did an offline candidate learn beyond the policy that recorded its "
        "experience? its objective minus that policy's, replayed on this window, paired bootstrap, "
        "Bonferroni-adjusted as the claim: each candidate is the best of the checkpoints its search "
        "compared on this window):"
    )
    return [head, "", *(f"- {line.text}" for line in lines), ""]


def behaviour_in_sample_lines(selection: Selection) -> list[str]:
    """One line per offline candidate and behaviour policy that saw bars of this window or of the test
    split (``models.training_window.behaviour_in_sample``), best candidate first: its scores there are
    in sample whatever the adjustment, which counts choices, not what the weights learnt from."""
    return [
        f"{Path(c.run).name}: IN-SAMPLE: {in_sample_sentence(seen)}"
        for c in selection.candidates
        for seen in c.behaviour_in_sample or []
    ]


def _test_seen(selection: Selection) -> list[str]:
    """The candidates whose behaviour policies saw the test split's bars (or whose sight is unknown)."""
    return [
        Path(c.run).name
        for c in selection.candidates
        if any("test" in seen.splits for seen in c.behaviour_in_sample or [])
    ]


def in_sample_note(selection: Selection) -> str:
    """``select.md``'s reminder that the claim is on the window the checkpoints were chosen on, and
    that the test split is the out-of-sample check of every candidate but those whose behaviour
    policies saw its bars (:func:`behaviour_in_sample_lines`)."""
    note = (
        f"The claim is judged on the {selection.window.split} window the checkpoints were chosen on "
        "(each search picked its checkpoint on it, and select picked among those), so it is not an "
        "out-of-sample result; the adjustment is for every checkpoint compared there."
    )
    seen = _test_seen(selection)
    if len(seen) == len(selection.candidates):
        return (
            f"{note} There is no out-of-sample check on this store: the behaviour policies of "
            f"{', '.join(seen)} saw the test split's bars (or what they saw is unknown), so their test "
            "scores are in sample too (`raytrade evaluate` refuses them as in sample)."
        )
    which = "which no search looked at"
    if seen:
        which = (
            f"which no search looked at, except through the experience of {', '.join(seen)}: their "
            "behaviour policies saw its bars (or what they saw is unknown), so their test scores are in "
            "sample too and `raytrade evaluate` refuses them as in sample"
        )
    return (
        f"{note} The out-of-sample check is the test split, {which}: `raytrade evaluate --replay "
        "STORE --policies registry:NAME --split test --out DIR` once promoted (promotion also records "
        "the test objective in the manifest's metrics)."
    )


BOOK_END_WORDS: Final = {
    "closed": "every book closed at the window's last bar, its exit cost charged",
    "marked": "books marked to market at the window's last bar, no exit charged",
}
"""How ``select.md`` describes a ``models.manifest.BookEnd``."""


def rescored_note(selection: Selection) -> str | None:
    """``select.md``'s note on candidates whose search recorded its objective under another rule than
    the selection's (a search older than the exit cost): None when every one used the same."""
    older = [c for c in selection.candidates if c.search_book_end != selection.book_end]
    if not older:
        return None
    names = ", ".join(Path(c.run).name for c in older)
    return (
        f"Re-scored: the search of {names} recorded its objective with "
        f"{BOOK_END_WORDS[older[0].search_book_end]}; every objective here is scored with "
        f"{BOOK_END_WORDS[selection.book_end]}, so it differs from the search's by that exit."
    )


def cash_sentence(selection: Selection) -> str:
    """``select.md``'s sentence on what idle cash earned on the window (the Sharpe's risk-free rate)."""
    rate = selection.cash_rate
    if rate.is_zero:
        return "Idle cash earned nothing on the window: the Sharpe ratios are of the returns themselves."
    return (
        f"Idle cash (equity not held long) earned {rate.describe()}, every candidate's and "
        f"{selection.benchmark}'s alike: the Sharpe ratios and the claim's Sharpe difference are over it."
    )


def render_markdown(selection: Selection) -> str:
    """``select.md``: the window, the table and how to read it."""
    w, b = selection.window, selection.bootstrap
    lines = [
        "# raytrade select",
        "",
        f"Winner: **{Path(selection.winner).name}** ({selection.winner})",
        "",
        f"Claim: {claim_line(selection)}.",
        "",
        *((f"{note}.", "") if (note := winner_cash_line(selection)) else ()),
        *((f"Note: {tie}.", "") if (tie := runner_up_line(selection)) else ()),
        *behaviour_section(selection),
        *(f"Warning: {line}." for line in behaviour_in_sample_lines(selection)),
        *([""] if behaviour_in_sample_lines(selection) else []),
        in_sample_note(selection),
        "",
        f"Window: {selection.window.split} {w.start:%Y-%m-%d}..{w.end:%Y-%m-%d}, {w.bars} bars, "
        f"{len(w.symbols)} symbols; store fingerprint `{w.store_sha256}` ({w.store_files} files).",
        "",
        f"{cash_sentence(selection)}",
        "",
        f"Objective: information ratio of the per-bar excess over {selection.benchmark} minus "
        f"{selection.cvar_penalty:g} x the loss of its worst 5 % of bars, max(0, -CVaR 5 %), net of "
        f"costs, {BOOK_END_WORDS[selection.book_end]} ({selection.benchmark} scores 0). "
        f"Intervals: {b.level:.0%} paired stationary bootstrap ({b.samples} paths, mean block "
        f"{b.block_len:g} bars, seed {b.seed}) of the objective difference.",
        "",
        *((note, "") if (note := rescored_note(selection)) else ()),
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
        *("| " + " | ".join(r) + " |" for r in table_rows(selection)),
        "",
        f"![objective with its interval against {selection.benchmark}]({SELECT_PLOT})",
        "",
    ]
    return "\n".join(lines)


def plot_selection(selection: Selection, path: Path) -> Path:
    """Bar chart of each candidate's objective with its interval against the benchmark (at 0), and the
    winner's adjusted claim interval beside its bar (:func:`selection_figure`)."""
    import matplotlib.pyplot as plt

    fig = selection_figure(selection)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


SELECT_PLOT_INCHES_PER_CANDIDATE: Final = 0.9
"""``select.png`` grows this much wider per candidate (on a floor of 6 in): 1 to ~12 bars stay legible."""


def selection_figure(selection: Selection) -> Any:
    """The figure :func:`plot_selection` saves (a matplotlib ``Figure``, Agg backend).

    Laid out to be read at any count of candidates: the width grows with them, the title is short and
    the detail (interval level, benchmark, colours) goes in a subtitle wrapped to the width, run names
    tilt when they would crowd, and the legend sits below the axes, never over a bar. Bars stand at
    integer positions labelled with the run folder's name, so two runs of the same name stay two bars.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cands = selection.candidates
    names = [Path(c.run).name for c in cands]
    values = np.array([c.objective for c in cands])
    low = np.array([np.nan if c.vs_benchmark.low is None else c.vs_benchmark.low for c in cands])
    high = np.array([np.nan if c.vs_benchmark.high is None else c.vs_benchmark.high for c in cands])
    errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0.0)
    width = max(6.0, SELECT_PLOT_INCHES_PER_CANDIDATE * len(cands) + 3.0)
    fig, ax = plt.subplots(figsize=(width, 4.8), layout="constrained")
    x = np.arange(len(cands), dtype=np.float64)
    colors = ["tab:green" if i == 0 else "tab:blue" for i in range(len(cands))]
    ax.bar(x, values, yerr=errors, capsize=6, color=colors)
    ax.set_xticks(x, names)
    pad = max(0.0, (3 - len(cands)) / 2)  # room for at least 3 bars: one or two are not slabs
    ax.set_xlim(-0.5 - pad, len(cands) - 0.5 + pad)
    if len(cands) > 4 or max(len(n) for n in names) > 14:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    level = selection.bootstrap.level
    handles: list[Any] = [Patch(color="tab:green", label=f"winner ({level:.0%} CI)")]
    if len(cands) > 1:
        handles.append(Patch(color="tab:blue", label=f"other candidates ({level:.0%} CI)"))
    handles.append(ax.axhline(0.0, color="black", lw=0.8, label=f"{selection.benchmark} (0)"))
    claim = selection.claim
    if claim is not None and claim.objective.low is not None and claim.objective.high is not None:
        # the winner's claim is judged on the wider, adjusted interval: draw it beside the nominal one
        handles.append(
            ax.errorbar(
                [0.25],
                [values[0]],
                yerr=[
                    [max(values[0] - claim.objective.low, 0.0)],
                    [max(claim.objective.high - values[0], 0.0)],
                ],
                fmt="none",
                ecolor="tab:red",
                elinewidth=2.0,
                capsize=6,
                label=f"winner's claim: {claim.level:.2%} CI (adjusted for {claim.candidates} "
                f"{claim.counted})",
            )
        )
    ax.set_ylabel(f"{selection.window.split} objective")
    fig.suptitle(f"raytrade select: {selection.window.split} objective per candidate", fontsize=12)
    detail = (
        f"Bars: each candidate's objective; whiskers: its {level:.0%} bootstrap CI against "
        f"{selection.benchmark}, which scores 0 (black line). Winner green."
    )
    ax.set_title(textwrap.fill(detail, width=int(width * 72 / (9 * 0.6))), fontsize=9)
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def write_outputs(selection: Selection, out: Path) -> list[Path]:
    """``select.json``, ``select.md`` and ``select.png`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / SELECT_JSON).write_text(selection.model_dump_json(indent=2))
    (out / SELECT_MD).write_text(render_markdown(selection))
    plot_selection(selection, out / SELECT_PLOT)
    return [out / SELECT_JSON, out / SELECT_MD, out / SELECT_PLOT]


# ------------------------------------------------------------------------------ command


@click.command("select")
@path_argument("run_dirs", nargs=-1, required=True, type=LocalPath())
@click.option("--promote", "promote_name", help="Promote the winner to the registry under this name.")
@registry_option(written=True, used_when="promote_name")
@path_option("--replay", type=LocalPath(), help="Store to replay on (default: the runs').")
@written_path_option(
    "--out",
    type=LocalPath(),
    default=Path("select"),
    show_default=True,
    help="Folder for select.json, select.md and select.png.",
)
@click.option("--bootstrap-samples", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@one_line_errors
def select_command(
    run_dirs: tuple[Path, ...],
    promote_name: str | None,
    registry: Path,
    replay: Path | None,
    out: Path,
    bootstrap_samples: int,
    seed: int,
) -> None:
    """Compare the best checkpoints of RUN_DIRS (raytrade tune runs, any spec) on their common
    validation window, with paired bootstrap intervals; optionally promote the winner."""
    if promote_name is not None:  # refused before the replays and select.json, not after them
        from raytrade.models.registry import check_name
        from raytrade.replay.remote import check_uri, is_remote

        check_name(promote_name)
        if is_remote(str(registry)):
            check_uri(str(registry))
    boot = BootstrapConfig(samples=bootstrap_samples, seed=seed)
    selection = run_select(
        list(run_dirs), out, replay=replay, bootstrap=boot, promoting=promote_name is not None
    )
    w = selection.window
    click.echo(
        f"{w.split} window {w.start:%Y-%m-%d}..{w.end:%Y-%m-%d} ({w.bars} bars, {len(w.symbols)} symbols)"
    )
    click.echo(format_table(selection))
    click.echo(f"wrote {out / SELECT_JSON}, {out / SELECT_MD}, {out / SELECT_PLOT}")
    winner = selection.candidates[0]
    if selection.claim is not None and selection.claim.beats:
        click.echo(claim_line(selection))
    else:
        click.echo(f"warning: {claim_line(selection)}", err=True)
    cash = winner_cash_line(selection)
    if cash is not None:
        click.echo(f"warning: {cash}", err=True)
    tie = runner_up_line(selection)
    if tie is not None:  # and --promote promotes it all the same: say so first
        click.echo(f"warning: {tie}", err=True)
    for line in behaviour_lines(selection):
        click.echo(f"warning: {line.text}" if line.warning else line.text, err=line.warning)
    for text in behaviour_in_sample_lines(selection):
        click.echo(f"warning: {text}", err=True)
    if promote_name is not None:
        key = registry_hmac_key()
        target = promote(Path(selection.winner), promote_name, registry, selection=selection, hmac_key=key)
        click.echo(f"promoted {Path(selection.winner).name} trial {winner.trial} -> {target}")
