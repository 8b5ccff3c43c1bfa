"""cluster.errors: the project's input errors are one line; other errors keep their traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from raytrade.cluster.errors import EXIT_BAD_INPUT, one_line_errors
from raytrade.replay.errors import InputError
from raytrade.replay.reader import StoreError

RAISED = {
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
