"""Exploration options of a search: probe symbols and the drawdown schedule, as module config.

``raytrade tune --probe-symbols A,B --drawdown-std-scale DD`` becomes the module's
``model_config["exploration"]`` (``models.common.ExplorationConfig``): the probe symbols are turned
into asset indices of the training universe here, because the module sees assets by position, not
by name. Only modules whose config has an ``exploration`` entry (``ppo_mlp``, ``distributional``)
accept the options; any other spec refuses them, naming the spec's module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from raytrade.replay.errors import InputError


def parse_symbols(text: str) -> tuple[str, ...]:
    """``"A,B"`` -> ``("A", "B")``; an empty name or a repeated one is refused, naming it."""
    names = tuple(s.strip() for s in text.split(","))
    empty = [i for i, s in enumerate(names) if not s]
    if empty:
        raise InputError(f"--probe-symbols {text!r}: empty symbol name at position {empty[0] + 1}")
    repeated = sorted({s for s in names if names.count(s) > 1})
    if repeated:
        raise InputError(f"--probe-symbols {text!r}: {repeated} named more than once")
    return names


def probe_indices(universe: Sequence[str], probe: Sequence[str]) -> tuple[int, ...]:
    """Positions of the ``probe`` symbols in ``universe`` (the env's asset order), ascending.

    A symbol outside the universe is refused with the universe listed: exploring a symbol the
    policy never observes would silently do nothing."""
    unknown = [s for s in probe if s not in universe]
    if unknown:
        raise InputError(f"probe symbols {unknown} are not in the training universe {list(universe)}")
    return tuple(sorted(list(universe).index(s) for s in probe))


def exploration_options(
    env_config: Mapping[str, Any], probe_symbols: str | None, drawdown_scale: float | None
) -> dict[str, Any]:
    """The ``ExplorationConfig`` fields a search asks for (empty: none): ``--probe-symbols`` as
    positions in the universe of ``env_config``'s training data, ``--drawdown-std-scale``."""
    options: dict[str, Any] = {}
    if drawdown_scale is not None:
        options["drawdown_scale"] = drawdown_scale
    if probe_symbols is not None:
        from raytrade.envs.config import PortfolioEnvConfig
        from raytrade.envs.synthetic_market import market_data_from_config

        universe = market_data_from_config(PortfolioEnvConfig.model_validate(env_config).data).symbols
        options["probe_assets"] = probe_indices(universe, parse_symbols(probe_symbols))
    return options


def module_spec(config: AlgorithmConfig) -> RLModuleSpec:
    """The config's module class and model config (RLlib's defaults merged in)."""
    spec = config.rl_module_spec
    if not isinstance(spec, RLModuleSpec) or spec.module_class is None:
        raise TypeError(f"expected a single-agent RLModuleSpec with a module class, got {spec!r}")
    return spec


def module_model_config(config: AlgorithmConfig) -> dict[str, Any]:
    """A copy of the config's module ``model_config`` (our modules take a dict)."""
    model_config = module_spec(config).model_config or {}
    if not isinstance(model_config, Mapping):
        raise TypeError(f"expected a dict model_config, got {type(model_config).__name__}")
    return dict(model_config)


def with_model_config(config: AlgorithmConfig, model_config: Mapping[str, Any]) -> AlgorithmConfig:
    """``config`` with its module's ``model_config`` replaced (validated now by the module's
    ``config_cls`` when it has one, so a bad key fails here, not in a remote trial)."""
    cls = module_spec(config).module_class
    config_cls = getattr(cls, "config_cls", None)
    if config_cls is not None:
        config_cls.model_validate(dict(model_config))
    return config.rl_module(rl_module_spec=RLModuleSpec(module_class=cls, model_config=dict(model_config)))


def with_exploration(config: AlgorithmConfig, exploration: Mapping[str, Any]) -> AlgorithmConfig:
    """``config`` whose module explores as ``exploration`` says (``ExplorationConfig`` fields);
    ``InputError`` naming the module when its config has no exploration entry."""
    spec = module_spec(config)
    config_cls = getattr(spec.module_class, "config_cls", None)
    if config_cls is None or "exploration" not in config_cls.model_fields:
        name = getattr(spec.module_class, "__name__", str(spec.module_class))
        raise InputError(f"module {name} has no exploration options (--probe-symbols, --drawdown-std-scale)")
    current = module_model_config(config)
    merged = {**dict(current.get("exploration") or {}), **dict(exploration)}
    return with_model_config(config, {**current, "exploration": merged})
