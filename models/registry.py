"""The policy registry: ``registry/NAME/VERSION/`` folders written by ``raytrade promote``.

Layout (one version)::

    registry/NAME/1/module/          RLModule checkpoint (RLModule.from_checkpoint), the module only
    registry/NAME/1/connectors/      env-to-module and module-to-env connector state (e.g. an
                                     observation filter's running mean/std; empty for our specs)
    registry/NAME/1/manifest.json    what produced it (see ``build_manifest``)
    registry/NAME/latest             text file holding the newest version number, e.g. ``2``

``latest`` is a one-line text file, not a symlink, so a registry survives object stores, zip files
and Windows. Versions are 1, 2, … and never reused; a version folder is written under a temporary
name and renamed into place, so a reader never sees half a version.

Design decisions for ``manifest.json``: the data fingerprint is a sha256 over the replay files the
policy was trained and scored on (bars and features tables; relative paths sorted, then each path and
its bytes), the feature-spec hash a sha256 of the observed feature columns, the loader's full column
list and the observation layout. Nothing from the environment or the settings object is copied:
``scrub_secrets`` drops any key that names a key, token, secret or password.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from raytrade.replay.errors import InputError

MODULE_DIR: Final = "module"
CONNECTORS_DIR: Final = "connectors"
MANIFEST: Final = "manifest.json"
LATEST: Final = "latest"
DEFAULT_REGISTRY: Final = "registry"
_SECRET_KEY = re.compile(r"(api_?key|secret|token|password|passwd|credential)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RegistryError(InputError):
    """A name or version that is not in the registry (the message lists what is)."""


def check_name(name: str) -> str:
    """A policy name is a folder name: letters, digits, ``_ . -``, not starting with a symbol."""
    if not _NAME.match(name):
        raise ValueError(f"policy name {name!r} must match {_NAME.pattern}")
    return name


def versions(registry: Path, name: str) -> list[int]:
    """Versions of ``name`` in ascending order (empty when the name is unknown)."""
    folder = Path(registry) / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def names(registry: Path) -> list[str]:
    """Policy names that hold at least one version."""
    root = Path(registry)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and versions(root, p.name))


def resolve(registry: str | os.PathLike[str], ref: str) -> Path:
    """The folder of ``NAME`` (its ``latest``) or ``NAME@VERSION``; ``RegistryError`` lists what exists."""
    root = Path(registry)
    name, _, version = ref.partition("@")
    available = versions(root, name)
    if not available:
        known = names(root)
        raise RegistryError(
            f"no policy {name!r} in registry {str(root)!r}; available: {', '.join(known) or 'none'}"
        )
    if not version:
        latest = root / name / LATEST
        number = int(latest.read_text().strip()) if latest.is_file() else available[-1]
    elif version.isdigit():
        number = int(version)
    else:
        raise RegistryError(f"version {version!r} of {name!r} is not a number; available: {available}")
    if number not in available:
        raise RegistryError(f"no version {number} of {name!r}; available: {', '.join(map(str, available))}")
    return root / name / str(number)


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a version folder."""
    manifest: dict[str, Any] = json.loads((Path(version_dir) / MANIFEST).read_text())
    return manifest


# ------------------------------------------------------------------------------ manifest parts


def fingerprint(files: Iterable[Path], root: Path) -> str:
    """sha256 over ``files`` sorted by their path relative to ``root``: each path, then its bytes."""
    digest = hashlib.sha256()
    for rel in sorted(str(Path(f).resolve().relative_to(Path(root).resolve())) for f in files):
        digest.update(rel.encode())
        digest.update(b"\0")
        with open(Path(root) / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def replay_fingerprint(root: Path) -> tuple[str, int]:
    """(sha256, file count) of the replay files a policy reads: the bars and features tables."""
    from raytrade.replay.reader import table_files

    files = [*table_files(root, "bars"), *table_files(root, "features")]
    return fingerprint(files, root), len(files)


def feature_spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a feature spec (columns observed, loader columns, layout)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def code_version(repo: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the code (``+dirty`` with uncommitted changes), ``unknown`` outside git."""
    where = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha or "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a policy's behaviour depends on."""
    import platform

    import numpy
    import pandas
    import pyarrow
    import ray
    import torch

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
    }


def scrub_secrets(value: Any) -> Any:
    """``value`` as strict-JSON data: every mapping entry whose key names a secret removed and
    non-finite floats (undefined ratios) written as ``null`` (recursively)."""
    if isinstance(value, Mapping):
        return {k: scrub_secrets(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [scrub_secrets(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------ writing


def write_version(
    registry: Path, name: str, checkpoint: Path, manifest: dict[str, Any], module_id: str = "default_policy"
) -> Path:
    """Copy the module and connector state out of an Algorithm checkpoint as the next version.

    ``checkpoint`` is an RLlib ``Algorithm.save_to_path`` folder (what Tune keeps per trial). Returns
    the new version folder; ``latest`` is updated last.
    """
    check_name(name)
    module_src = checkpoint / "learner_group" / "learner" / "rl_module" / module_id
    if not module_src.is_dir():
        raise FileNotFoundError(
            f"{str(checkpoint)!r} holds no RLModule {module_id!r} (not an RLlib checkpoint?)"
        )
    folder = Path(registry) / name
    folder.mkdir(parents=True, exist_ok=True)
    number = (versions(registry, name) or [0])[-1] + 1
    staging = folder / f".{number}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(module_src, staging / MODULE_DIR)
    (staging / CONNECTORS_DIR).mkdir()
    for connector in ("env_to_module_connector", "module_to_env_connector"):
        src = checkpoint / "env_runner" / connector
        if src.is_dir():
            shutil.copytree(src, staging / CONNECTORS_DIR / connector)
    record = scrub_secrets({**manifest, "name": name, "version": number})
    (staging / MANIFEST).write_text(
        json.dumps(record, indent=2, sort_keys=True, default=str, allow_nan=False)
    )
    target = folder / str(number)
    staging.rename(target)
    tmp_latest = folder / f".{LATEST}.tmp"
    tmp_latest.write_text(f"{number}\n")
    tmp_latest.replace(folder / LATEST)
    return target
