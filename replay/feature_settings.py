"""What a store's features were built with beyond the defaults, recorded so every later build agrees.

Today one setting: ``unquoted_spread_bps``, the full spread stated for bars without a quote in place
of the high/low estimate (``replay.features.microstructure``). It is chosen when the store's features
are first built (``raytrade ingest --unquoted-spread-bps``) and written to ``feature_settings.json``
at the store's root before the features are; every later build (an ingest of new bars, a forecast
import, ``raytrade nightly``) reads it, so the features table never mixes stated and estimated
spreads:

* a build that does not set it uses the recorded one;
* a build that sets a different one (a stated spread on a store of estimates, or another figure) is
  refused with an ``InputError`` naming the flag and both values, nothing written: the stored rows
  would disagree with the new ones (ingest into a new store instead);
* a store without the file was built with the estimate (the default). A store without committed
  features binds nothing, whatever a file says: its first build writes the file when it sets a
  spread and rewrites one left by a first ingest that failed to what it uses (the leftover would
  otherwise bind the build after this one to a figure this one did not use).

The file is part of the store: a remote store mirrors and uploads it with the tables, and uploads it
again when a build rewrote it (``replay.remote_store``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.replay.errors import InputError, first_problem
from raytrade.replay.features.config import MAX_STATED_SPREAD_BPS, FeatureConfig

SETTINGS_FILE: Final = "feature_settings.json"
FLAG: Final = "--unquoted-spread-bps"


class FeatureSettings(BaseModel):
    """The feature options a store records (``feature_settings.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unquoted_spread_bps: float | None = Field(
        None, gt=0, lt=MAX_STATED_SPREAD_BPS, description="FeatureConfig.unquoted_spread_bps of the features"
    )


def _settings_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / SETTINGS_FILE


def _has_features(root: str | os.PathLike[str]) -> bool:
    from raytrade.replay.reader import table_files

    return (Path(root) / "features").is_dir() and bool(table_files(root, "features"))


def read_feature_settings(root: str | os.PathLike[str]) -> FeatureSettings:
    """The settings the store at ``root`` records (the defaults when it records none, or has no
    committed features yet); a file that is not a settings record is an ``InputError`` naming it."""
    path = _settings_path(root)
    if not _has_features(root) or not path.is_file():
        return FeatureSettings()
    try:
        return FeatureSettings.model_validate_json(path.read_text())
    except (OSError, ValidationError) as exc:
        reason = first_problem(exc) if isinstance(exc, ValidationError) else str(exc)
        raise InputError(f"{path} is not a raytrade feature settings file: {reason}") from None


def _shown(value: float | None) -> str:
    return "the high/low estimate" if value is None else f"{value:g} bps"


def spread_text(stated: float | None) -> str:
    """Where spreads on bars without a quote come from, as reports print it: ``stated, 5 bps`` or
    ``the high/low estimate`` (``stated``: the store's ``unquoted_spread_bps``)."""
    return _shown(stated) if stated is None else f"stated, {_shown(stated)}"


def store_feature_config(root: str | os.PathLike[str], config: FeatureConfig | None) -> FeatureConfig:
    """``config`` (default ``FeatureConfig()``) as the store at ``root`` builds it: the recorded
    ``unquoted_spread_bps`` where ``config`` does not set it, an ``InputError`` where it sets another
    one (module docstring). Records an explicitly set value when the store has no features yet;
    call it under the store's writer lock, before the features are written."""
    cfg = config or FeatureConfig()
    recorded = read_feature_settings(root).unquoted_spread_bps
    built = _has_features(root)
    if not built and "unquoted_spread_bps" not in cfg.model_fields_set:
        cfg = cfg.model_copy(update={"unquoted_spread_bps": None})
        if _settings_path(root).is_file():  # a failed first ingest's: rewritten to what this build uses
            _write(root, None)  # (not removed: a remote store's record is replaced, never deleted)
        return cfg
    if "unquoted_spread_bps" not in cfg.model_fields_set:
        return cfg.model_copy(update={"unquoted_spread_bps": recorded})
    given = cfg.unquoted_spread_bps
    if built:
        if given != recorded:
            raise InputError(
                f"{FLAG}: the store at {root} has its spreads on bars without a quote from "
                f"{_shown(recorded)}, this build asks for {_shown(given)}: its stored features would "
                f"disagree with the new ones; ingest into a new store (or leave {FLAG} out)"
            )
        return cfg
    _write(root, given)
    return cfg


def _write(root: str | os.PathLike[str], stated: float | None) -> None:
    from raytrade.replay.writer import write_file_atomically

    Path(root).mkdir(parents=True, exist_ok=True)
    record = FeatureSettings(unquoted_spread_bps=stated)
    write_file_atomically(_settings_path(root), record.model_dump_json(indent=2).encode())
