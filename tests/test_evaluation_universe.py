"""``raytrade evaluate`` (and the nightly) replay every policy on the universe the registry models
trained on (``envs.evaluation.universe``): never a symbol the store gained since, as serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from raytrade.cluster.nightly import run_nightly
from raytrade.envs.evaluation.harness import EvaluationConfig, prepare
from raytrade.envs.evaluation.policies import EvalPolicy, EvaluationInputError
from raytrade.envs.market_data import MarketData
from raytrade.models.manifest import Manifest
from tests.test_evaluation_insample import VersionHandle
from tests.test_init_window import _manifest

CFG = EvaluationConfig(scenarios=(), seeds=(0,))
NEW = "NEWCO"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the store a model trained on: 3 equities, that store after an ingest added ``NEWCO``)."""
    from raytrade.replay import read_frame
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    base = tmp_path_factory.mktemp("universe")
    trained, grown = base / "trained", base / "grown"
    market = generate(n_symbols=3, years=2.0, seed=3)
    ingest_frames(trained, market.bars, market.macro, show_progress=False)
    shutil.copytree(trained, grown)
    bars = read_frame(grown, "bars")
    ingest_frames(
        grown, bars[bars["symbol"] == bars["symbol"].iloc[0]].assign(symbol=NEW), show_progress=False
    )
    return trained, grown


def _symbols(store: Path) -> list[str]:
    from raytrade.replay import read_frame

    return sorted(set(read_frame(store, "bars", columns=["symbol"])["symbol"].astype(str)))


def _trained_on(store: Path, symbols: list[str]) -> Manifest:
    """A version trained on ``store``'s train split whose manifest records ``symbols``."""
    manifest = _manifest(store)
    return manifest.model_copy(update={"data": manifest.data.model_copy(update={"symbols": symbols})})


class SeenHandle(VersionHandle):
    """``VersionHandle`` that records the symbols of every window it is built for."""

    def __init__(self, manifest: Manifest, seen: list[tuple[str, ...]]) -> None:
        super().__init__(manifest)
        self.seen = seen

    def policy(self, data: MarketData) -> EvalPolicy:
        self.seen.append(data.symbols)
        return super().policy(data)


