"""Ingest: validated source rows -> bars, macro, forecasts -> features, appended to a store.

Design decisions
----------------
* Everything a source returns is validated before anything is written: a bad row aborts the whole
  ingest with a message naming the file/table, row, column and value, and the store is untouched.
* Incremental: rows at or before a symbol's last stored bar are already in the store and are
  skipped (counted in the result); features are recomputed from the full stored history plus the
  new bars, and only rows after the last stored feature row are appended. Re-running an ingest that
  crashed between the bars and the features commits therefore completes it.
* Imported forecasts change features already stored, so ``import_forecasts`` rebuilds the features
  table into a hidden folder and swaps it in (``_swap.json`` records the swap; ``recover_store``
  finishes an interrupted one).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.reader import read_frame
from raytrade.replay.validation import ReplayValidationError, conform
from raytrade.replay.writer import ReplayWriter, read_watermarks

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IngestResult:
    """Rows appended per table and rows skipped because the store already had them."""

    appended: dict[str, int]
    skipped_bars: int


def _stored(root: Path, table: str) -> pd.DataFrame | None:
    if not (root / table).is_dir():
        return None
    frame = read_frame(root, table)
    return frame if len(frame) else None


def _newer_than_store(frame: pd.DataFrame, marks: dict[str, np.datetime64]) -> pd.DataFrame:
    if not marks or frame.empty:
        return frame
    floor = frame["symbol"].map(lambda s: marks.get(str(s), np.datetime64("NaT", "us")))
    floor = pd.to_datetime(floor.astype("datetime64[us]")).dt.tz_localize("UTC")
    keep = floor.isna() | (frame["ts"] > floor)
    return frame[keep.to_numpy()].reset_index(drop=True)


def _validated(table: str, frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    valid, errors, _ = conform(table, frame)
    if errors:
        raise ReplayValidationError(errors, origin=origin)
    return valid.to_pandas()


def ingest_frames(
    root: str | os.PathLike[str],
    bars: pd.DataFrame,
    macro: pd.DataFrame | None = None,
    origin: str = "source",
    config: FeatureConfig | None = None,
    show_progress: bool = True,
) -> IngestResult:
    """Validate ``bars`` (and ``macro``), append what is new, compute and append new features."""
    path = Path(root)
    stages = tqdm(total=4, desc="ingest", unit="stage", disable=not show_progress, leave=False)
    bars = _validated("bars", bars, origin)
    macro = _validated("macro", macro, origin) if macro is not None and len(macro) else None
    stages.update(1)
    stages.set_description("ingest: merge with store")
    path.mkdir(parents=True, exist_ok=True)
    recover_store(path)
    with ReplayWriter(path) as writer:
        new_bars = _newer_than_store(bars, read_watermarks(path / "bars"))
        new_macro = _newer_than_store(macro, read_watermarks(path / "macro")) if macro is not None else None
        stored_bars, stored_macro = _stored(path, "bars"), _stored(path, "macro")
        all_bars = pd.concat([f for f in (stored_bars, new_bars) if f is not None], ignore_index=True)
        all_macro_parts = [f for f in (stored_macro, new_macro) if f is not None and len(f)]
        all_macro = pd.concat(all_macro_parts, ignore_index=True) if all_macro_parts else None
        forecasts = _stored(path, "forecasts")
        stages.update(1)
        stages.set_description("ingest: features")
        features = build_features(all_bars, all_macro, forecasts, config) if len(all_bars) else None
        stages.update(1)
        stages.set_description("ingest: write")
        appended: dict[str, int] = {}
        if len(new_bars):
            appended["bars"] = writer.append_bars(new_bars).rows_written
        if new_macro is not None and len(new_macro):
            appended["macro"] = writer.append("macro", new_macro).rows_written
        if features is not None:
            new_features = _newer_than_store(features, read_watermarks(path / "features"))
            if len(new_features):
                appended["features"] = writer.append_features(new_features).rows_written
        stages.update(1)
    stages.close()
    return IngestResult(appended, skipped_bars=len(bars) - len(new_bars))


_SWAP = "_swap.json"


def recover_store(root: Path) -> None:
    """Finish a features swap that a crash interrupted (see ``import_forecasts``)."""
    intent = root / _SWAP
    if not intent.exists():
        return
    plan = json.loads(intent.read_text())
    staged, old, live = root / plan["staged"], root / plan["old"], root / "features"
    if staged.exists():
        if live.exists():
            os.replace(live, old)
        os.replace(staged, live)
    shutil.rmtree(old, ignore_errors=True)
    intent.unlink()


def import_forecasts(
    root: str | os.PathLike[str],
    forecasts: pd.DataFrame,
    origin: str = "forecasts",
    config: FeatureConfig | None = None,
) -> IngestResult:
    """Append external forecasts (validated) and rebuild the features table with them."""
    path = Path(root)
    if not (path / "bars").is_dir():
        raise ReplayValidationError([], origin=f"{path} has no bars: ingest prices before forecasts")
    recover_store(path)
    forecasts = _validated("forecasts", forecasts, origin)
    bars = read_frame(path, "bars")
    unknown = sorted(set(forecasts["symbol"].astype(str)) - set(bars["symbol"].astype(str)))
    if unknown:
        raise ValueError(f"{origin}: forecasts for symbols not in the store: {unknown[:5]}")
    with ReplayWriter(path) as writer:
        result = writer.append("forecasts", forecasts)
        features = build_features(bars, _stored(path, "macro"), read_frame(path, "forecasts"), config)
    token = uuid.uuid4().hex[:8]
    staged_root = path / f".rebuild-{token}"
    with ReplayWriter(staged_root) as staged_writer:
        staged_writer.append_features(features)
    (path / _SWAP).write_text(
        json.dumps({"staged": f".rebuild-{token}/features", "old": f".features-old-{token}"})
    )
    recover_store(path)
    shutil.rmtree(staged_root, ignore_errors=True)
    return IngestResult({"forecasts": result.rows_written, "features": len(features)}, skipped_bars=0)
