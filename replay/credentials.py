"""Alpaca access as a value: the key pair, the data URL, and the rule that keys only travel over TLS.

``cluster.settings`` reads these from the environment (entrypoints only) and passes an
:class:`AlpacaAccess` down; nothing below the CLI layer reads the environment or imports the settings.

* Secrets are ``SecretStr``: their ``repr``/``str`` print ``**********``; code calls
  ``get_secret_value()`` only where the secret is sent (an HTTP header), never to log it.
* A URL that carries keys or a bearer token must be ``https://``, except on the loopback host (test
  doubles): secrets must not cross a network in clear text (:func:`check_secure_url`). It must not
  carry credentials itself (``user:password@``): URLs are logged and shown; keys come from settings.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from raytrade.replay.errors import InputError

ALPACA_KEY_ENVS: Final[tuple[str, str]] = ("ALPACA_API_KEY", "APCA_API_KEY_ID")
ALPACA_SECRET_ENVS: Final[tuple[str, str]] = ("ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY")
LOOPBACK_HOSTS: Final[frozenset[str]] = frozenset({"127.0.0.1", "localhost", "::1"})


class MissingCredentialsError(InputError):
    """A secret an entrypoint needs is not set; the message names the environment variable(s)."""


class UnsafeURLError(InputError):
    """A URL that would send secrets in clear text, or that carries credentials itself."""


def shown_url(url: str) -> str:
    """``url`` as an error message may show it: without ``user:password@``, query or fragment, which
    may hold keys or tokens. Everything up to the last ``@`` after the scheme goes, so a password with
    an unescaped ``/`` or ``#``, or a URL without a scheme, does not leak either."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    rest = rest.rpartition("@")[2]
    parts = urlsplit(f"{scheme}://{rest}" if sep else rest)
    return parts._replace(query="", fragment="").geturl()


def carries_credentials(url: str) -> bool:
    """True when ``url`` may carry credentials: any ``@`` after the scheme (``user:password@``, however
    malformed: a password may hold an unescaped ``/`` or ``#``), the rule :func:`shown_url` strips by."""
    scheme, sep, rest = str(url).partition("://")
    return "@" in (rest if sep else scheme)


_URI_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+[^\s@]*@\S*")


def without_credentials(text: str) -> str:
    """``text`` with every URI that carries credentials shown as :func:`shown_url` shows it: the last
    net under an error line that may quote a location (``s3://KEY:SECRET@bucket``, or the
    ``s3:/KEY:SECRET@bucket`` a path type folds it into) or a library's message about one."""
    return _URI_IN_TEXT.sub(lambda m: shown_url(m.group(0)), text)


def check_secure_url(url: str, *, field: str) -> str:
    """Return ``url`` if it is ``https://`` or ``http://`` on a loopback host and carries no
    credentials; else :class:`UnsafeURLError` naming ``field`` (the setting or argument) and the value
    (:func:`shown_url`: less any credentials and query).

    Any ``@`` counts as credentials (``user:password@``, however malformed: the rule of
    :func:`shown_url`): a URL is logged and shown, so secrets in it would be too."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise UnsafeURLError(f"{field}={shown_url(url)!r} is not an absolute URL")
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)):
        raise UnsafeURLError(
            f"{field}={shown_url(url)!r} must use https:// (plain http:// is allowed only for "
            "127.0.0.1/localhost)"
        )
    if carries_credentials(url):
        raise UnsafeURLError(
            f"{field}={shown_url(url)!r} must not carry credentials (user:password@, not shown here): "
            "URLs are logged; keys and tokens come from the settings"
        )
    return url


class AlpacaCredentials(BaseModel):
    """Alpaca credentials, both present (still masked when printed)."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr
    secret_key: SecretStr


class AlpacaAccess(BaseModel):
    """What the Alpaca clients need: the key pair (either may be unset: crypto data is public) and
    an optional market-data base URL (alpaca-py ``url_override``)."""

    # the inputs are keys and a URL that may carry them: pydantic must not echo them
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    data_url: str | None = None

    @field_validator("data_url")
    @classmethod
    def _data_url_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_secure_url(value, field="alpaca_data_url")

    def credentials(self) -> AlpacaCredentials:
        """Both keys, or ``MissingCredentialsError`` naming every environment variable still to set."""
        missing = [
            f"{envs[0]} (or {envs[1]})"
            for envs, value in ((ALPACA_KEY_ENVS, self.api_key), (ALPACA_SECRET_ENVS, self.secret_key))
            if value is None
        ]
        if missing:
            raise MissingCredentialsError(f"missing Alpaca credentials: set {' and '.join(missing)}")
        assert self.api_key is not None and self.secret_key is not None
        return AlpacaCredentials(api_key=self.api_key, secret_key=self.secret_key)

    def optional_credentials(self) -> AlpacaCredentials | None:
        """``None`` when no key is set (public data); one key without the other is refused."""
        if self.api_key is None and self.secret_key is None:
            return None
        return self.credentials()
