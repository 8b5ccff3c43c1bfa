"""``raytrade calibrate-costs`` and ``raytrade recalibrate``: execution and forecast feedback.

``calibrate-costs`` fits the simulator's slippage parameters to the live loop's fills.

Reads the store's ``experience`` fills (``envs.cost_calibration``), prints each fitted parameter with
its standard error and 95 % interval and the sample size, and writes the typed profile
(``envs.cost_profile.CostProfile``) that ``raytrade evaluate`` and ``raytrade tune`` take as
``--cost-profile``. Only market-order fills are fitted; passive (limit) fills are counted apart with
their mean slippage against the mid (``envs.cost_calibration``). Fills decided while the market was
closed are measured from the open they waited for, and counted. Fills the robust screen capped are
printed by decision id, worst first. Too few market-order fills: one ``error: …`` line naming the
minimum and the passive fills left out, nothing written. Too many fills off the model, an
implausible estimate (naming the parameter, its value and the largest logged costs) and a profile the
cost model cannot take (a negative fitted value) are refused the same way.

Example::

    raytrade calibrate-costs --replay store --out profiles/costs.json --min-fills 50

``recalibrate`` runs ``replay.features.recalibration`` walk-forward on the store's forecast
quantiles and prints 90 % / 50 % coverage and the PIT histogram's largest gap, before and after,
overall and per volatility regime (nothing is written; the feature build adds the columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import LocalPath, path_option, written_path_option

if TYPE_CHECKING:
    from raytrade.envs.cost_profile import CostProfile, FittedParameter
    from raytrade.replay.features.recalibration import CalibrationSummary


def _row(name: str, param: FittedParameter | None, note: str = "") -> str:
    if param is None:
        return f"  {name:<18} {'not fitted':>10}  {note}"
    lo, hi = param.ci95
    return (
        f"  {name:<18} {param.value:>10.4g} {param.std_error:>10.3g}   [{lo:.4g}, {hi:.4g}]  {note}".rstrip()
    )


def format_profile(profile: CostProfile) -> str:
    """The fit as the command prints it: sample, one line per parameter, residual spread."""
    mean = profile.passive_mean_slippage_bps
    lines = [
        f"fills: {profile.n_fills} used, {profile.n_dropped} dropped, {profile.n_outliers} capped as "
        f"outliers; decisions {profile.fills_from:%Y-%m-%d %H:%M} .. {profile.fills_to:%Y-%m-%d %H:%M} UTC",
        f"passive (limit) fills: {profile.n_passive} left out of the fit"
        + ("" if mean is None else f", mean slippage {mean:.3g} bps against the mid")
        + "; the parameters describe market orders",
    ]
    if profile.n_rereferenced is not None:
        lines.append(
            f"decided while the market was closed: {profile.n_rereferenced} fills measured from the open "
            "they waited for (the arrival price), not the decision-time mid"
        )
    if profile.n_outliers:
        more = profile.n_outliers - len(profile.outliers)
        lines.append(
            f"outliers (residual from the robust fit beyond {profile.outlier_threshold_bps:.3g} bps), "
            "worst first: "
            + ", ".join(
                f"{o.decision_id} ({o.slippage_bps:.4g} bps, residual {o.residual_bps:.4g})"
                for o in profile.outliers
            )
            + (f" and {more} more" if more else "")
        )
    lines += [
        f"  {'parameter':<18} {'estimate':>10} {'std err':>10}   95 % interval",
        _row("spread_fraction", profile.spread_fraction),
    ]
    for k, (param, count) in enumerate(zip(profile.tier_base_bps, profile.tier_fills, strict=True)):
        lines.append(
            _row(f"tier_base_bps[{k}]", param, f"{count} fills" if count else "0 fills: default kept")
        )
    lines.append(_row("impact_coef_bps", profile.impact_coef_bps))
    lines.append(_row("volatility_coef", profile.volatility_coef, "diagnostic, not applied"))
    lines.append(f"  residual std {profile.residual_std_bps:.3g} bps")
    vol = profile.volatility_coef
    if vol is not None and vol.std_error > 0 and abs(vol.value) > 2 * vol.std_error:
        lines.append(
            "warning: slippage depends on volatility (|estimate| > 2 std err); the simulator's cost "
            "model has no volatility term and misprices volatile bars"
        )
    return "\n".join(lines)


@click.command("calibrate-costs")
@path_option("--replay", type=LocalPath(), required=True, help="Replay store root.")
@written_path_option("--out", type=LocalPath(), required=True, help="Profile JSON to write.")
@click.option(
    "--min-fills",
    type=click.IntRange(min=10),
    default=30,
    show_default=True,
    help="Fewest usable market-order fills to fit from.",
)
@one_line_errors
def calibrate_costs_command(replay: Path, out: Path, min_fills: int) -> None:
    """Fit the slippage model (spread fraction, tier bases, impact) to REPLAY's logged market-order
    fills; passive (limit) fills are counted apart, never fitted."""
    from raytrade.envs.cost_calibration import fit_cost_profile, logged_fills
    from raytrade.envs.cost_profile import apply_cost_profile
    from raytrade.envs.costs import CostConfig
    from raytrade.replay.errors import InputError

    if not (replay / "experience").is_dir():
        raise InputError(f"replay store {str(replay)!r} has no experience table (no logged fills)")
    fills = logged_fills(replay)
    for reason, count in sorted(fills.dropped.items()):
        click.echo(f"dropped {count} fills: {reason}")
    cfg = CostConfig()
    profile = fit_cost_profile(fills, cfg, min_fills=min_fills)
    click.echo(format_profile(profile))
    apply_cost_profile(cfg, profile)  # refuses a profile the cost model cannot take, before writing
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profile.model_dump_json(indent=1) + "\n")
    click.echo(f"wrote {out}")


def format_recalibration(report: dict[str, tuple[CalibrationSummary, CalibrationSummary]]) -> str:
    """One line per slice: rows, 90 % / 50 % coverage and the largest PIT-bin gap, before -> after."""
    lines = [f"  {'slice':<10} {'rows':>7}   {'cover 90%':>15}   {'cover 50%':>15}   {'PIT max gap':>15}"]
    for name, (before, after) in report.items():
        lines.append(
            f"  {name:<10} {after.n:>7}   {before.coverage_90:>6.3f} -> {after.coverage_90:.3f}"
            f"   {before.coverage_50:>6.3f} -> {after.coverage_50:.3f}"
            f"   {before.pit_error:>6.3f} -> {after.pit_error:.3f}"
        )
    return "\n".join(lines)


@click.command("recalibrate")
@path_option("--replay", type=LocalPath(), required=True, help="Replay store root.")
@click.option(
    "--refit-every", type=click.IntRange(min=1), default=63, show_default=True, help="Bars between refits."
)
@click.option(
    "--min-train",
    type=click.IntRange(min=20),
    default=200,
    show_default=True,
    help="Resolved rows a regime needs before it is recalibrated.",
)
@one_line_errors
def recalibrate_command(replay: Path, refit_every: int, min_train: int) -> None:
    """Recalibrate REPLAY's forecast quantiles walk-forward (a residual MLP per regime, past data
    only) and print coverage and PIT before and after, on the rows a past-only model covers."""
    from raytrade.replay.errors import InputError
    from raytrade.replay.features.recalibration import (
        REPORT_COLUMNS,
        RecalibrationConfig,
        recalibration_report,
    )
    from raytrade.replay.reader import read_frame

    if not (replay / "features").is_dir():
        raise InputError(f"replay store {str(replay)!r} has no features table")
    cfg = RecalibrationConfig(refit_every=refit_every, min_train=min_train)
    report = recalibration_report(read_frame(replay, "features", columns=list(REPORT_COLUMNS)), cfg)
    if not report or report["all"][1].n == 0:
        raise InputError(
            f"no forecast in {str(replay)!r} could be recalibrated: a regime needs {min_train} resolved "
            f"forecasts before a refit (--min-train), refits every {refit_every} bars (--refit-every)"
        )
    click.echo(format_recalibration(report))
    click.echo(
        "ideal: cover 90% 0.900, cover 50% 0.500, PIT max gap 0; build the store with "
        "FeatureConfig(recalibration=...) to add the fc_recal_q* columns"
    )
