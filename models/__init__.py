"""RLlib RLModules of raytrade and the catalog the Tune specs build on (see :mod:`models.catalog`)."""

from raytrade.models.catalog import (
    FAMILIES,
    env_name,
    flops_per_decision,
    learner_class,
    module_class,
    ppo_config,
    rl_module_spec,
)
from raytrade.models.registry_load import PolicyHandle, load

__all__ = [
    "FAMILIES",
    "PolicyHandle",
    "env_name",
    "flops_per_decision",
    "learner_class",
    "load",
    "module_class",
    "ppo_config",
    "rl_module_spec",
]
