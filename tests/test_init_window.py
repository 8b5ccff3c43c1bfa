"""``raytrade tune --init``: a version whose weights saw this search's validation or test bars is
refused before Ray starts (``tune_specs.init_weights.check_training_window``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from raytrade.envs.config import ReplayDataConfig
from raytrade.envs.replay_loader import split_calendar
from raytrade.models.manifest import Manifest
from raytrade.replay import read_frame
from raytrade.replay.fingerprint import data_fingerprint
from raytrade.tune_specs.init_weights import InitConflictError, check_training_window
from tests.test_registry import manifest_record

LABEL = "registry:alpha@1"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store, the same store grown by the bars of the months after it), 2 equities, daily."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    base = tmp_path_factory.mktemp("init-window")
    bars = generate(n_symbols=2, years=1.5, seed=5).bars
    cut = bars["ts"].sort_values().unique()[250]
    short, grown = base / "short", base / "grown"
    ingest_frames(short, bars[bars["ts"] < cut].reset_index(drop=True), show_progress=False)
    shutil.copytree(short, grown)
    ingest_frames(grown, bars, show_progress=False)  # appends the later bars
    return short, grown


def _data(store: Path, **fractions: float) -> dict[str, Any]:
    return {"kind": "replay", "root": str(store), "split": "train", **fractions}


def _window(store: Path, split: str, **fractions: float) -> pd.DatetimeIndex:
    return split_calendar(ReplayDataConfig.model_validate({**_data(store, **fractions), "split": split}))


def _dates(calendar: pd.DatetimeIndex) -> str:
    return f"{calendar[0].date()} .. {calendar[-1].date()}"


def _manifest(
    trained_on: Path, recorded: pd.DatetimeIndex | None = None, how: str = "experience", **fractions: float
) -> Manifest:
    """A version trained on the train split of ``trained_on`` at ``fractions`` (the fingerprint of
    that store now); ``recorded``: the training window its manifest records, ``how``: as an offline
    version's experience window, or as the ``train_window`` every search records since."""
    sha, files = data_fingerprint(trained_on)
    data: dict[str, Any] = {"kind": "replay", "root": str(trained_on), "sha256": sha, "files": files}
    if recorded is not None and how == "train_window":
        data["train_window"] = {"start": recorded[0], "end": recorded[-1]}
    elif how == "experience, every date":  # an offline version from before experience windows
        data["experience"] = {"root": str(trained_on), "sha256": "2" * 64, "files": 1, "window": None}
    elif recorded is not None:
        window = {"train_start": recorded[0], "train_end": recorded[-1], "start": recorded[0]}
        window |= {"end": recorded[-2], "transitions": 10, "left_out": 0}
        data["experience"] = {"root": str(trained_on), "sha256": "2" * 64, "files": 1, "window": window}
    env_config = {"data": _data(trained_on, **fractions), "feature_columns": ["ret_1"], "flat_obs": True}
    symbols = sorted(set(read_frame(trained_on, "bars", columns=["symbol"])["symbol"].astype(str)))
    record = manifest_record(
        data={**data, "symbols": symbols},  # the store's universe, as a search on it records
        n_assets=len(symbols),
        config={"env": "raytrade/PortfolioEnv-v0", "env_config": env_config},
    )
    return Manifest.model_validate(json.loads(json.dumps(record, default=str)))


def _check(store: Path, manifest: Manifest, **fractions: float) -> None:
    check_training_window(_data(store, **fractions), manifest, data_fingerprint(store)[0], LABEL)


def test_a_version_trained_on_a_longer_train_split_is_refused_naming_both_windows(
    stores: tuple[Path, Path],
) -> None:
    store = stores[1]
    theirs, validation = (
        _window(store, "train", train_fraction=0.8, validation_fraction=0.1),
        _window(store, "validation"),
    )
    match = (
        rf"{LABEL}'s training window {_dates(theirs)} \(recomputed on this store.*\) reaches into this "
        rf"search's validation/test bars \(validation window {_dates(validation)}\)"
    )
    with pytest.raises(InitConflictError, match=match):
        _check(store, _manifest(store, train_fraction=0.8, validation_fraction=0.1))


