"""The experience table's integrity: transitions checked against the learner's universe and observation
encoding, values a float32 learner can read, actions inside the action space, and a decision id
stored once (refused by the writer, left out by the readers of stores written before)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raytrade.replay.experience import (
    ExperienceError,
    _file_transitions,
    read_transitions_frame,
    transitions_from_frame,
    transitions_from_table,
)
from raytrade.replay.reader import table_files
from raytrade.replay.schema import MAX_ABS_REWARD
from raytrade.replay.validation import ReplayValidationError
from raytrade.replay.writer import ReplayWriter

SYMBOLS = ("AAA", "BBB")
SPEC = "a" * 64


def episode(
    name: str = "e", steps: int = 2, symbols: tuple[str, ...] = SYMBOLS, spec: str | None = SPEC
) -> pd.DataFrame:
    """``steps`` steps of two assets: slices of one feature + weight + listed flag, portfolio of 5."""
    rows: list[dict[str, Any]] = []
    t0 = pd.Timestamp("2024-01-02", tz="UTC")
    for k in range(steps):
        for i, sym in enumerate(symbols):
            rows.append(
                {
                    "symbol": sym,
                    "ts": t0 + pd.Timedelta(days=k),
                    "decision_id": f"{name}:{k}:{sym}",
                    "policy_version": "p@1",
                    "side": "flat",
                    "target_weight": 0.5,
                    "reward": 0.01 * (k + 1),
                    "episode_id": name,
                    "step": k,
                    "asset_index": i,
                    "observation": [float(k + i), 0.5, 1.0],
                    "portfolio_state": [0.0, 0.0, 0.0, 0.0, k / steps],
                    "action": 0.5,
                    "next_observation": [float(k + i + 1), 0.5, 1.0],
                    "next_portfolio_state": [0.0, 0.0, 0.0, 0.0, (k + 1) / steps],
                    "terminal": False,
                    "truncated": k == steps - 1,
                    "observation_spec": spec,
                }
            )
    return pd.DataFrame(rows)


def written(root: Path, *frames: pd.DataFrame) -> Path:
    with ReplayWriter(root) as writer:
        for frame in frames:
            writer.append_experience(frame)
    return root


# ------------------------------------------------------------------------------ universe, encoding


def test_matching_experience_is_read_with_the_learners_universe_and_spec() -> None:
    tr = transitions_from_frame(episode(), n_assets=2, obs_dim=11, symbols=SYMBOLS, observation_spec=SPEC)
    assert tr["obs"].shape == (2, 11) and tr["t"].tolist() == [0, 1]


def test_a_zeroed_portfolio_slot_reads_as_zero_in_both_observations_and_nothing_else_moves() -> None:
    """Rows recorded when the env still encoded the episode's progress (``envs.gym_envs.PROGRESS_SLOT``;
    here 0.0 / 0.5 / 1.0) read as the env now shows them: 0 in ``obs`` and ``new_obs``; every other
    value is the row's."""
    plain = transitions_from_frame(episode(), n_assets=2, obs_dim=11, symbols=SYMBOLS, observation_spec=SPEC)
    zeroed = transitions_from_frame(
        episode(), n_assets=2, obs_dim=11, symbols=SYMBOLS, observation_spec=SPEC, zeroed_state=(4,)
    )
    assert plain["obs"][:, -1].tolist() == [0.0, 0.5] and plain["new_obs"][:, -1].tolist() == [0.5, 1.0]
    assert zeroed["obs"][:, -1].tolist() == [0.0, 0.0] and zeroed["new_obs"][:, -1].tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(zeroed["obs"][:, :-1], plain["obs"][:, :-1])
    np.testing.assert_array_equal(zeroed["new_obs"][:, :-1], plain["new_obs"][:, :-1])


def test_experience_of_other_symbols_of_the_same_count_is_refused_naming_them() -> None:
    frame = episode(symbols=("AAA", "CCC"))
    with pytest.raises(
        ExperienceError,
        match=r"'symbol' of episode 'e' step 0 is \['AAA', 'CCC'\] in asset order, the learner's "
        r"universe is \['AAA', 'BBB'\]",
    ):
        transitions_from_frame(frame, n_assets=2, obs_dim=11, symbols=SYMBOLS, observation_spec=SPEC)


