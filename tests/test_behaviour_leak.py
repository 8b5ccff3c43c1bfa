"""A registry behaviour policy must not pass what it saw of the validation/test bars to offline RL:
``raytrade simulate-experience`` asks it (``trained_on``) and refuses one that saw bars after the
train split unless ``--behaviour-in-sample`` (then marked); an offline search records the behaviour
policies of its experience, and its versions' training window ends no earlier than theirs
(``models.training_window``), so ``raytrade evaluate`` refuses the windows they saw."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.simulate_experience import SimulateOptions, SimulateOutcome, simulate_experience
from raytrade.envs.evaluation.harness import InSampleError, prepare
from raytrade.models.manifest import ExperienceWindow, Manifest
from raytrade.models.training_window import version_training_window
from raytrade.replay.behaviour import (
    BEHAVIOUR_DIR,
    SIMULATED_REGISTRY_RUN,
    BehaviourPolicy,
    behaviour_in_window,
    read_behaviour,
)
from raytrade.replay.errors import InputError
from raytrade.replay.fingerprint import data_fingerprint
from tests.test_evaluation import FakeHandle
from tests.test_evaluation_insample import CFG, MODEL, VersionHandle, _split
from tests.test_init_window import _manifest

POLICY = "registry:alpha@1"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("behaviour") / "store"
    market = generate(n_symbols=3, years=2.0, seed=3)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


def _simulate(
    monkeypatch: pytest.MonkeyPatch, store: Path, out: Path, handle: Any, in_sample: bool = False
) -> SimulateOutcome:
    import raytrade.cluster.registry_access as access

    monkeypatch.setattr(access, "registry_loader", lambda: lambda ref, registry: handle)
    opts = SimulateOptions(policy=POLICY, replay=store, out=out, behaviour_in_sample=in_sample)
    return simulate_experience(opts)


def _day(ts: pd.Timestamp) -> datetime:
    return ts.to_pydatetime()


def _changed_store(store: Path, **fractions: float) -> Manifest:
    """A version whose manifest records its training window at ``fractions``, trained on ``store``
    when it had other files: its validation window is unknown, its training window is not."""
    recorded = _split(store, "train", **fractions)
    trained = _manifest(store, recorded=recorded, how="train_window", **fractions)
    return trained.model_copy(update={"data": trained.data.model_copy(update={"sha256": "f" * 64})})


@pytest.mark.parametrize("case", ["trained on later bars", "chosen on the validation bars"])
def test_a_behaviour_policy_that_saw_bars_after_the_train_split_is_refused(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path, case: str
) -> None:
    """The reviewer's case: it recorded such a policy's episodes without asking it anything. Trained
    on the first 80 % (the split's validation bars), or with the same splits as the store's (its
    checkpoint chosen on the validation bars the offline versions are then scored on)."""
    out = tmp_path / "exp"
    train = _split(store, "train")
    if case == "trained on later bars":
        fractions = {"train_fraction": 0.8, "validation_fraction": 0.1}
        manifest, last = _changed_store(store, **fractions), _split(store, "train", **fractions)[-1]
    else:
        manifest, last = _manifest(store), _split(store, "validation")[-1]
    with pytest.raises(InputError) as info:
        _simulate(monkeypatch, store, out, VersionHandle(manifest))
    message = str(info.value)
    assert message.startswith(f"--policy {POLICY}: {POLICY} (trained on ")
    assert f"saw bars up to {last.date()}, after the end of the train split" in message
    assert f"({train[0].date()} .. {train[-1].date()})" in message
    assert "--behaviour-in-sample" in message and len(message.splitlines()) == 1
    assert not out.exists()  # nothing recorded


def test_a_behaviour_policy_trained_and_chosen_within_the_train_split_is_recorded(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    fractions = {"train_fraction": 0.4, "validation_fraction": 0.1}
    outcome = _simulate(monkeypatch, store, out, VersionHandle(_manifest(store, **fractions)))
    theirs, validation = _split(store, "train", **fractions), _split(store, "validation", **fractions)
    assert validation[-1] < _split(store, "train")[-1]
    assert outcome.rows > 0 and outcome.warning is None
    assert outcome.run_id.startswith(SIMULATED_REGISTRY_RUN)
    record = read_behaviour(out)[outcome.run_id]
    assert record == outcome.behaviour
    assert (record.policy_version, record.known, record.in_sample) == (POLICY, True, False)
    assert (record.train_start, record.train_end) == (_day(theirs[0]), _day(theirs[-1]))
    assert record.validation_end == _day(validation[-1])


def test_the_opt_in_records_it_marked_and_warns(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    outcome = _simulate(monkeypatch, store, out, VersionHandle(_manifest(store)), in_sample=True)
    record = read_behaviour(out)[outcome.run_id]
    assert record.in_sample and record.seen_until == _day(_split(store, "validation")[-1])
    assert outcome.rows > 0
    assert outcome.warning is not None and "(--behaviour-in-sample)" in outcome.warning


def test_the_cli_refuses_in_one_line_and_records_with_the_flag_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    import raytrade.cluster.registry_access as access
    from raytrade.cluster.simulate_experience import simulate_experience_command

    handle = VersionHandle(_manifest(store))
    monkeypatch.setattr(access, "registry_loader", lambda: lambda ref, registry: handle)
    args = ["--policy", POLICY, "--replay", str(store), "--out", str(tmp_path / "exp")]
    refused = CliRunner().invoke(simulate_experience_command, args)
    assert refused.exit_code == 2 and refused.output.startswith(f"error: --policy {POLICY}: ")
    recorded = CliRunner().invoke(simulate_experience_command, [*args, "--behaviour-in-sample"])
    assert recorded.exit_code == 0, recorded.output
    assert f"warning: --policy {POLICY}: recorded although" in recorded.output


def test_an_unknown_training_window_is_recorded_as_unknown_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    """A handle that says nothing (or an older version on a changed store): as evaluate does, go on
    with a warning; the record says unknown, and the offline versions inherit it (below)."""
    out = tmp_path / "exp"
    outcome = _simulate(monkeypatch, store, out, FakeHandle())
    record = read_behaviour(out)[outcome.run_id]
    assert not record.known and record.seen_until is None
    assert outcome.warning is not None and "cannot be checked" in outcome.warning


def test_a_behaviour_policy_whose_validation_window_cannot_be_placed_is_recorded_as_unknown(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    """On a store changed since the version trained (every nightly ingest), its validation window is
    unknown: the record said "known", seen until its training end, and offline versions were then
    scored on the bars its checkpoint was chosen on without a word. Now: unknown, with a warning."""
    out = tmp_path / "exp"
    handle = VersionHandle(_changed_store(store, train_fraction=0.4, validation_fraction=0.1))
    outcome = _simulate(monkeypatch, store, out, handle)
    record = read_behaviour(out)[outcome.run_id]
    assert not record.known and "cannot be placed on this store" in record.how
    assert record.train_end is not None and record.validation_end is None
    assert outcome.warning is not None and "cannot be checked" in outcome.warning


def _window(store: Path) -> ExperienceWindow:
    train = _split(store, "train")
    return ExperienceWindow(
        train_start=_day(train[0]),
        train_end=_day(train[-1]),
        start=_day(train[0]),
        end=_day(train[-2]),
        transitions=1,
        left_out=0,
    )


def test_an_offline_search_records_the_behaviour_policies_of_its_experience(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.tune import behaviour_lines, provenance

    out = tmp_path / "exp"
    outcome = _simulate(monkeypatch, store, out, VersionHandle(_manifest(store)), in_sample=True)
    simulate_experience(SimulateOptions(policy="equal_weight", replay=store, out=out))  # no record
    prov = provenance(store, out, _window(store))
    assert prov.experience is not None and prov.experience.behaviour == [outcome.behaviour]
    (line,) = behaviour_lines(prov)
    assert line.startswith(f"warning: offline experience recorded by {POLICY} (trained on ")
    # a registry run recorded before its record existed reads as unknown; a window without it, as none
    shutil.rmtree(out / BEHAVIOUR_DIR)
    (unknown,) = behaviour_in_window(out, _window(store).start, _window(store).end)
    assert (unknown.run_id, unknown.policy_version, unknown.known) == (outcome.run_id, POLICY, False)
    assert (
        behaviour_in_window(out, pd.Timestamp("1990-01-01", tz="UTC"), pd.Timestamp("1990-02-01", tz="UTC"))
        == ()
    )


def _offline(store: Path, *behaviour: BehaviourPolicy) -> Manifest:
    """An offline version trained on ``store``'s train split, its experience recorded by ``behaviour``."""
    manifest = _manifest(store, recorded=_split(store, "train"))
    experience = manifest.data.experience
    assert experience is not None
    experience = experience.model_copy(update={"behaviour": list(behaviour)})
    return manifest.model_copy(update={"data": manifest.data.model_copy(update={"experience": experience})})


def _behaviour(store: Path, **update: Any) -> BehaviourPolicy:
    train, validation = _split(store, "train"), _split(store, "validation")
    fields = {
        "run_id": "sim:registry:alpha@1:0:abcd",
        "policy_version": POLICY,
        "known": True,
        "how": "recomputed",
        "train_start": _day(train[0]),
        "train_end": _day(train[-1]),
        "validation_end": _day(validation[-1]),
        "in_sample": True,
    }
    return BehaviourPolicy.model_validate({**fields, **update})


def test_the_offline_versions_training_window_ends_where_its_behaviour_policys_does(store: Path) -> None:
    train, validation = _split(store, "train"), _split(store, "validation")
    sha = data_fingerprint(store)[0]
    within = _behaviour(store, validation_end=None, in_sample=False)
    assert version_training_window(_offline(store, within), str(store), sha, MODEL) == (
        train[0],
        train[-1],
        "recomputed on this store, which has the fingerprint it trained on",
    )
    widened = version_training_window(_offline(store, within, _behaviour(store)), str(store), sha, MODEL)
    assert widened is not None
    start, end, how = widened
    assert (start, end) == (train[0], validation[-1])
    assert how.endswith(
        f"widened to what its behaviour policy {POLICY} (trained on {train[0].date()} .. "
        f"{train[-1].date()}, validation to {validation[-1].date()}; recomputed) saw"
    )


def _evaluate(store: Path, manifest: Manifest, split: str) -> Any:
    loader = lambda ref, registry: VersionHandle(manifest)  # noqa: E731
    cfg = CFG.model_copy(update={"split": split})
    return prepare(store, ["equal_weight", MODEL], cfg, registry=store.parent, loader=loader)


def test_evaluate_refuses_the_windows_an_offline_versions_behaviour_policy_saw(store: Path) -> None:
    """Without its behaviour policy the offline version is out of sample on the validation split (it
    starts an embargo after its training window); cloning a policy chosen on those bars, it is not."""
    _evaluate(store, _offline(store), "validation")
    with pytest.raises(InSampleError, match=rf"{MODEL} trained on .* validation \("):
        _evaluate(store, _offline(store, _behaviour(store)), "validation")
    _evaluate(store, _offline(store, _behaviour(store)), "test")  # after the behaviour's window: allowed


def test_a_behaviour_policy_of_unknown_training_window_makes_the_offline_versions_unknown(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    unknown = _behaviour(store, known=False, train_start=None, train_end=None, validation_end=None)
    with caplog.at_level(logging.WARNING):
        _evaluate(store, _offline(store, unknown), "validation")
    assert f"{MODEL}: out-of-sample cannot be checked" in caplog.text
    assert f"learnt from experience recorded by {POLICY} (training window unknown" in caplog.text


def _with_symbols(manifest: Manifest, symbols: list[str]) -> Manifest:
    return manifest.model_copy(update={"data": manifest.data.model_copy(update={"symbols": symbols})})


def test_a_registry_behaviour_policy_runs_on_its_own_universe_or_is_refused(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    """A reviewer recorded a version trained on five symbols on a store holding four of them: the
    episodes ran on the store's symbols, a universe it never trained on (``raytrade evaluate``
    refuses that). Now a symbol the store lacks is refused, naming it, and a version trained on
    fewer symbols than the store holds is recorded on its own."""
    fractions = {"train_fraction": 0.4, "validation_fraction": 0.1}
    manifest = _manifest(store, **fractions)
    stored = list(manifest.data.symbols or [])
    out = tmp_path / "exp"
    with pytest.raises(InputError, match=r"trained on symbol\(s\) ZZZ, which the store at .* does not hold"):
        _simulate(monkeypatch, store, out, VersionHandle(_with_symbols(manifest, [*stored, "ZZZ"])))
    assert not out.exists()
    outcome = _simulate(monkeypatch, store, out, VersionHandle(_with_symbols(manifest, stored[:2])))
    from raytrade.replay.reader import read_frame

    recorded = read_frame(out, "experience", columns=["symbol"])["symbol"].astype(str)
    assert outcome.rows > 0 and sorted(set(recorded)) == sorted(stored[:2])


def test_a_run_that_fails_stores_no_episode_and_no_record(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    """A reviewer's run stopped on episode 1 (a refused reward): episode 0 stayed in the table and the
    recording said two episodes, and offline searches read the orphan. Now the episodes are one
    commit: a failure leaves no row, no recording and no behaviour record."""
    from raytrade.replay.recordings import RECORDINGS_DIR
    from raytrade.replay.writer import ReplayWriter

    def refuse(self: ReplayWriter, frame: pd.DataFrame) -> Any:
        raise InputError("experience: row 396, column 'reward': refused")

    fractions = {"train_fraction": 0.4, "validation_fraction": 0.1}
    out = tmp_path / "exp"
    monkeypatch.setattr(ReplayWriter, "append_experience", refuse)
    with pytest.raises(InputError, match="row 396"):
        _simulate(monkeypatch, store, out, VersionHandle(_manifest(store, **fractions)))
    assert not list((out / RECORDINGS_DIR).glob("*.json")) and read_behaviour(out) == {}
    assert not (out / "experience").exists()


def test_a_refused_row_in_a_later_episode_stores_nothing(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    """Episode 1 carries a reward the table refuses (beyond ln 10): episode 0 is not stored either."""
    import raytrade.envs.experience as experience
    from raytrade.replay.recordings import RECORDINGS_DIR
    from raytrade.replay.validation import ReplayValidationError

    honest = experience.simulate_episodes

    def second_refused(*args: Any, **kwargs: Any) -> Any:
        for k, frame in enumerate(honest(*args, **kwargs)):
            yield frame.assign(reward=27.5) if k == 1 else frame

    monkeypatch.setattr(experience, "simulate_episodes", second_refused)
    out = tmp_path / "exp"
    opts = SimulateOptions(policy="equal_weight", replay=store, out=out, episodes=2, noise=0.01)
    with pytest.raises(ReplayValidationError, match="reward"):
        simulate_experience(opts)
    assert not (out / "experience").exists() and not list((out / RECORDINGS_DIR).glob("*.json"))


def test_a_write_interrupted_after_an_episode_leaves_it_counted(
    monkeypatch: pytest.MonkeyPatch, store: Path, tmp_path: Path
) -> None:
    from raytrade.replay.reader import read_frame
    from raytrade.replay.recordings import read_recordings
    from raytrade.replay.writer import ReplayWriter

    honest = ReplayWriter.append_experience
    calls: list[int] = []

    def fails_second(self: ReplayWriter, frame: pd.DataFrame) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return honest(self, frame)

    monkeypatch.setattr(ReplayWriter, "append_experience", fails_second)
    out = tmp_path / "exp"
    opts = SimulateOptions(policy="equal_weight", replay=store, out=out, episodes=3, noise=0.01)
    with pytest.raises(OSError, match="disk full"):
        simulate_experience(opts)
    (run,) = read_recordings(out)
    assert run.episodes == 1
    assert read_frame(out, "experience", columns=["episode_id"])["episode_id"].nunique() == 1


def test_a_window_holding_an_unadjusted_split_is_named_when_its_experience_is_recorded(
    tmp_path: Path,
) -> None:
    """A 4:1 split left unadjusted in one symbol's train bars became a +300 % reward nothing after
    the ingest mentioned. Now simulate-experience names the bar."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=3, years=2.0, seed=3).bars
    first = sorted(bars["symbol"].unique())[0]
    day = sorted(bars.loc[bars["symbol"] == first, "ts"])[100]
    after = (bars["symbol"] == first) & (bars["ts"] >= day)
    for column in ("open", "high", "low", "close", "bid", "ask"):
        if column in bars:
            bars.loc[after, column] = bars.loc[after, column] / 4.0
    bars.loc[after, "volume"] = bars.loc[after, "volume"] * 4.0
    root = tmp_path / "store"
    ingest_frames(root, bars, show_progress=False)
    outcome = simulate_experience(SimulateOptions(policy="equal_weight", replay=root, out=tmp_path / "exp"))
    (warning,) = outcome.suspected_splits
    assert warning.startswith(f"{first}: the bar of {day.date()} looks like a 4:1 split left unadjusted")
    assert warning.endswith("the experience recorded over it carries that move as a reward")
    result = CliRunner().invoke(
        __import__("raytrade.cluster.cli", fromlist=["main"]).main,
        [
            "simulate-experience",
            "--policy",
            "equal_weight",
            "--replay",
            str(root),
            "--out",
            str(tmp_path / "e2"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"warning: {warning}" in result.output
