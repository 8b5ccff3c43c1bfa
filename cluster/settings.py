"""Secrets and endpoints: one frozen settings object, read only when an entrypoint asks for it.

Design decisions
----------------
* Secrets (Alpaca keys, the Serve token, the wandb key) are ``SecretStr``: their ``repr``/``str``
  and ``model_dump_json()`` print ``**********``; code calls ``get_secret_value()`` only at the
  boundary where the secret is sent (an HTTP header), never to log it.
* Values come from the environment, then from an optional ``.env``-style file named by
  ``RAYTRADE_SETTINGS_FILE`` (environment wins). Alpaca keys are also read under Alpaca's own
  names (``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``) so an existing trading-loop environment
  works unchanged.
* Nothing is read at import time: entrypoints call :func:`load_settings`.
* An empty secret counts as unset, so ``ALPACA_API_KEY=`` fails like a missing key.
* ``alpaca_data_url`` must be ``https://``, except on the loopback host (test doubles): keys travel
  in request headers and must not cross a network in clear text.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from raytrade.replay.credentials import (
    ALPACA_KEY_ENVS,
    ALPACA_SECRET_ENVS,
    AlpacaAccess,
    AlpacaCredentials,
    MissingCredentialsError,
    check_secure_url,
)
from raytrade.replay.errors import InputError

__all__ = ["MissingCredentialsError", "Settings", "load_settings", "registry_hmac_key", "registry_key_reader"]

SETTINGS_FILE_ENV: Final[str] = "RAYTRADE_SETTINGS_FILE"
REGISTRY_HMAC_KEY_ENV: Final[str] = "RAYTRADE_REGISTRY_HMAC_KEY"
SERVE_TOKEN_SHA256_ENV: Final[str] = "RAYTRADE_SERVE_TOKEN_SHA256"
MIN_REGISTRY_KEY_CHARS: Final = 32


class Settings(BaseSettings):
    """Secrets and endpoints of raytrade. Build it with :func:`load_settings`, not at import time."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        env_file_encoding="utf-8",
        hide_input_in_errors=True,  # the inputs are keys, tokens and URLs that may carry them
    )

    alpaca_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(*ALPACA_KEY_ENVS, "alpaca_api_key"),
        description="Alpaca API key id (env ALPACA_API_KEY or APCA_API_KEY_ID).",
    )
    alpaca_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(*ALPACA_SECRET_ENVS, "alpaca_secret_key"),
        description="Alpaca API secret key (env ALPACA_SECRET_KEY or APCA_API_SECRET_KEY).",
    )
    alpaca_data_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ALPACA_DATA_URL", "alpaca_data_url"),
        description="Override of Alpaca's market-data base URL (alpaca-py url_override); None = Alpaca's.",
    )
    serve_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RAYTRADE_SERVE_TOKEN", "serve_token"),
        description="Bearer token the Serve ingress requires (env RAYTRADE_SERVE_TOKEN).",
    )
    serve_token_sha256: str | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices(SERVE_TOKEN_SHA256_ENV, "serve_token_sha256"),
        description=f"SHA-256 digest of the Serve token as sha256:HEX (env {SERVE_TOKEN_SHA256_ENV}): all "
        "the service needs, for a serving process that should not hold the token itself (`raytrade "
        "serve-token-digest` prints it); None = the digest of serve_token.",
    )
    wandb_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("WANDB_API_KEY", "wandb_api_key"),
        description="Weights & Biases API key (env WANDB_API_KEY); None = wandb disabled.",
    )
    registry_hmac_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(REGISTRY_HMAC_KEY_ENV, "registry_hmac_key"),
        description=f"Registry key (env {REGISTRY_HMAC_KEY_ENV}, at least {MIN_REGISTRY_KEY_CHARS} "
        "characters): promote records an HMAC of each version's file hashes, loaders refuse a version "
        "without a matching one; None = no HMAC (sha256s only).",
    )

    @field_validator(
        "alpaca_api_key",
        "alpaca_secret_key",
        "serve_token",
        "serve_token_sha256",
        "wandb_api_key",
        "registry_hmac_key",
        mode="before",
    )
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("alpaca_data_url", mode="before")
    @classmethod
    def _data_url_is_safe(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            return check_secure_url(value.strip().rstrip("/"), field="alpaca_data_url")
        return value

    def alpaca_access(self) -> AlpacaAccess:
        """The Alpaca keys and data URL as the value the lower layers take."""
        return AlpacaAccess(
            api_key=self.alpaca_api_key, secret_key=self.alpaca_secret_key, data_url=self.alpaca_data_url
        )

    def alpaca_credentials(self) -> AlpacaCredentials:
        """Both Alpaca keys, or ``MissingCredentialsError`` naming every env var still to set."""
        return self.alpaca_access().credentials()

    def serve_token_digest(self) -> str:
        """The digest the policy service checks bearer tokens against, as ``sha256:HEX``
        (``serve.guard.check_digest``): the Serve token's (refused when shorter than
        ``serve.guard.MIN_TOKEN_CHARS``), or ``serve_token_sha256`` where the process holds only that.
        Both set must agree (``TokenDigestError``); neither is ``MissingCredentialsError``."""
        from raytrade.serve.guard import (
            DIGEST_PREFIX,
            TokenDigestError,
            check_digest,
            check_token,
            token_digest,
        )

        given = None if self.serve_token_sha256 is None else check_digest(self.serve_token_sha256)
        if self.serve_token is None:
            if given is None:
                raise MissingCredentialsError(
                    f"missing the Serve token: set RAYTRADE_SERVE_TOKEN (or, where only the service runs, "
                    f"its digest {SERVE_TOKEN_SHA256_ENV})"
                )
            return DIGEST_PREFIX + given
        digest = token_digest(check_token(self.serve_token.get_secret_value()))
        if given is not None and given != digest:
            raise TokenDigestError(
                f"{SERVE_TOKEN_SHA256_ENV} is not the digest of RAYTRADE_SERVE_TOKEN: set one of them, or "
                "make the digest with `raytrade serve-token-digest`"
            )
        return DIGEST_PREFIX + digest


def load_settings(settings_file: Path | str | None = None) -> Settings:
    """Read :class:`Settings` from the environment and an optional ``.env``-style file.

    The file is ``settings_file`` if given, else ``$RAYTRADE_SETTINGS_FILE`` if set, else none.
    Environment variables take precedence over the file. A named file that does not exist raises
    ``FileNotFoundError`` (a typo must not silently drop the secrets it holds).
    """
    path = settings_file if settings_file is not None else os.environ.get(SETTINGS_FILE_ENV) or None
    if path is None:
        return Settings()
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"settings file {str(file)!r} (from {SETTINGS_FILE_ENV}) does not exist")
    return Settings(_env_file=file)


def registry_hmac_key() -> SecretStr | None:
    """The registry key from the settings of the process that calls it; ``InputError`` (giving its
    length, never the key) when it is shorter than :data:`MIN_REGISTRY_KEY_CHARS`. Serve replicas
    are handed this function, never the key: each reads the key from its own environment (a
    Kubernetes secret), so it stays out of deployment arguments, ``user_config`` and runtime envs."""
    key = load_settings().registry_hmac_key
    if key is not None and len(key.get_secret_value()) < MIN_REGISTRY_KEY_CHARS:
        raise InputError(
            f"{REGISTRY_HMAC_KEY_ENV} has {len(key.get_secret_value())} characters, fewer than "
            f"{MIN_REGISTRY_KEY_CHARS}: use a random one, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return key


def registry_key_reader() -> Callable[[], SecretStr | None] | None:
    """What a Serve deployment is bound for the registry key: :func:`registry_hmac_key` itself (each
    replica reads the key from its own environment) when this process has a key, else None (no MAC
    check). A key that is too short is refused here, before anything is deployed."""
    return registry_hmac_key if registry_hmac_key() is not None else None