def test_experience_of_the_same_symbols_in_another_order_is_refused() -> None:
    with pytest.raises(ExperienceError, match=r"is \['BBB', 'AAA'\] in asset order"):
        transitions_from_frame(episode(symbols=("BBB", "AAA")), symbols=SYMBOLS, observation_spec=SPEC)


def test_experience_encoded_otherwise_is_refused_naming_the_spec() -> None:
    with pytest.raises(ExperienceError, match=r"'observation_spec' of episode 'e' is bbbbbbbbbbbb\.\.\., "):
        transitions_from_frame(episode(spec="b" * 64), symbols=SYMBOLS, observation_spec=SPEC)


def test_experience_logged_before_specs_were_recorded_is_refused_for_a_learner(tmp_path: Path) -> None:
    root = written(tmp_path, episode(spec=None).drop(columns=["observation_spec"]))
    with pytest.raises(ExperienceError, match="'observation_spec' is missing \\(null\\) in episode 'e'"):
        read_transitions_frame(root, symbols=SYMBOLS, observation_spec=SPEC)
    assert read_transitions_frame(root)["obs"].shape == (2, 11)  # unchecked reads still work


# ------------------------------------------------------------------------------ float32, bounds


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("reward", 1e300, "1e+300"),  # finite in float64, inf in float32
        ("reward", 1e7, "10000000.0"),
        ("action", 1.5, "1.5"),
        ("action", -1.0000001, "-1.0000001"),
        ("observation", 1e300, "1e+300"),
        ("next_portfolio_state", 1e20, "1e+20"),  # within float32, beyond MAX_ABS_OBSERVATION
    ],
)
def test_the_writer_refuses_values_a_learner_cannot_read_naming_column_decision_and_value(
    tmp_path: Path, column: str, value: float, shown: str
) -> None:
    frame = episode()
    if column in ("reward", "action"):
        frame.loc[1, column] = value
    else:
        frame.at[1, column] = [value, *frame.at[1, column][1:]]
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(frame)
    message = str(refused.value)
    assert message.startswith(f"experience: row 1, column {column!r}, value {shown}: ")
    assert message.endswith("(decision 'e:0:BBB', episode 'e' step 0)")
    assert list((tmp_path / "experience").glob("year=*/*.parquet")) == []


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    frame = episode()
    frame["action"] = [1.0, -1.0, 1.0, -1.0]
    frame["reward"] = [MAX_ABS_REWARD, MAX_ABS_REWARD, -MAX_ABS_REWARD, -MAX_ABS_REWARD]  # per step
    frame.at[0, "observation"] = [1e15, 0.5, 1.0]
    with ReplayWriter(tmp_path) as writer:
        assert writer.append_experience(frame).rows_written == 4


def test_the_reader_refuses_values_an_older_writer_stored_that_float32_makes_inf() -> None:
    table = pa.Table.from_pandas(episode(), preserve_index=False)
    reward = table.column("reward").to_numpy().copy()
    reward[2:] = 1e300  # step 1
    table = table.set_column(table.schema.get_field_index("reward"), "reward", pa.array(reward))
    with pytest.raises(ExperienceError, match="'reward' is not finite in float32 in episode 'e' step 1"):
        transitions_from_table(table)


def test_rows_of_one_step_whose_rewards_disagree_are_refused_naming_the_step() -> None:
    """A reviewer edited one asset's reward of one step: the learner read asset 0's and said nothing.
    One step has one reward, the portfolio's; rows that disagree are refused."""
    frame = episode(steps=3)
    frame.loc[(frame["step"] == 1) & (frame["asset_index"] == 1), "reward"] = 0.5
    with pytest.raises(
        ExperienceError,
        match="'reward' is not the same on every asset's row of the step in episode 'e' step 1",
    ):
        transitions_from_table(pa.Table.from_pandas(frame, preserve_index=False))
    frame = episode(steps=3)
    frame.loc[(frame["step"] == 2) & (frame["asset_index"] == 0), "reward"] = 0.5  # asset 0 edited
    with pytest.raises(ExperienceError, match="episode 'e' step 2"):
        transitions_from_table(pa.Table.from_pandas(frame, preserve_index=False))


