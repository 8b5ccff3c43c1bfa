"""The ``raytrade`` command line: one click group, one subcommand per entrypoint.

Errors end as ``cluster.errors`` says: the project's input errors as one ``error: …`` line (exit 2),
anything else with its traceback (plain ``ValueError``/``OSError``: with ``-v``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import click

from raytrade.cluster.errors import one_line_errors

# Subcommands defined next to their entrypoints, imported only when invoked (or listed by --help):
# the CLI starts fast.
LAZY_COMMANDS: dict[str, str] = {
    "tune": "raytrade.cluster.tune:tune_command",
    "promote": "raytrade.cluster.promote:promote_command",
    "select": "raytrade.cluster.select:select_command",
    "registry": "raytrade.cluster.registry_cli:registry_group",
    "evaluate": "raytrade.cluster.evaluate:evaluate_command",
    "nightly": "raytrade.cluster.nightly:nightly_command",
    "serve": "raytrade.cluster.serve:serve_command",
    "live": "raytrade.cluster.live:live_command",
    "calibrate-costs": "raytrade.cluster.calibrate:calibrate_costs_command",
    "recalibrate": "raytrade.cluster.calibrate:recalibrate_command",
    "cluster": "raytrade.cluster.local_cluster:cluster_group",
    "submit": "raytrade.cluster.submit:submit_command",
    "experiment": "raytrade.cluster.experiment:experiment_command",
    "simulate-experience": "raytrade.cluster.simulate_experience:simulate_experience_command",
}


class LazyGroup(click.Group):
    """A click group that imports ``LAZY_COMMANDS`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            import importlib

            module_name, attribute = LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """raytrade: replay store, market simulator, RL policies on Ray, and the Serve policy."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


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
@click.option("--out", "out", required=True, help="Store root (created if new): a folder or an s3://… URI.")
@click.option("--seed", type=int, default=0, show_default=True, help="synthetic: random seed.")
@click.option(
    "--n-symbols", type=click.IntRange(min=1), default=20, show_default=True, help="synthetic: equities."
)
@click.option(
    "--n-crypto", type=click.IntRange(min=0), default=0, show_default=True, help="synthetic: crypto pairs."
)
@click.option("--years", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True)
@click.option(
    "--freq", type=click.Choice(["1d", "1h", "1m"]), default="1d", show_default=True, help="Bar length."
)
@click.option(
    "--path", "path", type=click.Path(path_type=Path), help="csv: folder of CSVs; forecasts: the file."
)
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
) -> None:
    """Ingest a source into the replay store at OUT and print what the store holds."""
    from raytrade.cluster.ingest import SourceRequest, ingest_source
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
    )
    # a remote store (s3://…) is written through its local mirror, new files uploaded at the end
    with store_mirror(out) as root:
        result = ingest_source(root, request, say=click.echo)
    for warning in result.warnings():
        click.echo(f"warning: {warning}", err=True)
    click.echo(result.summary_line())
    summary = summarize_store(root)
    click.echo(json.dumps(summary.as_dict(), indent=2) if json_summary else summary.render())


@main.command()
@click.argument("root", type=click.Path(path_type=Path))
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


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path(".demo"), show_default=True)
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
