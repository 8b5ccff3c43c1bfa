"""An offline run records the fingerprint of the experience it learns from (run file, then manifest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from raytrade.cluster.tune import provenance


def _log_decision(store: Path, decision_id: str, ts: str) -> None:
    from raytrade.replay.schema import EXPERIENCE_SCHEMA
    from raytrade.replay.writer import ReplayWriter

    row = {
        "symbol": "AAA",
        "ts": pd.Timestamp(ts, tz="UTC"),
        "decision_id": decision_id,
        "policy_version": "equal_weight",
        "side": "buy",
        "target_weight": 0.25,
    }
    frame = pd.DataFrame([row])
    for name in EXPERIENCE_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    with ReplayWriter(store) as writer:
        writer.append_experience(frame[EXPERIENCE_SCHEMA.names])


def test_the_experience_fingerprint_changes_when_the_experience_table_does(tmp_path: Path) -> None:
    replay, store = tmp_path / "replay", tmp_path / "experience"
    for table in ("bars", "features"):  # an empty replay store: its own fingerprint stays put
        (replay / table).mkdir(parents=True)
    _log_decision(store, "d0", "2024-01-02")
    before = provenance(replay, experience=store)
    _log_decision(store, "d1", "2024-01-03")
    after = provenance(replay, experience=store)
    assert before.experience is not None and after.experience is not None
    assert before.experience.root == after.experience.root == str(store.resolve())
    assert (before.experience.files, after.experience.files) == (1, 2)
    assert after.experience.sha256 != before.experience.sha256
    assert after.data_sha256 == before.data_sha256  # bars and features: untouched
    assert provenance(replay).experience is None  # an online spec records none


def test_promote_copies_the_runs_experience_fingerprint_into_the_manifest_data(tmp_path: Path) -> None:
    from raytrade.cluster.promote import _data_section
    from raytrade.cluster.run_file import RunFile, SearchObjective
    from raytrade.models.manifest import ExperienceFingerprint, ManifestData, Provenance
    from raytrade.tune_specs.offline import OFFLINE_SMOKE

    seen = ExperienceFingerprint(root=str(tmp_path / "exp"), sha256="e" * 64, files=3)
    run = RunFile(
        spec="cql",
        family="cql",
        replay=str(tmp_path.resolve()),
        budget=OFFLINE_SMOKE,
        objective=SearchObjective(metric="validation/objective", mode="max", cvar_penalty=1.0),
        searched=[],
        required_features=["ret_1"],
        seed=0,
        command="raytrade tune --spec cql",
        provenance=Provenance(
            started_at=datetime(2026, 1, 2, tzinfo=UTC),
            code_version="abc",
            libraries={},
            data_sha256="d" * 64,
            data_files=2,
            experience=seen,
        ),
    )
    data = _data_section({"data": {"kind": "replay", "root": str(tmp_path.resolve())}}, run)
    assert ManifestData.model_validate({**data, "symbols": ["AAA"]}).experience == seen
