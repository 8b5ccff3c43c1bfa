"""What would corrupt offline RL is refused where it enters the experience store: a transition row
with a missing or implausible reward, a step's asset logged twice (under new decision ids, or a
simulate-experience run repeated with the same arguments); and what an older writer stored is named
by tune's pre-Ray check (``replay.experience.check_layout``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from raytrade.replay.errors import InputError
from raytrade.replay.experience import ExperienceError, check_layout
from raytrade.replay.reader import table_files
from raytrade.replay.recordings import RecordedRun, repeats
from raytrade.replay.validation import ReplayValidationError
from raytrade.replay.writer import ReplayWriter
from tests.test_experience_integrity import SPEC, SYMBOLS, episode, written


def stored_files(root: Path) -> list[Path]:
    return list((root / "experience").glob("year=*/*.parquet"))


# ------------------------------------------------------------------------------ the writer


def test_a_transition_row_with_a_nan_reward_is_refused_naming_episode_step_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    frame = episode()
    frame.loc[3, "reward"] = float("nan")
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(frame)
    assert str(refused.value) == (
        "experience: row 3, column 'reward', value nan: missing (null or NaN) on a transition row "
        "(decision 'e:1:BBB', episode 'e' step 1)"
    )
    assert stored_files(tmp_path) == []


def test_a_fill_row_without_an_episode_may_still_have_no_reward(tmp_path: Path) -> None:
    fill = {
        "symbol": "AAA",
        "ts": pd.Timestamp("2024-02-01", tz="UTC"),
        "decision_id": "c1:AAA:fill",
        "policy_version": "p@1",
        "side": "buy",
        "reward": float("nan"),
    }
    with ReplayWriter(tmp_path) as writer:
        assert writer.append_experience(pd.DataFrame([fill])).rows_written == 1


def test_a_reward_of_equity_x148_in_one_bar_is_refused(tmp_path: Path) -> None:
    frame = episode()
    frame.loc[[0, 1], "reward"] = 5.0  # log growth 5: equity x148 in a bar
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(frame)
    assert str(refused.value).startswith(
        "experience: row 0, column 'reward', value 5.0: |reward| above ln 10 = 2.3026: "
    )
    assert stored_files(tmp_path) == []


def test_a_step_written_again_under_new_decision_ids_is_refused_naming_it(tmp_path: Path) -> None:
    root = written(tmp_path, episode())
    again = episode().iloc[[2, 3]].assign(decision_id=lambda f: f["decision_id"] + ":again")
    with ReplayWriter(root) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(again)
    assert str(refused.value).startswith(
        "experience: row 0, column 'step', value 1: step 1 of episode 'e' (asset_index 0) is already stored"
    )
    assert len(stored_files(root)) == 1


def test_a_steps_asset_twice_in_one_batch_is_refused(tmp_path: Path) -> None:
    frame = pd.concat([episode(), episode().iloc[[1]].assign(decision_id="e:0:BBB:again")], ignore_index=True)
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(frame)
    assert str(refused.value).startswith(
        "experience: row 4, column 'asset_index', value 1.0: a second row of this (episode_id, step, "
        "asset_index) in the batch"
    )


def test_a_live_loops_writer_quarantines_a_whole_step_when_one_of_its_rows_is_refused(
    tmp_path: Path,
) -> None:
    frame = episode()
    frame.at[3, "observation"] = [1e20, 0.5, 1.0]  # step 1, asset 1
    with ReplayWriter(tmp_path, on_error="quarantine") as writer:
        result = writer.append_experience(frame)
    assert (result.rows_written, result.rows_refused) == (2, 2)
    stored = pq.read_table(table_files(tmp_path, "experience")[0]).to_pandas()
    assert stored["step"].tolist() == [0, 0]


# ------------------------------------------------------------------------------ tune's pre-Ray check


def older_store(root: Path, column: str, value: object, rows: list[int]) -> Path:
    """A store whose one file holds ``value`` in ``column`` at ``rows`` (as a writer before the
    checks stored it)."""
    written(root, episode())
    (path,) = table_files(root, "experience")
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    for r in rows:
        values[r] = value
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(column), [values])
    pq.write_table(table, path)
    return root


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "column 'reward' is missing (null or NaN)"),
        (float("nan"), "column 'reward' is missing (null or NaN)"),
        (5.0, "column 'reward' is 5.0, beyond |reward| <= ln 10"),
    ],
)
def test_the_pre_ray_check_names_the_first_stored_bad_reward(
    tmp_path: Path, value: object, said: str
) -> None:
    root = older_store(tmp_path, "reward", value, [2, 3])
    with pytest.raises(ExperienceError) as refused:
        check_layout(root, None, None, SYMBOLS, SPEC)
    assert str(refused.value).startswith(f"experience {said}")
    assert "in episode 'e' step 1 (decision 'e:1:AAA')" in str(refused.value)


def test_the_pre_ray_check_says_a_step_is_written_twice(tmp_path: Path) -> None:
    """An older writer appended step 1 again under new ids: not "logged on other assets"."""
    again = episode().iloc[[2, 3]].assign(decision_id=lambda f: f["decision_id"] + ":again")
    root = written(tmp_path, episode())
    (path,) = table_files(root, "experience")
    copy = pq.read_table(path).slice(2, 2)
    copy = copy.set_column(
        copy.schema.get_field_index("decision_id"), "decision_id", [again["decision_id"].tolist()]
    )
    pq.write_table(copy.cast(pq.read_schema(path)), path.with_name("part-99999999999999999999-x.parquet"))
    with pytest.raises(ExperienceError) as refused:
        check_layout(root, None, None, SYMBOLS, SPEC)
    assert str(refused.value).startswith(
        "experience: step 1 of episode 'e' is written twice (asset_index [0, 0, 1, 1])"
    )


# ------------------------------------------------------------------------------ simulate-experience


def run(seed: int = 0, episodes: int = 1, noise: float = 0.02, stochastic: bool = False) -> RecordedRun:
    return RecordedRun(
        run_id=f"sim:kelly_lite:{seed}:x",
        policy="kelly_lite",
        policy_version="kelly_lite",
        stochastic=stochastic,
        features=("ret_1d",),
        noise=noise,
        seed=seed,
        episodes=episodes,
        replay_sha256="a" * 64,
    )


@pytest.mark.parametrize(
    ("later", "repeated"),
    [
        (run(), True),  # the same arguments
        (run(seed=2), True),  # its episode 0 is the earlier run's episode 2 (seeded 0 + 2)
        (run(seed=3), False),
        (run(noise=0.03), False),
        (run(seed=7, noise=0.0), True),  # no noise, deterministic: the seed changes nothing
        (run(seed=7, noise=0.0, stochastic=True), False),
    ],
)
def test_a_run_repeats_an_earlier_one_when_their_episodes_are_the_same(
    later: RecordedRun, repeated: bool
) -> None:
    earlier = run(episodes=3) if later.noise else run(episodes=1, noise=0.0)
    assert repeats(earlier, later) is repeated


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("dup") / "store"
    market = generate(n_symbols=2, years=1.0, seed=3)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


def simulate(store: Path, out: Path, seed: int = 0, episodes: int = 1, noise: float = 0.0) -> object:
    from raytrade.cluster.simulate_experience import SimulateOptions, simulate_experience

    return simulate_experience(
        SimulateOptions(
            policy="equal_weight", replay=store, out=out, seed=seed, episodes=episodes, noise=noise
        )
    )


def test_simulate_experience_run_again_with_the_same_arguments_is_refused_naming_the_earlier_run(
    store: Path, tmp_path: Path
) -> None:
    first = simulate(store, tmp_path, noise=0.01)
    rows = pq.read_table(table_files(tmp_path, "experience")[0]).num_rows
    with pytest.raises(InputError) as refused:
        simulate(store, tmp_path, noise=0.01)
    message = str(refused.value)
    assert f"already holds run {first.run_id} (equal_weight, seeds 0..0, noise 0.01)" in message  # type: ignore[attr-defined]
    assert message.endswith("pass another --seed (free from 1)")
    assert sum(pq.read_table(f).num_rows for f in table_files(tmp_path, "experience")) == rows
    simulate(store, tmp_path, seed=1, noise=0.01)  # new episodes: accepted
    assert len(table_files(tmp_path, "experience")) == 2


def test_simulate_experience_refuses_several_identical_episodes_of_a_deterministic_policy(
    store: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"^--episodes 3 without --noise: equal_weight decides the same"):
        simulate(store, tmp_path, episodes=3)
    assert not (tmp_path / "experience").exists() or table_files(tmp_path, "experience") == []
