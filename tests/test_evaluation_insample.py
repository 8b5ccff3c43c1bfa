"""``raytrade evaluate`` never reports a registry model on bars it trained on as out of sample
(``envs.evaluation.insample``): such windows are refused, or evaluated with ``--in-sample`` and
labelled IN-SAMPLE; an unknown training window is evaluated with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from raytrade.envs.config import ReplayDataConfig
from raytrade.envs.evaluation.document import build_report
from raytrade.envs.evaluation.harness import EvaluationConfig, InSampleError, evaluate, prepare
from raytrade.envs.evaluation.insample import first_allowed_start
from raytrade.envs.evaluation.render import render_markdown, report_blocks
from raytrade.envs.replay_loader import split_calendar
from raytrade.models.manifest import Manifest
from raytrade.models.registry_load import PolicyHandle
from raytrade.replay.splits import EMBARGO_BARS
from tests.test_evaluation import FakeHandle
from tests.test_init_window import _manifest

CFG = EvaluationConfig(scenarios=(), seeds=(0,))
MODEL = "registry:alpha@1"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("insample") / "store"
    market = generate(n_symbols=3, years=2.0, seed=3)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


class VersionHandle(FakeHandle):
    """Buy-and-hold with a registry version's manifest and ``PolicyHandle.trained_on`` itself."""

    name, version = "alpha", 1
    trained_on = PolicyHandle.trained_on

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest


def _loader(manifest: Manifest | None) -> object:
    return lambda ref, registry: FakeHandle() if manifest is None else VersionHandle(manifest)


def _split(store: Path, split: str, **fractions: float) -> pd.DatetimeIndex:
    data = {"kind": "replay", "root": str(store), "split": split, **fractions}
    return split_calendar(ReplayDataConfig.model_validate(data))


def _prepare(store: Path, manifest: Manifest | None, **update: object):  # type: ignore[no-untyped-def]
    cfg = CFG.model_copy(update=update)
    return prepare(store, ["equal_weight", MODEL], cfg, registry=store.parent, loader=_loader(manifest))


def _dates(cal: pd.DatetimeIndex) -> str:
    return f"{cal[0].date()} .. {cal[-1].date()}"


def test_walk_forward_folds_inside_the_training_window_are_refused(store: Path) -> None:
    """A model trained with tune's default split (train: the first 60 %) and folds cut from half-way
    through the store: the first fold holds its training bars."""
    train, everything = _split(store, "train"), _split(store, "all")
    allowed = first_allowed_start(everything, train[-1], EMBARGO_BARS)
    with pytest.raises(InSampleError) as info:
        _prepare(store, _manifest(store), walk_forward=3)
    message = str(info.value)
    assert message.startswith(f"{MODEL} trained on {_dates(train)} (recomputed on this store")
    assert "test_0 (" in message and f"start before {allowed.date()}" in message
    assert "--in-sample" in message and len(message.splitlines()) == 1
    assert list(info.value.reasons) == [MODEL]


def test_a_test_split_inside_a_longer_training_window_is_refused(store: Path) -> None:
    """A model searched with train fraction 0.85 (an experiment fold's), evaluated on --split test."""
    train = _split(store, "train", train_fraction=0.85, validation_fraction=0.05)
    manifest = _manifest(
        store, recorded=train, how="train_window", train_fraction=0.85, validation_fraction=0.05
    )
    with pytest.raises(InSampleError, match=rf"trained on {_dates(train)} .* test \("):
        _prepare(store, manifest)


def test_a_window_after_the_training_window_passes_and_flags_the_validation_overlap(store: Path) -> None:
    """Trained on the first 50 %: the default validation split (60-80 %) starts after its training
    window and the embargo (accepted) but overlaps its own validation window (flagged)."""
    manifest = _manifest(store, train_fraction=0.5)
    plan = _prepare(store, manifest, split="validation")
    report = build_report(evaluate(plan))
    sample = report.policies[MODEL].sample
    train, validation = (
        _split(store, "train", train_fraction=0.5),
        _split(store, "validation", train_fraction=0.5),
    )
    assert sample is not None and sample.status == "selection_biased" and sample.in_sample_windows == ()
    assert (sample.train.start, sample.train.end, sample.train.n_bars) == (  # type: ignore[union-attr]
        str(train[0].date()),
        str(train[-1].date()),
        len(train),
    )
    assert sample.validation is not None and sample.validation.start == str(validation[0].date())
    assert sample.validation_overlap == ("validation",)
    assert report.policies[MODEL].folds[0].train == sample.train  # the model's, not the fold's
    text = render_markdown("r", report_blocks(report, []))
    assert "selection-biased" in text and f"| {MODEL} [SELECTION-BIASED] |" in text
    assert report.policies[MODEL].selection_biased and report.ranked()[-1] == MODEL  # after the clean ones
    from raytrade.cluster.evaluate import report_warnings  # the console's warning lines say it too

    assert [w for w in report_warnings(report) if "kill switch" not in w] == [
        f"{MODEL}: windows validation overlap its validation window {sample.validation.start}.."
        f"{sample.validation.end}, on which its checkpoint was chosen: selection-biased"
    ]


