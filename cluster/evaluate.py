"""``raytrade evaluate``: compare registry models and baselines on a replay split or walk-forward folds.

Every policy runs through the same simulator and cost model, on the same windows and stress
scenarios; the report (``report.json`` deterministic, ``report.md`` / ``report.html`` with plots) goes
to ``--out``. Bad input (an unknown policy, a store without a needed feature, a window shorter than a
lookback, an unknown scenario) is refused with one ``error: …`` line and exit status 2 before any
replay runs or anything is written. A scenario the data cannot carry (too few crisis rows for the
bootstrap's blocks, a split shorter than a crisis window) is not bad input: every other scenario and
policy is evaluated, the report shows it as refused with the reason, the command prints one
``warning: scenario NAME refused: REASON`` line for it (stderr, with the report's other warnings),
and the exit status stays 0.

Out of sample: a registry model is refused (one ``error: …`` line naming the model, its training
window, the windows and the first bar an out-of-sample window may start on) when any evaluated
window (the split, a walk-forward fold, the stress scenarios' split) starts before its training window
ends plus the embargo. ``--after-training`` cuts the ``--walk-forward`` folds from that bar on (from
the embargo after its validation window where that is known); ``--in-sample`` evaluates anyway, and
the report labels those figures IN-SAMPLE. A model whose
training window is unknown (older versions) is evaluated with a ``warning: …`` line and a report
warning that out-of-sample cannot be checked.

Universe: with registry models among the policies, every policy (the baselines too: one set of
bars, one universe, one cost model) is replayed on the symbols the models trained on (their
manifests' ``data.symbols``, as serving does), not on symbols the store gained since; the report says
which universe and why. Models trained on different universes, or a trained symbol the store lacks,
are refused with one ``error: …`` line naming them.

Example::

    raytrade evaluate --replay store --policies kelly_lite,buy_and_hold,registry:ppo --out reports/x
    ray job submit --working-dir . -- raytrade evaluate --replay store --policies ... --out reports/x
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import (
    LocalPath,
    cash_rate_of,
    cash_rate_options,
    names_registry_policy,
    path_option,
    written_path_option,
)
from raytrade.replay.errors import InputError

if TYPE_CHECKING:
    from raytrade.envs.cash_rate import CashRate
    from raytrade.envs.evaluation.document import EvaluationReport
    from raytrade.envs.evaluation.policies import Loader

DEFAULT_POLICIES = "cash,buy_and_hold,equal_weight,inverse_vol,kelly_lite"


def split_names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def report_warnings(report: EvaluationReport) -> list[str]:
    """The report's warnings as console lines: one per registry model evaluated IN-SAMPLE, whose
    out-of-sample could not be checked, or evaluated on windows overlapping the validation window its
    checkpoint was chosen on, then the report's ``warnings`` (a window too short to annualise, symbols
    whose bars stop): the report says so, and so does the console."""
    lines = []
    for name, policy in report.policies.items():
        sample = policy.sample
        if sample is None:
            continue
        if sample.status == "IN-SAMPLE":
            lines.append(
                f"{name} is IN-SAMPLE on {', '.join(sample.in_sample_windows)}: no out-of-sample result"
            )
        if sample.warning is not None:
            lines.append(sample.warning)
        if sample.validation_overlap and sample.validation is not None:
            lines.append(
                f"{name}: windows {', '.join(sample.validation_overlap)} overlap its validation window "
                f"{sample.validation.start}..{sample.validation.end}, on which its checkpoint was "
                "chosen: selection-biased"
            )
    return [*lines, *report.warnings]


def run_evaluation(
    replay: Path,
    policies: list[str],
    out: Path,
    *,
    split: str = "test",
    walk_forward: int | None = None,
    seeds: int = 3,
    scenarios: list[str] | None = None,
    registry: Path | None = None,
    bootstrap_samples: int = 1000,
    plots: bool = True,
    loader: Loader | None = None,
    cost_profile: Path | None = None,
    in_sample: bool = False,
    after_training: bool = False,
    cash_rate: CashRate | None = None,
) -> EvaluationReport:
    """Check, evaluate and write the report; returns the document ``report.json`` holds. With
    ``cost_profile`` every policy is replayed with that profile's costs. A registry model asked on
    bars it trained on is refused (``harness.InSampleError``) unless ``in_sample`` (see the module
    docstring); ``after_training`` starts the walk-forward folds after every model's training window.
    ``cash_rate`` is what idle cash earns, and the Sharpe and Sortino ratios' risk-free rate (None: 0 %)."""
    from raytrade.envs.cash_rate import CashRate
    from raytrade.envs.config import SimulatorConfig
    from raytrade.envs.cost_profile import cost_config_from_profile
    from raytrade.envs.costs import CostConfig
    from raytrade.envs.evaluation.harness import DEFAULT_SCENARIOS, EvaluationConfig, evaluate, prepare
    from raytrade.envs.evaluation.render import write_report
    from raytrade.envs.evaluation.stats import BootstrapConfig

    started = time.perf_counter()
    cfg = EvaluationConfig(
        split=split,
        walk_forward=walk_forward,
        in_sample=in_sample,
        after_training=after_training,
        seeds=tuple(range(seeds)),
        scenarios=tuple(DEFAULT_SCENARIOS if scenarios is None else scenarios),
        bootstrap=BootstrapConfig(samples=bootstrap_samples),
        simulator=SimulatorConfig(
            costs=cost_config_from_profile(cost_profile) if cost_profile is not None else CostConfig(),
            cash_rate=cash_rate or CashRate(),
        ),
    )
    if loader is None:  # registry versions load under the registry key, when one is set
        from raytrade.cluster.registry_access import registry_loader

        loader = registry_loader()

    from raytrade.models.inference import single_threaded

    plan = prepare(replay, policies, cfg, registry=registry, loader=loader)
    with single_threaded():  # one small forward per bar: a second torch thread only waits
        result = evaluate(plan)
    _, report = write_report(result, out, run_seconds=time.perf_counter() - started, plots=plots)
    return report


