"""How the ``raytrade`` commands end on an error.

* The project's own input errors (a bad row, a missing key, an unknown registry name, a busy store,
  a source or the policy service that answered with an error or not at all) end with one
  ``error: <first line>`` on stderr and exit status 2: the user made a mistake, or the command
  refused to go on, and the message names the field and the value.
* A pydantic ``ValidationError`` is that line too, built from its errors (:func:`_validation_line`):
  ``error: ExposureCaps.per_symbol_cap: Input should be a finite number (got nan)``, several joined
  by ``; ``. The input is shown only where it cannot be a secret: a number out of a number field's
  bounds (NaN, inf, too small or too large), in a field whose name does not suggest a key, token,
  secret or password, of a model that does not hide its inputs (``hide_input_in_errors``). Nothing
  else is echoed (a string may be a key, or a URL carrying one; a number given for a ``SecretStr`` is
  a string error): the validators that refuse a string name it themselves, cleaned.
* A plain ``ValueError`` / ``OSError`` raised outside those classes may be an input problem a library
  reported (a missing file, a refused connection) or a bug: it is shown as one line too, with a hint
  to rerun with ``-v``, which re-raises it with its traceback.
* Anything else is a bug and keeps its traceback.
* Inside a Ray job, a relative path the command would read or write (``cluster.options.PathOption``,
  ``WrittenPathOption``, ``PathArgument``) is refused before the command runs, as an input error: it
  would resolve against the job's working directory, not where the user thinks.
* A location that carries credentials (``s3://KEY:SECRET@bucket/…``) is never echoed: the messages
  show locations through ``replay.credentials.shown_url``, and the line printed passes through
  ``without_credentials`` too (a library's own message may quote the URI it was given).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT: Final = 2
_SHOWN_ERRORS: Final = 3  # a ValidationError's first few errors; the rest are counted
_SECRET_NAME: Final = re.compile(r"key|token|secret|passw|credential|auth", re.IGNORECASE)
_NUMBER_BOUNDS: Final = frozenset(
    {"finite_number", "greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"}
)


def input_errors() -> tuple[type[BaseException], ...]:
    """The project's own input errors (imported late: the CLI starts without loading the library)."""
    from pydantic import ValidationError

    from raytrade.replay.errors import InputError
    from raytrade.replay.sources.alpaca import SourceError
    from raytrade.replay.writer import StoreBusyError
    from raytrade.serve.client import ServiceError

    # InputError covers the store's, the sources', the registry's and the evaluation's refusals;
    # ServiceError is the policy service refusing a call, or not answering one the loop cannot hold
    # through (``live``'s start-up ``GET /v1/model``): nothing was ordered.
    return (InputError, SourceError, StoreBusyError, ServiceError, ValidationError)


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("verbose"))


def _first_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    from raytrade.replay.credentials import without_credentials

    if isinstance(exc, ValidationError):
        return _validation_line(exc)
    return without_credentials(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _validation_line(exc: Any) -> str:
    """``exc`` (a pydantic ``ValidationError``) as ``<Model>.<field>: <reason> (got <input>)`` per
    error, joined by ``; `` (the module docstring says when the input is shown)."""
    errors = exc.errors(include_url=False)
    inputs_shown = "input_value=" in str(exc)  # pydantic's own choice: hide_input_in_errors
    parts = []
    for error in errors[:_SHOWN_ERRORS]:
        where = ".".join([exc.title, *(str(p) for p in error["loc"])])
        reason = (error["msg"].splitlines() or [error["type"]])[0]
        reason = reason.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value = error.get("input")
        secret = any(_SECRET_NAME.search(str(p)) for p in error["loc"])
        number = error["type"] in _NUMBER_BOUNDS and isinstance(value, int | float)
        if inputs_shown and number and not secret:
            reason += f" (got {value!r})"
        parts.append(f"{where}: {reason}")
    if len(errors) > _SHOWN_ERRORS:
        parts.append(f"and {len(errors) - _SHOWN_ERRORS} more")
    return "; ".join(parts)


def one_line_errors(func: F) -> F:
    """Apply the rules of the module docstring to a command; before it runs, refuse a relative path
    it would read or write while it runs as a Ray job (``cluster.options.refuse_relative_paths``, so
    every command checks its path options and arguments the same way)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from raytrade.cluster.options import refuse_relative_paths

        try:
            refuse_relative_paths(click.get_current_context(silent=True))
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