def test_after_training_starts_the_folds_after_the_training_and_validation_windows(store: Path) -> None:
    """The checkpoint was chosen on the validation window (known here: the store is unchanged), so the
    folds start after it too: a fold there would be selection-biased (they started right after the
    training window and tested mostly on the validation window)."""
    train, validation, everything = _split(store, "train"), _split(store, "validation"), _split(store, "all")
    plan = _prepare(store, _manifest(store), walk_forward=3, after_training=True)
    first = pd.Timestamp(plan.windows[0].data.ts[0], tz="UTC")
    assert first == first_allowed_start(everything, validation[-1], EMBARGO_BARS)
    assert first > validation[-1] > train[-1]
    report = build_report(evaluate(plan))
    model, baseline = report.policies[MODEL], report.policies["equal_weight"]
    assert model.sample is not None and model.sample.validation_overlap == ()
    assert all(f.train is not None and f.train.end == str(train[-1].date()) for f in model.folds)
    assert [f.train for f in baseline.folds] != [f.train for f in model.folds]  # baselines keep the fold's
    assert model.sample is not None and model.sample.status == "out_of_sample"


def test_in_sample_opt_in_labels_the_figures_and_ranks_them_last(store: Path) -> None:
    plan = _prepare(store, _manifest(store), walk_forward=3, in_sample=True)
    report = build_report(evaluate(plan))
    model = report.policies[MODEL]
    assert model.in_sample and model.sample is not None and model.sample.status == "IN-SAMPLE"
    assert model.folds[0].in_sample and "test_0" in model.sample.in_sample_windows
    assert not model.folds[-1].in_sample
    assert report.ranked()[-1] == MODEL
    text = render_markdown("r", report_blocks(report, []))
    assert f"IN-SAMPLE: {MODEL} was evaluated on bars it trained on" in text
    assert f"| {MODEL} [IN-SAMPLE] |" in text


def test_stress_scenarios_on_an_in_sample_split_are_refused_in_walk_forward_mode(store: Path) -> None:
    """--after-training moves the folds, not the stress scenarios' split (the last 20 % here is inside a
    0.85 training window)."""
    manifest = _manifest(store, train_fraction=0.85, validation_fraction=0.05)
    with pytest.raises(InSampleError, match=r"stress scenarios on split test"):
        _prepare(store, manifest, walk_forward=2, after_training=True, scenarios=("flash_crash",))


