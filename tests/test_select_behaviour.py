"""An offline result judged against its behaviour policy, and a winner that holds cash, flagged.

``raytrade select`` end to end without Ray: the runs are crafted (``tests.test_select._crafted_run``)
and each checkpoint's replay is stood in for by a baseline's (``module_rollout`` patched)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from raytrade.cluster.run_file import LeaderboardRow, read_run_file, write_run_file
from raytrade.cluster.select import select_command
from raytrade.models.manifest import (
    BehaviourComparison,
    ExperienceFingerprint,
    ExperienceWindow,
    ScoreInterval,
    Selection,
)
from raytrade.replay.behaviour import BehaviourPolicy
from raytrade.tune_specs.selection import cash_line, holds_cash, rank_candidates, versus_baseline
from tests.test_select import BOOT, _crafted_run, _planted

# ------------------------------------------------------------------------------ pure parts


def test_the_difference_with_a_baseline_is_paired_on_the_rankings_paths() -> None:
    """Against the benchmark itself as the baseline, the interval is ``vs_benchmark``'s exactly; a
    policy against a copy of itself has the interval [0, 0] on every path."""
    s = _planted()
    (good,) = rank_candidates({"good": s["good"]}, s["bench"], 252, 1.0, BOOT)
    assert versus_baseline(s["good"], s["bench"], s["bench"], 252, 1.0, BOOT) == good.vs_benchmark
    same = versus_baseline(s["good"], s["good"], s["bench"], 252, 1.0, BOOT)
    assert (same.estimate, same.low, same.high, same.n_valid) == (0.0, 0.0, 0.0, BOOT.samples)


@pytest.mark.parametrize(
    ("gross", "line"),
    [
        (0.01, "holds cash: mean gross exposure 0.01; its score is cash's"),
        (0.0, "holds cash: mean gross exposure 0.00; its score is cash's"),
        (0.05, None),
        (1.0, None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_a_book_below_the_cash_threshold_is_said_to_hold_cash(gross: float | None, line: str | None) -> None:
    assert cash_line(gross) == line
    assert holds_cash(gross) is (line is not None)


def test_a_registry_behaviour_policy_is_named_without_a_number() -> None:
    from raytrade.cluster.select_behaviour import comparison_line, not_runnable
    from raytrade.models.manifest import SelectionCandidate

    b = not_runnable("ppo@3", 2)
    assert b == BehaviourComparison(
        policy="ppo@3",
        runs=2,
        not_run="ppo@3 is not a baseline the evaluator can run (cash, buy_and_hold, equal_weight, "
        "inverse_vol, kelly_lite): no number is given",
    )
    candidate = SelectionCandidate.model_validate(
        {
            "run": "/runs/cql",
            "spec": "cql",
            "family": "cql",
            "trial": "t0",
            "checkpoint": "t0/ckpt",
            "iteration": 1,
            "objective": 0.5,
            "search_objective": None,
            "vs_winner": {"estimate": 0.0, "low": 0.0, "high": 0.0, "n_valid": 10},
            "vs_benchmark": {"estimate": 0.5, "low": 0.1, "high": 0.9, "n_valid": 10},
            "excess_return": 0.01,
            "gross_exposure": 1.0,
            "turnover": 0.01,
            "costs": 0.001,
        }
    )
    assert comparison_line(candidate, b, 0.95) == (
        "cql: behaviour policy ppo@3 not compared: ppo@3 is not a baseline the evaluator can run "
        "(cash, buy_and_hold, equal_weight, inverse_vol, kelly_lite): no number is given"
    )


def test_best_of_n_no_skill_checkpoints_are_rarely_above_their_behaviour_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each search's candidate is its best of N checkpoints on the window it is judged on: read at the
    nominal 95 % level, the best of 16 no-skill tilts of the behaviour policy (equal_weight, also the
    benchmark) was "above its behaviour policy" in 41 of 60 searches (/tmp/h37c/bestofn.py); adjusted
    as the claim is, for the 16 checkpoints compared, in 15."""
    from types import SimpleNamespace

    import raytrade.cluster.select_behaviour as select_behaviour
    from raytrade.envs.evaluation.stats import BootstrapConfig
    from raytrade.tune_specs.objective import score_of

    rng = np.random.default_rng(0)
    boot = BootstrapConfig(samples=400)
    data = SimpleNamespace(periods_per_year=252)
    above, n = 0, 16
    for _ in range(60):
        bench = rng.normal(3e-4, 0.01, 100)
        tilts = [bench + rng.normal(0, 0.002, 100) for _ in range(n)]
        best = max(tilts, key=lambda c: score_of(c - bench, 252, 1.0))
        monkeypatch.setattr(select_behaviour, "baseline_returns", lambda *_, b=bench: b)
        (b,) = select_behaviour.compare_with_behaviour(
            {"equal_weight": 1},
            best,
            bench,
            data,
            {},
            "validation",
            None,
            1.0,
            boot,
            n,  # type: ignore[arg-type]
        )
        assert (b.level, b.adjusted_for) == (pytest.approx(1 - 0.05 / n), n)
        above += select_behaviour.learnt_beyond(b)
    # 41 of 60 at the nominal level; 15 adjusted: not 5 %, as the percentile bootstrap's tails are thin
    # on a 100-bar window of ~10 blocks (6 of 60 on 250 bars; README, select_behaviour's docstring)
    assert above <= 15


