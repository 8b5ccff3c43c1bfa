"""Shared fixtures: one local Ray per test session, small synthetic stores, the shared sample data."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import settings

from tests.shared_data import shared_data_dir, shared_data_reason

# Property tests draw the same examples on every run, so CI is reproducible; run with
# HYPOTHESIS_PROFILE=explore locally to search new examples.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray (2 CPUs) started once for the whole session, on first use.

    Its workers inherit this environment, as a real node's workers inherit the node's: the
    remote-storage test's S3 credentials (dummies for the loopback server, ``tests/s3_server.py``)
    and a mirror cache under the session's temporary folder."""
    import ray

    from tests.s3_server import ACCESS_KEY, SECRET_KEY

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("RAYTRADE_CACHE_DIR", str(tmp_path_factory.mktemp("remote-cache")))
    # address="local": always a fresh instance, never a cluster someone started on this machine
    # (`ray start`, `raytrade cluster up`), whose CPUs and state are not the suite's
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real daily bars in ../shared/data; skips (with the reason) only when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(shared_data_reason())
    return path


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ingested synthetic store (12 equities + 2 crypto, 2 years daily), built once."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic") / "store"
    market = generate(n_symbols=12, years=2.0, seed=3, n_crypto=2)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


SMOKE_CASH_RATES: Final = "date,annual_rate_pct\n1990-01-01,4.5\n2018-07-01,3.0\n"
"""The rate file of the ``distrl`` smoke search (``smoke_runs``): every other spec's earns 0 %."""


@dataclass(frozen=True)
class SmokeRun:
    """A finished ``raytrade tune --spec NAME --smoke`` run: its folder and what the command printed."""

    run_dir: Path
    output: str


@pytest.fixture(scope="session")
def smoke_runs(
    ray_session: None, synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], SmokeRun]:
    """``smoke_runs(NAME)``: the smoke search of spec NAME on ``synthetic_store`` through the CLI, run
    at most once per test session whoever asks for it first."""
    from click.testing import CliRunner

    from raytrade.cluster.tune import tune_command

    storage = tmp_path_factory.mktemp("runs")
    done: dict[str, SmokeRun] = {}

    def run(name: str) -> SmokeRun:
        if name not in done:
            args = ["--spec", name, "--replay", str(synthetic_store), "--smoke", "--storage", str(storage)]
            # ppo's search keeps the CLI's defaults (its budget's samples, wandb offline); the other
            # specs run one trial without wandb: the leaderboard's order and wandb's logging are
            # covered by ppo's run, the spec's own build and training by one trial
            args += [] if name == "ppo" else ["--no-wandb", "--num-samples", "1"]
            if name == "distrl":  # one search whose idle cash earns a dated rate (SMOKE_CASH_RATES)
                rates = storage / "cash-rates.csv"
                rates.write_text(SMOKE_CASH_RATES)
                args += ["--cash-rates", str(rates)]
            result = CliRunner().invoke(tune_command, args)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
            assert result.exit_code == 0, result.output
            done[name] = SmokeRun(storage / f"{name}-smoke", result.output)
        return done[name]

    return run


@pytest.fixture(scope="session")
def ppo_smoke_run(smoke_runs: Callable[[str], SmokeRun]) -> Path:
    """The finished smoke search of the ``ppo`` spec (the same one ``test_smoke_search[ppo]`` checks)."""
    return smoke_runs("ppo").run_dir


