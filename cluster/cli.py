"""The ``raytrade`` command line: one click group, one subcommand per entrypoint.

Errors end as ``cluster.errors`` says: the project's input errors as one ``error: …`` line (exit 2),
anything else with its traceback (plain ``ValueError``/``OSError``: with ``-v``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Final, NamedTuple

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import (
    FiniteFloatRange,
    LocalPath,
    path_argument,
    path_option,
    written_path_option,
)


class LazyCommand(NamedTuple):
    """A subcommand defined next to its entrypoint: where it is (``module:attribute``) and its summary,
    the first sentence of its help, so that ``raytrade --help`` lists it without importing it (each
    entrypoint imports Ray, torch or pandas: seconds). A test holds each summary to its command's help."""

    target: str
    summary: str


# Subcommands defined next to their entrypoints, imported only when invoked: the CLI starts fast, and
# ``raytrade --help`` lists them from their summaries.
LAZY_COMMANDS: dict[str, LazyCommand] = {
    "tune": LazyCommand(
        "raytrade.cluster.tune:tune_command",
        "Search SPEC's hyperparameters on REPLAY's train split, scored on its validation split.",
    ),
    "promote": LazyCommand(
        "raytrade.cluster.promote:promote_command",
        "Copy the best trial of RUN (module, connector state, manifest) to REGISTRY/NAME/VERSION; the "
        "manifest records every file's SHA-256 and, when RAYTRADE_REGISTRY_HMAC_KEY is set, is signed "
        "whole (an HMAC over the manifest with those hashes).",
    ),
    "select": LazyCommand(
        "raytrade.cluster.select:select_command",
        "Compare the best checkpoints of RUN_DIRS (raytrade tune runs, any spec) on their common "
        "validation window, with paired bootstrap intervals; optionally promote the winner.",
    ),
    "registry": LazyCommand(
        "raytrade.cluster.registry_cli:registry_group",
        "Maintain the policy registry.",
    ),
    "evaluate": LazyCommand(
        "raytrade.cluster.evaluate:evaluate_command",
        "Evaluate POLICIES on the replay store and write report.json / report.md / report.html to OUT.",
    ),
    "nightly": LazyCommand(
        "raytrade.cluster.nightly:nightly_command",
        "Re-ingest, evaluate the registry's latest models and the baselines, append to RESULTS (one "
        "section per date: see --replace).",
    ),
    "serve": LazyCommand(
        "raytrade.cluster.serve:serve_command",
        "Deploy a promoted policy behind POST /v1/act, GET /v1/health and GET /v1/model.",
    ),
    "live": LazyCommand(
        "raytrade.cluster.live:live_command",
        "Run the trading loop: ask the policy service, trade the answer on Alpaca paper, log it.",
    ),
    "calibrate-costs": LazyCommand(
        "raytrade.cluster.calibrate:calibrate_costs_command",
        "Fit the slippage model (spread fraction, tier bases, impact) to REPLAY's logged market-order"
        " fills; passive (limit) fills are counted apart, never fitted.",
    ),
    "recalibrate": LazyCommand(
        "raytrade.cluster.calibrate:recalibrate_command",
        "Recalibrate REPLAY's forecast quantiles walk-forward (a residual MLP per regime, past data "
        "only) and print coverage and PIT before and after, on the rows a past-only model covers.",
    ),
    "cluster": LazyCommand(
        "raytrade.cluster.local_cluster:cluster_group",
        "A local multi-node Ray cluster on this machine (token auth on).",
    ),
    "submit": LazyCommand(
        "raytrade.cluster.submit:submit_command",
        "Run a raytrade command as a Ray job: raytrade submit -- raytrade tune --spec ppo ...",
    ),
    "experiment": LazyCommand(
        "raytrade.cluster.experiment:experiment_command",
        "Train every family (base and enriched features) on walk-forward folds, choose a variant per "
        "fold on that fold's validation window, and report that walk-forward selection on the test "
        "folds against kelly_lite, equal_weight, inverse_vol and buy_and_hold.",
    ),
    "simulate-experience": LazyCommand(
        "raytrade.cluster.simulate_experience:simulate_experience_command",
        "Record POLICY's episodes on REPLAY's train split into OUT's experience table.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports ``LAZY_COMMANDS`` on first use (``--help`` imports none)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            import importlib

            module_name, attribute = LAZY_COMMANDS[cmd_name].target.split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section of ``--help``, as click writes it, the lazy commands' rows from their
        summaries (nothing imported)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            if name in LAZY_COMMANDS:
                rows.append((name, summary_row(name, LAZY_COMMANDS[name].summary, limit)))
            elif (command := super().get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def summary_row(name: str, summary: str, limit: int) -> str:
    """``summary`` shortened to ``limit`` characters as click shortens a command's help."""
    return click.Command(name, help=summary).get_short_help_str(limit)


RLLIB_SELF_DEPRECATION: Final = "RLModule(config=[RLModuleConfig object])"
"""What RLlib 2.60's ``RLModule.__init__`` warns about itself on every module it builds (it makes the
deprecated ``RLModuleConfig`` for its own use, whatever the caller passed): not the caller's doing."""


class DropRLlibSelfDeprecation(logging.Filter):
    """Drops the one deprecation warning RLlib raises against its own constructor
    (:data:`RLLIB_SELF_DEPRECATION`), printed by every command that loads a policy; every other
    record, other deprecations included, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RLLIB_SELF_DEPRECATION not in record.getMessage()


@click.group(cls=LazyGroup)
@click.option(
    "-v", "--verbose", is_flag=True, help="Log at INFO level, and show the traceback of an unexpected error."
)
def main(verbose: bool) -> None:
    """raytrade: replay store, market simulator, RL policies on Ray, and the Serve policy."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    deprecations = logging.getLogger("ray._common.deprecation")
    if not any(isinstance(f, DropRLlibSelfDeprecation) for f in deprecations.filters):
        deprecations.addFilter(DropRLlibSelfDeprecation())


def _parse_utc(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date", param_hint=name) from None
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


@main.command()
@click.option(
    "--source",
    type=click.Choice(["synthetic", "csv", "alpaca", "forecasts"]),
    required=True,
    help="Where bars (or forecasts) come from.",
)
@written_path_option(
    "--out", "out", required=True, help="Store root (created if new): a folder or an s3://… URI."
)
@click.option("--seed", type=int, default=0, show_default=True, help="synthetic: random seed.")
@click.option(
    "--n-symbols", type=click.IntRange(min=1), default=20, show_default=True, help="synthetic: equities."
)
@click.option(
    "--n-crypto", type=click.IntRange(min=0), default=0, show_default=True, help="synthetic: crypto pairs."
)
@click.option(
    "--years",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="Length of the synthetic history in years (from --start; 2018-01-01 without it).",
)
@click.option(
    "--freq", type=click.Choice(["1d", "1h", "1m"]), default="1d", show_default=True, help="Bar length."
)
@path_option("--path", "path", type=LocalPath(), help="csv: folder of CSVs; forecasts: the file.")
@click.option("--symbols", help="alpaca: comma-separated symbols, e.g. AAPL,MSFT,BTCUSD.")
@click.option("--start", help="alpaca: first date (UTC); synthetic: calendar start.")
@click.option("--end", help="alpaca: last date (UTC, exclusive).")
@click.option("--json-summary", "json_summary", is_flag=True, help="Print the store summary as JSON.")
@click.option(
    "--keep-stored-on-restatement",
    "keep_stored_on_restatement",
    is_flag=True,
    help="A symbol whose stored bars the source restates other than by one ratio (a corrected print; a "
    "uniform split or dividend rescale is always re-based): keep the stored bars as they are and append "
    "its new ones, with a warning. Default: refuse the whole ingest.",
)
@click.option(
    "--drop-bad-prints",
    "drop_bad_prints",
    is_flag=True,
    help="A new bar with a bad print (an open more than 5x off both the previous close and its own "
    "close, or a run of up to 5 closes more than 5x off the closes around it, which agree): leave it "
    "out (a hole: a position is held through it), each named in a warning. Default: refuse the whole "
    "ingest (README, Ingest).",
)
@click.option(
    "--unquoted-spread-bps",
    "unquoted_spread_bps",
    # FeatureSettings.unquoted_spread_bps' bounds (a test holds them equal; importing it here would
    # load pandas for every command's --help)
    type=FiniteFloatRange(min=0, max=10_000, min_open=True, max_open=True),
    default=None,
    help="Full spread in bps stated for every bar without a quote, in place of the high/low estimate "
    "(which on daily bars of volatile names reads mostly volatility: README, Ingest). Recorded in the "
    "store: later ingests use it; a different figure on a built store is refused.",
)
@one_line_errors
def ingest(
    source: str,
    out: str,
    seed: int,
    n_symbols: int,
    n_crypto: int,
    years: float,
    freq: str,
    path: Path | None,
    symbols: str | None,
    start: str | None,
    end: str | None,
    json_summary: bool,
    keep_stored_on_restatement: bool,
    drop_bad_prints: bool,
    unquoted_spread_bps: float | None,
) -> None:
    """Ingest a source into the replay store at OUT and print what the store holds."""
    from raytrade.cluster.ingest import SourceRequest, ingest_source
    from raytrade.replay.features.config import FeatureConfig
    from raytrade.replay.remote_store import store_mirror
    from raytrade.replay.summary import summarize_store

    request = SourceRequest(
        source=source,
        path=path,
        symbols=tuple(s.strip() for s in (symbols or "").split(",") if s.strip()),
        start=_parse_utc(start, "--start"),
        end=_parse_utc(end, "--end"),
        freq=freq,
        seed=seed,
        n_symbols=n_symbols,
        n_crypto=n_crypto,
        years=years,
        keep_stored_on_restatement=keep_stored_on_restatement,
        drop_bad_prints=drop_bad_prints,
    )
    # a remote store (s3://…) is written through its local mirror, new files uploaded at the end
    spread = {} if unquoted_spread_bps is None else {"unquoted_spread_bps": unquoted_spread_bps}
    with store_mirror(out) as root:
        result = ingest_source(root, request, say=click.echo, config=FeatureConfig(**spread))
    for warning in result.warnings():
        click.echo(f"warning: {warning}", err=True)
    click.echo(result.summary_line())
    summary = summarize_store(root)
    click.echo(json.dumps(summary.as_dict(), indent=2) if json_summary else summary.render())


@main.command()
@path_argument("root", type=LocalPath())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@one_line_errors
def summary(root: Path, as_json: bool) -> None:
    """Print what the replay store at ROOT holds."""
    from raytrade.replay.reader import StoreError
    from raytrade.replay.summary import summarize_store

    if not root.is_dir():
        raise StoreError(f"{root} is not a replay store folder")
    result = summarize_store(root)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.render())


@main.command("serve-token-digest")
@one_line_errors
def serve_token_digest() -> None:
    """Print the SHA-256 digest of the Serve token (RAYTRADE_SERVE_TOKEN), as sha256:HEX: the
    RAYTRADE_SERVE_TOKEN_SHA256 of a serving process that should not hold the token itself."""
    from raytrade.cluster.settings import MissingCredentialsError, load_settings
    from raytrade.serve.guard import check_token, digest_text

    token = load_settings().serve_token
    if token is None:
        raise MissingCredentialsError("missing the Serve token: set RAYTRADE_SERVE_TOKEN")
    click.echo(digest_text(check_token(token.get_secret_value())))


@main.command()
@written_path_option("--out", type=LocalPath(), default=Path(".demo"), show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--address", help="Run on an existing Ray cluster: auto (RAY_ADDRESS) or host:port.")
@click.option("--no-dashboard", is_flag=True, help="Local Ray without its dashboard.")
@one_line_errors
def demo(out: Path, seed: int, address: str | None, no_dashboard: bool) -> None:
    """End-to-end demo on the embedded synthetic universe (grows with every capability)."""
    from raytrade.cluster.demo import DemoConfig, run_demo

    run_demo(out, seed, DemoConfig(address=address, dashboard=not no_dashboard))


if __name__ == "__main__":
    main()