def test_a_version_trained_with_the_same_fractions_is_accepted(stores: tuple[Path, Path]) -> None:
    store = stores[1]
    _check(store, _manifest(store, train_fraction=0.6, validation_fraction=0.2))
    _check(store, _manifest(store, train_fraction=0.6), validation_fraction=0.3)  # its validation is ours


def test_a_training_window_ending_inside_the_embargo_is_refused(stores: tuple[Path, Path]) -> None:
    store = stores[1]
    n = len(_window(store, "all"))
    ours, theirs = _window(store, "train"), round(n * 0.6) + 2  # 2 bars past our train split
    assert theirs < n * 0.6 + 5  # still before our validation window, inside the 5-bar embargo
    with pytest.raises(InitConflictError, match=r"ends 3 bar\(s\) before .* less than its embargo of 5"):
        _check(store, _manifest(store, train_fraction=theirs / n))
    assert len(ours) == round(n * 0.6)


@pytest.mark.parametrize("direction", ["grown since", "shrunk since"])
def test_a_version_from_another_state_of_the_store_is_refused_as_unknown(
    stores: tuple[Path, Path], direction: str
) -> None:
    """Same fractions, but the store changed since the version trained: its window cannot be
    recomputed (trained on the longer store, it did see this search's validation bars), and the
    manifest records none: refused, fail closed, either way."""
    short, grown = stores
    trained_on, searched = (short, grown) if direction == "grown since" else (grown, short)
    match = rf"{LABEL} trained on the store {trained_on} .* cannot show its weights did not see"
    with pytest.raises(InitConflictError, match=match):
        _check(searched, _manifest(trained_on))


@pytest.mark.parametrize("how", ["train_window", "experience"])
def test_a_recorded_training_window_decides_on_a_grown_store(stores: tuple[Path, Path], how: str) -> None:
    """A version records its training window (every search since ``data.train_window``, an offline
    one also its experience window): trained on the shorter store, it ended before the grown store's
    validation window (accepted); trained on the grown one, it reaches into the shorter store's
    validation window (refused)."""
    short, grown = stores
    _check(grown, _manifest(short, recorded=_window(short, "train"), how=how))
    with pytest.raises(InitConflictError, match=r"\(as its manifest records it\) reaches into"):
        _check(short, _manifest(grown, recorded=_window(grown, "train"), how=how))


def test_a_search_records_its_training_window_and_promote_copies_it(stores: tuple[Path, Path]) -> None:
    from raytrade.cluster.tune import training_window

    store = stores[1]
    expected = _window(store, "train", train_fraction=0.6, validation_fraction=0.2)
    env_config = {
        "data": {**_data(store, train_fraction=0.6, validation_fraction=0.2), "split": "validation"}
    }
    recorded = training_window(env_config)
    assert recorded is not None
    assert (pd.Timestamp(recorded.start), pd.Timestamp(recorded.end)) == (expected[0], expected[-1])
    assert training_window({"data": {"kind": "synthetic"}}) is None
    from types import SimpleNamespace

    from raytrade.cluster.promote import _data_section
    from raytrade.cluster.tune import provenance
    from raytrade.replay.remote import location

    validation = training_window(env_config, "validation")  # where the checkpoints are chosen
    assert validation is not None
    expected_validation = _window(store, "validation", train_fraction=0.6, validation_fraction=0.2)
    assert (pd.Timestamp(validation.start), pd.Timestamp(validation.end)) == (
        expected_validation[0],
        expected_validation[-1],
    )
    prov = provenance(store, train_window=recorded, validation_window=validation)
    run = SimpleNamespace(replay=location(str(store)), provenance=prov)
    section = _data_section(env_config, run)  # type: ignore[arg-type]
    assert section["train_window"] == recorded.model_dump()
    assert section["validation_window"] == validation.model_dump()
    data = Manifest.model_validate(  # what promote writes reads back as the windows the checks use
        manifest_record(data={**section, "symbols": ["A", "B"]})
    ).data
    assert (data.train_window, data.validation_window) == (recorded, validation)


