"""``models.load``: a promoted policy from the registry, ready to act.

``load("NAME")`` is the newest version (``registry/NAME/latest``), ``load("NAME@3")`` version 3.
The handle holds the RLModule only (no Algorithm, no env runners) and the manifest; ``act`` maps
observations in the env's format (the flat ``Box`` or the ``Dict``, one or a batch) to target
weights with the same deterministic decoding the Tune objective scored (``models.inference``).

Connector state: the registry keeps the env-to-module connector state next to the module. Our specs
use RLlib's default connectors, which carry no state; a policy trained with a stateful connector
(e.g. ``MeanStdFilter``) is refused by :func:`load` rather than served with unnormalised inputs.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydantic import SecretStr

from raytrade.envs.actions import ActionConfig
from raytrade.envs.config import PortfolioEnvConfig
from raytrade.envs.evaluation.insample import TrainedOn
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import Policy
from raytrade.models.inference import PolicyOutput, module_policy, policy_output
from raytrade.models.manifest import Manifest, read_manifest
from raytrade.models.registry import (
    CONNECTORS_DIR,
    DEFAULT_REGISTRY,
    MODULE_DIR,
    RegistryError,
    copy_regular,
    resolve,
    verify_files,
    verify_mac,
    version_entries,
)
from raytrade.models.registry_migrate import check_current_names


@dataclass(frozen=True)
class PolicyHandle:
    """A loaded registry version: ``module`` (torch RLModule, eval mode) and its ``manifest``.

    :func:`load` puts the module in eval mode once; :meth:`act_with_inputs` checks per call that
    every layer still is (a scan of the cached :attr:`layers`) and then skips RLlib's per-call
    ``eval()`` walk (``models.inference.inference_forward``); a layer put back in training mode gets
    RLlib's own ``forward_inference`` again."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    module: Any

    def act(self, observation: Any) -> np.ndarray:
        """The deterministic decision for an env observation (``[...]`` for one, ``[B, ...]`` for a
        batch): for a Box policy the Gaussian's mean clipped to ``[-1, 1]``, the action the env
        bands and projects onto its constraints (target weights in absolute mode, a tilt that
        ``envs.actions`` maps around the baseline in tilt modes); for the gated family
        (``MultiDiscrete`` actions) the greedy gate action ``[2N]`` (mode, side per symbol), which
        the gated env sizes."""
        single = _is_single(observation, self.module.observation_space)
        batch = _add_batch(observation) if single else observation
        out = self.act_with_inputs(batch).action
        return out[0] if single else out

    def act_with_inputs(self, batch: Any) -> PolicyOutput:
        """:meth:`act`'s decision for a batch ``[B, ...]`` and the action distribution inputs it came
        from, in one forward (``models.inference.policy_output``): what serving needs to decide and
        to state its confidence."""
        return policy_output(self.module, batch, self._action, self.layers)

    @cached_property
    def layers(self) -> tuple[Any, ...]:
        """Every layer of ``module`` (``module.modules()``), listed once: what
        :meth:`act_with_inputs` checks for eval mode."""
        return tuple(self.module.modules())

    @cached_property
    def _action(self) -> ActionConfig:
        """``env_config().action``, validated once (``act`` runs per request in serving)."""
        return self.env_config().action

    def env_config(self) -> PortfolioEnvConfig:
        """The env config the policy was trained with (data, simulator, observed features); a
        :class:`GatedEnvConfig` (with its sizing rule) for a policy of the gated env."""
        return self.manifest.env_config()

    def policy(self, data: MarketData) -> Policy:
        """``Observation -> weights [B, N]`` over ``data`` (for ``envs.rollout.replay_policy``)."""
        return module_policy(self.module, data, self.env_config())

    def trained_on(self, root: str, store_sha256: str) -> TrainedOn:
        """What the weights saw, as bars of the store at ``root`` (fingerprint ``store_sha256``):
        ``models.training_window.trained_on``, for the evaluation's out-of-sample check."""
        from raytrade.models.training_window import trained_on

        return trained_on(self.manifest, root, store_sha256, f"registry:{self.name}@{self.version}")


def _is_single(observation: Any, space: Any) -> bool:
    if isinstance(observation, Mapping):
        first = next(iter(observation))
        return bool(np.ndim(observation[first]) == len(space[first].shape))
    return bool(np.ndim(observation) == len(space.shape))


