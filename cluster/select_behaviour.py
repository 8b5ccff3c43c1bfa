"""An offline candidate of ``raytrade select`` against the behaviour policies of its experience.

The first question an offline result must answer is whether it learnt anything beyond the policy
that recorded its data: BC on ``equal_weight`` experience that reproduces ``equal_weight`` scores
whatever ``equal_weight`` scores, which is no success. So each offline candidate (a run whose run
file records ``provenance.experience``) is compared with every behaviour policy of the transitions
its search read, on the selection window.

Design decisions
----------------
* **Which policies.** The ``policy_version`` of every recording run of the transitions in the
  search's experience window (``replay.behaviour.recording_runs``; the whole table for a run older
  than the window), read from the experience store the run file names, and only while that store's
  ``experience`` table still has the fingerprint the search recorded, or still holds in that window
  the count of transitions the search recorded there (the table is append-only: rows appended since,
  a live loop's newer decisions, lie outside it). A table that holds other transitions in the window
  may hold other runs, so the policies are then reported unknown (``behaviour_unknown``) rather than
  guessed. A simulated baseline run's rows carry the baseline's name; runs of the same
  policy (other seeds, other noise) are one comparison.
* **Which can be run.** A policy named like an evaluation baseline (``envs.evaluation.policies.
  BASELINES``: ``cash``, ``buy_and_hold``, ``equal_weight``, ``inverse_vol``, ``kelly_lite``) is replayed
  deterministically, without the recording's noise (the noise is exploration around it, the policy
  is its mean), on the selection window through the candidate's own simulator, its book closed at the
  last bar like every scored replay (``tune_specs.objective.CLOSE_AT_END``). Any other (a registry
  version, the live loop's versions) is named with the reason and no number: replaying a registry
  version here would need its checkpoint and its in-sample check, which are ``raytrade evaluate``'s.
* **The number.** The candidate's objective minus the behaviour policy's, each against the benchmark
  as the selection scores them, with a paired bootstrap interval. The candidate is its search's best
  checkpoint on this very window, so "above its behaviour policy" is a claim about the best of N, like
  the winner's: the interval takes the winner's claim's Bonferroni adjustment for the same N (every
  checkpoint compared on the window, ``cluster.select.claim_candidates``;
  ``tune_specs.selection.adjusted_versus_baseline``, one rule with ``benchmark_claim``). At the
  nominal level the best of 16 no-skill checkpoints on a 100-bar window was "above" in 41 of 60
  simulated searches; adjusted, in 15 (6 of 60 on 250 bars): the percentile bootstrap's tails are thin
  on a short window of few blocks, so the adjusted verdict is still no out-of-sample result. When
  N is unknown (a leaderboard without the count: the claim is refused too) the interval is the
  nominal one and no verdict "above" is made. An interval that holds 0, or that is undefined, reads
  "not distinguishable from its behaviour policy" (fail closed: no learning is claimed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from raytrade.cluster.run_file import RunFile
from raytrade.envs.baseline_weights import BASELINE_FEATURES
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.policies import BASELINES, baseline_spec
from raytrade.envs.evaluation.stats import BootstrapConfig
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import replay_policy
from raytrade.models.manifest import (
    BehaviourComparison,
    ExperienceWindow,
    ScoreInterval,
    Selection,
    SelectionCandidate,
)
from raytrade.tune_specs.objective import CLOSE_AT_END, held_out_data, score_of
from raytrade.tune_specs.selection import adjusted_versus_baseline, versus_baseline


def behaviour_policies(run: RunFile) -> tuple[dict[str, int] | None, str | None]:
    """``(policy_version -> recording runs, None)`` of the transitions an offline search read;
    ``(None, None)`` for an online search; ``(None, why)`` when they cannot be read (module docstring)."""
    from raytrade.replay.behaviour import recording_runs
    from raytrade.replay.fingerprint import EXPERIENCE_TABLES, data_fingerprint

    experience = run.provenance.experience
    if experience is None:
        return None, None
    root = Path(experience.root)
    if not root.is_dir():
        return None, f"its experience store {str(root)!r} does not exist"
    window = experience.window
    sha, _ = data_fingerprint(root, EXPERIENCE_TABLES)
    if sha != experience.sha256 and not _window_unchanged(root, window):
        return None, (
            f"its experience store {str(root)!r} changed since the search (fingerprint now {sha[:12]}, "
            f"at the search {experience.sha256[:12]}) and holds other transitions in the window it read, "
            "so which policies recorded the transitions it read cannot be told"
        )
    runs = recording_runs(root, *((None, None) if window is None else (window.start, window.end)))
    if not runs:
        return None, f"its experience store {str(root)!r} holds no transitions in the window it read"
    return dict(sorted(Counter(runs.values()).items())), None


def _window_unchanged(root: Path, window: ExperienceWindow | None) -> bool:
    """Whether the experience store at ``root`` still holds exactly the transitions the search counted
    in its ``window`` (None: a run older than the window, which read every date: cannot be told). The
    table is append-only, so an equal count means nothing was added there: what grew lies outside."""
    from raytrade.replay.experience import window_count

    return window is not None and window_count(root, window.start, window.end).inside == window.transitions


def baseline_returns(
    name: str, data: MarketData, env_config: Mapping[str, Any], split: str, sim: SimulatorConfig
) -> np.ndarray:
    """Per-bar net returns of baseline ``name`` replayed over the window ``data`` (the ``split`` of
    ``env_config``'s store) through ``sim``, its book closed at the last bar; the window is reloaded
    with the feature columns the baseline reads when ``data`` lacks them (the same bars)."""
    spec = baseline_spec(name)
    needed = (*spec.feature_columns, *BASELINE_FEATURES.get(name, ()))
    missing = [c for c in dict.fromkeys(needed) if c not in data.feature_names]
    window = data
    if missing:
        extra = tuple(dict.fromkeys([*env_config["data"].get("extra_features", ()), *missing]))
        window = held_out_data({**env_config, "data": {**env_config["data"], "extra_features": extra}}, split)
        if not np.array_equal(window.ts, data.ts) or tuple(window.symbols) != tuple(data.symbols):
            raise ValueError(f"the {split} window reloaded for {name}'s features is not the selection's")
    rollout = replay_policy(window, spec.make(window, 0), sim, close_at_end=CLOSE_AT_END)
    returns: np.ndarray = rollout.returns[0]
    return returns


def _interval(point: float, low: float, high: float, n_valid: int) -> ScoreInterval:
    finite = [v if np.isfinite(v) else None for v in (low, high)]
    return ScoreInterval(estimate=point, low=finite[0], high=finite[1], n_valid=n_valid)


def not_runnable(policy: str, runs: int) -> BehaviourComparison:
    """The record of behaviour policy ``policy`` (of ``runs`` recording runs) that is no baseline the
    evaluator can run: named, with the reason and no number."""
    return BehaviourComparison(
        policy=policy,
        runs=runs,
        not_run=f"{policy} is not a baseline the evaluator can run ({', '.join(BASELINES)}): "
        "no number is given",
    )


def compare_with_behaviour(
    policies: Mapping[str, int],
    returns: np.ndarray,
    benchmark: np.ndarray,
    data: MarketData,
    env_config: Mapping[str, Any],
    split: str,
    sim: SimulatorConfig,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
    n_candidates: int | None,
) -> list[BehaviourComparison]:
    """The candidate of per-bar ``returns`` against each behaviour policy in ``policies`` (name ->
    recording runs), on the window ``data`` whose benchmark returns are ``benchmark``, its interval
    adjusted for the ``n_candidates`` checkpoints compared there (None: unknown, nominal; see the
    module docstring)."""
    out = []
    for policy, runs in policies.items():
        if policy not in BASELINES:
            out.append(not_runnable(policy, runs))
            continue
        theirs = baseline_returns(policy, data, env_config, split, sim)
        scoring = (returns, theirs, benchmark, data.periods_per_year, cvar_penalty, bootstrap)
        if n_candidates is None:
            level, ci = bootstrap.level, versus_baseline(*scoring)
        else:
            level, ci = adjusted_versus_baseline(*scoring, n_candidates)
        out.append(
            BehaviourComparison(
                policy=policy,
                runs=runs,
                objective=score_of(theirs - benchmark, data.periods_per_year, cvar_penalty),
                difference=_interval(ci.estimate, ci.low, ci.high, ci.n_valid),
                level=level,
                adjusted_for=n_candidates,
            )
        )
    return out


def distinguishable(difference: ScoreInterval) -> bool:
    """Whether an interval excludes 0 (an undefined bound: not distinguishable, fail closed)."""
    low, high = difference.low, difference.high
    return low is not None and high is not None and (low > 0.0 or high < 0.0)


def _ci(ci: ScoreInterval) -> str:
    return "[" + ", ".join("undefined" if v is None else f"{v:.3f}" for v in (ci.low, ci.high)) + "]"


def _level_words(b: BehaviourComparison, nominal: float) -> str:
    """What the interval's level is: adjusted as the claim, or nominal and why."""
    if b.adjusted_for is not None and b.level is not None:
        return (
            f"{b.level:.2%} CI, Bonferroni: {nominal:.0%} adjusted for the {b.adjusted_for} "
            f"checkpoint{'s' if b.adjusted_for > 1 else ''} compared on this window, as the claim"
        )
    if b.level is not None:
        return f"{nominal:.0%} CI, not adjusted: the checkpoints compared on this window are unknown"
    return f"{nominal:.0%} CI, not adjusted for the checkpoints compared: a selection written before"


def comparison_line(candidate: SelectionCandidate, b: BehaviourComparison, level: float) -> str:
    """One line on ``candidate`` against behaviour policy ``b`` (``level``: the nominal level; the
    interval's own is ``b.level``, see the module docstring)."""
    name = Path(candidate.run).name
    if b.difference is None:
        return f"{name}: behaviour policy {b.policy} not compared: {b.not_run}"
    d = b.difference
    figures = f"objective minus {b.policy}'s {d.estimate:.3f} {_ci(d)} ({_level_words(b, level)})"
    if not distinguishable(d):
        return f"{name}: not distinguishable from its behaviour policy {b.policy}: {figures}"
    if d.estimate > 0 and not learnt_beyond(b):
        return f"{name}: not judged above its behaviour policy {b.policy} (no adjusted interval): {figures}"
    side = "above" if d.estimate > 0 else "below"
    return f"{name}: {side} its behaviour policy {b.policy}: {figures}"


class BehaviourLine(NamedTuple):
    """A line of :func:`behaviour_lines`, and whether it warns (anything but a candidate found above
    its behaviour policy)."""

    text: str
    warning: bool


def learnt_beyond(b: BehaviourComparison) -> bool:
    """Whether the candidate scored above behaviour policy ``b`` with an interval excluding 0, adjusted
    for the checkpoints compared on the window (an unadjusted one claims nothing: fail closed)."""
    d = b.difference
    return d is not None and b.adjusted_for is not None and distinguishable(d) and d.estimate > 0


def behaviour_lines(selection: Selection) -> list[BehaviourLine]:
    """Every offline candidate's lines against its behaviour policies (best candidate first), and
    one line for each whose behaviour policies are unknown."""
    lines = []
    for c in selection.candidates:
        if c.behaviour_unknown is not None:
            text = f"{Path(c.run).name}: not compared with its behaviour policies: {c.behaviour_unknown}"
            lines.append(BehaviourLine(text, True))
        for b in c.vs_behaviour or []:
            text = comparison_line(c, b, selection.bootstrap.level)
            lines.append(BehaviourLine(text, not learnt_beyond(b)))
    return lines
