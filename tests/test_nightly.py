"""``raytrade nightly``: incremental re-ingest, the registry's latest models, dated appended sections."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raytrade.cluster.nightly import latest_refs, nightly_command, run_nightly
from raytrade.cluster.nightly_lock import LOCK_FILE
from raytrade.cluster.nightly_record import NIGHTS_FILE, read_nights
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
    # each row shows what closing its book cost, as report.json records it
    report = json.loads((second / "report.json").read_text())
    header = next(line for line in day2.splitlines() if line.startswith("| rank |"))
    column = [c.strip() for c in header.strip("|").split("|")].index("exit bps")
    shown = {}
    for line in day2.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > column and cells[1] in report["policies"]:
            shown[cells[1]] = cells[column]
    assert shown == {n: f"{p['exit_cost_bps']:.2f}" for n, p in report["policies"].items()}


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
    (tmp_path / "registry").mkdir()
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
    (tmp_path / "empty-registry").mkdir()
    run_nightly(
        tmp_path / "store",
        tmp_path / "empty-registry",
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


# ------------------------------------------------------------------ the registry, one section per date


@pytest.fixture()
def store(synthetic_store: Path, tmp_path: Path) -> Path:
    """A copy of the session's synthetic store: a night is recorded with the store it ran on."""
    return Path(shutil.copytree(synthetic_store, tmp_path / "store"))


def _night(store: Path, tmp_path: Path, *extra: str, registry: str | None = None) -> Any:
    """``raytrade nightly`` on ``store`` (no source), cash only, tiny budget, into ``tmp_path``."""
    if registry is None:
        (tmp_path / "registry").mkdir(exist_ok=True)
        registry = str(tmp_path / "registry")
    args = ["--replay", str(store), "--registry", registry, "--baselines", "cash", "--scenarios", ""]
    args += [
        "--seeds",
        "1",
        "--bootstrap-samples",
        "10",
        "--no-plots",
        "--reports",
        str(tmp_path / "reports"),
    ]
    return CliRunner().invoke(nightly_command, [*args, "--results", str(tmp_path / "results.md"), *extra])


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("registry-typo", "no such folder"),
        (
            "s3://AKIAEXAMPLE:s3cr3t@bucket/registry?token=t0k",
            "'s3://bucket/registry': nightly reads a local",
        ),
    ],
)
def test_nightly_refuses_a_registry_it_cannot_read_before_ingesting(
    tmp_path: Path, given: str, shown: str
) -> None:
    """A typo'd folder or a URI used to evaluate the baselines alone, exit 0 ('none in the registry')."""
    registry = given if "://" in given else str(tmp_path / given)
    args = ["--source", "synthetic", "--n-symbols", "2", "--years", "1"]
    result = _night(tmp_path / "store", tmp_path, *args, registry=registry)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --registry ") and shown in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "s3cr3t" not in result.output and "AKIA" not in result.output and "t0k" not in result.output
    assert not (tmp_path / "results.md").exists() and not (tmp_path / "store").exists()


def test_nightly_on_an_empty_registry_evaluates_the_baselines_and_says_so(
    store: Path, tmp_path: Path
) -> None:
    result = _night(store, tmp_path, "--date", "2026-01-05")
    assert result.exit_code == 0, result.output
    section = (tmp_path / "results.md").read_text()
    assert "Models: none in the registry (baselines only)." in section
    assert "Cash earned 0 %: sharpe and sortino are of the returns themselves" in section


def test_a_nightly_given_a_cash_rate_credits_cash_with_it(store: Path, tmp_path: Path) -> None:
    from raytrade.envs.evaluation.document import read_report

    result = _night(store, tmp_path, "--date", "2026-01-05", "--cash-rate", "0.03")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "reports" / "2026-01-05" / "report.json")
    assert report.config.simulator.cash_rate.annual == 0.03
    cash = report.policies["cash"]
    n, ppy = len(cash.returns), report.periods_per_year
    assert cash.metrics.total_return == pytest.approx((1 + 0.03 / ppy) ** n - 1, rel=1e-9)
    section = (tmp_path / "results.md").read_text()
    assert "Idle cash earned 3.00%/year: sharpe and sortino are of returns over it." in section


def test_nightly_refuses_a_date_not_in_iso_form(tmp_path: Path) -> None:
    result = _night(tmp_path / "store", tmp_path, "--date", "2026-1-5")
    assert (
        result.exit_code == 2 and result.output == "error: --date '2026-1-5': expected a date as YYYY-MM-DD\n"
    )