def _add_batch(observation: Any) -> Any:
    if isinstance(observation, Mapping):
        return {k: np.asarray(v)[None] for k, v in observation.items()}
    return np.asarray(observation)[None]


def _check_connectors(folder: Path) -> None:
    for state_file in sorted((folder / CONNECTORS_DIR).glob("*/state.pkl")):
        with open(state_file, "rb") as fh:
            state = pickle.load(fh)
        if state:
            raise ValueError(
                f"{state_file.parent.name} of {str(folder)!r} carries state ({sorted(state)}); "
                "stateful connectors are not supported by models.load"
            )


@dataclass(frozen=True)
class VerifiedVersion:
    """A registry version whose manifest, signature and files checked out (:func:`verify_version`);
    nothing of it unpickled yet."""

    path: Path
    manifest: Manifest


def verified_copy(version: VerifiedVersion, into: Path) -> None:
    """Copy ``version``'s files into the new folder ``into``, each read once (a regular file, no
    link: ``registry.copy_regular``, in blocks) and checked against its manifest sha256 as it is copied; the
    loader then unpickles the copy. Hashing the registry's files and opening them again to unpickle
    left a window in which a writer could swap a pickle in after its check (a race reproduced in nine
    tries); the copy's bytes are the checked bytes. A version promoted before the manifest held
    hashes is copied as it is (``verify_files`` warned already; a registry key refuses it)."""
    folder, manifest = version.path, version.manifest
    where = f"{manifest.name}@{manifest.version} ({str(folder)!r})"
    listed = manifest.files if manifest.files is not None else dict.fromkeys(version_entries(folder))
    for rel, digest in listed.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise RegistryError(f"{where}: file {rel!r} listed in the manifest leads outside the version")
        target = into.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy_regular(folder / rel, target) != digest and digest is not None:
            raise RegistryError(f"{where}: file {rel!r} does not match its sha256 in the manifest")


def verify_version(
    ref: str, registry: str | os.PathLike[str] = DEFAULT_REGISTRY, hmac_key: SecretStr | None = None
) -> VerifiedVersion:
    """Every check :func:`load` makes before it unpickles anything, and nothing else: the version
    ``ref`` resolves (``RegistryError`` listing what exists), its manifest validates
    (``ManifestError`` naming the file and the field), its HMAC matches under ``hmac_key`` when one
    is given (``verify_mac``), its files match their sha256s (``verify_files``) and its pickles name
    no module from before the package rename (``check_current_names``, which reads opcodes without
    executing them). Each refusal is one line. ``raytrade serve`` and the Serve config builder run it
    before deploying, so a version every replica would refuse is refused before Ray starts."""
    folder = resolve(registry, ref).resolve()  # RLlib reads checkpoints by URI: absolute paths only
    manifest = read_manifest(folder)
    verify_mac(folder, manifest, hmac_key, registry)
    verify_files(folder, manifest)
    check_current_names(folder, registry)
    return VerifiedVersion(path=folder, manifest=manifest)


def load(
    ref: str, registry: str | os.PathLike[str] = DEFAULT_REGISTRY, hmac_key: SecretStr | None = None
) -> PolicyHandle:
    """The registry version ``ref`` (``NAME`` or ``NAME@VERSION``) as a :class:`PolicyHandle`.

    An unknown name or version raises ``models.registry.RegistryError`` (a ``ValueError``) whose
    one-line message lists what the registry holds. Before anything is unpickled, the version passes
    :func:`verify_version`: the manifest is validated, its HMAC (of the whole manifest, file sha256s
    included) is checked when a registry ``hmac_key`` is given (``verify_mac``: a version without one,
    or signed by the old files-only scheme, is refused), the version's files are checked against its
    sha256s (``verify_files``) and its pickles are checked for module names from before the package
    rename (``registry_migrate.check_current_names``: a one-line error naming the migration command).
    What is unpickled is a private copy of the version, each file checked as it is copied
    (:func:`verified_copy`): a file swapped in the registry after its check is never read.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    version = verify_version(ref, registry, hmac_key)
    folder, manifest = version.path, version.manifest
    with tempfile.TemporaryDirectory(prefix="raytrade-load-") as private:
        copy = Path(private) / "version"  # what is unpickled: the bytes that were checked
        verified_copy(version, copy)
        _check_connectors(copy)
        module: Any = RLModule.from_checkpoint(copy / MODULE_DIR)
    module.eval()
    return PolicyHandle(
        name=folder.parent.name, version=int(folder.name), path=folder, manifest=manifest, module=module
    )
