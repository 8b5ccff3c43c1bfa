"""``raytrade serve``: deploy a registry policy as the trading loop's HTTP endpoint (Ray Serve).

    raytrade serve --model NAME[@VERSION] [--registry DIR] [--host 127.0.0.1] [--port 8000]
                   [--replicas 1] [--max-feature-age-hours 96] [--max-missed-bars 1] [--max-quote-move 3]
                   [--max-as-of-skew-s 900]
                   [--max-body-bytes 1048576] [--docs] [--detach]

The bearer token comes from ``RAYTRADE_SERVE_TOKEN`` (or the settings file), at least 32 characters
(``serve.guard.check_token``); the deployment keeps only its SHA-256, which is all the command needs:
``RAYTRADE_SERVE_TOKEN_SHA256`` instead of the token (``raytrade serve-token-digest`` prints it).
Running the command again against the same cluster with another ``--model`` swaps the policy on the
live replicas (no dropped requests); without ``@VERSION`` the replicas also follow the registry's
``latest`` by themselves. The Ray cluster is ``RAY_ADDRESS`` when set (``ray job submit`` sets it),
else a local one started here. Before Ray starts, the version is checked as a replica checks it
before unpickling (``models.registry_load.verify_version``: manifest, signature under the registry
key, file sha256s): a version the replicas would refuse ends the command with one ``error:`` line and
exit status 2.
"""

from __future__ import annotations

import os
import signal
import time

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import caps_options, exposure_caps, registry_option
from raytrade.replay.remote import location
from raytrade.replay.timeutil import MAX_FEATURE_AGE_HOURS, MAX_MISSED_BARS
from raytrade.serve.batcher import DEFAULT_BUSY_WAIT_MS
from raytrade.serve.caps import MAX_QUOTE_MOVE

DETACH_NEEDS_ADDRESS = (
    "--detach deploys into a cluster that outlives this command, and RAY_ADDRESS names none: set it to "
    "the cluster's host:port (`raytrade cluster up` prints the line to export); RAY_ADDRESS=auto takes "
    "the cluster a `ray start` last recorded on this machine, whoever started it"
)


