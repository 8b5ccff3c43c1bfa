"""``raytrade --help`` lists every subcommand without importing the lazy ones (each imports Ray, torch
or pandas: seconds), from summaries held to each command's own help."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest

from raytrade.cluster.cli import LAZY_COMMANDS, summary_row


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