def test_a_second_run_for_a_reported_date_does_nothing_and_says_so(store: Path, tmp_path: Path) -> None:
    """A retried job: no second section, and the report the section links to is not rewritten."""
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    results, report = tmp_path / "results.md", tmp_path / "reports" / "2026-01-05" / "report.json"
    before = (results.read_bytes(), report.read_bytes(), report.stat().st_mtime_ns)
    again = _night(store, tmp_path, "--date", "2026-01-05")
    assert again.exit_code == 0, again.output
    assert again.output == (
        f"the store {store} records the night 2026-01-05: report {report.parent / 'report.md'}, "
        f"section '## 2026-01-05 nightly' in {results}: nothing done "
        "(--replace re-runs the night and replaces it)\n"
    )
    assert (results.read_bytes(), report.read_bytes(), report.stat().st_mtime_ns) == before
    assert results.read_text().count("## 2026-01-05 nightly") == 1


def test_replace_rewrites_that_dates_section_in_place(store: Path, tmp_path: Path) -> None:
    for day in ("2026-01-05", "2026-01-06"):
        assert _night(store, tmp_path, "--date", day).exit_code == 0
    text = (tmp_path / "results.md").read_text()
    later = text[text.index("## 2026-01-06 nightly") :]
    result = _night(store, tmp_path, "--date", "2026-01-05", "--replace", "--baselines", "cash,buy_and_hold")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# Market simulator results\n") and text.count("## 2026-01-05 nightly") == 1
    first, second = text.split("## 2026-01-06 nightly")
    assert "| buy_and_hold |" in first and "| buy_and_hold |" not in second  # the new run, in place
    assert "## 2026-01-06 nightly" + second == later  # the next night's section untouched
    report = (tmp_path / "reports" / "2026-01-05" / "report.json").read_text()
    assert '"buy_and_hold"' in report


def test_a_night_run_from_another_folder_is_not_run_again(store: Path, tmp_path: Path) -> None:
    """The defaults --results/--reports are relative: cron from $HOME used to evaluate and write the
    same night again. The store records the night, and the rerun says where it went."""
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    elsewhere = tmp_path / "home"
    args = ["--date", "2026-01-05", "--results", str(elsewhere / "results.md")]
    again = _night(store, tmp_path, *args, "--reports", str(elsewhere / "reports"))
    assert again.exit_code == 0, again.output
    assert again.output == (
        f"the store {store} records the night 2026-01-05: "
        f"report {(tmp_path / 'reports' / '2026-01-05' / 'report.md').resolve()}, section "
        f"'## 2026-01-05 nightly' in {(tmp_path / 'results.md').resolve()}: nothing done "
        "(--replace re-runs the night and replaces it)\n"
    )
    assert not elsewhere.exists()


def test_the_night_record_lies_outside_the_stores_data(store: Path, tmp_path: Path) -> None:
    """STORE/nightly.json is no table and no part of the data fingerprint."""
    from raytrade.replay.fingerprint import data_fingerprint
    from raytrade.replay.summary import summarize_store

    before = (data_fingerprint(store), summarize_store(store).as_dict())
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    assert (store / NIGHTS_FILE).is_file()
    assert (data_fingerprint(store), summarize_store(store).as_dict()) == before
    nights = read_nights(store).nights
    assert list(nights) == ["2026-01-05"]
    assert nights["2026-01-05"].results == str((tmp_path / "results.md").resolve())
    assert nights["2026-01-05"].report == str((tmp_path / "reports" / "2026-01-05").resolve())


def test_replace_re_records_the_night_where_it_now_went(store: Path, tmp_path: Path) -> None:
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    moved = tmp_path / "moved.md"
    result = _night(store, tmp_path, "--date", "2026-01-05", "--replace", "--results", str(moved))
    assert result.exit_code == 0, result.output
    assert read_nights(store).nights["2026-01-05"].results == str(moved.resolve())
    assert moved.read_text().count("## 2026-01-05 nightly") == 1


