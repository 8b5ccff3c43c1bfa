"""A run file (``cluster.run_file.RunFile``) of a PPO smoke search, for tests that craft run folders by
hand (promote, select): the one record they share, its store and provenance given."""

from __future__ import annotations

from datetime import UTC, datetime

from raytrade.cluster.run_file import RunFile
from raytrade.models.manifest import Provenance, SearchObjective
from raytrade.tune_specs.spec import ON_POLICY_SMOKE


def smoke_run_file(replay: str, code_version: str, data_sha256: str) -> RunFile:
    """The run file ``raytrade tune --spec ppo`` writes for a smoke search on ``replay``."""
    provenance = Provenance(
        started_at=datetime(2026, 1, 2, tzinfo=UTC),
        code_version=code_version,
        libraries={},
        data_sha256=data_sha256,
        data_files=2,
    )
    return RunFile(
        spec="ppo",
        family="ppo_mlp",
        replay=replay,
        budget=ON_POLICY_SMOKE,
        objective=SearchObjective(metric="validation/objective", mode="max", cvar_penalty=1.0),
        searched=[],
        required_features=["ret_1"],
        seed=0,
        command="raytrade tune --spec ppo",
        provenance=provenance,
    )
