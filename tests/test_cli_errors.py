"""cluster.errors: the project's input errors are one line; other errors keep their traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from raytrade.cluster.errors import EXIT_BAD_INPUT, one_line_errors
from raytrade.replay.errors import InputError
from raytrade.replay.reader import StoreError
from raytrade.serve.caps import ExposureCaps

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CREDENTIAL_URI = f"s3://AKIAEXAMPLE:{AWS_SECRET}@bucket/x"
RAISED = {
    "located": FileNotFoundError(
        f"[Errno 2] No such file or directory: 's3:/AKIAEXAMPLE:{AWS_SECRET}@bucket/x'"
    ),
    "input": InputError("--spec='nope' is not a spec"),
    "store": StoreError("replay store '/x' has no bars"),
    "value": ValueError("returns[3] = -1.5 is <= -1"),
    "key": KeyError("weights"),
}


@click.group()
@click.option("-v", "--verbose", is_flag=True)
def root(verbose: bool) -> None:
    """A stand-in for the raytrade group (its -v flag)."""


@root.command()
@click.argument("kind")
@one_line_errors
def boom(kind: str) -> None:
    raise RAISED[kind]


class _Account(BaseModel):
    """Fields named like secrets, a SecretStr, a string choice: their inputs are never echoed."""

    api_key_id: int = Field(1, gt=0)
    pin: SecretStr = SecretStr("0000")
    mode: Literal["paper"] = "paper"
    size: float = Field(1.0, gt=0)


class _Hidden(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)

    size: float = Field(1.0, gt=0)


MODELS: dict[str, type[BaseModel]] = {"caps": ExposureCaps, "account": _Account, "hidden": _Hidden}


@root.command()
@click.argument("model")
@click.argument("data")
@one_line_errors
def check(model: str, data: str) -> None:
    MODELS[model].model_validate(json.loads(data))  # json.loads reads NaN and Infinity


def run(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(root, list(args))
    return result.exit_code, result.output, result.exception


@pytest.mark.parametrize("kind", ["input", "store"])
def test_a_project_input_error_is_one_line_even_with_verbose(kind: str) -> None:
    for flags in ([], ["-v"]):
        code, out, _ = run(*flags, "boom", kind)
        assert code == EXIT_BAD_INPUT
        assert out.splitlines() == [f"error: {RAISED[kind]}"]


def test_a_plain_value_error_is_one_line_with_a_hint_and_its_traceback_under_verbose() -> None:
    code, out, _ = run("boom", "value")
    assert code == EXIT_BAD_INPUT
    assert out.splitlines() == [
        "error: returns[3] = -1.5 is <= -1 (ValueError; rerun with -v for the traceback)"
    ]
    code, out, exc = run("-v", "boom", "value")
    assert code != EXIT_BAD_INPUT and exc is RAISED["value"]  # re-raised: click shows the traceback


def test_any_other_error_is_not_swallowed() -> None:
    code, _, exc = run("boom", "key")
    assert code == 1 and exc is RAISED["key"]


def _check(model: str, data: dict[str, Any]) -> str:
    code, out, _ = run("check", model, json.dumps(data))
    assert code == EXIT_BAD_INPUT
    (line,) = out.splitlines()
    return line


def test_a_validation_error_names_the_model_field_reason_and_number() -> None:
    assert _check("caps", {"per_symbol_cap": math.nan}) == (
        "error: ExposureCaps.per_symbol_cap: Input should be a finite number (got nan)"
    )
    assert _check("caps", {"gross_cap": 9}) == (
        "error: ExposureCaps.gross_cap: Input should be less than or equal to 4 (got 9)"
    )


def test_several_validation_errors_share_the_line_and_the_rest_are_counted() -> None:
    data = {"per_symbol_cap": math.inf, "gross_cap": -1, "leverage_cap": 5, "max_gross_add": math.nan}
    assert _check("caps", data) == (
        "error: ExposureCaps.per_symbol_cap: Input should be a finite number (got inf); "
        "ExposureCaps.gross_cap: Input should be greater than 0 (got -1); "
        "ExposureCaps.leverage_cap: Input should be less than or equal to 4 (got 5); and 1 more"
    )


def test_a_validation_error_never_echoes_what_may_be_a_secret() -> None:
    line = _check("account", {"api_key_id": -73519, "pin": 73518, "mode": "s3cret-73517"})
    assert line == (
        "error: _Account.api_key_id: Input should be greater than 0; "
        "_Account.pin: Input should be a valid string; _Account.mode: Input should be 'paper'"
    )
    assert _check("hidden", {"size": -73516}) == "error: _Hidden.size: Input should be greater than 0"
    assert _check("account", {"size": -2}) == "error: _Account.size: Input should be greater than 0 (got -2)"


def _command(args: list[str]) -> str:
    """The command ``args`` run, as a usage error names it (a group's command with its group)."""
    return " ".join(args[: 2 if args[0] == "cluster" else 1])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["registry", "migrate", "--registry", CREDENTIAL_URI],
            "works on a local registry folder, not s3://bucket/x",
        ),
        (
            ["registry", "sign", "--registry", CREDENTIAL_URI],
            "works on a local registry folder, not s3://bucket/x",
        ),
        (
            ["nightly", "--replay", CREDENTIAL_URI, "--registry", "registry", "--source", "synthetic"],
            "s3://bucket/x is a URI; `raytrade nightly` takes a local path",
        ),
        *(
            (
                args,
                # the command path: `raytrade cluster status` for a group's command
                f"s3://bucket/x is a URI; `raytrade {_command(args)}` takes a local path",
            )
            for args in (
                ["evaluate", "--replay", CREDENTIAL_URI, "--out", "report"],
                ["evaluate", "--replay", "store", "--out", CREDENTIAL_URI],
                ["calibrate-costs", "--replay", CREDENTIAL_URI, "--out", "profile.json"],
                ["experiment", "--replay", CREDENTIAL_URI, "--out", "exp"],
                ["select", "run", "--replay", CREDENTIAL_URI],
                ["simulate-experience", "--replay", CREDENTIAL_URI, "--out", "exp", "--policy", "kelly_lite"],
                # every other local path (a click.Path made a folder named after the secret, and the
                # nightly recorded it in the store's nightly.json)
                ["nightly", "--replay", "store", "--registry", ".", "--reports", CREDENTIAL_URI],
                ["nightly", "--replay", "store", "--registry", ".", "--results", CREDENTIAL_URI],
                [
                    "nightly",
                    "--replay",
                    "store",
                    "--registry",
                    ".",
                    "--source",
                    "csv",
                    "--path",
                    CREDENTIAL_URI,
                ],
                ["live", "--paper", "--store", CREDENTIAL_URI],
                ["live", "--paper", "--state-file", CREDENTIAL_URI],
                ["live", "--paper", "--account-lock-dir", CREDENTIAL_URI],
                ["ingest", "--source", "csv", "--path", CREDENTIAL_URI, "--out", "store"],
                ["summary", CREDENTIAL_URI],
                ["demo", "--out", CREDENTIAL_URI],
                ["tune", "--spec", "bc", "--replay", "store", "--experience", CREDENTIAL_URI],
                ["tune", "--spec", "ppo", "--replay", "store", "--cost-profile", CREDENTIAL_URI],
                ["cluster", "status", "--state-dir", CREDENTIAL_URI],
            )
        ),
    ],
)
def test_a_location_with_credentials_is_refused_without_echoing_them_or_making_a_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], expected: str
) -> None:
    """registry migrate echoed the URI whole; nightly's --replay (click.Path) made a local folder named
    after the secret (`s3:/AKIA…:SECRET@bucket`) and ingested into it."""
    from raytrade.cluster.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert expected in result.output
    assert AWS_SECRET not in result.output and "AKIAEXAMPLE" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_error_line_quoting_a_location_with_credentials_shows_it_without_them() -> None:
    """A library's message (here the folded ``s3:/`` a path type makes of ``s3://``) quoting the URI."""
    code, out, _ = run("boom", "located")
    assert code == EXIT_BAD_INPUT
    assert AWS_SECRET not in out and "AKIAEXAMPLE" not in out
    assert out.startswith("error: [Errno 2] No such file or directory: 'bucket/x' (FileNotFoundError;")