def test_a_record_this_code_did_not_write_is_refused_naming_it(store: Path, tmp_path: Path) -> None:
    (store / NIGHTS_FILE).write_text('{"nights": {"2026-01-05": {"report": 1}}}')
    result = _night(store, tmp_path, "--date", "2026-01-05")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {str(store / NIGHTS_FILE)!r} is not a nightly record (")
    assert not (tmp_path / "results.md").exists()


def test_a_night_in_the_results_file_but_not_recorded_is_not_run_again(store: Path, tmp_path: Path) -> None:
    """A night run before the store kept a record: the results file's section still stops a rerun."""
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    (store / NIGHTS_FILE).unlink()
    again = _night(store, tmp_path, "--date", "2026-01-05")
    assert again.exit_code == 0, again.output
    assert again.output == (
        f"{tmp_path / 'results.md'} already holds the section '## 2026-01-05 nightly': nothing done "
        "(--replace re-runs the night and replaces it)\n"
    )
    assert not (store / NIGHTS_FILE).exists()


# ------------------------------------------------------------------ one nightly per store at a time


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_nightly_on_a_store_another_one_holds_refuses_at_once_and_touches_nothing(
    store: Path, tmp_path: Path
) -> None:
    """A cron overlap or a retried job ran a second night on the same store, interleaving the two."""
    holder = '{"pid": 4242, "host": "cron-1", "started": "2026-01-05T02:00:00+00:00"}'
    with open(store / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.seek(0)
        held.truncate()  # a copy of a store another test ran a nightly on holds that run's holder
        held.write(holder)
        held.flush()
        before = _files(store)
        result = _night(store, tmp_path, "--date", "2026-01-05")
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: the store {store} is in use by another nightly (pid 4242 on cron-1, started "
        f"2026-01-05T02:00:00+00:00; lock {store / LOCK_FILE}): nothing done; run it again once that "
        "one has ended\n"
    )
    assert _files(store) == before
    assert not (tmp_path / "results.md").exists() and not (tmp_path / "reports").exists()


def test_the_store_lock_is_held_for_the_run_and_released_when_it_raises(store: Path, tmp_path: Path) -> None:
    """flock dies with the open file: a run that raised leaves the store free for the next."""
    held_during_run: list[bool] = []

    def loader(ref: str, registry: Path) -> FakeHandle:
        with open(store / LOCK_FILE, "a+") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held_during_run.append(True)
            else:
                held_during_run.append(False)
        raise RuntimeError("the model would not load")

    with pytest.raises(RuntimeError, match="would not load"):
        run_nightly(
            store,
            _registry(tmp_path / "registry"),
            reports=tmp_path / "reports",
            results=tmp_path / "results.md",
            date="2026-01-05",
            baselines=["cash"],
            scenarios=[],
            seeds=1,
            bootstrap_samples=10,
            plots=False,
            loader=loader,
        )
    assert held_during_run == [True]
    with open(store / LOCK_FILE, "a+") as after:
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if left held


def test_a_nightly_without_a_source_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    result = _night(tmp_path / "none", tmp_path)
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: --replay {str(tmp_path / 'none')!r}: no such store folder (give --source to ingest one)\n"
    )
    assert not (tmp_path / "none").exists()


def test_a_night_that_stops_after_its_ingest_has_its_bars_and_warnings_in_the_next_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A night whose evaluation failed after its ingest left the bars in the store; the retry ingested
    'nothing new' and its section said so, with none of the first ingest's warnings."""
    import pandas as pd

    import raytrade.cluster.nightly as nightly
    from raytrade.cluster.nightly_record import PENDING_FILE
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=3, years=2.0, seed=4).bars
    days = sorted(bars["ts"].unique())
    folder = tmp_path / "csv"
    folder.mkdir()
    for symbol, rows in bars.groupby("symbol"):
        rows.assign(Date=rows["ts"].dt.strftime("%Y-%m-%d"))[
            ["Date", "open", "high", "low", "close", "volume"]
        ].to_csv(folder / f"{symbol}.csv", index=False)
    holed = bars["symbol"].eq("SYN001") & bars["ts"].isin(days[100:103])
    stored = bars[~holed.to_numpy()]
    ingest_frames(tmp_path / "store", stored[stored["ts"] < days[-20]], show_progress=False)
    common: dict[str, Any] = dict(
        source="csv",
        path=folder,
        reports=tmp_path / "reports",
        results=tmp_path / "results.md",
        baselines=["cash"],
        scenarios=[],
        seeds=1,
        bootstrap_samples=10,
        plots=False,
    )
    (tmp_path / "registry").mkdir()
    real = nightly.run_evaluation

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("evaluation died")

    monkeypatch.setattr(nightly, "run_evaluation", broken)
    with pytest.raises(RuntimeError, match="evaluation died"):
        run_nightly(tmp_path / "store", tmp_path / "registry", date="2025-01-02", **common)
    assert (tmp_path / "store" / PENDING_FILE).is_file() and not (tmp_path / "results.md").exists()
    monkeypatch.setattr(nightly, "run_evaluation", real)
    run_nightly(tmp_path / "store", tmp_path / "registry", date="2025-01-03", **common)
    text = (tmp_path / "results.md").read_text()
    day = pd.Timestamp(days[100]).date()
    assert "ingest: bars +60, features +60 (with what the run of 2025-01-02 ingested: it stopped" in text
    first, second = (pd.Timestamp(days[i]).date() for i in (-21, -1))  # each run's last stored bar
    for last_stored in (first, second):  # the failed run's warning, then the retry's
        assert f"3 bars from {day} to " in text and f"older than its last stored bar ({last_stored})" in text
    assert not (tmp_path / "store" / PENDING_FILE).exists()  # reported: the next night starts afresh
    run_nightly(tmp_path / "store", tmp_path / "registry", date="2025-01-04", **common)
    last = (tmp_path / "results.md").read_text().split("## 2025-01-04 nightly")[1]
    assert "ingest: nothing new." in last and "with what the run" not in last
    assert f"> **ingest warning:** SYN001: 3 bars from {day}" in last  # the csv still lacks them


