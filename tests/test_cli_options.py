"""Every command's flags agree with the pydantic model they fill (cluster.options.option_drift)."""

from __future__ import annotations

from typing import Literal

import click
import pytest
from pydantic import BaseModel, ConfigDict, Field

from raytrade.cluster.cli import ingest
from raytrade.cluster.experiment import ExperimentOptions, experiment_command
from raytrade.cluster.ingest import SourceRequest
from raytrade.cluster.live import live_command
from raytrade.cluster.options import exposure_caps, option_drift
from raytrade.cluster.serve import serve_command
from raytrade.cluster.tune import TuneOptions, tune_command
from raytrade.serve.app import HttpConfig, ServiceConfig
from raytrade.serve.caps import ExposureCaps
from raytrade.serve.decide import ServeConfig
from raytrade.serve.orders import LiveConfig

COMMANDS = {
    # wandb is set by --wandb / --no-wandb; trial_resources is for tests and cluster scripts only
    "tune": (tune_command, TuneOptions, {}, {"wandb", "trial_resources"}),
    "ingest": (ingest, SourceRequest, {}, set()),
    "experiment": (experiment_command, ExperimentOptions, {}, set()),
    # quantity steps are broker facts, not flags; caps are the --*-cap flags (checked against ExposureCaps);
    # kill_switch is the served policy's rule (the simulator's default: no spec trains with another)
    "live": (live_command, LiveConfig, {}, {"crypto_qty_step", "fractional_qty_step", "caps", "kill_switch"}),
    # decide is built from --max-feature-age-hours / --kill-drawdown (checked against ServeConfig below)
    "serve": (serve_command, ServiceConfig, {}, {"decide"}),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_flags_agree_with_the_options_model(name: str) -> None:
    command, model, flags, not_flags = COMMANDS[name]
    assert option_drift(command, model, flags=flags, not_flags=not_flags) == []


def test_serve_flags_agree_with_the_decision_config() -> None:
    # --max-feature-age-hours 0 means "never stale" and becomes None, so its bounds differ by design
    used = {"kill_drawdown"}
    assert option_drift(serve_command, ServeConfig, not_flags=set(ServeConfig.model_fields) - used) == []


@pytest.mark.parametrize("command", [serve_command, live_command], ids=["serve", "live"])
def test_the_caps_flags_agree_with_the_exposure_caps(command: click.Command) -> None:
    assert option_drift(command, ExposureCaps) == []


def test_the_caps_flags_spell_the_caps() -> None:
    args = ["--paper", "--per-symbol-cap", "0.05", "--gross-cap", "0.8", "--max-gross-add", "0.1"]
    live = live_command.make_context("live", args)
    assert exposure_caps(live.params) == ExposureCaps(per_symbol_cap=0.05, gross_cap=0.8, max_gross_add=0.1)
    assert exposure_caps(serve_command.make_context("serve", ["--model", "m"]).params) == ExposureCaps()


def test_a_zero_cap_is_refused_naming_the_flag() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(serve_command, ["--model", "m", "--per-symbol-cap", "0"])
    assert result.exit_code == 2 and "--per-symbol-cap" in result.output


@pytest.mark.parametrize("command", [serve_command, live_command], ids=["serve", "live"])
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--per-symbol-cap", "nan"),
        ("--per-symbol-cap", "1.5"),
        ("--gross-cap", "inf"),
        ("--leverage-cap", "nan"),
        ("--max-gross-add", "inf"),
    ],
)
def test_a_cap_that_is_no_cap_is_refused_naming_the_flag_and_value(
    command: click.Command, flag: str, value: str
) -> None:
    """NaN, infinity or a cap above its ceiling would switch the cap off: refused before anything
    runs (a usage error, exit status 2, naming the flag and the value)."""
    from click.testing import CliRunner

    args = ["--model", "m"] if command is serve_command else ["--paper", "--once"]
    result = CliRunner().invoke(command, [*args, flag, value])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert f"Invalid value for '{flag}': " in line and value in line.split(": ", 1)[1]


def test_a_config_file_deploy_takes_the_caps_as_a_mapping() -> None:
    from raytrade.cluster.serve_app import BuilderArgs

    args = BuilderArgs.model_validate({"model": "m", "registry": "r", "caps": {"per_symbol_cap": "0.05"}})
    assert args.caps == ExposureCaps(per_symbol_cap=0.05)
    assert BuilderArgs.model_validate({"model": "m", "registry": "r"}).caps == ExposureCaps()


def test_serve_flags_agree_with_the_http_config() -> None:
    # --max-as-of-skew-s 0 means "no limit" and becomes None, so its bounds differ by design
    assert option_drift(serve_command, HttpConfig, not_flags={"max_as_of_skew_s"}) == []
    assert HttpConfig.model_fields["max_as_of_skew_s"].default == 900.0
    assert next(p for p in serve_command.params if p.name == "max_as_of_skew_s").default == 900.0


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int = Field(3, ge=1)
    mode: Literal["a", "b"] = "a"
    name: str


@click.command("demo")
@click.option("--size", type=click.IntRange(min=0), default=4)
@click.option("--mode", type=click.Choice(["a", "c"]), default="a")
@click.option("--name")
def _drifted(size: int, mode: str, name: str | None) -> None:
    """A command whose flags drifted from _Options in every way the check knows."""


def test_every_kind_of_drift_is_reported() -> None:
    assert option_drift(_drifted, _Options) == [
        "demo: _Options.size defaults to 3 but --size to 4",
        "demo: _Options.size bounds {'ge': 1.0} differ from --size's {'ge': 0.0}",
        "demo: _Options.mode allows ['a', 'b'] but --mode ['a', 'c']",
        "demo: _Options.name is required but --name is optional with no default",
    ]
    assert option_drift(_drifted, _Options, not_flags={"size", "mode", "name"}) == []
