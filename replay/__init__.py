"""The replay store: schemas, validated append-only writer, readers, splits, sources and features."""

from raytrade.replay.reader import StoreError, read, read_frame, read_table
from raytrade.replay.schema import SCHEMA_VERSION, TABLES
from raytrade.replay.splits import Fold, TimeWindow, fractional_splits, time_splits, walk_forward_folds
from raytrade.replay.validation import ReplayValidationError, RowError
from raytrade.replay.writer import AppendResult, ReplayWriter

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "AppendResult",
    "Fold",
    "ReplayValidationError",
    "ReplayWriter",
    "RowError",
    "StoreError",
    "TimeWindow",
    "fractional_splits",
    "read",
    "read_frame",
    "read_table",
    "time_splits",
    "walk_forward_folds",
]
