"""How the commands load registry versions: always under the registry key of this process's settings.

Design decisions
----------------
* **One door.** ``raytrade evaluate``, ``nightly``, ``simulate-experience`` and ``tune --init`` load
  versions through :func:`registry_loader` (or, where the load happens in a Ray worker, through the
  key reader, :func:`raytrade.cluster.settings.registry_key_reader`), never through
  ``models.registry_load.load`` alone: with ``RAYTRADE_REGISTRY_HMAC_KEY`` set, a version whose
  manifest does not match its HMAC is refused before anything of it is unpickled
  (``models.registry_load.verify_version``), as ``raytrade serve`` refuses it.
* The key is read here, in the entrypoint layer, and passed down: the layers below take it as an
  argument and never read settings themselves. A key shorter than the minimum is refused when the
  loader is built (``cluster.settings.registry_hmac_key``), before any version is read.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from raytrade.cluster.settings import registry_hmac_key

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from raytrade.models.registry_load import PolicyHandle, VerifiedVersion

__all__ = ["registry_loader", "verify_under_key"]


def registry_loader() -> Callable[..., PolicyHandle]:
    """``models.registry_load.load`` bound to this process's registry key (None: no key set, only
    the sha256 checks): the ``loader`` the evaluation harness and ``simulate-experience`` take."""
    from raytrade.models.registry_load import load

    return functools.partial(load, hmac_key=registry_hmac_key())


def verify_under_key(ref: str, registry: str | os.PathLike[str]) -> VerifiedVersion:
    """Every check loading ``ref`` would make, under this process's registry key, unpickling
    nothing (``models.registry_load.verify_version``): a command whose loads happen later, in Ray
    workers, refuses the version before Ray starts."""
    from raytrade.models.registry_load import verify_version

    return verify_version(ref, registry, registry_hmac_key())