# ------------------------------------------------------------------------------ one row per decision id


def test_the_writer_refuses_a_decision_id_stored_by_an_earlier_append_or_writer(tmp_path: Path) -> None:
    root = written(tmp_path, episode())
    with ReplayWriter(root) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(episode())
    assert str(refused.value).startswith(
        "experience: row 0, column 'decision_id', value 'e:0:AAA': already stored"
    )
    with ReplayWriter(root) as writer:
        writer.append_experience(episode("f"))
        with pytest.raises(ReplayValidationError, match="value 'f:1:BBB': already stored"):
            writer.append_experience(episode("f").iloc[[3]])  # the writer's own earlier append
    assert len(table_files(root, "experience")) == 2


def test_a_live_loops_writer_quarantines_a_duplicate_and_writes_the_rest(tmp_path: Path) -> None:
    root = written(tmp_path, episode())
    fill = {
        "symbol": "AAA",
        "ts": pd.Timestamp("2024-02-01", tz="UTC"),
        "decision_id": "e:0:AAA",  # already stored
        "policy_version": "p@1",
        "side": "buy",
    }
    fresh = {**fill, "symbol": "BBB", "decision_id": "c9:BBB:fill"}
    with ReplayWriter(root, on_error="quarantine") as writer:
        result = writer.append_experience(pd.DataFrame([fill, fresh]))
    assert (result.rows_written, result.rows_refused) == (1, 1)
    assert result.quarantine_file is not None and "already stored" in Path(result.quarantine_file).read_text()


def duplicated_store(root: Path) -> Path:
    """A store whose one file is there twice (an episode appended twice by a writer before the check)."""
    written(root, episode())
    (only,) = table_files(root, "experience")
    shutil.copy(only, only.with_name("part-99999999999999999999-copy.parquet"))
    return root


def test_the_pandas_reader_counts_an_episode_appended_twice_once(tmp_path: Path) -> None:
    tr = read_transitions_frame(duplicated_store(tmp_path))
    assert tr["t"].tolist() == [0, 1]
    np.testing.assert_array_equal(tr["rewards"], np.float32([0.01, 0.02]))


def test_ray_data_read_tasks_count_an_episode_appended_twice_once(tmp_path: Path) -> None:
    from raytrade.replay.experience import read_earlier
    from raytrade.replay.reader import _row_filter

    files = table_files(duplicated_store(tmp_path), "experience")
    groups = [[f] for f in files]  # one task per file: each sees a whole copy of the episode
    drops = read_earlier(groups, _row_filter(None, None, None))
    assert [len(d) for d in drops] == [0, 4]
    steps = [
        _file_transitions(
            pa.table({"paths": [[str(f) for f in group]], "drop": [json.dumps(drop)]}),
            row_filter=_row_filter(None, None, None),
            n_assets=None,
            obs_dim=None,
        )["t"].size
        for group, drop in zip(groups, drops, strict=True)
    ]
    assert steps == [2, 0]


def test_cost_calibration_counts_a_fill_logged_twice_once(tmp_path: Path) -> None:
    from raytrade.envs.cost_calibration import logged_fills
    from tests.test_calibration import _store_with_fills

    _store_with_fills(tmp_path, n_days=3)
    (only,) = table_files(tmp_path, "experience")
    shutil.copy(only, only.with_name("part-99999999999999999999-copy.parquet"))
    sample = logged_fills(tmp_path)
    assert len(sample.slippage_bps) == 9  # 3 symbols x 3 days, not 18
    assert sample.dropped == {"logged twice under one decision_id (the first kept)": 9}


def test_the_writer_refuses_every_row_of_a_step_whose_rewards_disagree(tmp_path: Path) -> None:
    """A live step whose asset rows disagreed on the reward was stored, and every later offline search
    on the store refused the whole table. The writer refuses the step, naming its rewards."""
    frame = episode(steps=3)
    frame.loc[(frame["step"] == 1) & (frame["asset_index"] == 1), "reward"] = 0.5
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(frame)
    assert str(refused.value).startswith(
        "experience: row 2, column 'reward', value '0.02, 0.5': the step's asset rows disagree on the "
        "reward (the values shown)"
    )
    assert "(decision 'e:1:AAA', episode 'e' step 1) (and 1 more refused rows)" in str(refused.value)