@click.command("serve")
@click.option("--model", required=True, help="Registry reference NAME (follows latest) or NAME@VERSION.")
@registry_option("Registry folder, or an s3://… URI (each replica mirrors the version it loads).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the HTTP proxy binds.")
@click.option("--port", type=int, default=8000, show_default=True, help="HTTP port.")
@click.option("--replicas", type=click.IntRange(1), default=1, show_default=True, help="Serve replicas.")
@click.option(
    "--replica-cpus",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Ray CPUs reserved per replica.",
)
@click.option(
    "--max-feature-age-hours",
    type=click.FloatRange(0),
    default=MAX_FEATURE_AGE_HOURS,
    show_default=True,
    help="Older features (hours since their bar closed) give a hold-everything answer (0: never stale, "
    "e.g. synthetic data; --max-missed-bars is then not checked either).",
)
@click.option(
    "--max-missed-bars",
    type=click.IntRange(0),
    default=MAX_MISSED_BARS,
    show_default=True,
    help="Daily data: features of a bar after which more of the universe's bars closed (NYSE sessions "
    "with an equity, days for crypto alone) give a hold-everything answer too.",
)
@click.option(
    "--max-quote-move",
    type=click.FloatRange(0),
    default=MAX_QUOTE_MOVE,
    show_default=True,
    help="A quote whose mid is more than this many times the last close, or under one over it, holds "
    "its symbol as a bad or stale quote (0: no band; otherwise above 1).",
)
@click.option(
    "--kill-drawdown", type=click.FloatRange(0, 1, min_open=True), default=None, help="Default: trained."
)
@click.option("--max-batch-size", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0, 1000),
    default=0.0,
    show_default=True,
    help="How long a batch that is not full waits to fill (0: decided at once; requests arriving "
    "meanwhile go in the next batch).",
)
@click.option(
    "--busy-wait-ms",
    type=click.FloatRange(0, 1000),
    default=DEFAULT_BUSY_WAIT_MS,
    show_default=True,
    help="The same fill wait, paid only while requests overlap: a lone client never waits, a loaded "
    "replica decides several requests per forward (0: off).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024, 64 << 20),
    default=1 << 20,
    show_default=True,
    help="Larger request bodies get 413 without being read.",
)
@click.option("--docs", is_flag=True, help="Serve /docs, /redoc and /openapi.json (off by default).")
@click.option(
    "--max-as-of-skew-s",
    type=click.FloatRange(0),
    default=900.0,
    show_default=True,
    help="A request's as_of further than this from the server clock is a 422 (0: no limit).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Deploy (or swap) into the cluster RAY_ADDRESS names and return instead of serving in the "
    "foreground.",
)
@click.option("--no-dashboard", is_flag=True, help="Start a local Ray without its dashboard.")
@caps_options()
@one_line_errors
def serve_command(
    model: str,
    registry: str,
    host: str,
    port: int,
    replicas: int,
    replica_cpus: float,
    max_feature_age_hours: float,
    max_missed_bars: int,
    max_quote_move: float,
    kill_drawdown: float | None,
    max_batch_size: int,
    batch_wait_ms: float,
    busy_wait_ms: float,
    max_body_bytes: int,
    docs: bool,
    max_as_of_skew_s: float,
    detach: bool,
    no_dashboard: bool,
    **caps: float,
) -> None:
    """Deploy a promoted policy behind POST /v1/act, GET /v1/health and GET /v1/model."""
    from raytrade.cluster.settings import load_settings, registry_key_reader
    from raytrade.models.registry_load import verify_version
    from raytrade.serve.decide import ServeConfig

    digest = load_settings().serve_token_digest()  # a weak token or a bad digest ends here, before Ray
    registry_key = registry_key_reader()  # so does a weak registry key
    # a version every replica would refuse ends here too, before Ray starts: an unknown name or
    # version, a malformed manifest, a changed file, a bad signature under the key (nothing unpickled)
    verify_version(model, registry, None if registry_key is None else registry_key())
    decide = ServeConfig(
        max_feature_age_hours=max_feature_age_hours or None,
        max_missed_bars=max_missed_bars,
        max_quote_move=max_quote_move or None,
        kill_drawdown=kill_drawdown,
        caps=exposure_caps(caps),
    )
    from ray import serve

    from raytrade.cluster.local_cluster import LocalClusterError, init_ray
    from raytrade.serve.app import APP_NAME, HttpConfig, ServiceConfig, build_app

    # --detach leaves the deployment running after this process exits, in a cluster that outlives it:
    # the one RAY_ADDRESS names, never one found by itself ("auto" attaches to the cluster a `ray
    # start` last recorded on this machine, whoever started it: a colleague's, a test run's)
    address = os.environ.get("RAY_ADDRESS") or None
    if detach and address is None:
        raise LocalClusterError(DETACH_NEEDS_ADDRESS)
    init_ray(address, dashboard=not no_dashboard)
    serve.start(http_options={"host": host, "port": port})
    config = ServiceConfig(
        model=model,
        registry=location(registry),
        decide=decide,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        busy_wait_ms=busy_wait_ms,
    )
    http = HttpConfig(max_body_bytes=max_body_bytes, docs=docs, max_as_of_skew_s=max_as_of_skew_s or None)
    app = build_app(
        config,
        token_sha256=digest,
        replicas=replicas,
        replica_cpus=replica_cpus,
        http=http,
        registry_key=registry_key,
    )
    serve.run(app, name=APP_NAME, route_prefix="/")
    click.echo(f"serving {model} on http://{host}:{port}/v1/act (health: /v1/health)")
    if detach:
        return
    # SIGTERM (a process manager's stop) ends as Ctrl-C does, not in the crash dump of the handler
    # ray.init installs
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("shutting down")
        serve.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
