"""RLlib RLModules of raytrade and the catalog the Tune specs build on (see :mod:`models.catalog`)."""

from models.catalog import (
    FAMILIES,
    env_name,
    flops_per_decision,
    learner_class,
    module_class,
    ppo_config,
    rl_module_spec,
)

__all__ = [
    "FAMILIES",
    "env_name",
    "flops_per_decision",
    "learner_class",
    "module_class",
    "ppo_config",
    "rl_module_spec",
]
