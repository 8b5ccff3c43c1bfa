"""Offline-RL transitions from the replay store's ``experience`` table, for Ray Data and pandas.

Design decisions
----------------
* The table holds one row per (decision step, asset) (``replay.schema.EXPERIENCE_SCHEMA``; written
  by the simulator, ``envs.experience``, and by any loop that logs the transition columns). A
  transition is one step: its rows ordered by ``asset_index`` give the env's flat observation
  ``[features of asset 0 .. N-1, weights, listed flags, portfolio state]``, the action ``[N]``, the
  reward, the next observation, terminal and truncated: RLlib's offline columns (``obs``,
  ``actions``, ``rewards``, ``new_obs``, ``terminateds``, ``truncateds``, ``eps_id``, ``t``).
* All rows of one step share one ``ts`` and are appended in one batch, so they lie in one file
  (the writer writes one file per batch and year). :func:`read_transitions` therefore assembles
  whole files in Ray Data tasks (consecutive files up to ``READ_ROWS_PER_TASK`` rows per task):
  streaming, nothing read into the driver. A learner reads them shuffled (``shuffle_seed``): each
  task's transitions in a seeded random order and the tasks in a seeded order too, since each task assembles
  its rows in (episode, step) order, and a learner fed them so saw one episode's consecutive days in
  every minibatch and, past the 122,880 a full-budget trial reads (30 iterations of 4,096), never
  reached the window's later years.
  :func:`transitions_from_table` is the assembly, vectorised over steps (one sort, per-step flags
  from ``reduceat``, the list columns flattened once): a Python loop over steps ran at about 2,000
  transitions/s and was the whole cost of feeding an offline learner; :func:`transitions_from_frame`
  is the same for a pandas frame (tests, small checks).
* Rows without an ``episode_id`` carry no transition (fills, decision rows of the live loop, which
  logs its transitions as rows of their own one cycle later: ``serve.live``) and are set aside; a
  file with none of its rows a transition is left out of the read (its parquet statistics say so,
  without reading it). Data with no transition at all is refused, naming a decision.
* Refused, naming the column and the episode: a transition column that is null on a transition
  row, a step whose assets are not exactly ``0 .. N-1``, and
  observations or actions whose size differs from the others' or from what the learner expects
  (``n_assets`` / ``obs_dim``: mixed action or observation spaces). Sizes alone cannot tell two
  universes or two encodings of the same size apart, so the learner also names its universe
  (``symbols``: a step's ``symbol`` in asset order must be it) and its encoding (``observation_spec``,
  ``envs.experience.observation_spec``: every row's must be it; a row without one, written before
  the column existed, is refused too, as it cannot be checked).
* A window ``[start, end]`` (both inclusive, on the rows' ``ts``) selects transitions by date: an
  offline learner reads only its training window's (``tune_specs.offline.experience_window``).
  :func:`window_count` counts the transitions inside and outside it (a step's rows share one ``ts``)
  and measures the spread of the rewards inside, and :func:`check_window` refuses a window holding
  none, naming it and the experience's dates. :func:`read_transitions` divides every reward by a
  given ``reward_scale`` (the offline learners read rewards in units of that spread:
  ``tune_specs.offline``).
* A row whose ``decision_id`` was read before is left out (the writer refuses such rows since it
  checks ids against the table; a store written before may hold an episode appended twice): within
  a read task by the id's first row, across tasks by the driver, which reads the ``decision_id``
  column of the transition files once when there is more than one task. Values that are not finite
  in float32, and actions outside ``[-1, 1]`` (the writer refuses both now) are refused, naming the
  column and the episode.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from raytrade.replay.errors import InputError
from raytrade.replay.reader import TimeLike, read_table, table_files
from raytrade.replay.schema import MAX_ABS_ACTION, MAX_ABS_REWARD, TRANSITION_COLUMNS, schema_for
from raytrade.replay.timeutil import as_utc

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

CHECK_COLUMNS: Final[tuple[str, ...]] = ("symbol", "observation_spec")
"""What a transition is checked against the learner's env with (universe, observation encoding); a
frame or table without ``observation_spec`` (written before it existed) reads it as null."""
READ_COLUMNS: Final[tuple[str, ...]] = ("decision_id", *CHECK_COLUMNS, *TRANSITION_COLUMNS)
OUTPUT_COLUMNS: Final[tuple[str, ...]] = (
    "eps_id",
    "t",
    "obs",
    "actions",
    "rewards",
    "new_obs",
    "terminateds",
    "truncateds",
)
"""Columns of an assembled transition batch (RLlib's offline schema, ``OfflinePreLearner.SCHEMA``)."""


_REWARD_BOUND: Final = f"beyond |reward| <= ln 10 = {MAX_ABS_REWARD:.4f} (replay.schema.MAX_ABS_REWARD)"

READ_ROWS_PER_TASK: Final = 100_000
"""Experience rows a Ray Data read task assembles (whole files, in order): with the vectorised
assembly a task's fixed cost (scheduling, a worker) outweighs its work below about this size."""

READ_CPUS: Final = 0.5
"""CPUs a read task reserves: reading is light, and on a 2-CPU node a Tune trial (1 CPU) and its
pre-learner actor must leave room for it."""


class ExperienceError(InputError):
    """Experience that cannot feed an offline learner; the message names the column and the episode."""


class EncodingError(ExperienceError):
    """Experience whose observations were encoded otherwise than the learner encodes them (their
    ``observation_spec``, present, differs from the learner's: other feature columns or another
    normaliser). Its own class so that a caller who moved the learner's normaliser (``raytrade
    tune --train-fraction``) can say so."""


def _null_rows(table: pa.Table, column: str) -> np.ndarray:
    """Rows of ``column`` that are null (NaN counts as null in a float column, as pandas reads it)."""
    values = table.column(column)
    # one kernel: or-ing is_null with is_nan would be null (not true) on a null row, read as false
    null = pc.is_null(values, nan_is_null=pa.types.is_floating(values.type))
    return np.asarray(null.to_numpy(zero_copy_only=False), dtype=bool)


def _refuse_nulls(table: pa.Table) -> None:
    for column in TRANSITION_COLUMNS:
        null = np.flatnonzero(_null_rows(table, column))
        if null.size:
            episode = table.column("episode_id")[int(null[0])].as_py()
            decision = table.column("decision_id")[int(null[0])].as_py()
            where = (
                f"episode {episode!r}" if isinstance(episode, str) else f"decision {decision!r} (no episode)"
            )
            raise ExperienceError(
                f"experience column {column!r} is missing (null) in {where}: "
                f"offline RL needs {', '.join(TRANSITION_COLUMNS)} on every decision row"
            )


def _per_step(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of ``values`` over each step's rows (steps begin at ``starts``)."""
    return np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)


def _list_lengths(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(pc.list_value_length(table.column(column)).to_numpy(zero_copy_only=False), np.int64)


def _list_values(table: pa.Table, column: str, rows: np.ndarray | None = None) -> np.ndarray:
    """The float32 values of a list column (of ``rows`` only), flattened in row order."""
    values = table.column(column) if rows is None else table.column(column).take(pa.array(rows))
    return np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False), dtype=np.float32)


