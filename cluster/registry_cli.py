"""``raytrade registry …``: maintenance of the policy registry (``models.registry``).

``raytrade registry migrate [--registry DIR] [NAME[@VERSION]]`` rewrites versions promoted before the
folders moved under the ``raytrade`` package (pickles naming ``models.…``), see
``models.registry_migrate``; versions that need nothing are left untouched. A signed version needs
the registry key (``RAYTRADE_REGISTRY_HMAC_KEY``) and is signed again. A named version whose manifest
does not validate refuses the run (one line naming the file and the field) before anything is rewritten.

``raytrade registry sign [--registry DIR] [NAME[@VERSION]]`` re-signs, under the registry key,
versions signed by the old scheme (file hashes only) with the HMAC of the whole manifest
(``models.registry_migrate.sign``), after checking their old MAC and files; a version that does not
check out is reported and left alone, and the command exits non-zero.
"""

from __future__ import annotations

from pathlib import Path

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import registry_option
from raytrade.replay.errors import InputError


@click.group("registry")
def registry_group() -> None:
    """Maintain the policy registry."""


@registry_group.command("migrate")
@click.argument("ref", required=False)
@registry_option("Registry root (a local folder).", written=True)
@one_line_errors
def migrate_command(ref: str | None, registry: Path) -> None:
    """Rewrite the pickles of versions promoted before the package rename (REF: NAME, NAME@VERSION,
    or every version when omitted)."""
    from raytrade.cluster.settings import registry_hmac_key
    from raytrade.models.registry_migrate import migrate
    from raytrade.replay.credentials import shown_url
    from raytrade.replay.remote import is_remote

    if is_remote(str(registry)):
        raise InputError(
            f"`raytrade registry migrate` works on a local registry folder, not {shown_url(str(registry))}"
        )
    if not Path(registry).is_dir():
        raise InputError(f"registry {shown_url(str(registry))!r} (a local folder) does not exist")
    for version, rewritten in migrate(registry, ref, registry_hmac_key()).items():
        click.echo(f"{version}: " + (f"rewrote {', '.join(rewritten)}" if rewritten else "up to date"))


@registry_group.command("sign")
@click.argument("ref", required=False)
@registry_option("Registry root (a local folder).", written=True)
@one_line_errors
def sign_command(ref: str | None, registry: Path) -> None:
    """Re-sign versions signed by the old scheme (file hashes only) with the HMAC of the whole
    manifest, under RAYTRADE_REGISTRY_HMAC_KEY (REF: NAME, NAME@VERSION, or every version when
    omitted). Check each manifest first: the old scheme did not protect it."""
    from raytrade.cluster.settings import REGISTRY_HMAC_KEY_ENV, registry_hmac_key
    from raytrade.models.registry_migrate import sign
    from raytrade.replay.credentials import shown_url
    from raytrade.replay.remote import is_remote

    if is_remote(registry):
        raise InputError(
            f"`raytrade registry sign` works on a local registry folder, not {shown_url(str(registry))}: "
            "promote the versions again with the key"
        )
    if not Path(registry).is_dir():
        raise InputError(f"registry {shown_url(str(registry))!r} (a local folder) does not exist")
    key = registry_hmac_key()
    if key is None:
        raise InputError(f"set {REGISTRY_HMAC_KEY_ENV} to the registry key to sign with")
    refused = 0
    for version, outcome in sign(Path(registry), key, ref).items():
        refused += isinstance(outcome, Exception)
        click.echo(f"{version}: " + (f"refused: {outcome}" if isinstance(outcome, Exception) else outcome))
    if refused:
        raise click.exceptions.Exit(1)