@pytest.mark.parametrize("handle", ["no trained_on", "store changed, nothing recorded"])
def test_an_unknown_training_window_is_evaluated_with_a_warning(
    store: Path, handle: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An older version trained on another state of the store records no window (or a handle that
    says nothing): out-of-sample cannot be checked; evaluated, warned in the log and the report."""
    if handle == "no trained_on":
        manifest = None
    else:  # trained on this store when it had other files (another fingerprint)
        trained = _manifest(store)
        manifest = trained.model_copy(update={"data": trained.data.model_copy(update={"sha256": "f" * 64})})
    with caplog.at_level(logging.WARNING):
        plan = _prepare(store, manifest, walk_forward=3)
    assert "out-of-sample cannot be checked" in caplog.text
    report = build_report(evaluate(plan))
    sample = report.policies[MODEL].sample
    assert sample is not None and sample.status == "unchecked" and sample.warning is not None
    assert all(f.train is None for f in report.policies[MODEL].folds)
    assert "**Warning:** registry:alpha@1: out-of-sample cannot be checked" in render_markdown(
        "r", report_blocks(report, [])
    )


def test_after_training_without_a_model_whose_training_window_is_known_is_refused(store: Path) -> None:
    """It used to cut the folds half-way through the store without a word, as if it had not been asked."""
    from raytrade.envs.evaluation.harness import EvaluationInputError

    with pytest.raises(EvaluationInputError, match="--after-training: no registry model .* known training"):
        _prepare(store, None, walk_forward=3, after_training=True)
    with pytest.raises(EvaluationInputError, match="--after-training: no registry model"):
        prepare(
            store,
            ["equal_weight", "kelly_lite"],
            CFG.model_copy(update={"walk_forward": 3, "after_training": True}),
        )


def test_the_nightly_leaves_an_in_sample_model_out_and_says_so(store: Path, tmp_path: Path) -> None:
    from raytrade.cluster.nightly import run_nightly

    registry = tmp_path / "registry"
    (registry / "alpha" / "1").mkdir(parents=True)
    (registry / "alpha" / "1" / "manifest.json").write_text("{}")
    (registry / "alpha" / "latest").write_text("1\n")
    manifest = _manifest(store, train_fraction=0.85, validation_fraction=0.05)
    results = tmp_path / "results.md"
    report_dir = run_nightly(
        store,
        registry,
        reports=tmp_path / "reports",
        results=results,
        date="2025-01-02",
        baselines=["cash", "equal_weight"],
        scenarios=[],
        seeds=1,
        bootstrap_samples=20,
        plots=False,
        loader=lambda ref, registry: VersionHandle(manifest),
    )
    text = results.read_text()
    assert f"> **not evaluated:** in sample: {MODEL} trained on" in text
    assert "--in-sample" not in text and "--after-training" not in text  # evaluate's options, not nightly's
    assert f"| {MODEL} |" not in text and "| equal_weight |" in text
    assert (report_dir / "report.json").exists()


def test_a_report_of_the_previous_schema_still_reads(store: Path, tmp_path: Path) -> None:
    import json

    from raytrade.envs.evaluation.document import read_report, report_json

    report = build_report(evaluate(_prepare(store, _manifest(store))))
    doc = json.loads(report_json(report))
    assert doc["schema"] == "raytrade.evaluation/8" and doc["policies"][MODEL]["sample"] is not None
    doc["schema"] = "raytrade.evaluation/2"  # written before the out-of-sample check
    for policy in doc["policies"].values():
        del policy["sample"]
        for fold in policy["folds"]:
            del fold["in_sample"]
    (tmp_path / "report.json").write_text(json.dumps(doc))
    old = read_report(tmp_path / "report.json")
    assert old.policies[MODEL].sample is None and not old.policies[MODEL].in_sample


def _grown(manifest: Manifest, **recorded: pd.DatetimeIndex) -> Manifest:
    """``manifest`` as if its store had changed since (another fingerprint), recording ``recorded``
    (``train_window`` / ``validation_window``: first and last bar), as promote copies them."""
    windows = {key: {"start": bars[0], "end": bars[-1]} for key, bars in recorded.items()}
    data = manifest.data.model_dump() | {"sha256": "f" * 64} | windows
    return manifest.model_copy(update={"data": type(manifest.data).model_validate(data)})


def test_on_a_grown_store_the_recorded_validation_window_still_moves_the_folds(store: Path) -> None:
    """A reviewer's case: the store grew after promote (another fingerprint), the validation window
    could no longer be recomputed, and `--after-training` cut its first fold inside it, reported
    out_of_sample with no warning. The manifest now records it; the folds start after it."""
    train, validation, everything = _split(store, "train"), _split(store, "validation"), _split(store, "all")
    manifest = _grown(_manifest(store), train_window=train, validation_window=validation)
    plan = _prepare(store, manifest, walk_forward=3, after_training=True)
    first = pd.Timestamp(plan.windows[0].data.ts[0], tz="UTC")
    assert first == first_allowed_start(everything, validation[-1], EMBARGO_BARS)
    report = build_report(evaluate(plan))
    sample = report.policies[MODEL].sample
    assert sample is not None and sample.status == "out_of_sample" and sample.warning is None
    assert sample.validation is not None and sample.validation.end == str(validation[-1].date())
    assert sample.validation.n_bars == len(validation)  # counted on the store: the manifest has dates only
    assert sample.how == "as its manifest records it"


def test_on_a_grown_store_a_test_window_inside_the_recorded_validation_window_is_selection_biased(
    store: Path,
) -> None:
    train = _split(store, "train", train_fraction=0.5, validation_fraction=0.4)
    validation = _split(store, "validation", train_fraction=0.5, validation_fraction=0.4)
    manifest = _grown(
        _manifest(store, train_fraction=0.5, validation_fraction=0.4),
        train_window=train,
        validation_window=validation,
    )
    report = build_report(evaluate(_prepare(store, manifest)))  # the default test split: last 20 %
    sample = report.policies[MODEL].sample
    assert sample is not None and sample.status == "selection_biased"
    assert sample.validation_overlap == ("test",)


def test_an_older_version_whose_validation_window_is_unknown_is_evaluated_with_a_warning(
    store: Path,
) -> None:
    """Recorded training window, no validation window (a version from before), store changed: the
    folds can only start after the training window, so the report says they may be selection-biased."""
    train = _split(store, "train")
    manifest = _grown(_manifest(store), train_window=train)
    report = build_report(evaluate(_prepare(store, manifest, walk_forward=3, after_training=True)))
    sample = report.policies[MODEL].sample
    assert sample is not None and sample.status == "out_of_sample" and sample.validation is None
    assert sample.warning == (
        f"{MODEL}: its validation window, on which its checkpoint was chosen, is unknown on this store (a "
        "version from before manifests recorded it, on a store that changed since): windows after its "
        "training window may overlap it, selection-biased"
    )
    from raytrade.cluster.evaluate import report_warnings

    assert sample.warning in report_warnings(report)
    assert f"**Warning:** {sample.warning}." in render_markdown("r", report_blocks(report, []))


def _night(store: Path, tmp_path: Path, loader: object, date: str = "2030-01-02") -> str:
    from raytrade.cluster.nightly import run_nightly

    registry = tmp_path / "registry"
    (registry / "alpha" / "1").mkdir(parents=True, exist_ok=True)
    (registry / "alpha" / "1" / "manifest.json").write_text("{}")
    (registry / "alpha" / "latest").write_text("1\n")
    results = tmp_path / "results.md"
    run_nightly(
        store,
        registry,
        reports=tmp_path / "reports",
        results=results,
        date=date,
        baselines=["cash", "equal_weight"],
        scenarios=[],
        seeds=1,
        bootstrap_samples=20,
        plots=False,
        loader=loader,  # type: ignore[arg-type]
    )
    return results.read_text()


def test_the_nightly_marks_a_selection_biased_model_and_ranks_it_after_the_clean_policies(
    store: Path, tmp_path: Path
) -> None:
    """An operator's review: the night's table ranked such a model by its Sharpe, unmarked, above the
    baselines (only a warning line above it said so); report.md marked it and ranked it last."""
    manifest = _manifest(store, train_fraction=0.5, validation_fraction=0.4)  # validation reaches the test
    text = _night(store, tmp_path, lambda ref, registry: VersionHandle(manifest))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "rank" not in line]
    assert rows[-1].startswith(f"| 3 | {MODEL} [SELECTION-BIASED] |")
    assert f"- `{MODEL}` (selection_biased)" in text
    test = _split(store, "test")
    assert f"Evaluated: returns of {test[1].date()}..{test[-1].date()} ({len(test) - 1} bars)." in text
    assert "> **note:**" not in text  # dated after its bars


def test_a_broken_registry_refuses_the_night_before_the_ingest_writes(store: Path, tmp_path: Path) -> None:
    """An operator's review: a registry problem (here a `latest` naming a pruned version; a file that
    fails its hash is refused at the same point, tests/test_registry_key_entrypoints.py) stopped the
    night after its ingest had written, and the retry's section then said "ingest: nothing new"."""
    from raytrade.cluster.nightly import run_nightly
    from raytrade.models.registry import RegistryError

    registry = tmp_path / "registry"
    (registry / "alpha" / "1").mkdir(parents=True)
    (registry / "alpha" / "1" / "manifest.json").write_text("{}")
    (registry / "alpha" / "latest").write_text("2\n")  # version 2 was pruned
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    with pytest.raises(RegistryError, match="no version 2 of 'alpha'"):
        run_nightly(
            store,
            registry,
            source="synthetic",
            synthetic={"n_symbols": 3, "years": 2.5, "seed": 3},
            reports=tmp_path / "reports",
            results=tmp_path / "results.md",
            date="2030-01-04",
        )
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != "nightly.lock"} == {
        p: b for p, b in before.items() if p.name != "nightly.lock"
    }
    assert not (tmp_path / "results.md").exists()


def test_a_section_dated_before_its_bars_says_so(store: Path, tmp_path: Path) -> None:
    text = _night(store, tmp_path, lambda ref, registry: VersionHandle(_manifest(store)), date="2000-01-03")
    assert "> **note:** this section is dated 2000-01-03 and evaluates bars up to" in text
