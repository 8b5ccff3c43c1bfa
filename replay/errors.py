"""The project's own input errors: one base class every layer's refusals derive from.

An ``InputError`` means the user asked for something the project refuses (a bad row, an unknown
spec, a missing store, a missing key); its message names the field and the value, and the CLI prints
it as one line. A plain ``ValueError`` from deeper down is not assumed to be the user's fault: the CLI
shows it with a hint to rerun with ``-v`` for its traceback (``cluster.errors``).
"""

from __future__ import annotations


class InputError(ValueError):
    """A refused input; the message names the field and the value."""
