"""``raytrade nightly``: incremental re-ingest, the registry's latest models, dated appended sections."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_nightly_refuses_a_scenario_listed_twice_before_evaluating(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        nightly_command,
        [
            *("--replay", str(tmp_path / "store"), "--registry", str(tmp_path / "registry")),
            *("--source", "synthetic", "--n-symbols", "3", "--years", "1", "--seed", "4"),
            *("--reports", str(tmp_path / "reports"), "--results", str(tmp_path / "r.md")),
            *("--scenarios", "flash_crash,flash_crash", "--seeds", "1", "--no-plots"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == "error: scenario 'flash_crash' is listed twice"
    assert not (tmp_path / "r.md").exists() and not (tmp_path / "reports").exists()


def test_nightly_reports_source_bars_it_did_not_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backfill (source bars older than a symbol's last stored bar) is not stored: the night's
    section and stderr say so, instead of 'nothing new'."""
    import pandas as pd

    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=3, years=2.0, seed=4).bars
    folder = tmp_path / "csv"
    folder.mkdir()
    for symbol, rows in bars.groupby("symbol"):
        out = rows.assign(Date=rows["ts"].dt.strftime("%Y-%m-%d"))[
            ["Date", "open", "high", "low", "close", "volume"]
        ]
        out.to_csv(folder / f"{symbol}.csv", index=False)
    holed = bars["symbol"].eq("SYN001") & bars["ts"].isin(sorted(bars["ts"].unique())[100:103])
    ingest_frames(tmp_path / "store", bars[~holed.to_numpy()], show_progress=False)
    results = tmp_path / "results.md"
    run_nightly(
        tmp_path / "store",
        tmp_path / "no-registry",
        source="csv",
        path=folder,
        reports=tmp_path / "reports",
        results=results,
        date="2025-01-02",
        baselines=["cash", "equal_weight"],
        scenarios=["flash_crash"],
        seeds=1,
        bootstrap_samples=20,
        plots=False,
    )
    day = pd.Timestamp(sorted(bars["ts"].unique())[100]).date()
    text = results.read_text()
    assert "ingest: nothing new" in text  # nothing appended ...
    assert f"> **ingest warning:** SYN001: 3 bars from {day}" in text  # ... and the hole is reported
    assert "NOT stored" in text
    assert f"warning: SYN001: 3 bars from {day}" in capsys.readouterr().err
