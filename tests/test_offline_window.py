"""Offline specs learn only from their training window's transitions (never validation, test or the
embargo between), refuse experience with none in it, and refuse env settings the experience was not
recorded under."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.replay.experience import ExperienceError, read_transitions_frame, window_count
from raytrade.replay.splits import EMBARGO_BARS, fractional_splits


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 equities, 1.5 years daily."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("offwin") / "store"
    market = generate(n_symbols=3, years=1.5, seed=2)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


def record(store: Path, out: Path, split: str) -> None:
    """One ``equal_weight`` episode over ``split`` of ``store`` into ``out``'s experience table (what
    ``raytrade simulate-experience`` records on the train split; a live loop's rows fall later)."""
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.policies import resolve_policies
    from raytrade.envs.experience import simulate_episodes
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.replay.writer import ReplayWriter
    from raytrade.tune_specs.offline import OFFLINE_FEATURES, offline_env_config

    env_cfg = PortfolioEnvConfig.model_validate(
        offline_env_config(
            {"data": {"kind": "replay", "root": str(store)}, "feature_columns": OFFLINE_FEATURES}
        )
    )
    (policy,) = resolve_policies(["equal_weight"], None)
    data = load_market_data(store, split, feature_columns=(*OFFLINE_FEATURES, *policy.feature_columns))
    with ReplayWriter(out) as writer:
        for frame in simulate_episodes(
            data, policy.make, env_cfg, episodes=1, policy_version="ew", run_id=split
        ):
            writer.append_experience(frame)


