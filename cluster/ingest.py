"""One way to ingest a named source into a store, shared by ``raytrade ingest`` and ``raytrade nightly``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from raytrade.replay.errors import InputError
from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.ingest import IngestResult

SourceName = Literal["synthetic", "csv", "alpaca", "forecasts"]


class SourceRequest(BaseModel):
    """What to ingest: the source and the options that source reads (others are ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: SourceName
    path: Path | None = Field(None, description="csv: folder of CSVs; forecasts: the file")
    symbols: tuple[str, ...] = Field((), description="alpaca: symbols, e.g. AAPL, BTCUSD")
    start: datetime | None = Field(None, description="alpaca: first date; synthetic: calendar start")
    end: datetime | None = Field(None, description="alpaca: last date (exclusive)")
    freq: Literal["1d", "1h", "1m"] = Field("1d", description="bar length")
    seed: int = Field(0, description="synthetic: random seed")
    n_symbols: int = Field(20, ge=1, description="synthetic: equities")
    n_crypto: int = Field(0, ge=0, description="synthetic: crypto pairs")
    years: float = Field(3.0, gt=0, description="synthetic: length of the universe")
    keep_stored_on_restatement: bool = Field(
        False,
        description="a symbol whose stored bars the source restates other than by one ratio (a "
        "corrected print; a uniform split or dividend rescale is always re-based): keep the stored bars "
        "as they are and append its new ones with a warning, instead of refusing the whole ingest",
    )
    drop_bad_prints: bool = Field(
        False,
        description="a new bar with a bad print (an open, or a close that reverts, more than 5x off its "
        "neighbours: replay.bad_prints): leave it out (a hole) with a warning, instead of refusing the "
        "whole ingest",
    )


def ingest_source(
    out: Path,
    request: SourceRequest,
    say: Callable[[str], None] = print,
    show_progress: bool = True,
    config: FeatureConfig | None = None,
) -> IngestResult:
    """Read ``request.source`` and append what is new to the store at ``out`` (see ``replay.ingest``);
    ``config``: the features' options (None: the defaults, or what the store records:
    ``replay.feature_settings``)."""
    from raytrade.replay.ingest import import_forecasts, ingest_frames

    r = request
    keep = r.keep_stored_on_restatement
    if r.source == "synthetic":
        from raytrade.replay.sources.synthetic import generate

        universe = f"{r.n_symbols} equities + {r.n_crypto} crypto, {r.years} y of {r.freq}"
        say(f"generating synthetic universe: {universe}")
        start = {"start": r.start.date().isoformat()} if r.start else {}
        market = generate(r.n_symbols, r.years, r.freq, r.seed, r.n_crypto, **start)
        return ingest_frames(
            out,
            market.bars,
            market.macro,
            origin="synthetic",
            show_progress=show_progress,
            keep_stored_on_restatement=keep,
            drop_bad_prints=r.drop_bad_prints,
            config=config,
        )
    if r.source == "alpaca":
        from raytrade.cluster.settings import load_settings
        from raytrade.replay.sources.alpaca import fetch_alpaca_bars
        from raytrade.replay.sources.alpaca_daily import refuse_second_crypto_clock

        missing = [
            flag
            for flag, given in (("--symbols", r.symbols), ("--start", r.start), ("--end", r.end))
            if not given
        ]
        if missing or r.start is None or r.end is None:  # (the last two for the type checker)
            raise InputError(
                f"--source alpaca needs --symbols, --start and --end; {' and '.join(missing)} not given"
            )
        settings = load_settings()
        window = f"{r.start:%Y-%m-%d} .. {r.end:%Y-%m-%d}"
        say(f"fetching {len(r.symbols)} symbols from Alpaca, {window} ({r.freq})")
        bars = fetch_alpaca_bars(
            r.symbols,
            r.start,
            r.end,
            access=settings.alpaca_access(),
            timeframe=r.freq,
            url_override=settings.alpaca_data_url,
        )
        return ingest_frames(
            out,
            bars,
            origin="alpaca",
            show_progress=show_progress,
            keep_stored_on_restatement=keep,
            drop_bad_prints=r.drop_bad_prints,
            config=config,
            # daily crypto is on New York midnight when fetched with stocks, on Alpaca's day start alone
            check_against_store=refuse_second_crypto_clock if r.freq == "1d" else None,
        )
    if r.path is None:
        raise InputError(f"--source {r.source} needs --path")
    if r.source == "csv":
        from raytrade.replay.sources.csv_dir import read_csv_folder

        say(f"reading CSV files under {r.path}")
        return ingest_frames(
            out,
            read_csv_folder(r.path),
            origin=str(r.path),
            show_progress=show_progress,
            keep_stored_on_restatement=keep,
            drop_bad_prints=r.drop_bad_prints,
            config=config,
        )
    from raytrade.replay.sources.forecast_file import read_forecast_file

    return import_forecasts(out, read_forecast_file(r.path), origin=str(r.path), config=config, first_row=1)
