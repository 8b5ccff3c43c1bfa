"""``NAME`` / ``NAME@VERSION``: how every command names a registry policy.

The parser lives in ``envs`` because ``envs.evaluation`` is the lowest layer that reads such
references (``registry:NAME@VERSION`` policies); ``models.registry`` resolves them against a registry
folder and ``serve`` pins a version with them, both through :func:`parse_registry_ref`.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from raytrade.replay.errors import InputError

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A policy name is a folder name: letters, digits, ``_ . -``, not starting with a symbol, at most 128
characters; matched whole (``fullmatch``), so no separator, no ``..`` alone and no trailing newline."""


class RegistryRefError(InputError):
    """A reference that is not ``NAME`` or ``NAME@VERSION`` (the message quotes it)."""


class RegistryRef(BaseModel):
    """A parsed reference: ``version`` None means the name's ``latest``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="policy name (a folder of the registry)")
    version: int | None = Field(None, ge=1, description="version number; None: the newest (latest)")

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def parse_registry_ref(ref: str) -> RegistryRef:
    """``"NAME"`` or ``"NAME@VERSION"`` (VERSION a positive integer) as a :class:`RegistryRef`.

    Raises :class:`RegistryRefError` naming the reference and what is wrong with it.
    """
    name, sep, version = ref.partition("@")
    if not NAME_PATTERN.fullmatch(name):
        raise RegistryRefError(
            f"registry reference {ref!r}: name {name!r} must match {NAME_PATTERN.pattern} "
            "(the form is NAME or NAME@VERSION)"
        )
    if not sep:
        return RegistryRef(name=name)
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise RegistryRefError(
            f"registry reference {ref!r}: version {version!r} is not a positive integer "
            "(the form is NAME or NAME@VERSION)"
        )
    return RegistryRef(name=name, version=int(version))
