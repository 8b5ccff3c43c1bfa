"""``raytrade --help`` lists every subcommand without importing the lazy ones (each imports Ray, torch
or pandas: seconds), from summaries held to each command's own help."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import LAZY_COMMANDS, main, summary_row


def _command(name: str) -> click.Command:
    module_name, attribute = LAZY_COMMANDS[name].target.split(":")
    command = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_a_lazy_commands_summary_is_the_first_sentence_of_its_help(name: str) -> None:
    command = _command(name)
    assert command.short_help is None  # click would list the short help instead
    for limit in (45, 10_000):
        assert summary_row(name, LAZY_COMMANDS[name].summary, limit) == command.get_short_help_str(limit)


def test_help_lists_every_command_and_imports_no_lazy_one() -> None:
    script = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from raytrade.cluster.cli import LAZY_COMMANDS, main\n"
        "out = CliRunner().invoke(main, ['--help'], terminal_width=400)\n"
        "loaded = [c.target.split(':')[0] for c in LAZY_COMMANDS.values()]\n"
        "print(json.dumps({'code': out.exit_code, 'text': out.output,\n"
        "                  'imported': sorted(m for m in loaded if m in sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["code"], result["imported"]) == (0, [])
    rows = {
        line.split()[0]: line.split(None, 1)[1]
        for line in result["text"].split("Commands:")[1].splitlines()
        if line.strip()
    }
    for name, lazy in LAZY_COMMANDS.items():
        assert rows[name] == lazy.summary, name
    assert {"ingest", "summary", "demo"} <= rows.keys()


def test_the_cli_drops_rllibs_warning_against_its_own_constructor_and_no_other() -> None:
    import logging

    from ray._common.deprecation import deprecation_warning

    from raytrade.cluster.cli import RLLIB_SELF_DEPRECATION

    class Seen(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger("ray._common.deprecation")
    seen = Seen()
    logger.addHandler(seen)
    try:
        assert CliRunner().invoke(main, ["summary", "--help"]).exit_code == 0
        deprecation_warning(old=RLLIB_SELF_DEPRECATION, error=False)
        deprecation_warning(old="something_else()", error=False)
    finally:
        logger.removeHandler(seen)
    assert len(seen.messages) == 1 and "something_else()" in seen.messages[0]
