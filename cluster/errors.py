"""How the ``raytrade`` commands end on an error.

* The project's own input errors (a bad row, a missing key, an unknown registry name, a busy store,
  a source that answered with an error) end with one ``error: <first line>`` on stderr and exit
  status 2: the user made a mistake, and the message names the field and the value.
* A plain ``ValueError`` / ``OSError`` raised outside those classes may be an input problem a library
  reported (a missing file, a refused connection) or a bug: it is shown as one line too, with a hint
  to rerun with ``-v``, which re-raises it with its traceback.
* Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT: Final = 2


def input_errors() -> tuple[type[BaseException], ...]:
    """The project's own input errors (imported late: the CLI starts without loading the library)."""
    from pydantic import ValidationError

    from raytrade.replay.errors import InputError
    from raytrade.replay.sources.alpaca import SourceError
    from raytrade.replay.writer import StoreBusyError

    # InputError covers the store's, the sources', the registry's and the evaluation's refusals.
    return (InputError, SourceError, StoreBusyError, ValidationError)


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("verbose"))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def one_line_errors(func: F) -> F:
    """Apply the rules of the module docstring to a command."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except input_errors() as exc:
            click.echo(f"error: {_first_line(exc)}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except (ValueError, OSError) as exc:
            if _verbose():
                raise
            click.echo(
                f"error: {_first_line(exc)} ({type(exc).__name__}; rerun with -v for the traceback)", err=True
            )
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]