# ------------------------------------------------------------------ stores sharing a results file


def test_a_second_store_on_the_same_results_and_date_is_refused_and_the_first_kept(
    store: Path, tmp_path: Path
) -> None:
    """Two stores sharing the default --results and --reports on one date: the second printed
    "already holds the section ...: nothing done" (exit 0) and never ran; with --replace it
    overwrote the first store's section and report while the first store's record pointed at them."""
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    other = Path(shutil.copytree(store, tmp_path / "other"))
    (other / NIGHTS_FILE).unlink()
    results, report = tmp_path / "results.md", tmp_path / "reports" / "2026-01-05" / "report.json"
    before = (results.read_bytes(), report.read_bytes())
    for extra in ((), ("--replace",)):
        again = _night(other, tmp_path, "--date", "2026-01-05", *extra)
        assert again.exit_code == 2, again.output
        assert again.output == (
            f"error: --results {str(results)!r}: its section '## 2026-01-05 nightly' is the night of the "
            f"store {store.resolve()}, not of --replay {str(other.resolve())!r}: give each store its own "
            "--results and --reports (nothing done)\n"
        )
    assert (results.read_bytes(), report.read_bytes()) == before
    assert not (other / NIGHTS_FILE).exists()
    own_results = _night(other, tmp_path, "--date", "2026-01-05", "--results", str(tmp_path / "o.md"))
    assert own_results.exit_code == 2 and own_results.output.startswith(
        f"error: --reports {str(tmp_path / 'reports')!r}: {report.parent} holds the night of the store "
    )
    assert report.read_bytes() == before[1]


def test_a_section_that_names_its_store_relatively_is_still_read_as_this_stores(
    store: Path, tmp_path: Path
) -> None:
    """Results written before sections named their store absolutely still stop a rerun."""
    assert _night(store, tmp_path, "--date", "2026-01-05").exit_code == 0
    (store / NIGHTS_FILE).unlink()
    results = tmp_path / "results.md"
    results.write_text(results.read_text().replace(f"Store `{store.resolve()}`", "Store `store`"))
    report = tmp_path / "reports" / "2026-01-05" / "report.json"
    document = json.loads(report.read_text())
    document["replay"]["root"] = "store"
    report.write_text(json.dumps(document))
    again = _night(store, tmp_path, "--date", "2026-01-05")
    assert again.exit_code == 0 and "already holds the section '## 2026-01-05 nightly'" in again.output


def test_a_nightly_refuses_at_once_while_another_holds_the_results_file(store: Path, tmp_path: Path) -> None:
    from raytrade.cluster.nightly_lock import results_lock_file

    results = tmp_path / "results.md"
    with open(results_lock_file(results), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = _night(store, tmp_path, "--date", "2026-01-05")
    assert busy.exit_code == 2
    assert busy.output.startswith(f"error: the results file {results} is in use by another nightly (")
    assert not results.exists() and not (tmp_path / "reports").exists()


def test_a_nightly_refused_for_bad_source_input_creates_no_store_folder_or_lock(tmp_path: Path) -> None:
    """`--years nan` was refused only after the --replay folder and its nightly.lock were made."""
    (tmp_path / "registry").mkdir()
    args = ["--replay", str(tmp_path / "store"), "--registry", str(tmp_path / "registry")]
    result = CliRunner().invoke(nightly_command, [*args, "--source", "synthetic", "--years", "nan"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "years" in result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "store").exists()


def test_a_store_named_through_a_link_is_the_same_store(store: Path, tmp_path: Path) -> None:
    """A section and report that name the store through a symbolic link (as typed, before runs
    resolved it) belong to it: ``--replace`` of that night was refused as another store's."""
    link = tmp_path / "link"
    link.symlink_to(store)
    assert _night(link, tmp_path, "--date", "2026-01-05").exit_code == 0
    results = tmp_path / "results.md"
    results.write_text(results.read_text().replace(f"Store `{store.resolve()}`", f"Store `{link}`"))
    report = tmp_path / "reports" / "2026-01-05" / "report.json"
    document = json.loads(report.read_text())
    document["replay"]["root"] = str(link)
    report.write_text(json.dumps(document))
    again = _night(store, tmp_path, "--date", "2026-01-05", "--replace")
    assert again.exit_code == 0, again.output
