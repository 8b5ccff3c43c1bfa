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
  each file in its own Ray Data task: streaming, no shuffle, nothing read into the driver.
  :func:`transitions_from_frame` is the same assembly for a pandas read (tests, small checks).
* Rows without an ``episode_id`` carry no transition (fills, decision rows of the live loop, which
  logs its transitions as rows of their own one cycle later: ``serve.live``) and are set aside; a
  file with none of its rows a transition is left out of the read (its parquet statistics say so,
  without reading it). Data with no transition at all is refused, naming a decision.
* Refused, naming the column and the episode: a transition column that is null on a transition
  row, a step whose assets are not exactly ``0 .. N-1``, and
  observations or actions whose size differs from the others' or from what the learner expects
  (``n_assets`` / ``obs_dim``: mixed action or observation spaces).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from raytrade.replay.errors import InputError
from raytrade.replay.reader import TimeLike, read_frame, table_files
from raytrade.replay.schema import schema_for

if TYPE_CHECKING:
    import ray.data

TRANSITION_COLUMNS: Final[tuple[str, ...]] = (
    "episode_id",
    "step",
    "asset_index",
    "observation",
    "portfolio_state",
    "action",
    "reward",
    "next_observation",
    "next_portfolio_state",
    "terminal",
    "truncated",
)
"""Experience columns a transition is built from; every one must be non-null on a transition row."""

READ_COLUMNS: Final[tuple[str, ...]] = ("decision_id", *TRANSITION_COLUMNS)
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


READ_CPUS: Final = 0.5
"""CPUs a read task reserves: reading is light, and on a 2-CPU node a Tune trial (1 CPU) and its
pre-learner actor must leave room for it."""


class ExperienceError(InputError):
    """Experience that cannot feed an offline learner; the message names the column and the episode."""


def _refuse_nulls(frame: pd.DataFrame) -> None:
    for column in TRANSITION_COLUMNS:
        null = frame[column].isna().to_numpy()
        if null.any():
            row = frame.loc[null].iloc[0]
            episode = row["episode_id"] if isinstance(row["episode_id"], str) else None
            where = f"episode {episode!r}" if episode else f"decision {row['decision_id']!r} (no episode)"
            raise ExperienceError(
                f"experience column {column!r} is missing (null) in {where}: "
                f"offline RL needs {', '.join(TRANSITION_COLUMNS)} on every decision row"
            )


def _stack(values: pd.Series, column: str, episode: str) -> np.ndarray:
    sizes = {len(v) for v in values}
    if len(sizes) != 1:
        raise ExperienceError(
            f"experience column {column!r} has rows of sizes {sorted(sizes)} in episode {episode!r} "
            "(mixed observation spaces)"
        )
    return np.stack([np.asarray(v, dtype=np.float32) for v in values])


def transitions_from_frame(
    frame: pd.DataFrame, n_assets: int | None = None, obs_dim: int | None = None
) -> dict[str, np.ndarray]:
    """Assemble experience rows (columns ``READ_COLUMNS``) into transitions, sorted by (episode, step);
    rows without an episode id are set aside (none with one: refused, naming a decision).

    ``n_assets`` / ``obs_dim``: the learner's action size and flat observation size; a step of
    another size is refused naming its episode. None: the first step's sizes rule the rest.
    """
    missing = [c for c in READ_COLUMNS if c not in frame.columns]
    if missing:
        raise ExperienceError(f"experience has no column {missing[0]!r}")
    empty = {c: np.empty((0,) if c not in ("obs", "actions", "new_obs") else (0, 0)) for c in OUTPUT_COLUMNS}
    if frame.empty:
        return empty
    tracked = frame["episode_id"].notna().to_numpy()
    _refuse_nulls(frame.loc[tracked] if tracked.any() else frame)
    frame = frame.loc[tracked]
    frame = frame.sort_values(["episode_id", "step", "asset_index"], kind="stable")
    out: dict[str, list[object]] = {c: [] for c in OUTPUT_COLUMNS}
    for (episode, step), rows in frame.groupby(["episode_id", "step"], sort=False):
        episode = str(episode)
        n = len(rows)
        if not np.array_equal(rows["asset_index"].to_numpy(), np.arange(n)):
            raise ExperienceError(
                f"experience column 'asset_index' of episode {episode!r} step {step} is "
                f"{rows['asset_index'].tolist()}, not 0 .. {n - 1} (a step's assets must all be logged)"
            )
        if n_assets is not None and n != n_assets:
            raise ExperienceError(
                f"experience column 'action' has {n} assets in episode {episode!r}, the learner's action "
                f"space has {n_assets} (mixed action spaces)"
            )
        obs = flat_observation(_stack(rows["observation"], "observation", episode), rows["portfolio_state"])
        new_obs = flat_observation(
            _stack(rows["next_observation"], "next_observation", episode), rows["next_portfolio_state"]
        )
        if obs_dim is not None and obs.size != obs_dim:
            raise ExperienceError(
                f"experience column 'observation' gives {obs.size} values in episode {episode!r}, the "
                f"learner's observation space has {obs_dim} (logged with other features or assets)"
            )
        out["eps_id"].append(episode)
        out["t"].append(int(step))
        out["obs"].append(obs)
        out["actions"].append(rows["action"].to_numpy(np.float32))
        out["rewards"].append(float(rows["reward"].iloc[0]))
        out["new_obs"].append(new_obs)
        out["terminateds"].append(bool(rows["terminal"].iloc[0]))
        out["truncateds"].append(bool(rows["truncated"].iloc[0]))
    if n_assets is None:
        widths = {len(a) for a in out["actions"]}  # type: ignore[arg-type]
        if len(widths) != 1:
            raise ExperienceError(
                f"experience column 'action' has steps of {sorted(widths)} assets (mixed action spaces)"
            )
    if obs_dim is None:
        dims = {len(o) for o in out["obs"]}  # type: ignore[arg-type]
        if len(dims) != 1:
            raise ExperienceError(
                f"experience column 'observation' gives observations of sizes {sorted(dims)}"
            )
    return {
        "eps_id": np.asarray(out["eps_id"], dtype=object),
        "t": np.asarray(out["t"], dtype=np.int64),
        "obs": np.stack(out["obs"]),  # type: ignore[arg-type]
        "actions": np.stack(out["actions"]),  # type: ignore[arg-type]
        "rewards": np.asarray(out["rewards"], dtype=np.float32),
        "new_obs": np.stack(out["new_obs"]),  # type: ignore[arg-type]
        "terminateds": np.asarray(out["terminateds"], dtype=bool),
        "truncateds": np.asarray(out["truncateds"], dtype=bool),
    }