def xdist_group_of(item: pytest.Item) -> str | None:
    """The pytest-xdist group of a test (``make test``: ``--dist loadgroup``; a group runs in one
    worker), so that no expensive fixture is built by both workers: every test that needs a smoke
    search (``smoke_runs``, a session fixture) in group ``smoke``; the other Ray tests by module
    (``ray-<module>``: their module fixtures are built once). The rest is spread test by test. Each
    worker that runs a Ray test starts its own Ray once."""
    fixtures = getattr(item, "fixturenames", ())
    if "smoke_runs" in fixtures:
        return "smoke"
    if item.get_closest_marker("ray") is not None:
        return f"ray-{item.path.stem}"
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the session's Ray, directly or through any fixture, is marked ``ray``, so that
    ``-m "not ray"`` never starts Ray however the fixtures are wired; and given its xdist group
    (:func:`xdist_group_of`) unless its module names one (the local cluster's)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) and item.get_closest_marker("ray") is None:
            item.add_marker(pytest.mark.ray)
        group = xdist_group_of(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionstart(session: pytest.Session) -> None:
    """With test workers (``-n 2``), compile the simulator's kernels once in the controller before
    they start (:mod:`tests.kernel_warmup`): a fresh checkout has no kernel cache, and otherwise both
    workers and every Tune trial compile them at the same time. A cached kernel loads in about 0.5 s."""
    if getattr(session.config.option, "numprocesses", None) and not hasattr(session.config, "workerinput"):
        from tests.kernel_warmup import warm_kernels

        warm_kernels()


_UNGROUPED: list[str] = []  # set by pytest_collection_finish when --dist loadgroup has no effect


@pytest.hookimpl(trylast=True)  # after pytest-xdist wrote the groups into the node ids
def pytest_collection_finish(session: pytest.Session) -> None:
    """Notice when ``--dist loadgroup`` has no effect (a pytest whose node ids ignore the group suffix
    pytest-xdist writes, as pytest 9.2 with pytest-xdist 3.8): the groups would be split across the
    workers and every expensive fixture built twice, silently. Every test then fails saying so
    (:func:`_xdist_groups_apply`; an error raised here is lost in the worker)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid:
            _UNGROUPED.append(
                f"pytest-xdist's --dist loadgroup has no effect with pytest {pytest.__version__} "
                f"({item.nodeid} carries no group): install the versions of requirements.lock"
            )
            return


@pytest.fixture(autouse=True)
def _xdist_groups_apply() -> None:
    if _UNGROUPED:
        pytest.fail(_UNGROUPED[0], pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that deselected ``ray`` tests fails if Ray was started in this process anyway."""
    markexpr = session.config.getoption("markexpr", "") or ""
    ray = sys.modules.get("ray")
    if "not ray" in markexpr and ray is not None and ray.is_initialized():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print('\nerror: Ray was started during a -m "not ray" run: a test that starts Ray lacks its mark')


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test talks to loopback only: no proxy variable may route a request elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(autouse=True)
def _live_account_locks_per_test(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The live loops of a test lock their accounts in a folder of that test's own (made on first
    use), never under ``~/.raytrade``: a loop one test leaves open must not hold its fake account for
    the next, and a test never writes to the home folder."""
    from raytrade.serve import live

    folder: list[Path] = []

    def lock_dir() -> Path:
        if not folder:
            folder.append(tmp_path_factory.mktemp("account-locks"))
        return folder[0]

    monkeypatch.setattr(live, "default_account_lock_dir", lock_dir)


@pytest.fixture
def fakes() -> Iterator[tuple[Any, Any]]:
    """Fakes of Alpaca's trading (cash $100k, 10 AAPL) and market-data APIs on 127.0.0.1, for the real
    alpaca-py clients. The quotes are stamped at ``T0`` of ``tests.live_doubles``, where the tests'
    cycles run (a quote stamped after the loop's clock is held as a broken feed); a test that runs a
    cycle at the real clock (``raytrade live --once``) stamps them again (``FakeAlpaca.stamp_quotes``)."""
    from tests.fake_alpaca import FakeAlpaca
    from tests.fake_alpaca_trading import FakeAlpacaTrading
    from tests.live_doubles import T0

    with FakeAlpacaTrading(cash=100_000, positions={"AAPL": 10}) as trading, FakeAlpaca() as data:
        data.stamp_quotes(T0)
        yield trading, data