def test_the_adjusted_difference_of_one_checkpoint_is_the_nominal_paired_one() -> None:
    """N = 1 on enough paths is no adjustment: the level and the interval of ``versus_baseline``."""
    from raytrade.envs.evaluation.stats import BootstrapConfig
    from raytrade.tune_specs.selection import adjusted_versus_baseline

    s, boot = _planted(), BootstrapConfig(samples=1000, seed=2)
    args = (s["good"], s["bad"], s["bench"], 252, 1.0, boot)
    assert adjusted_versus_baseline(*args, 1) == (0.95, versus_baseline(*args))
    level, wide = adjusted_versus_baseline(*args, 16)
    nominal = versus_baseline(*args)
    assert level == pytest.approx(1 - 0.05 / 16) and wide.n_valid == 6400
    assert wide.low < nominal.low and wide.high > nominal.high


def test_an_interval_not_adjusted_for_the_checkpoints_compared_claims_nothing_above() -> None:
    """A selection whose N is unknown (a leaderboard without the count) compares at the nominal level
    and makes no verdict 'above' (fail closed); one adjusted for N says so."""
    from raytrade.cluster.select_behaviour import comparison_line, learnt_beyond
    from raytrade.models.manifest import SelectionCandidate

    candidate = SelectionCandidate.model_construct(run="/runs/bc")
    above = ScoreInterval(estimate=0.4, low=0.1, high=0.7, n_valid=400)
    unknown = BehaviourComparison(policy="equal_weight", runs=1, objective=0.0, difference=above, level=0.95)
    assert not learnt_beyond(unknown)
    assert comparison_line(candidate, unknown, 0.95) == (
        "bc: not judged above its behaviour policy equal_weight (no adjusted interval): objective minus "
        "equal_weight's 0.400 [0.100, 0.700] (95% CI, not adjusted: the checkpoints compared on this "
        "window are unknown)"
    )
    adjusted = unknown.model_copy(update={"level": 1 - 0.05 / 16, "adjusted_for": 16})
    assert learnt_beyond(adjusted)
    assert comparison_line(candidate, adjusted, 0.95) == (
        "bc: above its behaviour policy equal_weight: objective minus equal_weight's 0.400 [0.100, 0.700] "
        "(99.69% CI, Bonferroni: 95% adjusted for the 16 checkpoints compared on this window, as the claim)"
    )


def test_the_leaderboard_says_when_its_best_trial_with_a_checkpoint_holds_cash() -> None:
    from raytrade.cluster.tune import best_cash_line

    def row(trial: str, checkpoint: str | None, gross: float) -> LeaderboardRow:
        scores = dict.fromkeys(("objective", "sharpe", "sortino", "cvar_5", "total_return"), 0.1)
        return LeaderboardRow(
            trial=trial, trial_dir=trial, params={}, iteration=1, checkpoint=checkpoint,
            node_id=None, error=None, turnover=0.0, max_drawdown=0.0, gross_exposure=gross, **scores,
        )  # fmt: skip

    rows = [row("t0", None, 1.0), row("t1", "t1/ckpt", 0.012), row("t2", "t2/ckpt", 1.0)]
    assert best_cash_line(rows) == "best trial t1 holds cash: mean gross exposure 0.01; its score is cash's"
    assert best_cash_line([row("t2", "t2/ckpt", 1.0)]) is None