def test_exploration_noise_leaves_unlisted_symbols_at_the_policys_action() -> None:
    """``--noise`` jitters only what an order could trade: a symbol not yet listed (or gone) keeps
    the policy's own action, so its logged action is not a choice that had no effect on the reward
    (it was up to |0.195| on every unlisted row of a ragged store, where nothing ever traded)."""
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.experience import simulate_episode
    from raytrade.envs.synthetic_market import market_data_from_config

    cfg = env_config_from_dict(
        {"data": {"kind": "synthetic", "n_assets": 5, "n_steps": 120, "seed": 3, "ragged": True}}
    )
    data = market_data_from_config(cfg.data)
    assert not data.listed.all()  # the store is ragged: some symbols list later (or leave)

    def policy(ob: Any) -> np.ndarray:
        return np.where(ob.mask, 0.1, 0.0)  # 0.1 on each listed symbol

    rows = simulate_episode(data, policy, cfg, episode_id="e", policy_version="p", noise=0.05, seed=1)
    listed = np.array([obs[-1] for obs in rows["observation"]]) > 0.5
    action = rows["action"].to_numpy()
    assert (~listed).sum() > 10 and listed.sum() > 100
    np.testing.assert_array_equal(action[~listed], 0.0)  # the policy's 0, no jitter
    assert np.abs(action[listed] - 0.1).max() > 0.02  # the listed ones are explored
    np.testing.assert_array_equal(rows["target_weight"].to_numpy()[~listed], 0.0)


def test_a_decision_id_stored_twice_with_different_content_is_refused_naming_both(tmp_path: Path) -> None:
    """A store from before the writer refused repeats may hold two different rows under one id: the
    reader kept whichever it read first (file order) and a learner trained on it without a word."""
    import pyarrow.parquet as pq

    root = duplicated_store(tmp_path)
    copy = next(f for f in table_files(root, "experience") if f.name.endswith("-copy.parquet"))
    table = pq.read_table(copy)
    reward = table.column("reward").to_pylist()
    reward[0] = -0.9  # the first row's copy says another reward
    pq.write_table(table.set_column(table.schema.get_field_index("reward"), "reward", [reward]), copy)
    first_id = table.column("decision_id")[0].as_py()
    with pytest.raises(
        ExperienceError, match=rf"decision_id {first_id!r} is stored twice with different 'reward'"
    ):
        read_transitions_frame(root)


def test_ray_data_read_tasks_refuse_a_repeat_that_differs_too(tmp_path: Path) -> None:
    """The Ray Data path drops an id an earlier file group holds (``read_earlier``): it kept the first
    group's row whatever the later one said."""
    import pyarrow.parquet as pq

    from raytrade.replay.experience import read_earlier
    from raytrade.replay.reader import _row_filter

    root = duplicated_store(tmp_path)
    files = table_files(root, "experience")
    assert [len(d) for d in read_earlier([[f] for f in files], _row_filter(None, None, None))] == [0, 4]
    copy = next(f for f in files if f.name.endswith("-copy.parquet"))
    table = pq.read_table(copy)
    action = table.column("action").to_pylist()
    action[1] = 0.9
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", [action]), copy)
    with pytest.raises(ExperienceError, match="is stored twice with different 'action'"):
        read_earlier([[f] for f in files], _row_filter(None, None, None))


def test_an_episode_going_on_after_it_ended_or_a_negative_step_is_refused(tmp_path: Path) -> None:
    """A terminal (or truncated) step followed by more steps of the same episode passed every check:
    the learner cut the bootstrap there and read the later steps as the same episode."""
    ended = episode(steps=3).assign(terminal=lambda f: f["step"] == 0)  # ends at step 0, goes on
    with pytest.raises(
        ExperienceError, match=r"episode 'e' ends at step 0 \(terminal or truncated\) and goes on"
    ):
        transitions_from_frame(ended)
    negative = episode().assign(step=lambda f: f["step"] - 1)
    with pytest.raises(ExperienceError, match="experience column 'step' is -1 in episode 'e'"):
        transitions_from_frame(negative)
    assert transitions_from_frame(episode(steps=3))["t"].tolist() == [0, 1, 2]  # truncated at its end only
