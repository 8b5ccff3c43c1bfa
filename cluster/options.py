"""Click options checked against the pydantic models they fill, so a field and its flag cannot drift.

Each command builds a frozen options model (``TuneOptions``, ``SourceRequest``, ``LiveConfig``, …)
from its flags. :func:`option_drift` lists every disagreement between the two: a field without its
flag, a different default, a flag that is optional for a required field, bounds that differ
(``click.IntRange``/``FloatRange`` against ``ge``/``gt``/``le``/``lt``), choices that differ from a
``Literal``. The test suite asserts the list is empty for every command (``tests/test_cli_options.py``).

Options that name a local place the command reads (a store, registry, run folder, cost profile, a
folder of CSVs) are :class:`PathOption` options, those naming a place it writes (a store, registry, run
folder, report, results file) :class:`WrittenPathOption` options, and positional ones
:class:`PathArgument` arguments. Inside a Ray job a relative one would resolve against the job's
working directory (Ray's temporary copy of ``--working-dir``, deleted when the job ends and without
what ``.rayignore`` keeps out: ``store/``, ``data/``, ``reports/``, ``select/``, ``registry/``,
``runs/``…; or the driver's folder on the head), not the folder the user submitted from: a write
would be lost and a read would find nothing, or not the user's files. Every command refuses it
before anything runs, with one line naming the flag, the value and that folder
(:func:`refuse_relative_paths`, called by ``cluster.errors.one_line_errors``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar, get_args, get_origin

import annotated_types
import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

if TYPE_CHECKING:
    from raytrade.envs.cash_rate import CashRate

F = TypeVar("F", bound=Callable[..., Any])


RAY_JOB_ENV: Final = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray's job supervisor for a job's entrypoint process only (Ray 2.60,
``ray/dashboard/modules/job/job_supervisor.py``, ``_get_driver_env_vars``; not for its tasks and
actors): this process is a Ray job, started in a folder of the cluster's choosing."""
WORKING_DIR_COPY: Final = ("runtime_resources", "working_dir_files")
"""Where Ray unpacks a job's ``--working-dir`` (``.../runtime_resources/working_dir_files/_ray_pkg_<hash>``)
and starts its entrypoint: a temporary copy, deleted when no job uses it."""


PathUse = Literal["read", "written"]
"""What a command does with a :class:`PathOption`'s place: only the message differs."""
UsedWhen = str | Callable[[Mapping[str, Any]], bool]
"""When a command uses a path option at all: the name of a parameter that must be set (truthy; select's
``--registry`` is written only with ``--promote``), or a predicate on the command's parameters
(evaluate's ``--registry`` is read only for ``registry:`` policies: :func:`names_registry_policy`)."""