# ------------------------------------------------------------------------------ select end to end


@pytest.fixture(scope="module")
def recorded(synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experience store holding one ``equal_weight`` episode recorded on ``synthetic_store``'s
    train split (``raytrade simulate-experience --policy equal_weight``)."""
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience

    out = tmp_path_factory.mktemp("behaviour") / "experience"
    simulate_experience(SimulateOptions(policy="equal_weight", replay=synthetic_store, out=out))
    return out


def _offline_run(folder: Path, store: Path, experience: Path, sha: str | None = None, added: int = 0) -> Path:
    """A crafted ``bc`` run on ``store`` that read every transition of ``experience`` (its experience
    fingerprint ``sha``, else the store's now), ``added`` of them appended in its window since."""
    from raytrade.replay.experience import window_count
    from raytrade.replay.fingerprint import EXPERIENCE_TABLES, data_fingerprint

    run_dir = _crafted_run(folder, store, data_fingerprint(store)[0])
    run = read_run_file(run_dir)
    t0, t1 = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    count = window_count(experience, t0, t1).inside - added
    window = ExperienceWindow(train_start=t0, train_end=t1, start=t0, end=t1, transitions=count, left_out=0)
    seen = ExperienceFingerprint(
        root=str(experience.resolve()),
        sha256=sha or data_fingerprint(experience, EXPERIENCE_TABLES)[0],
        files=1,
        window=window,
        behaviour=[],
    )
    provenance = run.provenance.model_copy(update={"experience": seen})
    write_run_file(run_dir, run.model_copy(update={"spec": "bc", "provenance": provenance}))
    return run_dir


def _replaying(policy: Callable[..., Any]) -> Callable[..., Any]:
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.rollout import replay_policy

    def rollout(module: Any, env_config: Any, data: Any, gated: bool) -> Any:
        sim = env_config_from_dict(env_config).sim
        return replay_policy(data, policy(data, 0), sim, close_at_end=True), sim

    return rollout


def _select(monkeypatch: pytest.MonkeyPatch, policy: Callable[..., Any], *args: Path | str) -> Any:
    import raytrade.cluster.select as select

    monkeypatch.setattr(select, "load_module", lambda path: None)
    monkeypatch.setattr(select, "module_rollout", _replaying(policy))
    return CliRunner().invoke(select_command, [str(a) for a in (*args, "--bootstrap-samples", "50")])


def test_bc_that_clones_equal_weight_is_not_distinguishable_from_its_behaviour_policy(
    synthetic_store: Path, recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.envs.evaluation.policies import equal_weight_policy

    run = _offline_run(tmp_path / "bc", synthetic_store, recorded)
    result = _select(monkeypatch, equal_weight_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    (candidate,) = selection.candidates
    assert candidate.behaviour_unknown is None
    assert candidate.vs_behaviour == [
        BehaviourComparison(
            policy="equal_weight",
            runs=1,
            objective=0.0,
            difference=ScoreInterval(estimate=0.0, low=0.0, high=0.0, n_valid=400),
            level=0.95,
            adjusted_for=1,
        )
    ]  # at the claim's level for its 1 checkpoint compared, on the claim's 400 paths (not 50)
    line = (
        "bc: not distinguishable from its behaviour policy equal_weight: objective minus equal_weight's "
        "0.000 [0.000, 0.000] (95.00% CI, Bonferroni: 95% adjusted for the 1 checkpoint compared on this "
        "window, as the claim)"
    )
    assert f"- {line}" in (tmp_path / "out" / "select.md").read_text().splitlines()
    assert f"warning: {line}" in result.output.splitlines()


def test_a_winner_holding_cash_is_flagged_beside_the_claim(
    synthetic_store: Path, recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.envs.evaluation.policies import cash_policy

    run = _offline_run(tmp_path / "bc", synthetic_store, recorded)
    result = _select(monkeypatch, cash_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    assert selection.candidates[0].gross_exposure == 0.0
    line = "bc holds cash: mean gross exposure 0.00; its score is cash's"
    md = (tmp_path / "out" / "select.md").read_text().splitlines()
    claim = next(i for i, text in enumerate(md) if text.startswith("Claim: "))
    assert md[claim + 2] == f"{line}."
    assert f"warning: {line}" in result.output.splitlines()
    (b,) = selection.candidates[0].vs_behaviour or []
    assert b.policy == "equal_weight" and b.difference is not None
    assert b.difference.estimate == pytest.approx(selection.candidates[0].objective)  # equal_weight: 0


def test_an_experience_store_grown_outside_the_window_read_still_names_its_behaviour_policy(
    synthetic_store: Path, recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another fingerprint (a live loop's newer decisions appended), the same transitions in the
    window the search read: its behaviour policies are still those."""
    from raytrade.envs.evaluation.policies import equal_weight_policy

    run = _offline_run(tmp_path / "bc", synthetic_store, recorded, sha="0" * 64)
    result = _select(monkeypatch, equal_weight_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    (candidate,) = selection.candidates
    assert candidate.behaviour_unknown is None
    assert [(b.policy, b.runs) for b in candidate.vs_behaviour or []] == [("equal_weight", 1)]


def test_transitions_added_in_the_window_read_make_its_behaviour_policies_unknown(
    synthetic_store: Path, recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.envs.evaluation.policies import equal_weight_policy

    run = _offline_run(tmp_path / "bc", synthetic_store, recorded, sha="0" * 64, added=1)
    result = _select(monkeypatch, equal_weight_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    (candidate,) = selection.candidates
    assert candidate.vs_behaviour is None and candidate.behaviour_unknown is not None
    assert candidate.behaviour_unknown.startswith(
        f"its experience store {str(recorded.resolve())!r} changed since the search (fingerprint now "
    )
    assert candidate.behaviour_unknown.endswith(
        "at the search 000000000000) and holds other transitions in the window it read, so which "
        "policies recorded the transitions it read cannot be told"
    )
    line = f"warning: bc: not compared with its behaviour policies: {candidate.behaviour_unknown}"
    assert line in result.output.splitlines()


def test_an_online_candidate_has_no_behaviour_comparison(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.envs.evaluation.policies import equal_weight_policy
    from raytrade.replay.fingerprint import data_fingerprint

    run = _crafted_run(tmp_path / "ppo", synthetic_store, data_fingerprint(synthetic_store)[0])
    result = _select(monkeypatch, equal_weight_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    assert (selection.candidates[0].vs_behaviour, selection.candidates[0].behaviour_unknown) == (None, None)
    assert "Behaviour policies" not in (tmp_path / "out" / "select.md").read_text()


def test_a_kelly_lite_behaviour_policy_is_replayed_with_the_features_it_reads(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """The selection window carries the candidate's features only; kelly_lite's are loaded with the
    same bars, and its replay is the one on a window loaded with them from the start."""
    from raytrade.cluster.select_behaviour import baseline_returns
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.evaluation.kelly_lite import KellyLiteConfig
    from raytrade.envs.evaluation.policies import kelly_lite_factory
    from raytrade.envs.rollout import replay_policy
    from raytrade.tune_specs.objective import held_out_data

    env_config = {"data": {"kind": "replay", "root": str(synthetic_store.resolve()), "split": "train"}}
    data = held_out_data(env_config)
    assert "fc_consensus_ok" not in data.feature_names
    sim = env_config_from_dict(env_config).sim
    returns = baseline_returns("kelly_lite", data, env_config, "validation", sim)
    full_config = {"data": {**env_config["data"], "extra_features": ["fc_consensus_ok"]}}
    full = held_out_data(full_config)
    expected = replay_policy(full, kelly_lite_factory(KellyLiteConfig())(full, 0), sim, close_at_end=True)
    np.testing.assert_array_equal(returns, expected.returns[0])


def test_an_offline_leaderboard_names_its_behaviour_policies_and_the_command_that_judges_it(
    synthetic_store: Path, recorded: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.tune import behaviour_hint
    from raytrade.replay.fingerprint import data_fingerprint

    offline = read_run_file(_offline_run(tmp_path / "bc", synthetic_store, recorded))
    assert behaviour_hint(offline, "/runs/bc") == (
        "offline search: its experience was recorded by equal_weight (1 run); judge its best trial "
        "against them: raytrade select /runs/bc --out DIR"
    )
    online = read_run_file(
        _crafted_run(tmp_path / "ppo", synthetic_store, data_fingerprint(synthetic_store)[0])
    )
    assert behaviour_hint(online, "/runs/ppo") is None


# ---------------------------------------------------------------- behaviour policies that saw held-out bars


def _split_days(store: Path, split: str) -> tuple[datetime, datetime]:
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.envs.replay_loader import split_calendar

    bars = split_calendar(ReplayDataConfig(root=str(store.resolve()), split=split))
    return bars[0].to_pydatetime(), bars[-1].to_pydatetime()


def _seeing_run(folder: Path, store: Path, experience: Path, seen_split: str) -> tuple[Path, BehaviourPolicy]:
    """An offline ``bc`` run that read its train split's transitions, recorded by a registry policy
    trained on the train split and chosen on bars through the end of ``seen_split``'s window
    (``simulate-experience --behaviour-in-sample``)."""
    run_dir = _offline_run(folder, store, experience)
    run = read_run_file(run_dir)
    (train_start, train_end), (_, seen_end) = _split_days(store, "train"), _split_days(store, seen_split)
    record = BehaviourPolicy(
        run_id="sim:registry:ppo80@1:0:abcd",
        policy_version="ppo80@1",
        known=True,
        how="recomputed on this store",
        train_start=train_start,
        train_end=train_end,
        validation_end=seen_end,
        in_sample=True,
    )
    experience_fp = run.provenance.experience
    assert experience_fp is not None and experience_fp.window is not None
    window = experience_fp.window.model_copy(update={"train_start": train_start, "train_end": train_end})
    seen = experience_fp.model_copy(update={"window": window, "behaviour": [record]})
    provenance = run.provenance.model_copy(update={"experience": seen})
    write_run_file(run_dir, run.model_copy(update={"provenance": provenance}))
    return run_dir, record


@pytest.mark.parametrize(
    ("seen_split", "splits"), [("test", ["validation", "test"]), ("validation", ["validation"])]
)
def test_select_says_a_candidate_whose_behaviour_policy_saw_the_held_out_bars_is_in_sample(
    synthetic_store: Path,
    recorded: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seen_split: str,
    splits: list[str],
) -> None:
    """select ranked such a candidate on validation with no word and wrote that the test split was
    one "which no search looked at" (repro: /tmp/h37c/repro_insample_behaviour.sh)."""
    from raytrade.envs.evaluation.policies import equal_weight_policy
    from raytrade.models.manifest import BehaviourInSample
    from raytrade.replay.behaviour import describe

    run, record = _seeing_run(tmp_path / "bc", synthetic_store, recorded, seen_split)
    online = _crafted_run(tmp_path / "ppo", synthetic_store, read_run_file(run).provenance.data_sha256)
    result = _select(monkeypatch, equal_weight_policy, run, online, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    by_name = {Path(c.run).name: c for c in selection.candidates}
    seen_until = _split_days(synthetic_store, seen_split)[1]
    assert by_name["bc"].behaviour_in_sample == [
        BehaviourInSample(policy="ppo80@1", described=describe(record), seen_until=seen_until, splits=splits)
    ]
    assert by_name["ppo"].behaviour_in_sample is None
    named = " and ".join(splits)
    line = (
        f"bc: IN-SAMPLE: its behaviour policy {describe(record)} saw bars through {seen_until.date()}, of "
        f"its {named} split{'s' if len(splits) > 1 else ''}: its {named} scores are in sample (it learnt "
        "what that policy knew), not out-of-sample results"
    )
    assert f"warning: {line}" in result.output.splitlines()
    md = (tmp_path / "out" / "select.md").read_text()
    assert f"Warning: {line}." in md.splitlines()
    if "test" in splits:
        assert "which no search looked at, except through the experience of bc: their behaviour " in md
    else:
        assert "The out-of-sample check is the test split, which no search looked at: `raytrade" in md


def test_select_of_only_such_candidates_says_there_is_no_out_of_sample_check(
    synthetic_store: Path, recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.envs.evaluation.policies import equal_weight_policy

    run, _ = _seeing_run(tmp_path / "bc", synthetic_store, recorded, "test")
    result = _select(monkeypatch, equal_weight_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "out" / "select.md").read_text()
    assert "which no search looked at" not in md
    assert (
        "There is no out-of-sample check on this store: the behaviour policies of bc saw the test "
        "split's bars (or what they saw is unknown), so their test scores are in sample too"
    ) in md


def test_promote_records_and_warns_that_an_offline_runs_metrics_are_in_sample(
    synthetic_store: Path,
    recorded: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """promote wrote metrics.test of such a run with no word (repro_insample_behaviour.sh)."""
    import raytrade.cluster.promote as promote_module
    from raytrade.models.manifest import BehaviourInSample
    from raytrade.replay.behaviour import describe

    run, record = _seeing_run(tmp_path / "bc", synthetic_store, recorded, "test")
    written: dict[str, Any] = {}
    monkeypatch.setattr(promote_module, "load_module", lambda path: None)
    monkeypatch.setattr(promote_module, "score_module", lambda *a, **k: {"objective": 0.5})
    monkeypatch.setattr(promote_module, "flops_per_decision", lambda *a: 0)
    monkeypatch.setattr(
        promote_module,
        "write_version_at",
        lambda registry, name, ckpt, manifest, *a: written.update(manifest),
    )
    promote_module.promote(run, "bcin", tmp_path / "registry")
    seen_until = _split_days(synthetic_store, "test")[1]
    expected = BehaviourInSample(
        policy="ppo80@1", described=describe(record), seen_until=seen_until, splits=["validation", "test"]
    )
    assert written["metrics_in_sample"] == [expected.model_dump(mode="json")]
    assert set(written["metrics"]) == {"validation", "test"}
    warning = (
        f"warning: {run} trial t0: IN-SAMPLE: its behaviour policy {describe(record)} saw bars through "
        f"{seen_until.date()}, of its validation and test splits: its validation and test scores are in "
        "sample (it learnt what that policy knew), not out-of-sample results; the manifest records it "
        "(metrics_in_sample)"
    )
    assert warning in capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("inherited", [10, None])
def test_the_claim_counts_the_checkpoints_an_init_version_was_chosen_among_on_the_window(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inherited: int | None
) -> None:
    """A search started with ``--init`` from a version chosen on the same validation window starts
    from the best of that version's comparisons there: select's N counted only the fine-tune's own
    checkpoints (/tmp/h37c/repro_init.sh). It adds the version's; unknown, no claim is made."""
    from raytrade.envs.evaluation.policies import equal_weight_policy
    from raytrade.models.manifest import InitValidation, TrainWindow
    from raytrade.replay.fingerprint import data_fingerprint

    run = _crafted_run(tmp_path / "ppo", synthetic_store, data_fingerprint(synthetic_store)[0], compared=(2,))
    record = read_run_file(run)
    start, end = _split_days(synthetic_store, "validation")
    init = InitValidation(
        version="registry:bcx@1",
        validation_window=TrainWindow(start=start, end=end),
        checkpoints_compared=inherited,
    )
    provenance = record.provenance.model_copy(update={"init_validation": init})
    write_run_file(run, record.model_copy(update={"provenance": provenance}))
    result = _select(monkeypatch, equal_weight_policy, run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    if inherited is not None:
        assert selection.claim is not None and selection.claim.candidates == 12
        assert selection.candidates[0].checkpoints_compared == 12
        return
    assert selection.claim is None
    assert selection.claim_refused == (
        f"run {str(run.resolve())!r} started from registry:bcx@1 (--init), whose checkpoint was chosen on "
        "this validation window among checkpoints not recorded, so the winner's interval cannot be "
        "adjusted for that choice; judge the winner out of sample with `raytrade evaluate --split test`"
    )
