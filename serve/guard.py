"""The policy service's front door: the bearer token and the body size, checked before any body is read.

:class:`GuardMiddleware` is a plain ASGI middleware (no Ray, no FastAPI): FastAPI parses a body before
the route's own checks run, so a token check inside the route would let anyone make the service read
and parse a huge or malformed body. Here the order is:

1. the token (``Authorization: Bearer ...``), compared as SHA-256 digests in constant time: a request
   without the right one gets 401 and its body is never read, whatever it holds — except on the
   ``open_paths`` (the liveness probe, the docs when enabled; the app's own paths, matched under the
   route prefix the server mounted it at), which pass through marked unauthenticated
   (``scope["state"]["authenticated"]``);
2. the body size: a ``Content-Length`` above ``max_body_bytes`` is 413 at once; a chunked body is read
   only up to the limit, then 413. A body within the limit is handed to the app unchanged.

:func:`check_token` is the one rule for what a usable token is (at least :data:`MIN_TOKEN_CHARS`
characters), applied by every command that starts the service or its client. A serving process needs
only the token's digest (:func:`check_digest`), which is all a replica holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any, Final

from starlette._utils import get_route_path  # the path the app's router matches, as FastAPI reads it

from raytrade.replay.errors import InputError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIN_TOKEN_CHARS: Final = 32
"""A Serve token shorter than this is refused (make one with ``secrets.token_urlsafe(32)``)."""


class WeakTokenError(InputError):
    """A Serve token too short to resist guessing (the message gives its length, never the token)."""


class TokenDigestError(InputError):
    """A Serve token digest that is not a SHA-256 hex digest, or one that disagrees with the token."""


def check_token(token: str) -> str:
    """``token`` if it has at least :data:`MIN_TOKEN_CHARS` characters and no surrounding whitespace,
    else :class:`WeakTokenError` (a token read from a file with its newline would hash to a digest no
    client's header can match: headers carry the token stripped)."""
    if token != token.strip():
        raise WeakTokenError(
            "RAYTRADE_SERVE_TOKEN has leading or trailing whitespace (a newline read from a file?): "
            "no client can send it; strip it"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise WeakTokenError(
            f"RAYTRADE_SERVE_TOKEN has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}: "
            "use a random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a bearer token (what the deployment stores instead of the token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


DIGEST_PREFIX: Final = "sha256:"
"""What a token digest given to the service starts with (``sha256:`` and 64 hex characters). A random
hex token (``openssl rand -hex 32``) is itself 64 hex characters: without the prefix, a token pasted
where its digest belongs would pass, every client would get 401, and the serving pods would hold
the token after all."""


def check_digest(value: str, name: str = "RAYTRADE_SERVE_TOKEN_SHA256") -> str:
    """The 64 lower-case hex characters of ``value`` if it is ``sha256:`` and a SHA-256 hex digest,
    else :class:`TokenDigestError` naming ``name`` and the length (the value itself is not repeated)."""
    text = value.strip()
    digest = text[len(DIGEST_PREFIX) :].lower()
    hexdigits = "0123456789abcdef"
    if (
        not text.lower().startswith(DIGEST_PREFIX)
        or len(digest) != 64
        or any(c not in hexdigits for c in digest)
    ):
        raise TokenDigestError(
            f"{name} must be {DIGEST_PREFIX} followed by the SHA-256 hex digest of the Serve token, got "
            f"{len(value)} characters that are not one: make it with `raytrade serve-token-digest`"
        )
    return digest


def digest_text(token: str) -> str:
    """The digest of ``token`` as it is given to the service (``sha256:`` and 64 hex characters)."""
    return DIGEST_PREFIX + token_digest(token)


def bearer_matches(authorization: str | None, token_sha256: str) -> bool:
    """Whether an ``Authorization`` header carries the token whose digest is ``token_sha256``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token_digest(token.strip()), token_sha256)


class GuardMiddleware:
    """401 before the body, then 413 above ``max_body_bytes`` (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, token_sha256: str, max_body_bytes: int, open_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.token_sha256 = token_sha256
        self.max_body_bytes = max_body_bytes
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        authenticated = bearer_matches(headers.get("authorization"), self.token_sha256)
        scope.setdefault("state", {})["authenticated"] = authenticated
        if not authenticated and get_route_path(scope) not in self.open_paths:  # under a route prefix too
            reason = "invalid bearer token" if headers.get("authorization") else "missing bearer token"
            await _reply(send, 401, reason, [(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get("content-length", "")
        if declared.strip().isascii() and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reply(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