class PathOption(click.Option):
    """An option naming a local place the command reads (a store, a registry, a run folder, a cost
    profile, a folder of CSVs): inside a Ray job a relative one is refused (:func:`refuse_relative_paths`).
    ``used_when``: see :data:`UsedWhen` (None: always used)."""

    use: ClassVar[PathUse] = "read"

    def __init__(self, *args: Any, used_when: UsedWhen | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.used_when = used_when


class WrittenPathOption(PathOption):
    """A :class:`PathOption` naming a place the command writes (a store, registry, run folder, report,
    results file); it may read it too."""

    use: ClassVar[PathUse] = "written"


class PathArgument(click.Argument):
    """A positional argument naming local places the command reads (select's ``RUN_DIRS``, summary's
    ``ROOT``): refused like a :class:`PathOption` when relative inside a Ray job."""

    use: ClassVar[PathUse] = "read"
    used_when: UsedWhen | None = None


def path_option(*param_decls: str, used_when: UsedWhen | None = None, **attrs: Any) -> Callable[[F], F]:
    """``click.option`` for a place the command reads (:class:`PathOption`)."""
    return click.option(*param_decls, cls=PathOption, used_when=used_when, **attrs)


def written_path_option(
    *param_decls: str, used_when: UsedWhen | None = None, **attrs: Any
) -> Callable[[F], F]:
    """``click.option`` for a place the command writes (:class:`WrittenPathOption`)."""
    return click.option(*param_decls, cls=WrittenPathOption, used_when=used_when, **attrs)


def path_argument(*param_decls: str, **attrs: Any) -> Callable[[F], F]:
    """``click.argument`` for places the command reads (:class:`PathArgument`)."""
    return click.argument(*param_decls, cls=PathArgument, **attrs)


def names_registry_policy(param: str) -> Callable[[Mapping[str, Any]], bool]:
    """A :data:`UsedWhen` for a ``--registry`` read only when ``param`` (one policy, or a
    comma-separated list of them) names a ``registry:NAME[@VERSION]`` policy."""

    def uses(params: Mapping[str, Any]) -> bool:
        from raytrade.envs.evaluation.policies import REGISTRY_PREFIX

        value = params.get(param)
        return isinstance(value, str) and any(p.strip().startswith(REGISTRY_PREFIX) for p in value.split(","))

    return uses


def ray_job_folder(environ: Mapping[str, str], cwd: Path) -> str | None:
    """What ``cwd`` is when this process runs as a Ray job's entrypoint (``cwd`` under
    :data:`WORKING_DIR_COPY`, or :data:`RAY_JOB_ENV` set), for a message; None otherwise."""
    parts = cwd.parts
    if any(parts[i : i + 2] == WORKING_DIR_COPY for i in range(len(parts) - 1)):
        return f"{cwd}, Ray's temporary copy of the job's --working-dir (deleted when the job ends)"
    if RAY_JOB_ENV in environ:
        return f"{cwd}, the job driver's folder on the head node (not the folder it was submitted from)"
    return None


def relative_in_job(
    flag: str, value: Any, environ: Mapping[str, str], cwd: Path, use: PathUse = "written"
) -> str | None:
    """Why ``flag``'s ``value`` is refused (a relative local path while this process runs as a Ray
    job: :func:`ray_job_folder`), or None (absolute, a URI, not a path, or not in a job). ``use``:
    whether the command writes or reads there, for the message."""
    from raytrade.replay.credentials import shown_url
    from raytrade.replay.remote import is_remote

    if not isinstance(value, str | os.PathLike):
        return None
    text = os.fspath(value)
    if is_remote(text) or Path(text).is_absolute():
        return None
    folder = ray_job_folder(environ, cwd)
    if folder is None:
        return None
    why = f"{flag} {shown_url(text)!r} is a relative path and this command runs as a Ray job, in {folder}: "
    if use == "read":
        return (
            why + f"it would be read from {cwd / text}; pass an absolute path on the cluster's shared storage"
        )
    return why + f"it would have gone to {cwd / text}; give an absolute path (or a URI) the cluster keeps"


def _used(when: UsedWhen | None, params: Mapping[str, Any]) -> bool:
    if when is None:
        return True
    return when(params) if callable(when) else bool(params.get(when))


def refuse_relative_paths(
    ctx: click.Context | None, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> None:
    """``InputError`` (one line, exit 2) for the first :class:`PathOption` or :class:`PathArgument` of
    ``ctx``'s command that the command uses (``used_when``) and whose value (given or default) is
    relative while this process runs as a Ray job (:func:`relative_in_job`); nothing outside a job or
    without a context."""
    from raytrade.replay.errors import InputError

    if ctx is None:
        return
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    for param in ctx.command.params:
        if not isinstance(param, PathOption | PathArgument) or param.name is None:
            continue
        flag = "/".join(param.opts) if isinstance(param, PathOption) else param.human_readable_name
        value = ctx.params.get(param.name)
        for one in value if isinstance(value, tuple | list) else [value]:
            why = relative_in_job(flag, one, environ, cwd, param.use)
            if why is not None and _used(param.used_when, ctx.params):
                raise InputError(why)


def registry_option(
    help: str = "Registry root (a folder, or an s3://… URI).",
    *,
    written: bool = False,
    used_when: UsedWhen | None = None,
) -> Callable[[F], F]:
    """The ``--registry DIR|URI`` option the registry commands share (default ``registry``): a string,
    since ``pathlib.Path`` would fold ``s3://`` into ``s3:/``. A :class:`PathOption` the command reads,
    or with ``written`` a :class:`WrittenPathOption`; ``used_when``: see :data:`UsedWhen`."""
    from raytrade.models.registry import DEFAULT_REGISTRY

    attrs: dict[str, Any] = dict(type=str, default=DEFAULT_REGISTRY, show_default=True, help=help)
    if written:
        return written_path_option("--registry", used_when=used_when, **attrs)
    return path_option("--registry", used_when=used_when, **attrs)


class LocalPath(click.ParamType):
    """A local folder or file as a ``pathlib.Path``, for commands that cannot use remote locations: a
    ``scheme://`` URI is refused as a usage error that shows it without credentials
    (``replay.credentials.shown_url``), instead of ``click.Path`` folding ``s3://KEY:SECRET@b/x`` into a
    local folder named after the secret."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pathlib import Path

        from raytrade.replay.credentials import shown_url
        from raytrade.replay.remote import is_remote

        if isinstance(value, Path):
            return value
        if is_remote(str(value)):
            # the whole command: `raytrade cluster status`, not `raytrade status`
            command = (
                f"`raytrade {' '.join(ctx.command_path.split()[1:])}`" if ctx is not None else "this command"
            )
            self.fail(f"{shown_url(str(value))} is a URI; {command} takes a local path", param, ctx)
        return Path(value)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that refuses NaN too (``nan <= max`` and ``nan > min`` are both false, so
    ``FloatRange`` lets it through) and infinities: a cap of NaN or inf would be no cap."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


CAPS_FLAGS: tuple[str, ...] = (
    "per_symbol_cap",
    "gross_cap",
    "leverage_cap",
    "max_gross_add",
    "crypto_gross_cap",
)
"""``serve.caps.ExposureCaps``'s fields, one flag each (``--per-symbol-cap`` …) on serve and live."""


def cash_rate_option() -> Callable[[F], F]:
    """``--cash-rate``: a constant annual rate idle cash earns in the simulator, a fraction, and the
    ratios' risk-free rate."""
    from raytrade.envs.cash_rate import MAX_ANNUAL_RATE

    return click.option(
        "--cash-rate",
        "cash_rate",
        type=FiniteFloatRange(min=0.0, max=MAX_ANNUAL_RATE),
        default=None,
        help="Annual rate idle cash (equity not held long) earns, a fraction (0.04: 4 %); also the "
        "Sharpe and Sortino ratios' risk-free rate (default: 0).",
    )


def cash_rate_options() -> Callable[[F], F]:
    """:func:`cash_rate_option` and ``--cash-rates`` (a rate file, ``envs.cash_rate``), one or the
    other. :func:`cash_rate_of` turns the two into one ``CashRate``."""

    def decorate(command: F) -> F:
        command = path_option(
            "--cash-rates",
            "cash_rates",
            type=LocalPath(),
            help="CSV of rates idle cash (equity not held long) earns by date: header date,annual_rate "
            "(fractions) or date,annual_rate_pct (percent), each rate holding until the next; also the "
            "Sharpe and Sortino ratios' risk-free rate. Not with --cash-rate.",
        )(command)
        return cash_rate_option()(command)

    return decorate


def cash_rate_of(rate: float | None, rates: Path | None) -> CashRate | None:
    """The ``CashRate`` of ``--cash-rate`` / ``--cash-rates`` (None when neither is given); both, or a
    file that is refused, is an ``InputError`` (one line, exit 2) naming the flag, the file and the
    line. The one reading of the two flags: every command that takes them calls it."""
    from raytrade.envs.cash_rate import CashRate, load_cash_rate
    from raytrade.replay.errors import InputError

    if rate is not None and rates is not None:
        raise InputError("give --cash-rate or --cash-rates, not both")
    if rates is not None:
        try:
            return load_cash_rate(rates)
        except (OSError, ValueError) as exc:
            raise InputError(f"--cash-rates: {exc}") from None
    return None if rate is None else CashRate(annual=rate)


def caps_options() -> Callable[[F], F]:
    """The hard exposure caps as flags, defaults, bounds and help read from ``ExposureCaps`` (the
    loop's limits), so the service and the live loop are configured the same way; a value out of
    bounds, NaN or infinite is refused as a usage error (exit status 2) naming the flag and the value."""
    from raytrade.serve.caps import ExposureCaps

    def decorate(command: F) -> F:
        for name in reversed(CAPS_FLAGS):
            field = ExposureCaps.model_fields[name]
            bounds = _bounds(field)
            kind = FiniteFloatRange(
                min=bounds.get("ge", bounds.get("gt")), min_open="gt" in bounds, max=bounds.get("le")
            )
            command = click.option(
                "--" + name.replace("_", "-"),
                name,
                type=kind,
                default=field.default,
                show_default=True,
                help=f"Hard cap after the model: {field.description} (fraction of equity).",
            )(command)
        return command

    return decorate


def action_options() -> Callable[[F], F]:
    """``--action-mode``, ``--max-tilt`` and ``--no-trade-band``: how a search's actions become target
    weights (``envs.actions.ActionConfig``: defaults, bounds and choices read from it)."""
    from raytrade.envs.actions import ACTION_MODES, ActionConfig

    fields = ActionConfig.model_fields

    def decorate(command: F) -> F:
        command = click.option(
            "--no-trade-band",
            type=click.FloatRange(min=0, max=1),
            default=fields["no_trade_band"].default,
            show_default=True,
            help="No order where the target is within this of the current weight (0: off).",
        )(command)
        command = click.option(
            "--max-tilt",
            type=click.FloatRange(min=0, max=1, min_open=True),
            default=fields["max_tilt"].default,
            show_default=True,
            help="Tilt modes: largest |target - baseline| per symbol, fraction of equity.",
        )(command)
        return click.option(
            "--action-mode",
            type=click.Choice(ACTION_MODES),
            default=fields["mode"].default,
            show_default=True,
            help="Actions are target weights, or a tilt around a baseline (zero action = the baseline).",
        )(command)

    return decorate


def exposure_caps(values: Mapping[str, Any]) -> Any:
    """The ``ExposureCaps`` the :func:`caps_options` flags among ``values`` spell."""
    from raytrade.serve.caps import ExposureCaps

    return ExposureCaps(**{name: values[name] for name in CAPS_FLAGS})


def _bounds(field: FieldInfo) -> dict[str, float]:
    out: dict[str, float] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(meta, name, None)
            if isinstance(meta, annotated_types.BaseMetadata) and value is not None:
                out[name] = float(value)
    return out


def _range_bounds(kind: click.ParamType) -> dict[str, float]:
    if not isinstance(kind, click.IntRange | click.FloatRange):
        return {}
    out: dict[str, float] = {}
    if kind.min is not None:
        out["gt" if kind.min_open else "ge"] = float(kind.min)
    if kind.max is not None:
        out["lt" if kind.max_open else "le"] = float(kind.max)
    return out


def _literal_choices(annotation: Any) -> set[str] | None:
    if get_origin(annotation) is Literal:
        return {str(a) for a in get_args(annotation)}
    return None


def _click_default(param: click.Option) -> Any:
    """The value the command receives when the flag is not given (click marks "no default" with a
    sentinel: a flag then gets False, any other option None)."""
    default = param.default
    if default is None or default is getattr(click.core, "UNSET", None):
        return False if param.is_flag else None
    return default


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def option_drift(
    command: click.Command,
    model: type[BaseModel],
    *,
    flags: Mapping[str, str] | None = None,
    not_flags: Collection[str] = (),
) -> list[str]:
    """Disagreements between ``command``'s options and ``model``'s fields (empty: none).

    ``flags`` maps a field to its click parameter name where they differ; ``not_flags`` lists the
    fields deliberately set another way (derived from other flags, or not user-settable)."""
    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    rename = dict(flags or {})
    problems: list[str] = []
    for name, field in model.model_fields.items():
        if name in not_flags:
            continue
        param = params.get(rename.get(name, name))
        where = f"{command.name}: {model.__name__}.{name}"
        if param is None:
            problems.append(f"{where} has no flag")
            continue
        flag = "/".join(param.opts)
        if field.is_required() and not param.required and _click_default(param) is None:
            problems.append(f"{where} is required but {flag} is optional with no default")
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            given = _click_default(param)
            # an unset option (None) stands for an empty default: () symbols, None for "the budget's"
            if not _same(default, given) and not (given is None and default in ((), None)):
                problems.append(f"{where} defaults to {default!r} but {flag} to {given!r}")
        want, have = _bounds(field), _range_bounds(param.type)
        if have and want != have:
            problems.append(f"{where} bounds {want} differ from {flag}'s {have}")
        if want and not have and isinstance(param.type, click.types._NumberParamTypeBase):
            problems.append(f"{where} bounds {want} but {flag} takes any number")
        choices = _literal_choices(field.annotation)
        if (
            choices is not None
            and isinstance(param.type, click.Choice)
            and set(param.type.choices) != choices
        ):
            problems.append(f"{where} allows {sorted(choices)} but {flag} {sorted(param.type.choices)}")
    return problems


def spread_fraction_option() -> Callable[[F], F]:
    """``--spread-fraction``: the share of the stored spread paid per side
    (``envs.costs.CostConfig.spread_fraction``; its bounds), for evaluate, tune and experiment alike."""
    from raytrade.envs.costs import CostConfig

    default = CostConfig.model_fields["spread_fraction"].default
    return click.option(
        "--spread-fraction",
        type=click.FloatRange(min=0, max=1),
        default=None,
        help=f"Share of the stored spread paid per side (default: the cost model's {default:g}, or the cost "
        "profile's). A sensitivity knob: a store without quotes holds high/low spread estimates.",
    )