def test_a_version_trained_on_synthetic_data_is_accepted(stores: tuple[Path, Path]) -> None:
    record = manifest_record()  # synthetic data: it saw no store's bars
    _check(stores[1], Manifest.model_validate(record))


def test_the_cli_refuses_the_version_before_ray_starts(
    stores: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from raytrade.cluster import local_cluster
    from raytrade.cluster.errors import EXIT_BAD_INPUT
    from raytrade.cluster.tune import tune_command
    from raytrade.models.manifest import manifest_json

    def no_ray(*_: Any, **__: Any) -> None:
        raise AssertionError("Ray started")

    monkeypatch.setattr(local_cluster, "init_ray", no_ray)
    store, registry, storage = stores[1], tmp_path / "registry", tmp_path / "runs"
    (registry / "alpha" / "1").mkdir(parents=True)
    (registry / "alpha" / "1" / "manifest.json").write_text(
        manifest_json(_manifest(store, train_fraction=0.8, validation_fraction=0.1))
    )
    args = ["--spec", "ppo", "--replay", str(store), "--smoke", "--no-wandb", "--storage", str(storage)]
    result = CliRunner().invoke(
        tune_command, [*args, "--init", "registry:alpha", "--registry", str(registry)]
    )
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    theirs, validation = (
        _window(store, "train", train_fraction=0.8, validation_fraction=0.1),
        _window(store, "validation"),
    )
    assert f"training window {_dates(theirs)}" in result.output
    assert f"validation window {_dates(validation)}" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not storage.exists()


def test_an_offline_version_that_read_every_date_is_refused_even_on_its_own_store(
    stores: tuple[Path, Path],
) -> None:
    """Its experience window is unrecorded: it learnt from every logged date, validation and test
    included, whatever its env config's train split says."""
    store = stores[1]
    with pytest.raises(InitConflictError, match=r"offline version recorded before experience windows"):
        _check(store, _manifest(store, how="experience, every date"))


@pytest.mark.parametrize("theirs", [0.3, 0.4, 0.45, 0.5, 0.55, 0.6])
def test_an_accepted_warm_start_ends_inside_the_searchs_own_recorded_window(
    stores: tuple[Path, Path], theirs: float
) -> None:
    """B started from A carries what A saw: B's recorded window must reach A's end. It does without
    recording A: a version is accepted only when its window ends at least the embargo before B's
    validation window, so no later than B's own training window ends (``training_window``)."""
    from raytrade.cluster.tune import training_window

    grown = stores[1]
    ours = {"train_fraction": 0.5, "validation_fraction": 0.2}
    ancestor = _manifest(grown, train_fraction=theirs, validation_fraction=0.1)
    recorded = training_window({"data": _data(grown, **ours)})
    assert recorded is not None
    try:
        _check(grown, ancestor, **ours)
    except InitConflictError:
        assert theirs > 0.5  # refused: it saw this search's validation bars
        return
    ancestor_end = _window(grown, "train", train_fraction=theirs, validation_fraction=0.1)[-1]
    assert ancestor_end <= pd.Timestamp(recorded.end)


def test_a_recorded_window_the_recomputation_no_longer_covers_still_counts(stores: tuple[Path, Path]) -> None:
    """Same store, same fingerprint, but a version recorded a training window its recomputation on
    today's calendar does not cover (the calendar rule changed: stamps where nothing traded are no
    bars since 2026-12-05, which moves fractional splits): what it trained on is the recorded window,
    and a search whose validation bars it reaches is refused."""
    store = stores[1]
    all_bars, ours = _window(store, "all"), _window(store, "train")
    later = all_bars[all_bars <= all_bars[len(ours) + 7]]  # 8 bars past our train split: into validation
    manifest = _manifest(store, recorded=later, how="train_window")  # recorded; recomputed: ours
    with pytest.raises(InitConflictError, match=r"recomputed on this store and widened to the window its"):
        _check(store, manifest)
    _check(store, _manifest(store, recorded=ours, how="train_window"))  # the same window: accepted


# ------------------------------------------------------------------------ chosen on our validation window


def test_a_version_chosen_on_this_searchs_validation_window_is_named_with_that_window(
    stores: tuple[Path, Path],
) -> None:
    """A version searched with the same fractions chose its checkpoint on this search's validation
    bars (its training window is accepted: it ends the embargo before them); one whose validation
    window ends before ours begins did not."""
    from raytrade.tune_specs.init_weights import validation_overlap

    store = stores[1]
    sha = data_fingerprint(store)[0]
    validation = _window(store, "validation")
    same = _manifest(store)
    _check(store, same)  # accepted by the training-window rule: the defect let it pass silently
    assert validation_overlap(_data(store), same, sha) == (validation[0], validation[-1])
    earlier = _manifest(store, train_fraction=0.3, validation_fraction=0.1)
    assert validation_overlap(_data(store), earlier, sha) is None


def test_tune_warns_naming_the_version_and_the_window_it_was_chosen_on(
    stores: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tune --init`` from a version chosen on the new search's validation window went ahead with
    no word (/tmp/h37c/repro_init.sh); it warns before Ray starts (``run_record`` records what
    ``init_validation`` returns in the run file)."""
    from click.testing import CliRunner

    from raytrade.cluster import local_cluster
    from raytrade.cluster.tune import TuneOptions, get_spec, init_validation, tune_command
    from raytrade.models.manifest import manifest_json

    def no_ray(*_: Any, **__: Any) -> None:
        raise AssertionError("Ray started")

    monkeypatch.setattr(local_cluster, "init_ray", no_ray)
    store, registry, storage = stores[1], tmp_path / "registry", tmp_path / "runs"
    (registry / "alpha" / "1").mkdir(parents=True)
    (registry / "alpha" / "1" / "manifest.json").write_text(manifest_json(_manifest(store)))
    args = ["--spec", "ppo", "--replay", str(store), "--smoke", "--no-wandb", "--storage", str(storage)]
    init_args = ["--init", "registry:alpha", "--registry", str(registry)]
    result = CliRunner().invoke(tune_command, [*args, *init_args])  # (then stops: the version has no module)
    validation = _window(store, "validation")
    assert (
        f"warning: --init registry:alpha@1: its checkpoint was chosen on {_dates(validation)}, which "
        "overlaps this search's validation window: this search's validation scores start from the best "
        "of that choice on the same bars (selection-biased, not out of sample); how many checkpoints "
        "were compared to choose it is not recorded, so select makes no claim about this search's winner"
    ) in result.output.splitlines()
    opts = TuneOptions(spec="ppo", replay=store, smoke=True, init="registry:alpha@1", registry=registry)
    init = init_validation(opts, get_spec("ppo"))
    assert init is not None
    assert (init.version, init.checkpoints_compared) == ("registry:alpha@1", None)  # /runs/ppo: absent
    assert (pd.Timestamp(init.validation_window.start), pd.Timestamp(init.validation_window.end)) == (
        validation[0],
        validation[-1],
    )


def test_the_checkpoints_a_version_was_chosen_among_are_its_selections_else_its_runs(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    from raytrade.cluster.run_file import read_run_file, version_checkpoints_compared, write_run_file
    from raytrade.models.manifest import InitValidation, TrainWindow
    from tests.test_select import _crafted_run

    store = stores[1]
    run = _crafted_run(tmp_path / "run", store, data_fingerprint(store)[0], compared=(3, 2))
    manifest = _manifest(store)
    at = lambda folder: manifest.model_copy(  # noqa: E731
        update={"source": manifest.source.model_copy(update={"run": str(folder)})}
    )
    assert version_checkpoints_compared(at(run)) == 5
    assert version_checkpoints_compared(at(tmp_path / "deleted")) is None
    window = TrainWindow(start=pd.Timestamp("2020-01-01", tz="UTC"), end=pd.Timestamp("2020-03-01", tz="UTC"))
    record = read_run_file(run)
    for inherited, total in ((7, 12), (None, None)):  # the run itself started from a version chosen there
        init = InitValidation(
            version="registry:beta@2", validation_window=window, checkpoints_compared=inherited
        )
        provenance = record.provenance.model_copy(update={"init_validation": init})
        write_run_file(run, record.model_copy(update={"provenance": provenance}))
        assert version_checkpoints_compared(at(run)) == total
