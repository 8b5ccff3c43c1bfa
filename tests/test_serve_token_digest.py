"""A serving process can hold the Serve token's digest instead of the token (RAYTRADE_SERVE_TOKEN_SHA256):
the settings' one rule for the digest the service binds, the CLI that prints it, and ``build_app``."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.cluster.settings import MissingCredentialsError, Settings
from raytrade.serve.app import ServiceConfig, build_app
from raytrade.serve.guard import TokenDigestError, WeakTokenError

TOKEN = "a-serve-token-of-forty-characters-000001"
HEX = hashlib.sha256(TOKEN.encode()).hexdigest()
DIGEST = f"sha256:{HEX}"  # as the service is given it


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAYTRADE_SERVE_TOKEN", "RAYTRADE_SERVE_TOKEN_SHA256", "RAYTRADE_SETTINGS_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_the_digest_is_the_tokens_or_the_one_given_where_only_the_service_runs() -> None:
    assert Settings(serve_token=TOKEN).serve_token_digest() == DIGEST
    assert Settings(serve_token_sha256=f"SHA256:{HEX.upper()}").serve_token_digest() == DIGEST  # either case
    assert Settings(serve_token=TOKEN, serve_token_sha256=DIGEST).serve_token_digest() == DIGEST


def test_a_bad_or_disagreeing_digest_is_refused_without_echoing_it() -> None:
    hex_token = "0123456789abcdef" * 4  # `openssl rand -hex 32` makes such tokens: not a digest unprefixed
    for bad in ("abc", DIGEST[:-1] + "g", DIGEST + "0", HEX, TOKEN, hex_token):
        with pytest.raises(
            TokenDigestError, match="RAYTRADE_SERVE_TOKEN_SHA256 must be sha256: followed"
        ) as err:
            Settings(serve_token_sha256=bad).serve_token_digest()
        assert bad not in str(err.value)
    other = "sha256:" + hashlib.sha256(b"another token").hexdigest()
    with pytest.raises(TokenDigestError, match="is not the digest of RAYTRADE_SERVE_TOKEN") as err:
        Settings(serve_token=TOKEN, serve_token_sha256=other).serve_token_digest()
    assert TOKEN not in str(err.value) and other not in str(err.value)
    with pytest.raises(WeakTokenError):  # a digest never excuses a weak token beside it
        Settings(serve_token="short", serve_token_sha256=DIGEST).serve_token_digest()
    with pytest.raises(WeakTokenError, match="trailing whitespace") as err:  # a token file's newline
        Settings(serve_token=TOKEN + "\n").serve_token_digest()
    assert TOKEN not in str(err.value)


def test_no_token_and_no_digest_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN_SHA256", " ")  # empty counts as unset
    with pytest.raises(MissingCredentialsError, match="RAYTRADE_SERVE_TOKEN .*RAYTRADE_SERVE_TOKEN_SHA256"):
        Settings().serve_token_digest()
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN_SHA256", DIGEST)
    assert Settings().serve_token_digest() == DIGEST


def test_serve_token_digest_prints_the_digest_and_refuses_a_weak_or_missing_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", TOKEN)
    result = runner.invoke(main, ["serve-token-digest"])
    assert result.exit_code == 0 and result.output == f"{DIGEST}\n"
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "short-token")
    result = runner.invoke(main, ["serve-token-digest"])
    assert result.exit_code == 2 and "11 characters, fewer than 32" in result.output
    assert "short-token" not in result.output
    monkeypatch.delenv("RAYTRADE_SERVE_TOKEN")
    result = runner.invoke(main, ["serve-token-digest"])
    assert result.exit_code == 2 and "missing the Serve token" in result.output


def test_build_app_binds_the_digest_from_either_and_takes_exactly_one() -> None:
    config = ServiceConfig(model="alpha", registry="/data/registry")
    from_token = build_app(config, TOKEN)
    from_digest = build_app(config, token_sha256=DIGEST)
    for app in (from_token, from_digest):
        assert app._bound_deployment.init_args[0] == HEX  # what the guard compares with
        assert TOKEN not in repr(app._bound_deployment.init_args)
    with pytest.raises(ValueError, match="exactly one"):
        build_app(config)
    with pytest.raises(ValueError, match="exactly one"):
        build_app(config, TOKEN, token_sha256=DIGEST)
    with pytest.raises(TokenDigestError):
        build_app(config, token_sha256=HEX)  # unprefixed: refused
