"""Tune experiment specs, one short file per model family; ``get_spec(name)`` looks one up.

``SPECS`` maps a spec name to a module path; specs are imported on demand so listing them costs
nothing and a family whose module is missing fails only when it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from raytrade.replay.errors import InputError

if TYPE_CHECKING:
    from raytrade.tune_specs.spec import TuneSpec

SPECS: dict[str, str] = {
    "ppo": "raytrade.tune_specs.ppo",
    "distrl": "raytrade.tune_specs.distrl",
    "tqc": "raytrade.tune_specs.tqc",
    "gnn": "raytrade.tune_specs.gnn",
    "gating": "raytrade.tune_specs.gating",
    "bc": "raytrade.tune_specs.bc",
    "marwil": "raytrade.tune_specs.marwil",
    "cql": "raytrade.tune_specs.cql",
    "iql": "raytrade.tune_specs.iql",
}
OFFLINE_SPECS: frozenset[str] = frozenset({"bc", "marwil", "cql", "iql"})
"""Specs that learn from the replay store's ``experience`` table (``tune_specs.offline``)."""


def get_spec(name: str) -> TuneSpec:
    """The spec called ``name``; an unknown name is a ``ValueError`` listing the available ones."""
    if name not in SPECS:
        raise InputError(f"unknown tune spec {name!r}; available: {', '.join(sorted(SPECS))}")
    spec: TuneSpec = importlib.import_module(SPECS[name]).SPEC
    return spec


__all__ = ["OFFLINE_SPECS", "SPECS", "get_spec"]