@pytest.fixture(scope="module")
def everywhere(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Experience on every bar of the store: train, embargo, validation and test."""
    out = tmp_path_factory.mktemp("offwin") / "everywhere"
    record(store, out, "all")
    return out


def calendar(store: Path) -> pd.DatetimeIndex:
    from raytrade.replay.reader import read_frame

    return pd.DatetimeIndex(sorted(read_frame(store, "bars", columns=["ts"])["ts"].unique()))


def env_config(store: Path, **data: Any) -> dict[str, Any]:
    from raytrade.tune_specs import get_spec

    spec = get_spec("bc")
    cfg = spec.env_config(str(store), spec.smoke)
    cfg["data"] = {**cfg["data"], **data}
    return cfg


def test_the_window_is_the_training_envs_bars_less_the_last(store: Path) -> None:
    """The training window is the bars the training env steps on (same split and embargo as the
    online specs); decisions are read up to the bar before its last one (their next observation)."""
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.tune_specs.offline import experience_window

    cal = calendar(store)
    train_bars = pd.DatetimeIndex(load_market_data(store, "train").ts).tz_localize("UTC")
    train, decisions = experience_window(env_config(store))
    assert (train.start, train.end, train.n_bars) == (train_bars[0], train_bars[-1], len(train_bars))
    assert (decisions.start, decisions.end) == (train_bars[0], train_bars[-2])
    assert train.end == fractional_splits(cal)["train"].end
    # the search's own fractions move it (raytrade experiment's folds)
    short, _ = experience_window(env_config(store, train_fraction=0.3, validation_fraction=0.2))
    assert short.end == fractional_splits(cal, 0.3, 0.2)["train"].end < train.end


def test_the_offline_learner_reads_only_its_training_window(
    store: Path, everywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ExperienceData`` (what each trial builds) reads the decision window: none of the
    transitions dated after it (the embargo, validation and test) reach the learner."""
    import raytrade.replay.experience as experience
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import ExperienceData, experience_window, with_experience

    spec = get_spec("bc")
    config = with_experience(spec.algo_config(env_config(store), spec.smoke), str(everywhere))
    asked: dict[str, Any] = {}
    monkeypatch.setattr(experience, "read_transitions", lambda root, **kw: asked.update(kw) or None)
    ExperienceData(config)
    train, decisions = experience_window(config.env_config)
    assert (asked["start"], asked["end"]) == (decisions.start, decisions.end)

    cal = calendar(store)
    read = read_transitions_frame(everywhere, asked["start"], asked["end"])
    logged = read_transitions_frame(everywhere)
    assert len(logged["t"]) == len(cal) - 1  # a transition on every bar but the last
    assert len(read["t"]) == train.n_bars - 1  # every training bar's but the last
    assert sorted(read["t"]) == list(range(train.n_bars - 1))  # the episode's first steps, none later
    count = window_count(everywhere, asked["start"], asked["end"])
    assert (count.inside, count.before, count.after) == (train.n_bars - 1, 0, len(cal) - train.n_bars)


def test_the_embargo_and_the_last_training_bar_are_not_read(store: Path, everywhere: Path) -> None:
    """Transitions decided on the training window's last bar (next observation in the embargo) and
    on the embargo's bars are logged, and left out."""
    from raytrade.replay.reader import read_frame
    from raytrade.tune_specs.offline import experience_window

    splits = fractional_splits(calendar(store))
    train, decisions = experience_window(env_config(store))
    logged = read_frame(everywhere, "experience", columns=["ts"])["ts"]
    gap = logged[(logged >= train.end) & (logged < splits["validation"].start)].unique()
    assert len(gap) == EMBARGO_BARS + 1  # the last training bar and the embargo's bars are logged
    assert window_count(everywhere, decisions.start, gap.min()).inside == train.n_bars  # one more
    assert window_count(everywhere, decisions.start, decisions.end).inside == train.n_bars - 1


def test_experience_with_no_transition_in_the_training_window_is_refused_naming_both(
    store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.tune import TuneOptions, experience_window
    from raytrade.tune_specs import get_spec

    later = tmp_path / "later"
    record(store, later, "validation")
    record(store, later, "test")
    splits = fractional_splits(calendar(store))
    opts = TuneOptions(spec="cql", replay=store, experience=later, smoke=True)
    with pytest.raises(ExperienceError) as refused:
        experience_window(opts, get_spec("cql"))
    message = str(refused.value)
    train = splits["train"]
    assert f"the training window {train.start.date()} .. {train.end.date()} less its last bar" in message
    first = splits["validation"].start.isoformat()
    assert f"dated {first} .. " in message and str(later) in message
    # a trial built without the CLI's check refuses the same way
    from raytrade.tune_specs.offline import ExperienceData, with_experience

    spec = get_spec("cql")
    config = with_experience(spec.algo_config(env_config(store), spec.smoke), str(later))
    with pytest.raises(ExperienceError, match="lies in the training window"):
        ExperienceData(config)


def test_the_run_record_holds_the_window_and_what_was_left_out(store: Path, everywhere: Path) -> None:
    from raytrade.cluster.tune import TuneOptions, run_record
    from raytrade.tune_specs import get_spec

    opts = TuneOptions(spec="bc", replay=store, experience=everywhere, smoke=True, wandb="disabled")
    seen = run_record(opts, get_spec("bc")).provenance.experience
    assert seen is not None and seen.window is not None
    n, train = len(calendar(store)), fractional_splits(calendar(store))["train"]
    assert (seen.window.train_start, seen.window.train_end) == (train.start, train.end)
    assert (seen.window.transitions, seen.window.left_out) == (train.n_bars - 1, n - train.n_bars)


@pytest.mark.parametrize("spec", ["bc", "cql", "iql", "marwil"])
def test_tune_refuses_a_tilt_action_mode_for_an_offline_spec(
    store: Path, everywhere: Path, spec: str
) -> None:
    from raytrade.cluster.tune import tune_command

    args = ["--spec", spec, "--replay", str(store), "--experience", str(everywhere), "--smoke"]
    result = CliRunner().invoke(tune_command, [*args, "--action-mode", "tilt:kelly_lite", "--no-wandb"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: --action-mode tilt:kelly_lite: spec {spec!r} is offline")


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--no-trade-band", "0.01"), ("--turnover-penalty", "0.001"), ("--cost-profile", "p.json")],
)
def test_tune_refuses_env_settings_the_experience_was_not_recorded_under(
    store: Path, everywhere: Path, flag: str, value: str
) -> None:
    from raytrade.cluster.tune import tune_command

    args = ["--spec", "bc", "--replay", str(store), "--experience", str(everywhere), "--smoke", "--no-wandb"]
    result = CliRunner().invoke(tune_command, [*args, flag, value])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {flag} {value}: spec 'bc' is offline")
