"""The project's own input errors: one base class every layer's refusals derive from.

An ``InputError`` means the user asked for something the project refuses (a bad row, an unknown
spec, a missing store, a missing key); its message names the field and the value, and the CLI prints
it as one line. A plain ``ValueError`` from deeper down is not assumed to be the user's fault: the CLI
shows it with a hint to rerun with ``-v`` for its traceback (``cluster.errors``).
"""

from __future__ import annotations

from pydantic import ValidationError


class InputError(ValueError):
    """A refused input; the message names the field and the value."""


def first_problem(error: ValidationError, under: str = "") -> str:
    """One line for a pydantic ``error``: its first problem as ``field.path: reason`` (``under``
    prefixed to the path; the reason's first line, without pydantic's ``Value error, ``), never the
    input (it may be a file's content) nor pydantic's documentation link, and how many more there are."""
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = ".".join([*([under] if under else []), *(str(p) for p in first["loc"])])
    reason = (first["msg"].splitlines() or [first["type"]])[0].removeprefix("Value error, ")
    extra = len(errors) - 1
    more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    return f"{where}: {reason}{more}" if where else f"{reason}{more}"
