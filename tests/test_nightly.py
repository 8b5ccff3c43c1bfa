"""``raytrade nightly``: incremental re-ingest, the registry's latest models, dated appended sections."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from raytrade.cluster.nightly import latest_refs, nightly_command, run_nightly
from tests.test_evaluation import FakeHandle

SYNTHETIC = {"n_symbols": 5, "years": 2.0, "seed": 4}


def _registry(root: Path) -> Path:
    for version in ("1", "2"):
        (root / "fake" / version).mkdir(parents=True)
        (root / "fake" / version / "manifest.json").write_text("{}")
    (root / "fake" / "latest").write_text("1\n")
    return root


def test_latest_refs_pin_the_latest_version(tmp_path: Path) -> None:
    assert latest_refs(_registry(tmp_path / "registry")) == ["fake@1"]
    assert latest_refs(tmp_path / "empty") == []


def test_nightly_ingests_evaluates_and_appends_dated_sections(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "registry")
    loaded: list[str] = []

    def loader(ref: str, registry: Path) -> FakeHandle:
        loaded.append(ref)
        handle = FakeHandle()
        object.__setattr__(handle, "path", registry / "fake" / "1")
        return handle

    results = tmp_path / "marketsimulatorresults.md"
    common = dict(
        source="synthetic",
        synthetic=SYNTHETIC,
        reports=tmp_path / "reports",
        results=results,
        baselines=["cash", "equal_weight"],
        scenarios=["flash_crash"],
        seeds=1,
        bootstrap_samples=20,
        plots=False,
        loader=loader,
    )
    first = run_nightly(tmp_path / "store", registry, date="2025-01-02", **common)  # type: ignore[arg-type]
    second = run_nightly(tmp_path / "store", registry, date="2025-01-03", **common)  # type: ignore[arg-type]
    assert loaded == ["fake@1", "fake@1"]
    assert (first / "report.json").exists() and (second / "report.md").exists()
    text = results.read_text()
    assert text.count("## 2025-01-0") == 2 and text.index("2025-01-02") < text.index("2025-01-03")
    day1, day2 = text.split("## 2025-01-03 nightly")
    assert "ingest: bars +" in day1 and "ingest: nothing new" in day2  # incremental re-ingest
    assert "registry:fake@1" in day2 and "[manifest](registry/fake/1/manifest.json)" in day2
    assert "[json](reports/2025-01-03/report.json)" in day2


def test_nightly_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        nightly_command,
        [
            "--replay",
            str(tmp_path / "none"),
            "--registry",
            str(tmp_path),
            "--results",
            str(tmp_path / "r.md"),
        ],
    )
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert not (tmp_path / "r.md").exists()
