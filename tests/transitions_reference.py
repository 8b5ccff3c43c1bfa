"""The experience reader's step-by-step assembly, kept as the oracle of the vectorised one.

``replay.experience.transitions_from_table`` assembles transitions with one sort and per-step flags;
this is the pandas loop over (episode, step) it replaced, verbatim: the same transitions, dtypes and
refusals (the first failing step in (episode, step) order, its first failing check).
``tests/test_offline.py`` runs both on the same rows and requires equal columns and equal messages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.experience import (
    OUTPUT_COLUMNS,
    READ_COLUMNS,
    TRANSITION_COLUMNS,
    ExperienceError,
)


def flat_observation(slices: np.ndarray, portfolio: pd.Series) -> np.ndarray:
    """The former ``replay.experience.flat_observation``, verbatim: the layout the vectorised
    ``flat_observations`` must reproduce, checked independently of it."""
    port = np.asarray(portfolio.iloc[0], dtype=np.float32)
    return np.concatenate([slices[:, :-2].reshape(-1), slices[:, -2], slices[:, -1], port]).astype(np.float32)


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


def reference_transitions(
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