@click.command("evaluate")
@path_option("--replay", type=LocalPath(), required=True, help="Replay store root.")
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test", "all"]),
    default="test",
    show_default=True,
    help="Evaluated window (and the window of the stress scenarios).",
)
@click.option(
    "--walk-forward",
    "walk_forward",
    type=click.IntRange(min=1),
    help="Evaluate K walk-forward folds instead.",
)
@click.option(
    "--after-training",
    "after_training",
    is_flag=True,
    help="With --walk-forward: cut the folds from the first bar after every registry model's training "
    "window (and its validation window, where known) and the embargo (instead of half-way through the "
    "store).",
)
@click.option(
    "--in-sample",
    "in_sample",
    is_flag=True,
    help="Evaluate registry models on bars they trained on (refused otherwise); the report labels those "
    "figures IN-SAMPLE: never an out-of-sample result.",
)
@click.option(
    "--policies",
    default=DEFAULT_POLICIES,
    show_default=True,
    help="Comma-separated: baselines (cash, buy_and_hold, equal_weight, inverse_vol, kelly_lite) and "
    "registry:NAME[@VERSION]. equal_weight is always added as the benchmark.",
)
@written_path_option("--out", type=LocalPath(), required=True, help="Report folder.")
@click.option(
    "--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds per stochastic model."
)
@click.option(
    "--scenarios",
    default=None,
    help="Comma-separated stress scenarios (default: crisis_2008_like, flash_crash, vol_spike, "
    "bootstrap_crisis); '' for none.",
)
@path_option(
    "--registry",
    type=LocalPath(),
    default=Path("registry"),
    show_default=True,
    help="Model registry folder for registry: policies.",
    used_when=names_registry_policy("policies"),
)
@click.option(
    "--bootstrap-samples",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Bootstrap resamples behind each confidence interval of the comparison.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (tiny-budget runs).")
@path_option(
    "--cost-profile",
    type=LocalPath(),
    help="Cost profile from raytrade calibrate-costs (default: the loop's cost model).",
)
@cash_rate_options()
@one_line_errors
def evaluate_command(
    replay: Path,
    split: str,
    walk_forward: int | None,
    after_training: bool,
    in_sample: bool,
    policies: str,
    out: Path,
    seeds: int,
    scenarios: str | None,
    registry: Path,
    bootstrap_samples: int,
    no_plots: bool,
    cost_profile: Path | None,
    cash_rate: float | None,
    cash_rates: Path | None,
) -> None:
    """Evaluate POLICIES on the replay store and write report.json / report.md / report.html to OUT."""
    from raytrade.envs.evaluation.harness import CashRateCoverageError

    if after_training and walk_forward is None:  # the config's own refusal names its fields, not flags
        raise InputError("--after-training cuts the --walk-forward folds: give --walk-forward K too")
    try:
        report = run_evaluation(
            replay,
            split_names(policies),
            out,
            split=split,
            walk_forward=walk_forward,
            seeds=seeds,
            scenarios=None if scenarios is None else split_names(scenarios),
            registry=registry,
            bootstrap_samples=bootstrap_samples,
            plots=not no_plots,
            cost_profile=cost_profile,
            in_sample=in_sample,
            after_training=after_training,
            cash_rate=cash_rate_of(cash_rate, cash_rates),
        )
    except CashRateCoverageError as exc:  # only a schedule can start late: name its flag
        raise InputError(f"--cash-rates: {exc}") from None
    for line in report_warnings(report):
        click.echo(f"warning: {line}", err=True)
    for name, scenario in report.stress_scenarios.items():  # the rest ran: not an error, not silent
        if scenario.refused is not None:
            click.echo(f"warning: scenario {name} refused: {scenario.refused}", err=True)
    rate = report.config.simulator.cash_rate
    if not rate.is_zero:  # 0.14 as a fraction is 14 %: the range shows a unit mistake
        click.echo(f"idle cash earned {rate.describe()}; Sharpe and Sortino are over it")
    click.echo(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}")
    for name, entry in report.policies.items():
        sharpe, total = entry.metrics.sharpe, entry.metrics.total_return
        click.echo(
            f"  {name:<28} total {'n/a' if total is None else f'{total:.2%}':>9}  "
            f"sharpe {'n/a' if sharpe is None else f'{sharpe:.2f}':>6}"
        )
