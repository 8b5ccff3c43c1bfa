"""``raytrade registry …``: maintenance of the policy registry (``models.registry``).

``raytrade registry migrate [--registry DIR] [NAME[@VERSION]]`` rewrites versions promoted before the
folders moved under the ``raytrade`` package (pickles naming ``models.…``), see
``models.registry_migrate``; versions that need nothing are left untouched.
"""

from __future__ import annotations

from pathlib import Path

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import registry_option


@click.group("registry")
def registry_group() -> None:
    """Maintain the policy registry."""


@registry_group.command("migrate")
@click.argument("ref", required=False)
@registry_option()
@one_line_errors
def migrate_command(ref: str | None, registry: Path) -> None:
    """Rewrite the pickles of versions promoted before the package rename (REF: NAME, NAME@VERSION,
    or every version when omitted)."""
    from raytrade.models.registry_migrate import migrate

    if not Path(registry).is_dir():
        raise FileNotFoundError(f"registry {str(registry)!r} does not exist")
    for version, rewritten in migrate(registry, ref).items():
        click.echo(f"{version}: " + (f"rewrote {', '.join(rewritten)}" if rewritten else "up to date"))