def transitions_from_frame(
    frame: pd.DataFrame,
    n_assets: int | None = None,
    obs_dim: int | None = None,
    symbols: Sequence[str] | None = None,
    observation_spec: str | None = None,
    zeroed_state: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """:func:`transitions_from_table` of a pandas frame (columns ``READ_COLUMNS``)."""
    if "observation_spec" not in frame.columns:
        frame = frame.assign(observation_spec=None)
    missing = [c for c in READ_COLUMNS if c not in frame.columns]
    if missing:
        raise ExperienceError(f"experience has no column {missing[0]!r}")
    table = pa.Table.from_pandas(frame[list(READ_COLUMNS)], preserve_index=False)
    return transitions_from_table(table, n_assets, obs_dim, symbols, observation_spec, zeroed_state)


def first_rows(table: pa.Table) -> pa.Table:
    """``table`` less the rows whose ``decision_id`` an earlier row has (with a warning naming one): a
    copy of the same transition (a store written before the writer refused repeats). A repeat that
    disagrees with the first in any column read is refused (:func:`refuse_differing_copies`)."""
    found = _repeats(table)
    if found is None:
        return table
    keep, dropped, original = found
    _refuse_differing(table, dropped, original)
    log.warning(
        "experience: %d rows repeat a decision_id read before (e.g. %r) and are left out",
        dropped.size,
        table.column("decision_id")[int(dropped[0])].as_py(),
    )
    return table.take(pa.array(keep))


def refuse_differing_copies(table: pa.Table) -> None:
    """Raise :class:`ExperienceError` (naming the id, the column and both values) when a
    ``decision_id`` of ``table`` repeats with different content: which of two different transitions
    is the logged one cannot be known, and keeping the first read would depend on file order."""
    found = _repeats(table)
    if found is not None:
        _refuse_differing(table, found[1], found[2])


def _repeats(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows kept: each id's first, rows repeating an earlier id, the kept row each repeats) of
    ``table``; None when no id repeats."""
    n = table.num_rows
    ids = pa.table({"id": table.column("decision_id"), "row": pa.array(np.arange(n))})
    first = ids.group_by("id").aggregate([("row", "min")])
    if first.num_rows == n:
        return None
    keep = np.sort(np.asarray(first.column("row_min").to_numpy()))
    dropped = np.setdiff1d(np.arange(n), keep)
    kept_row = dict(zip(first.column("id").to_pylist(), first.column("row_min").to_pylist(), strict=True))
    repeated = table.column("decision_id").take(pa.array(dropped)).to_pylist()
    return keep, dropped, np.array([kept_row[i] for i in repeated], dtype=np.int64)


def _refuse_differing(table: pa.Table, dropped: np.ndarray, original: np.ndarray) -> None:
    """:func:`refuse_differing_copies` for the repeated rows ``dropped`` of the rows ``original``."""
    copies, firsts = table.take(pa.array(dropped)), table.take(pa.array(original))
    for name in table.column_names:  # column by column, vectorised: a store written twice has many
        differs = _differing(firsts.column(name), copies.column(name))
        if differs.any():
            k = int(np.flatnonzero(differs)[0])
            a, b = firsts.column(name)[k].as_py(), copies.column(name)[k].as_py()
            raise ExperienceError(
                f"experience decision_id {copies.column('decision_id')[k].as_py()!r} is stored twice with "
                f"different {name!r}: {_shown(a)} and {_shown(b)} (which transition was logged cannot be "
                "told; remove one)"
            )


def _differing(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """bool per row: ``a`` and ``b`` (same type and length) hold different values; two nulls, or two
    NaNs in the same place, are the same. A list column differs in a row where the lengths or any
    element differ."""
    if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
        lengths_a = pc.list_value_length(a).to_numpy(zero_copy_only=False)
        lengths_b = pc.list_value_length(b).to_numpy(zero_copy_only=False)
        differs = ~_same(lengths_a, lengths_b)
        if differs.all():
            return differs
        flat_a, flat_b = (
            pc.list_flatten(a).to_numpy(zero_copy_only=False),
            pc.list_flatten(b).to_numpy(zero_copy_only=False),
        )
        if len(flat_a) != len(flat_b):  # some rows differ in length: those rows differ (enough to refuse)
            return differs
        unequal = ~_same(flat_a, flat_b)
        owner = np.repeat(np.arange(len(lengths_a)), np.nan_to_num(lengths_a, nan=0).astype(np.int64))
        return differs | np.bincount(owner[unequal], minlength=len(differs)).astype(bool)
    return ~_same(a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False))


def _same(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise equality where None == None and NaN == NaN."""
    if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
        with np.errstate(invalid="ignore"):
            return np.asarray((x == y) | (np.isnan(x.astype(float)) & np.isnan(y.astype(float))), dtype=bool)
    left, right = pd.Series(x, dtype=object), pd.Series(y, dtype=object)
    return np.asarray(left.eq(right) | (left.isna() & right.isna()), dtype=bool)


def _shown(value: Any) -> str:
    """A value for a message, a long list cut."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Steps(NamedTuple):
    """Experience rows grouped into steps, in (episode, step, asset_index) order (:func:`_steps`)."""

    names: np.ndarray  # the episode ids, sorted
    codes: np.ndarray  # per row: its episode's index in ``names``
    step: np.ndarray  # per row
    asset: np.ndarray  # per row: asset_index
    starts: np.ndarray  # per step: its first row
    sizes: np.ndarray  # per step: its rows
    position: np.ndarray  # per row: its place in its step


def _steps(table: pa.Table) -> tuple[pa.Table, _Steps]:
    """``table`` (rows with an episode id) sorted by (episode, step, asset_index), and its steps."""
    episodes = np.asarray(table.column("episode_id").to_numpy(zero_copy_only=False), dtype=object)
    names, codes = np.unique(episodes, return_inverse=True)  # codes in the episodes' sort order
    step = np.asarray(table.column("step").to_numpy(), dtype=np.int64)
    asset = np.asarray(table.column("asset_index").to_numpy(), dtype=np.int64)
    order = np.lexsort((asset, step, codes))  # stable: (episode, step, asset_index)
    table, codes, step, asset = table.take(pa.array(order)), codes[order], step[order], asset[order]
    new_step = np.ones(len(step), dtype=bool)
    new_step[1:] = (codes[1:] != codes[:-1]) | (step[1:] != step[:-1])
    starts = np.flatnonzero(new_step)
    sizes = np.diff(np.append(starts, len(step)))
    position = np.arange(len(step)) - np.repeat(starts, sizes)
    return table, _Steps(names, codes, step, asset, starts, sizes, position)


def _text_column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=object)


def _any_row(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per step: whether any of its rows is set in ``mask``."""
    return np.add.reduceat(mask.astype(np.int64), starts) > 0


def _layout_flags(
    st: _Steps,
    symbol: np.ndarray,
    spec: np.ndarray,
    symbols: Sequence[str] | None,
    observation_spec: str | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per step, (logged on other assets or in another asset order than ``symbols``, logged with
    another ``observation_spec`` or none); None where that check is not asked for."""
    other_symbol = None
    if symbols is not None:
        universe = np.asarray(list(symbols) or ["?"], dtype=object)
        expected = universe[np.minimum(st.position, len(universe) - 1)]
        other_symbol = (st.sizes != len(symbols)) | _any_row(symbol != expected, st.starts)
    other_spec = None
    if observation_spec is not None:
        other_spec = _any_row(np.asarray([x != observation_spec for x in spec], dtype=bool), st.starts)
    return other_symbol, other_spec


def transitions_from_table(
    table: pa.Table,
    n_assets: int | None = None,
    obs_dim: int | None = None,
    symbols: Sequence[str] | None = None,
    observation_spec: str | None = None,
    zeroed_state: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Assemble experience rows (columns ``READ_COLUMNS``) into transitions, sorted by (episode, step);
    rows without an episode id are set aside (none with one: refused, naming a decision), and a row
    whose ``decision_id`` an earlier row has is left out (:func:`first_rows`).

    ``n_assets`` / ``obs_dim``: the learner's action size and flat observation size; a step of
    another size is refused naming its episode. None: the first step's sizes rule the rest.
    ``symbols``: the learner's universe, in its asset order; a step of other symbols (or in another
    order) is refused. ``observation_spec``: the learner env's (``envs.experience.observation_spec``);
    a row with another one, or none, is refused. None: not checked. ``zeroed_state``: indices of the
    portfolio state read as 0 in ``obs`` and ``new_obs`` (a value the learner's env now encodes as 0,
    ``envs.gym_envs.PROGRESS_SLOT``, so rows recorded before read as the env shows them).
    Vectorised over the steps (Arrow and numpy, no Python loop over rows or steps): the checks
    compute a flag per step, and the first flagged step in (episode, step) order is refused.
    """
    if "observation_spec" not in table.column_names:
        table = table.append_column("observation_spec", pa.nulls(table.num_rows, pa.string()))
    missing = [c for c in READ_COLUMNS if c not in table.column_names]
    if missing:
        raise ExperienceError(f"experience has no column {missing[0]!r}")
    empty = {c: np.empty((0,) if c not in ("obs", "actions", "new_obs") else (0, 0)) for c in OUTPUT_COLUMNS}
    if table.num_rows == 0:
        return empty
    table = first_rows(table)
    tracked = table.column("episode_id").is_valid().to_numpy(zero_copy_only=False)
    _refuse_nulls(table.filter(pa.array(tracked)) if tracked.any() else table)
    table = table.filter(pa.array(tracked))
    table, st = _steps(table)
    names, codes, step, asset, starts, sizes, position = st
    lengths = {c: _list_lengths(table, c) for c in ("observation", "next_observation")}
    portfolio = _list_lengths(table, "portfolio_state")[starts]
    flat_size = sizes * lengths["observation"][starts] + portfolio
    symbol, spec = _text_column(table, "symbol"), _text_column(table, "observation_spec")
    unchecked = np.zeros(len(starts), bool)
    other_symbol, other_spec = _layout_flags(st, symbol, spec, symbols, observation_spec)
    # one flag per step and check, in the order the checks are reported
    checks = {
        "asset_index": _any_row(asset != position, starts),
        "n_assets": (sizes != n_assets) if n_assets is not None else unchecked,
        "symbol": unchecked if other_symbol is None else other_symbol,
        "observation_spec": unchecked if other_spec is None else other_spec,
        **{c: np.not_equal(*_per_step(lengths[c], starts)) for c in lengths},
        "obs_dim": (flat_size != obs_dim) if obs_dim is not None else unchecked,
    }
    flagged = np.flatnonzero(np.logical_or.reduce(list(checks.values())))
    if flagged.size:
        k = int(flagged[0])
        rows, n = slice(starts[k], starts[k] + sizes[k]), int(sizes[k])
        episode = str(names[codes[starts[k]]])
        sizes_of = {c: sorted(set(lengths[c][rows].tolist())) for c in lengths}
        logged_spec = next((x for x in spec[rows] if x != observation_spec), None)
        first_check = next(c for c, f in checks.items() if f[k])
        if first_check == "asset_index":
            raise ExperienceError(_asset_message(episode, int(step[starts[k]]), asset[rows].tolist()))
        messages = {
            "n_assets": f"'action' has {n} assets in episode {episode!r}, the learner's action space has "
            f"{n_assets} (mixed action spaces)",
            "symbol": _symbol_message(episode, int(step[starts[k]]), symbol[rows].tolist(), symbols),
            "observation_spec": _spec_message(episode, logged_spec, observation_spec),
            **{
                c: f"{c!r} has rows of sizes {sizes_of[c]} in episode {episode!r} (mixed observation spaces)"
                for c in lengths
            },
            "obs_dim": f"'observation' gives {flat_size[k]} values in episode {episode!r}, the learner's "
            f"observation space has {obs_dim} (logged with other features or assets)",
        }
        raise ExperienceError("experience column " + messages[first_check])
    _refuse_broken_episodes(table, st)
    widths, dims = sorted(set(sizes.tolist())), sorted(set(flat_size.tolist()))
    if len(widths) != 1:
        raise ExperienceError(
            f"experience column 'action' has steps of {widths} assets (mixed action spaces)"
        )
    if len(dims) != 1:
        raise ExperienceError(f"experience column 'observation' gives observations of sizes {dims}")
    return _assemble(
        table, starts, widths[0], episodes=names[codes[starts]], steps=step[starts], zeroed_state=zeroed_state
    )


def _refuse_broken_episodes(table: pa.Table, st: _Steps) -> None:
    """Refuse an episode that goes on after a step that ended it (``terminal`` or ``truncated``: a
    learner zeroes or cuts the bootstrap there, and the steps after it belong to no episode), or a
    negative step number (:class:`ExperienceError` naming the episode and the steps)."""
    starts = st.starts
    step = st.step[starts]
    episode = st.codes[starts]
    if (step < 0).any():
        k = int(np.flatnonzero(step < 0)[0])
        raise ExperienceError(
            f"experience column 'step' is {int(step[k])} in episode {str(st.names[episode[k]])!r}: "
            "steps count from 0"
        )
    done = np.zeros(len(starts), bool)
    for column in ("terminal", "truncated"):
        values = table.column(column).to_numpy(zero_copy_only=False)[starts]
        done |= np.asarray(pd.Series(values).fillna(False), dtype=bool)
    goes_on = np.r_[episode[1:] == episode[:-1], False]
    ended = np.flatnonzero(done & goes_on)
    if ended.size:
        k = int(ended[0])
        raise ExperienceError(
            f"experience: episode {str(st.names[episode[k]])!r} ends at step {int(step[k])} (terminal or "
            f"truncated) and goes on at step {int(step[k + 1])}: its later steps belong to no episode"
        )


def _asset_message(episode: str, step: int, assets: list[int]) -> str:
    """Why a step whose ``asset_index`` values (sorted) are not ``0 .. n - 1`` is refused."""
    if len(set(assets)) < len(assets):
        return (
            f"experience: step {step} of episode {episode!r} is written twice (asset_index {assets}): "
            "rows of one (episode_id, step, asset_index) under several decision ids, e.g. an episode "
            "appended again (the writer refuses them now); its transitions would be counted twice"
        )
    return (
        f"experience column 'asset_index' of episode {episode!r} step {step} is {assets}, not "
        f"0 .. {len(assets) - 1} (a step's assets must all be logged)"
    )


def _symbol_message(episode: str, step: int, logged: list[object], symbols: Sequence[str] | None) -> str:
    return (
        f"'symbol' of episode {episode!r} step {step} is {logged} in asset order, the learner's universe "
        f"is {list(symbols or [])} (experience logged on other assets or in another asset order)"
    )


def _spec_message(episode: str, logged: object, observation_spec: str | None) -> str:
    if logged is None:
        return (
            f"'observation_spec' is missing (null) in episode {episode!r}: its observations cannot "
            "be checked against the learner's features and normaliser (rows logged before the "
            "store recorded them); record the experience again (`raytrade simulate-experience`)"
        )
    return (
        f"'observation_spec' of episode {episode!r} is {str(logged)[:12]}..., the learner's is "
        f"{str(observation_spec)[:12]}... (observations encoded with other feature columns or another "
        "normaliser)"
    )


VALUE_COLUMNS: Final[tuple[str, ...]] = ("reward", "action", "terminal", "truncated")
"""A transition's scalar values, which :func:`check_layout` checks too (read cheaply, unlike the
observation lists)."""
LAYOUT_COLUMNS: Final[tuple[str, ...]] = (
    "decision_id",
    "episode_id",
    "step",
    "asset_index",
    *CHECK_COLUMNS,
    *VALUE_COLUMNS,
)
"""What :func:`check_layout` reads: the checks' columns, where a row lies and its scalar values, no
observation."""


def _bad_values(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Per row of ``table`` (columns :data:`VALUE_COLUMNS`): whether a learner refuses its values,
    and why (the column, the value, the bound), for the flagged rows only ("" elsewhere)."""
    reward = np.asarray(table.column("reward").to_numpy(zero_copy_only=False), dtype=np.float64)
    action = np.asarray(table.column("action").to_numpy(zero_copy_only=False), dtype=np.float64)
    null = {c: _null_rows(table, c) for c in VALUE_COLUMNS}
    checks = [
        *((null[c], c, "missing (null or NaN)") for c in VALUE_COLUMNS),
        (~null["reward"] & ~np.isfinite(reward), "reward", "not finite"),
        (~null["reward"] & ~(np.abs(reward) <= MAX_ABS_REWARD), "reward", _REWARD_BOUND),
        (~null["action"] & ~(np.abs(action) <= MAX_ABS_ACTION), "action", "outside the action space [-1, 1]"),
    ]
    why = np.full(table.num_rows, "", dtype=object)
    values = {"reward": reward, "action": action}
    for flags, column, what in reversed(checks):  # the first check's reason wins
        for i in np.flatnonzero(flags):
            shown = "" if null[column][i] or column not in values else f"{float(values[column][i])!r}, "
            why[i] = f"column {column!r} is {shown}{what}"
    return why != "", why.tolist()


def check_layout(
    root: str | os.PathLike[str],
    start: TimeLike,
    end: TimeLike,
    symbols: Sequence[str],
    observation_spec: str,
) -> None:
    """Refuse (``ExperienceError``) a transition dated ``[start, end]`` that a learner of universe
    ``symbols`` (in its asset order) and encoding ``observation_spec`` would refuse, with the message
    the learner gives (:func:`transitions_from_table`): a scalar value missing, not finite or out of
    bounds (reward, action, terminal, truncated: what an older writer stored), a step written twice
    or lacking an asset, assets in ``asset_index`` order other than ``symbols``, an
    ``observation_spec`` other than ``observation_spec`` (:class:`EncodingError`) or null. The
    driver's early check, before
    Ray starts, of what the learner checks on every row it reads (else found by a trial seconds later
    and reported as Ray Data's retry hint). Reads :data:`LAYOUT_COLUMNS` only (no observation; a
    repeated ``decision_id`` left out as the learner does, :func:`first_rows`), and names the first
    such step in (episode, step) order, its values before its assets, the universe before the
    encoding."""
    table = read_table(root, "experience", start=start, end=end, columns=list(LAYOUT_COLUMNS))
    table = table.filter(table.column("episode_id").is_valid())
    if table.num_rows == 0:
        return
    table = first_rows(table)
    for column in ("step", "asset_index"):
        null = np.flatnonzero(_null_rows(table, column))
        if null.size:
            episode, decision = (table.column(c)[int(null[0])].as_py() for c in ("episode_id", "decision_id"))
            raise ExperienceError(
                f"experience column {column!r} is missing (null) in episode {episode!r} "
                f"(decision {decision!r})"
            )
    table, st = _steps(table)
    symbol, spec = _text_column(table, "symbol"), _text_column(table, "observation_spec")
    other_symbol, other_spec = _layout_flags(st, symbol, spec, symbols, observation_spec)
    assert other_symbol is not None and other_spec is not None  # both checked
    names, codes, step, asset, starts, sizes, position = st
    bad_row, why = _bad_values(table)
    bad_value, bad_asset = _any_row(bad_row, starts), _any_row(asset != position, starts)
    flagged = np.flatnonzero(bad_value | bad_asset | other_symbol | other_spec)
    if not flagged.size:
        return
    k = int(flagged[0])
    rows = slice(starts[k], starts[k] + sizes[k])
    episode, at = str(names[codes[starts[k]]]), int(step[starts[k]])
    if bad_value[k]:
        row = int(starts[k] + np.flatnonzero(bad_row[rows])[0])
        decision = table.column("decision_id")[row].as_py()
        raise ExperienceError(
            f"experience {why[row]} in episode {episode!r} step {at} (decision {decision!r}): written "
            "before the store refused such values, and offline learners refuse it; record the "
            "experience into another store (`raytrade simulate-experience --out NEW`)"
        )
    if bad_asset[k]:
        raise ExperienceError(_asset_message(episode, at, asset[rows].tolist()))
    if other_symbol[k]:
        raise ExperienceError(
            "experience column " + _symbol_message(episode, at, symbol[rows].tolist(), symbols)
        )
    logged = next((x for x in spec[rows] if x != observation_spec), None)
    error = ExperienceError if logged is None else EncodingError  # null: recorded before the column
    raise error("experience column " + _spec_message(episode, logged, observation_spec))


def _assemble(
    table: pa.Table,
    starts: np.ndarray,
    n: int,
    episodes: np.ndarray,
    steps: np.ndarray,
    zeroed_state: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """The transition columns of ``table`` (sorted, checked: every step ``n`` rows from ``starts``),
    the portfolio state's ``zeroed_state`` read as 0."""
    first = starts  # a step's shared columns are read from its asset 0 row

    def flat(slices: str, state: str) -> np.ndarray:
        # every step's slices and state of one size (a layout to reshape): else refused, naming the
        # first episode that differs from the first step's
        lengths = {slices: _list_lengths(table, slices)[first], state: _list_lengths(table, state)[first]}
        for column, sizes in lengths.items():
            other = np.flatnonzero(sizes != sizes[0])
            if other.size:
                raise ExperienceError(
                    f"experience column {column!r} has rows of sizes {sorted(set(sizes.tolist()))}: "
                    f"episode {episodes[other[0]]!r} differs from episode {episodes[0]!r} "
                    "(mixed observation spaces)"
                )
        width = int(lengths[slices][0])
        if width < 2:
            raise ExperienceError(
                f"experience column {slices!r} has rows of {width} values in episode {episodes[0]!r}: "
                "an asset's slice is its features, weight and listed flag (at least 2)"
            )
        values = _list_values(table, slices).reshape(len(first), n, width)
        portfolio = _list_values(table, state, first).reshape(len(first), -1).copy()
        portfolio[:, list(zeroed_state)] = 0.0
        return flat_observations(values, portfolio)

    obs, new_obs = flat("observation", "portfolio_state"), flat("next_observation", "next_portfolio_state")
    if new_obs.shape != obs.shape:
        raise ExperienceError(
            f"experience column 'next_observation' gives {new_obs.shape[1]} values, 'observation' "
            f"{obs.shape[1]}, in episode {episodes[0]!r} (mixed observation spaces)"
        )

    def column(name: str, dtype: type) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype)

    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused below
        actions = column("action", np.float32).reshape(len(first), n)
        every_reward = column("reward", np.float32).reshape(len(first), n)
        rewards = every_reward[:, 0]
    finite, space = "not finite in float32", "outside the action space [-1, 1]"
    older = "written before the store refused such values"
    bad = [  # (column, per step: refused, what, why), in the order they are reported
        ("observation", ~np.isfinite(obs).all(axis=1), finite, older),
        ("next_observation", ~np.isfinite(new_obs).all(axis=1), finite, older),
        ("reward", ~np.isfinite(rewards), finite, older),
        ("action", ~(np.abs(actions) <= MAX_ABS_ACTION).all(axis=1), space, older),
        ("reward", ~(np.abs(rewards) <= np.float32(MAX_ABS_REWARD)), _REWARD_BOUND, older),  # as stored
        ("reward", ~(every_reward == rewards[:, None]).all(axis=1), *_REWARDS_DISAGREE),
    ]
    for name, flags, what, why in bad:
        if flags.any():
            k = int(np.flatnonzero(flags)[0])
            raise ExperienceError(
                f"experience column {name!r} is {what} in episode {episodes[k]!r} step {steps[k]} ({why})"
            )
    return {
        "eps_id": episodes.astype(object),
        "t": steps.astype(np.int64),
        "obs": obs,
        "actions": actions,
        "rewards": rewards,
        "new_obs": new_obs,
        "terminateds": column("terminal", bool)[first],
        "truncateds": column("truncated", bool)[first],
    }


def check_reward_scale(scale: float) -> float:
    """``scale`` when it can divide rewards (a finite number > 0), else a ``ValueError`` naming it."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"reward_scale {scale!r}: the rewards' divisor must be a finite number > 0")
    return scale


def scale_rewards(transitions: Mapping[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """``transitions`` (``OUTPUT_COLUMNS``) with ``rewards`` divided by ``scale`` (a finite number > 0,
    else a ``ValueError`` naming it; float32, as read), the other columns as they are: the unit an
    offline learner reads its rewards in (``tune_specs.offline.reward_scale``)."""
    check_reward_scale(scale)
    rewards = np.asarray(transitions["rewards"], dtype=np.float64) / scale
    return {**transitions, "rewards": rewards.astype(np.float32)}


def flat_observations(slices: np.ndarray, portfolio: np.ndarray) -> np.ndarray:
    """The env's flat observations (``envs.gym_envs``' layout) of ``S`` steps: per-asset slices
    ``[S, N, F + 2]`` (features, weight, listed flag) and portfolio states ``[S, P]`` give
    ``[features of asset 0 .. N-1, weights, listed flags, portfolio state]``, ``[S, N F + 2 N + P]``."""
    s = slices.shape[0]
    return np.concatenate(
        [slices[:, :, :-2].reshape(s, -1), slices[:, :, -2], slices[:, :, -1], portfolio], axis=1
    ).astype(np.float32)


def flat_observation(slices: np.ndarray, portfolio: pd.Series) -> np.ndarray:
    """The env's flat observation from per-asset slices ``[N, F + 2]`` (features, weight, listed
    flag; ``envs.experience.asset_slices``) and the portfolio state (its first value): ``envs.gym_envs``'
    layout, :func:`flat_observations` of one step."""
    port = np.asarray(portfolio.iloc[0], dtype=np.float32)
    return flat_observations(np.asarray(slices, dtype=np.float32)[None], port[None])[0]


def split_flat_observation(
    flat: np.ndarray, n_assets: int, portfolio_width: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """The inverse of :func:`flat_observation`: per-asset slices ``[F + 2]`` (features, weight,
    listed flag) and the portfolio state of a flat observation of ``n_assets`` assets."""
    width = flat.size - portfolio_width
    if n_assets < 1 or width < 2 * n_assets or width % n_assets:
        raise ExperienceError(
            f"a flat observation of {flat.size} values is not {n_assets} assets x (F + 2) + "
            f"{portfolio_width} portfolio values"
        )
    n_features = width // n_assets - 2
    flat = flat.astype(np.float32)
    features = flat[: n_assets * n_features].reshape(n_assets, n_features)
    weights = flat[n_assets * n_features : n_assets * (n_features + 1)]
    listed = flat[n_assets * (n_features + 1) : width]
    slices = np.concatenate([features, weights[:, None], listed[:, None]], axis=1)
    return list(slices), flat[width:]


def read_transitions_frame(
    root: str | os.PathLike[str],
    start: TimeLike = None,
    end: TimeLike = None,
    n_assets: int | None = None,
    obs_dim: int | None = None,
    symbols: Sequence[str] | None = None,
    observation_spec: str | None = None,
    reward_scale: float = 1.0,
    zeroed_state: Sequence[int] = (),
    shuffle_seed: int | None = None,
) -> dict[str, np.ndarray]:
    """The pandas path: every transition of the store at ``root`` read at once (small data only),
    rewards divided by ``reward_scale`` as :func:`read_transitions` divides them, in (episode, step)
    order, or with ``shuffle_seed`` in the random order its one read task would give them."""
    table = read_table(root, "experience", start=start, end=end, columns=list(READ_COLUMNS))
    transitions = transitions_from_table(table, n_assets, obs_dim, symbols, observation_spec, zeroed_state)
    if shuffle_seed is not None:
        transitions = shuffled(transitions, np.random.default_rng(json.loads(_task_seed(shuffle_seed, 0))))
    return transitions if reward_scale == 1.0 else scale_rewards(transitions, reward_scale)


def read_transitions(
    root: str | os.PathLike[str],
    start: TimeLike = None,
    end: TimeLike = None,
    n_assets: int | None = None,
    obs_dim: int | None = None,
    symbols: Sequence[str] | None = None,
    observation_spec: str | None = None,
    reward_scale: float = 1.0,
    zeroed_state: Sequence[int] = (),
    shuffle_seed: int | None = None,
) -> ray.data.Dataset:
    """The transitions of the store at ``root`` dated ``[start, end]`` (inclusive; None: unbounded)
    as a lazy ``ray.data.Dataset`` (columns ``OUTPUT_COLUMNS``): one read-and-assemble task per group
    of committed files of at most ``READ_ROWS_PER_TASK`` rows (see the module docstring; the checks of
    :func:`transitions_from_table`, a decision id read in an earlier group left out, ``zeroed_state``
    as there), every reward divided by ``reward_scale`` (:func:`scale_rewards`; 1.0: as logged).
    With ``shuffle_seed`` each task's transitions come in a random order drawn from it and the task's
    index, and the tasks in a random order drawn from it, that order kept (a learner's minibatches);
    without, each task's in (episode, step) order and the order of the tasks is not guaranteed. An empty table
    is refused (nothing to learn from); a window holding no transition is for the caller to refuse
    beforehand (:func:`check_window`, it reads the dates)."""
    import ray.data

    from raytrade.replay.reader import _check_version, _row_filter

    files = table_files(root, "experience", start, end)
    if not files:
        within = "" if start is None and end is None else f" dated {_span(start, end)}"
        raise ExperienceError(
            f"no experience{within} under {os.fspath(root)!r}: run `raytrade simulate-experience` first"
        )
    _check_version(files[0])
    rows = {f: _transition_rows(f) for f in files}
    if not any(rows.values()):
        check_experience_store(root)  # refuses, naming a decision without a transition
    if not (np.isfinite(reward_scale) and reward_scale > 0):  # refused in the driver, not in a task
        raise ValueError(f"reward_scale {reward_scale!r}: the rewards' divisor must be a finite number > 0")
    row_filter = _row_filter(None, start, end)
    task = functools.partial(
        _file_transitions,
        row_filter=row_filter,
        n_assets=n_assets,
        obs_dim=obs_dim,
        symbols=None if symbols is None else list(symbols),
        observation_spec=observation_spec,
        reward_scale=reward_scale,
        zeroed_state=list(zeroed_state),
    )
    groups = read_groups([f for f in files if rows[f]], rows, READ_ROWS_PER_TASK)
    drops = read_earlier(groups, row_filter)
    items = [  # drop as JSON text: one column type whether a group drops ids or not
        {"paths": [str(f) for f in group], "drop": json.dumps(drop), "shuffle": _task_seed(shuffle_seed, i)}
        for i, (group, drop) in enumerate(zip(groups, drops, strict=True))
    ]
    if shuffle_seed is not None:  # the tasks in a seeded order (randomize_block_order is all-to-all:
        # every task would finish, the whole window in the object store, before a learner's first row)
        items = [items[i] for i in np.random.default_rng(shuffle_seed).permutation(len(items))]
    paths = ray.data.from_items(items, override_num_blocks=len(items))
    read = paths.map_batches(task, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS)
    if shuffle_seed is not None:  # Ray Data emits blocks as tasks finish unless told to keep order
        read.context.execution_options.preserve_order = True
    return read


def _task_seed(seed: int | None, task: int) -> str:
    """A read task's shuffle seed as text (one column type whether set or not): ``""`` for none."""
    return "" if seed is None else json.dumps([seed, task])


def read_groups(files: list[Path], rows: Mapping[Path, int], rows_per_group: int) -> list[list[Path]]:
    """``files`` in order, cut into consecutive groups of at most ``rows_per_group`` rows (a file with
    more rows alone in its group): one Ray Data read task each."""
    groups: list[list[Path]] = []
    total = 0
    for f in files:
        if not groups or total + rows[f] > rows_per_group:
            groups.append([])
            total = 0
        groups[-1].append(f)
        total += rows[f]
    return groups


def read_earlier(groups: list[list[Path]], row_filter: object) -> list[list[str]]:
    """Per group of files, the decision ids that an earlier group holds too (their rows there are the
    ones kept): empty lists unless the ``decision_id`` column of the groups repeats an id across them."""
    if len(groups) < 2:
        return [[] for _ in groups]
    schema = schema_for("experience")
    ids = [
        pc.unique(
            ds.dataset([str(f) for f in group], schema=schema, format="parquet")
            .to_table(columns=["decision_id"], filter=row_filter)
            .column("decision_id")
        )
        for group in groups
    ]
    every = pa.table(
        {"id": pa.chunked_array(ids), "group": np.repeat(np.arange(len(ids)), [len(i) for i in ids])}
    )
    first = every.group_by("id").aggregate([("group", "min"), ("group", "count")])
    repeated = first.filter(pc.greater(first.column("group_count"), 1))
    drops: list[list[str]] = [[] for _ in groups]
    if repeated.num_rows == 0:
        return drops
    owner = dict(
        zip(repeated.column("id").to_pylist(), repeated.column("group_min").to_pylist(), strict=True)
    )
    for g, group_ids in enumerate(ids):
        drops[g] = [i for i in group_ids.to_pylist() if owner.get(i, g) < g]
    # the repeats must be copies: their rows from every group, in group order, refused where one
    # differs from the first (ExperienceError), as the pandas reader refuses it
    present = set(schema.names)
    repeats = pa.array(list(owner), pa.string())
    in_repeats = pc.field("decision_id").isin(repeats)
    where = in_repeats if row_filter is None else (row_filter & in_repeats)
    copies = [
        ds.dataset([str(f) for f in group], schema=schema, format="parquet").to_table(
            columns=[c for c in READ_COLUMNS if c in present], filter=where
        )
        for group in groups
    ]
    refuse_differing_copies(pa.concat_tables(copies))
    log.warning("experience: %d decision ids are stored twice; their later rows are left out", len(owner))
    return drops


def _file_transitions(
    batch: object,
    *,
    row_filter: object,
    n_assets: int | None,
    obs_dim: int | None,
    symbols: list[str] | None = None,
    observation_spec: str | None = None,
    reward_scale: float = 1.0,
    zeroed_state: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """The transitions of the files named in ``batch['paths']`` less the rows whose decision id is
    in ``batch['drop']`` (a JSON list: read by an earlier task, :func:`read_earlier`), rewards divided
    by ``reward_scale``, one Ray Data task."""
    paths = [p for group in batch.column("paths").to_pylist() for p in group]  # type: ignore[attr-defined]
    table = ds.dataset(paths, schema=schema_for("experience"), format="parquet").to_table(
        columns=list(READ_COLUMNS), filter=row_filter
    )
    names = batch.column_names  # type: ignore[attr-defined]
    texts = batch.column("drop").to_pylist() if "drop" in names else []  # type: ignore[attr-defined]
    drop = [i for text in texts for i in json.loads(text)]
    if drop:
        table = table.filter(pc.invert(pc.is_in(table.column("decision_id"), value_set=pa.array(drop))))
    transitions = transitions_from_table(table, n_assets, obs_dim, symbols, observation_spec, zeroed_state)
    seeds = batch.column("shuffle").to_pylist() if "shuffle" in names else []  # type: ignore[attr-defined]
    if seeds and seeds[0]:
        transitions = shuffled(transitions, np.random.default_rng(json.loads(seeds[0])))
    return transitions if reward_scale == 1.0 else scale_rewards(transitions, reward_scale)


def shuffled(transitions: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``transitions`` (columns of one length) with their rows in a random order drawn from ``rng``."""
    order = rng.permutation(len(next(iter(transitions.values()))))
    return {name: column[order] for name, column in transitions.items()}


def _transition_rows(path: Path) -> int:
    """The rows of the experience file at ``path`` if any row has an ``episode_id``, else 0 (from the
    parquet statistics when written, else from that one column)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("episode_id")
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        stats = group.column(column).statistics
        if stats is None or not stats.has_null_count:
            valid = pq.read_table(path, columns=["episode_id"])["episode_id"].is_valid().to_numpy()
            return int(meta.num_rows) if valid.any() else 0
        if stats.null_count < group.num_rows:
            return int(meta.num_rows)
    return 0


def check_experience_store(root: str | os.PathLike[str]) -> None:
    """Refuse (``ExperienceError``) a store without experience, or whose first experience file with
    transitions (else its first file) has a null transition column: the driver's early check, reading
    one file only."""
    files = table_files(root, "experience") if (Path(root) / "experience").is_dir() else []
    if not files:
        raise ExperienceError(
            f"no experience under {os.fspath(root)!r}: run `raytrade simulate-experience` first"
        )
    first = next((f for f in files if _transition_rows(f)), files[0])
    table = ds.dataset([str(first)], schema=schema_for("experience"), format="parquet").to_table(
        columns=list(READ_COLUMNS)
    )
    transitions_from_table(table)


def _span(start: TimeLike, end: TimeLike) -> str:
    """``start .. end`` for a message (``...`` for an open end)."""
    lo, hi = (None if t is None else as_utc(t, "window").isoformat() for t in (start, end))
    return f"{lo or '...'} .. {hi or '...'}"


REWARD_OUTLIER_SCALES: Final = 10.0
"""A transition's reward this many robust scales (1.4826 x the median absolute deviation) from the
window's median is named by ``raytrade tune``: one fake bar (an unadjusted split: +300 %) sets the
rewards' standard deviation, so the divisor of every reward, and is cloned by the learner."""


class RewardOutlier(NamedTuple):
    """The window's reward farthest from its median, in robust scales."""

    episode_id: str
    step: int
    ts: pd.Timestamp
    reward: float
    scales: float

    def message(self) -> str:
        return (
            f"the reward of episode {self.episode_id!r} step {self.step} ({self.ts.date()}), "
            f"{self.reward:+.4g}, is {self.scales:.0f} robust scales from the median of the window's "
            "rewards: a bad bar or an unadjusted split there (raytrade simulate-experience names those) "
            "sets the divisor of every reward and is learnt from as it is"
        )


@dataclass(frozen=True)
class WindowCount:
    """Transitions (steps, not rows) of an experience store inside a window and on either side of it,
    the dates of its first and last transition (None: it holds none), and the population standard
    deviation of the finite rewards of the transitions inside (one per step, the reward its asset 0
    row carries, as the learner reads it; 0.0 for fewer than two)."""

    inside: int
    before: int
    after: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    reward_std: float = 0.0
    outlier: RewardOutlier | None = None  # the farthest reward, when beyond REWARD_OUTLIER_SCALES

    @property
    def left_out(self) -> int:
        return self.before + self.after


_REWARDS_DISAGREE: Final = (
    "not the same on every asset's row of the step",
    "one step has one reward, the portfolio's: rows that disagree were edited or corrupted, and the "
    "learner would read asset 0's",
)


def window_count(root: str | os.PathLike[str], start: TimeLike, end: TimeLike) -> WindowCount:
    """Count the transitions of the store at ``root`` dated in ``[start, end]`` (inclusive; None:
    unbounded), before and after it, and the spread of the rewards inside (:class:`WindowCount`;
    reads ``ts``, ``episode_id``, ``step``, ``asset_index`` and ``reward`` only)."""
    columns = ["ts", "episode_id", "step", "asset_index", "reward"]
    table = read_table(root, "experience", columns=columns)
    steps = table.filter(table.column("episode_id").is_valid()).to_pandas()
    steps = steps.sort_values(["episode_id", "step", "asset_index"], kind="stable")
    steps = steps.drop_duplicates(["episode_id", "step"])  # a step's asset 0 row, the learner's reward
    ts = steps["ts"]
    early = np.zeros(len(ts), bool) if start is None else (ts < as_utc(start, "start")).to_numpy()
    late = np.zeros(len(ts), bool) if end is None else (ts > as_utc(end, "end")).to_numpy()
    inside = steps[~(early | late)]
    inside = inside[np.isfinite(inside["reward"].to_numpy(dtype=np.float64))]  # else refused by the read
    rewards = inside["reward"].to_numpy(dtype=np.float64)
    return WindowCount(
        inside=int(len(ts) - early.sum() - late.sum()),
        before=int(early.sum()),
        after=int(late.sum()),
        first=ts.min() if len(ts) else None,
        last=ts.max() if len(ts) else None,
        reward_std=float(np.std(rewards)) if rewards.size > 1 else 0.0,
        outlier=_farthest_reward(inside),
    )


REWARD_AT_REST: Final = 1e-9
"""Rewards within this of one another are one value: a book at rest (in cash, or held flat) earns the
same reward each step (0, or the cash rate's), up to float noise."""


def _at_rest(rewards: np.ndarray) -> np.ndarray:
    """Which ``rewards`` are the book at rest: within :data:`REWARD_AT_REST` of the most frequent value,
    when that value repeats on more than 5 % of the steps (else none)."""
    keys = np.round(rewards / REWARD_AT_REST)
    values, counts = np.unique(keys, return_counts=True)
    if counts.size == 0 or counts.max() <= max(1, 0.05 * rewards.size):
        return np.zeros(rewards.size, dtype=bool)
    return np.abs(keys - values[np.argmax(counts)]) <= 1


def _farthest_reward(steps: pd.DataFrame) -> RewardOutlier | None:
    """The reward of ``steps`` (columns ts, episode_id, step, reward) farthest from the median of the
    rewards of the steps that moved (not at rest: :func:`_at_rest`), when more than
    :data:`REWARD_OUTLIER_SCALES` robust scales of those from it; None otherwise (or when fewer than
    two moved, or those do not vary). A book in cash earns the same reward every step (0, or the cash
    rate's): counted, half the steps in cash made the scale 0 (no check at all) or, just under half, a
    sliver (every ordinary day an outlier)."""
    rewards = steps["reward"].to_numpy(dtype=np.float64)
    moved = np.flatnonzero(~_at_rest(rewards))
    if moved.size < 2:
        return None
    centre = float(np.median(rewards[moved]))
    scale = 1.4826 * float(np.median(np.abs(rewards[moved] - centre)))
    if not scale > REWARD_AT_REST:
        return None
    k = int(moved[np.argmax(np.abs(rewards[moved] - centre))])
    scales = abs(rewards[k] - centre) / scale
    if scales <= REWARD_OUTLIER_SCALES:
        return None
    row = steps.iloc[k]
    when = pd.Timestamp(row["ts"])
    return RewardOutlier(str(row["episode_id"]), int(row["step"]), when, float(rewards[k]), scales)


def check_window(root: str | os.PathLike[str], start: TimeLike, end: TimeLike, window: str) -> WindowCount:
    """:func:`window_count`, refused (``ExperienceError``) when no transition lies in the window: the
    message names the ``window`` (what it is), its dates and the experience's."""
    count = window_count(root, start, end)
    if count.inside == 0:
        held = (
            "holds no transition"
            if count.first is None
            else f"holds {count.left_out} transitions dated {_span(count.first, count.last)}"
        )
        raise ExperienceError(
            f"no experience transition under {os.fspath(root)!r} lies in {window} "
            f"({_span(start, end)}): the experience {held}"
        )
    return count