def test_a_store_that_gained_a_symbol_is_evaluated_on_the_trained_universe(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    from raytrade.cluster.evaluate import run_evaluation

    trained, grown = stores
    universe = _symbols(trained)
    seen: list[tuple[str, ...]] = []
    handle = SeenHandle(_trained_on(trained, universe), seen)
    report = run_evaluation(
        grown,
        ["buy_and_hold", "kelly_lite", "registry:alpha@1"],
        tmp_path / "r",
        seeds=1,
        scenarios=[],
        registry=grown.parent,
        bootstrap_samples=20,
        plots=False,
        loader=lambda ref, registry: handle,
    )
    assert _symbols(grown) == sorted([*universe, NEW])
    assert list(report.replay.symbols) == universe  # every policy's bars, baselines included
    assert list(report.config.symbols or ()) == universe
    assert seen == [tuple(universe)]  # the model never sees NEWCO, so it cannot weight it
    assert report.replay.universe == (
        "the universe registry:alpha@1 trained on (manifest data.symbols); the store's other symbols "
        f"({NEW}) are not evaluated"
    )
    assert (
        f"3 symbols ({', '.join(universe)}: the universe registry:alpha@1"
        in (tmp_path / "r" / "report.md").read_text()
    )


def test_two_models_trained_on_different_universes_are_refused_naming_both(stores: tuple[Path, Path]) -> None:
    trained, grown = stores
    universe = _symbols(trained)
    manifests = {
        "alpha@1": _trained_on(trained, universe),
        "beta@1": _trained_on(trained, [*universe[:2], NEW]),
    }
    with pytest.raises(EvaluationInputError) as info:
        prepare(
            grown,
            ["registry:alpha@1", "registry:beta@1"],
            CFG,
            registry=grown.parent,
            loader=lambda ref, registry: VersionHandle(manifests[ref]),
        )
    assert str(info.value) == (
        "registry:alpha@1 and registry:beta@1 were trained on different universes (only "
        f"registry:alpha@1: {universe[2]}; only registry:beta@1: {NEW}): a model runs on its own "
        "universe only, evaluate them separately"
    )


def test_a_trained_symbol_the_store_lacks_is_refused_naming_it(stores: tuple[Path, Path]) -> None:
    trained = stores[0]
    manifest = _trained_on(trained, [*_symbols(trained), NEW])
    with pytest.raises(EvaluationInputError) as info:
        prepare(
            trained,
            ["registry:alpha@1"],
            CFG,
            registry=trained.parent,
            loader=lambda r, registry: VersionHandle(manifest),
        )
    assert str(info.value) == (
        f"registry:alpha@1 was trained on symbol(s) {NEW}, which the store at {trained} does not hold"
    )


def test_the_nightly_section_says_the_trained_universe(stores: tuple[Path, Path], tmp_path: Path) -> None:
    trained, grown = stores
    universe = _symbols(trained)
    report_dir, text = _night(grown, tmp_path, {"alpha@1": _trained_on(trained, universe)})
    assert json.loads((report_dir / "report.json").read_text())["replay"]["symbols"] == universe
    assert (
        f"Universe: 3 symbols ({', '.join(universe)}), the universe registry:alpha@1 trained on "
        f"(manifest data.symbols); the store's other symbols ({NEW}) are not evaluated."
    ) in text


def _night(store: Path, tmp_path: Path, manifests: dict[str, Manifest]) -> tuple[Path, str]:
    """The nightly of ``store`` (baselines cash and equal_weight) with a registry of one version of
    each of ``manifests`` (``NAME@1``): its report folder and the results file's text."""
    registry = tmp_path / "registry"
    for ref in manifests:
        name = ref.split("@")[0]
        (registry / name / "1").mkdir(parents=True)
        (registry / name / "1" / "manifest.json").write_text("{}")
        (registry / name / "latest").write_text("1\n")
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
        loader=lambda ref, registry: VersionHandle(manifests[ref]),
        replace=True,  # a test may run the night of the same store and date again
    )
    assert report_dir is not None
    return report_dir, results.read_text()


@pytest.mark.parametrize(
    ("names", "left_out", "why"),
    [
        (("beta",), "beta", "missing"),
        (("alpha", "beta"), "beta", "missing"),
        (("beta", "gamma"), "beta", "missing"),  # the first model: it pushed out gamma, then itself
        (("alpha", "delta"), "delta", "different"),
    ],
    ids=["alone", "after-another", "first", "another-universe"],
)
def test_the_nightly_leaves_out_a_model_the_store_cannot_hold_and_runs_the_rest(
    stores: tuple[Path, Path], tmp_path: Path, names: tuple[str, ...], left_out: str, why: str
) -> None:
    """``beta`` trained on NEWCO, which the store lacks: it stopped the whole night with one error
    line, the baselines and the other models unevaluated. Now it is left out with a warning and a line
    in the night's section, as an in-sample model is, and whatever its place in the registry, the
    models the store holds still run; of two models on different universes the store holds, the later
    (registry order) is left out."""
    trained = stores[0]
    universe = _symbols(trained)
    manifests = {
        "alpha@1": _trained_on(trained, universe),
        "beta@1": _trained_on(trained, [*universe, NEW]),
        "gamma@1": _trained_on(trained, universe),
        "delta@1": _trained_on(trained, universe[:2]),
    }
    text = _night(trained, tmp_path, {f"{name}@1": manifests[f"{name}@1"] for name in names})[1]
    reason = (
        f"registry:beta@1 was trained on symbol(s) {NEW}, which the store at {trained} does not hold"
        if why == "missing"
        else "registry:alpha@1 and registry:delta@1 were trained on different universes (only "
        f"registry:alpha@1: {universe[2]}; only registry:delta@1: none): a model runs on its own universe "
        "only, evaluate them separately"
    )
    assert f"> **not evaluated:** {reason}\n" in text
    assert "| equal_weight |" in text
    for name in names:
        assert (f"| registry:{name}@1 |" in text) == (name != left_out)