def flat_observation(slices: np.ndarray, portfolio: pd.Series) -> np.ndarray:
    """The env's flat observation from per-asset slices ``[N, F + 2]`` (features, weight, listed
    flag; ``envs.experience.asset_slices``) and the portfolio state: ``envs.gym_envs``' layout."""
    port = np.asarray(portfolio.iloc[0], dtype=np.float32)
    return np.concatenate([slices[:, :-2].reshape(-1), slices[:, -2], slices[:, -1], port]).astype(np.float32)


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
) -> dict[str, np.ndarray]:
    """The pandas path: every transition of the store at ``root`` read at once (small data only)."""
    frame = read_frame(root, "experience", start=start, end=end, columns=list(READ_COLUMNS))
    return transitions_from_frame(frame, n_assets, obs_dim)


def read_transitions(
    root: str | os.PathLike[str],
    start: TimeLike = None,
    end: TimeLike = None,
    n_assets: int | None = None,
    obs_dim: int | None = None,
) -> ray.data.Dataset:
    """The transitions of the store at ``root`` as a lazy ``ray.data.Dataset`` (columns
    ``OUTPUT_COLUMNS``): one read-and-assemble task per committed file (see the module docstring).
    Row order is not guaranteed; an empty table is refused (nothing to learn from)."""
    import ray.data

    from raytrade.replay.reader import _check_version, _row_filter

    files = table_files(root, "experience", start, end)
    if not files:
        raise ExperienceError(
            f"no experience under {os.fspath(root)!r}: run `raytrade simulate-experience` first"
        )
    _check_version(files[0])
    with_transitions = [f for f in files if _has_transitions(f)]
    if not with_transitions:
        check_experience_store(root)  # refuses, naming a decision without a transition
    files = with_transitions
    task = functools.partial(
        _file_transitions, row_filter=_row_filter(None, start, end), n_assets=n_assets, obs_dim=obs_dim
    )
    paths = ray.data.from_items([{"path": str(f)} for f in files], override_num_blocks=len(files))
    return paths.map_batches(task, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS)


def _file_transitions(
    batch: object, *, row_filter: object, n_assets: int | None, obs_dim: int | None
) -> dict[str, np.ndarray]:
    """The transitions of the files named in ``batch['path']`` (one Ray Data task)."""
    paths = batch.column("path").to_pylist()  # type: ignore[attr-defined]
    table = ds.dataset(paths, schema=schema_for("experience"), format="parquet").to_table(
        columns=list(READ_COLUMNS), filter=row_filter
    )
    return transitions_from_frame(table.to_pandas(), n_assets, obs_dim)


def _has_transitions(path: Path) -> bool:
    """Whether any row of the experience file at ``path`` has an ``episode_id`` (from the parquet
    statistics when written, else from that one column)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("episode_id")
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        stats = group.column(column).statistics
        if stats is None or not stats.has_null_count:
            return bool(pq.read_table(path, columns=["episode_id"])["episode_id"].is_valid().to_numpy().any())
        if stats.null_count < group.num_rows:
            return True
    return False


def check_experience_store(root: str | os.PathLike[str]) -> None:
    """Refuse (``ExperienceError``) a store without experience, or whose first experience file with
    transitions (else its first file) has a null transition column: the driver's early check, reading
    one file only."""
    files = table_files(root, "experience") if (Path(root) / "experience").is_dir() else []
    if not files:
        raise ExperienceError(
            f"no experience under {os.fspath(root)!r}: run `raytrade simulate-experience` first"
        )
    first = next((f for f in files if _has_transitions(f)), files[0])
    table = ds.dataset([str(first)], schema=schema_for("experience"), format="parquet").to_table(
        columns=list(READ_COLUMNS)
    )
    transitions_from_frame(table.to_pandas())
