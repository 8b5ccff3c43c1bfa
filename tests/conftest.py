"""Shared fixtures: one local Ray per test session, small synthetic stores, the shared sample data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.shared_data import shared_data_dir, shared_data_reason

# Property tests draw the same examples on every run, so CI is reproducible; run with
# HYPOTHESIS_PROFILE=explore locally to search new examples.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray (2 CPUs) started once for the whole session, on first use."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
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


@pytest.fixture(scope="session")
def ppo_smoke_run(ray_session: None, synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-trial smoke search of the ``ppo`` spec on ``synthetic_store`` (run once)."""
    from raytrade.cluster.tune import TuneOptions, run_tune

    storage = tmp_path_factory.mktemp("runs")
    opts = TuneOptions(
        spec="ppo", replay=synthetic_store, smoke=True, num_samples=1, storage=storage, wandb="disabled"
    )
    return run_tune(opts).run_dir
