"""``raytrade calibrate-costs``: fit the simulator's slippage parameters to the live loop's fills.

Reads the store's ``experience`` fills (``envs.cost_calibration``), prints each fitted parameter with
its standard error and 95 % interval and the sample size, and writes the typed profile
(``envs.cost_profile.CostProfile``) that ``raytrade evaluate`` and ``raytrade tune`` take as
``--cost-profile``. Too few fills: one ``error: …`` line naming the minimum, nothing written. A
profile the cost model cannot take (a negative fitted value) is refused the same way.

Example::

    raytrade calibrate-costs --replay store --out profiles/costs.json --min-fills 50
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from raytrade.cluster.errors import one_line_errors

if TYPE_CHECKING:
    from raytrade.envs.cost_profile import CostProfile, FittedParameter


def _row(name: str, param: FittedParameter | None, note: str = "") -> str:
    if param is None:
        return f"  {name:<18} {'not fitted':>10}  {note}"
    lo, hi = param.ci95
    return (
        f"  {name:<18} {param.value:>10.4g} {param.std_error:>10.3g}   [{lo:.4g}, {hi:.4g}]  {note}".rstrip()
    )


def format_profile(profile: CostProfile) -> str:
    """The fit as the command prints it: sample, one line per parameter, residual spread."""
    lines = [
        f"fills: {profile.n_fills} used, {profile.n_dropped} dropped; decisions "
        f"{profile.fills_from:%Y-%m-%d %H:%M} .. {profile.fills_to:%Y-%m-%d %H:%M} UTC",
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
@click.option("--replay", type=click.Path(path_type=Path), required=True, help="Replay store root.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Profile JSON to write.")
@click.option(
    "--min-fills",
    type=click.IntRange(min=10),
    default=30,
    show_default=True,
    help="Fewest usable fills to fit from.",
)
@one_line_errors
def calibrate_costs_command(replay: Path, out: Path, min_fills: int) -> None:
    """Fit the slippage model (spread fraction, tier bases, impact) to REPLAY's logged fills."""
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
