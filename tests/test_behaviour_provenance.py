"""Behaviour records (``replay.behaviour``) are provenance, not training input: an offline learner
reads the same transitions, from the same files, whatever records its store holds, so the experience
fingerprint (``replay.fingerprint.EXPERIENCE_TABLES``) covers everything it learns from; the records
a search used are copied whole into its run file and manifest (``data.experience.behaviour``), and
that copy, never the store's files, is what a version's training window is widened by."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from raytrade.models.training_window import version_training_window
from raytrade.replay.behaviour import BEHAVIOUR_DIR, BehaviourPolicy, behaviour_in_window, write_behaviour
from raytrade.replay.fingerprint import EXPERIENCE_TABLES, data_fingerprint
from tests.test_behaviour_leak import _behaviour, _offline
from tests.test_evaluation_insample import MODEL, _split
from tests.test_offline_window import env_config


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(store, run id): 3 equities, 1.5 years daily, and in its experience table one
    ``raytrade simulate-experience`` run of ``equal_weight`` over its train split."""
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("behaviour_provenance") / "store"
    market = generate(n_symbols=3, years=1.5, seed=2)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    outcome = simulate_experience(SimulateOptions(policy="equal_weight", replay=root, out=root))
    return root, outcome.run_id


def _training_inputs(store: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What an offline trial learns from: the read ``ExperienceData`` asks for (root, window,
    sizes, universe, encoding), the files that read covers, the transitions it yields (the pandas
    read: the same assembly), and the experience fingerprint the run file records."""
    import raytrade.replay.experience as experience
    from raytrade.replay.reader import table_files
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import ExperienceData, with_experience

    spec = get_spec("bc")
    config = with_experience(spec.algo_config(env_config(store), spec.smoke), str(store))
    asked: dict[str, Any] = {}
    with monkeypatch.context() as patch:
        patch.setattr(experience, "read_transitions", lambda root, **kw: asked.update(root=root, **kw))
        ExperienceData(config)
    read = {k: v for k, v in asked.items() if k != "root"}
    transitions = experience.read_transitions_frame(asked["root"], **read)
    return {
        "asked": asked,
        "files": table_files(asked["root"], "experience", asked["start"], asked["end"]),
        "transitions": {name: values.tolist() for name, values in transitions.items()},
        "fingerprint": data_fingerprint(store, EXPERIENCE_TABLES),
    }


def _record(recorded: tuple[Path, str], **update: Any) -> BehaviourPolicy:
    """A record of the store's run (that of every transition read) that saw the validation bars."""
    store, run_id = recorded
    return _behaviour(store, run_id=run_id, **update)


def test_a_behaviour_record_added_or_changed_changes_no_training_input(
    recorded: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is of the very run whose transitions are read (the search's provenance picks it
    up), yet what the learner reads, and the fingerprint of it, stay byte for byte the same."""
    store = recorded[0]
    shutil.rmtree(store / BEHAVIOUR_DIR, ignore_errors=True)
    without = _training_inputs(store, monkeypatch)
    assert len(without["transitions"]["t"]) > 0 and without["files"]
    start, end = without["asked"]["start"], without["asked"]["end"]

    added = _record(recorded)
    write_behaviour(store, added)
    assert behaviour_in_window(store, start, end) == (added,)
    assert _training_inputs(store, monkeypatch) == without

    changed = _record(recorded, known=False, train_start=None, train_end=None, validation_end=None)
    write_behaviour(store, changed)
    assert behaviour_in_window(store, start, end) == (changed,)
    assert _training_inputs(store, monkeypatch) == without


def test_a_versions_training_window_reads_its_manifests_records_not_the_stores(
    recorded: tuple[Path, str],
) -> None:
    """``raytrade evaluate`` and ``tune --init`` widen an offline version's training window by the
    records its manifest copied when its search started: a record written to the store since (here
    one that saw the validation bars) changes nothing for it."""
    store = recorded[0]
    train = _split(store, "train")
    sha = data_fingerprint(store)[0]
    version = _offline(store, _record(recorded, validation_end=None, in_sample=False))
    before = version_training_window(version, str(store), sha, MODEL)
    assert before is not None and (before[0], before[1]) == (train[0], train[-1])
    write_behaviour(store, _record(recorded))
    assert version_training_window(version, str(store), sha, MODEL) == before
    # the same record in its manifest would have widened it to the validation bars
    widened = version_training_window(_offline(store, _record(recorded)), str(store), sha, MODEL)
    assert widened is not None and widened[1] == _split(store, "validation")[-1]
