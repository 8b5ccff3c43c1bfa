"""The universe an evaluation replays: a registry model's trained symbols, or every stored symbol.

Contract
--------
A registry model's observation is pooled over its assets, and its manifest fixes the universe
(``manifest.data.symbols``): serving restricts the data to those symbols and refuses any other
(``serve.decide.DecisionService``). An evaluation that replayed it on a store that gained a symbol
since training would trade that symbol and change every other asset's weight through the pooled
context: a book the service can never hold. So, when the evaluated policies include registry
models that declare their universe (``PolicySpec.universe``), every policy of the run, baselines
included (one set of bars, one universe, one cost model for all), is replayed on that universe;
without registry models (or with only models that declare none), on the requested symbols, else on
every symbol of the store.

Refused (``EvaluationInputError``, one line): two registry models with different universes (a model
cannot run on a subset of its universe, so there is no common one), a trained symbol the store does
not hold (both a :class:`ModelUniverseError` naming the model to leave out: the nightly evaluates the
others without it), and requested symbols other than the models' universe.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from raytrade.envs.evaluation.policies import EvaluationInputError, PolicySpec


class ModelUniverseError(EvaluationInputError):
    """A registry model that cannot be evaluated with the others on this store: ``policy`` (its name
    as given) trained on a symbol the store lacks, or on another universe than the first model's."""

    def __init__(self, message: str, policy: str) -> None:
        super().__init__(message)
        self.policy = policy


@dataclass(frozen=True)
class Universe:
    """``symbols``: what to load (None: every symbol of the store); ``reason``: why, for the report."""

    symbols: tuple[str, ...] | None
    reason: str


def _shown(symbols: Collection[str]) -> str:
    return ", ".join(sorted(symbols)) or "none"


def evaluation_universe(
    specs: Sequence[PolicySpec],
    requested: tuple[str, ...] | None,
    stored: Collection[str],
    store: str,
) -> Universe:
    """The universe of an evaluation of ``specs`` on the store at ``store`` holding ``stored``
    symbols, ``requested`` the configured symbols (None: not restricted); see the module docstring."""
    models = [s for s in specs if s.universe is not None]
    if not models:
        if requested is not None:
            return Universe(requested, "the requested symbols")
        return Universe(None, "every symbol of the store (no registry model fixes a universe)")
    for model in models:  # first what the store cannot hold: such a model is left out, not compared
        assert model.universe is not None
        missing = set(model.universe) - set(stored)
        if missing:
            raise ModelUniverseError(
                f"{model.name} was trained on symbol(s) {_shown(missing)}, which the store at {store} "
                "does not hold",
                model.name,
            )
    first = models[0]
    assert first.universe is not None
    trained = set(first.universe)
    for other in models[1:]:
        assert other.universe is not None
        if set(other.universe) != trained:
            only_first, only_other = trained - set(other.universe), set(other.universe) - trained
            raise ModelUniverseError(
                f"{first.name} and {other.name} were trained on different universes (only {first.name}: "
                f"{_shown(only_first)}; only {other.name}: {_shown(only_other)}): a model runs on its "
                "own universe only, evaluate them separately",
                other.name,
            )
    if requested is not None and set(requested) != trained:
        raise EvaluationInputError(
            f"symbols {_shown(requested)} differ from the universe {first.name} was trained on "
            f"({_shown(trained)})"
        )
    names = ", ".join(s.name for s in models)
    extra = set(stored) - trained
    left = f"; the store's other symbols ({_shown(extra)}) are not evaluated" if extra else ""
    return Universe(tuple(first.universe), f"the universe {names} trained on (manifest data.symbols){left}")
