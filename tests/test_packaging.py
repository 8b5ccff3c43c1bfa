"""The distribution installs one import name, ``raytrade``, and its package list matches the folders."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One worker builds the wheel: ``pip wheel`` of the source tree writes ``REPO/build``, and two workers
# building at once collide there ("File exists: build/bdist.../raytrade-0.1.0.dist-info").
pytestmark = pytest.mark.xdist_group("packaging")
FOLDERS = ("cluster", "envs", "models", "tune_specs", "serve", "replay")


def _setuptools() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config


def test_every_folder_with_an_init_is_a_listed_package_under_raytrade() -> None:
    on_disk = {
        "raytrade." + str(init.parent.relative_to(REPO)).replace(os.sep, ".")
        for top in FOLDERS
        for init in (REPO / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(_setuptools()["packages"]) == on_disk  # type: ignore[arg-type]
    assert _setuptools()["package-dir"] == {f"raytrade.{top}": top for top in FOLDERS}


def test_the_package_data_is_the_tracked_configs_by_name() -> None:
    """A glob (``configs/*``) shipped any untracked file kept there (a settings.env, a token) in the
    wheel ``raytrade submit`` uploads; the list names each config, and names all of them."""
    data = _setuptools()["package-data"]
    assert list(data) == ["raytrade.cluster"]  # type: ignore[call-overload]
    names = data["raytrade.cluster"]  # type: ignore[index]
    assert not any(set(name) & set("*?[") for name in names), names
    tracked = subprocess.run(
        ["git", "ls-files", "cluster/configs"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert sorted(names) == sorted(f.removeprefix("cluster/") for f in tracked.stdout.split())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            REPO,
        ],
        check=True,
        cwd=tmp_path_factory.mktemp("cwd"),
    )
    (path,) = out.glob("raytrade-*.whl")
    return path


def test_the_wheel_holds_nothing_but_raytrade(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    name, version = wheel.name.split("-")[:2]
    assert tops == {"raytrade", f"{name}-{version}.dist-info"}
    assert "raytrade/models/registry.py" in names and "raytrade/cluster/configs/rayservice.yaml" in names
    assert not any(n.startswith("raytrade/__init__") for n in names)  # a namespace package


def test_it_installs_beside_packages_named_models_and_serve(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel], check=True
    )
    for other in ("models", "serve"):  # another distribution's generic top-level packages
        (site / other).mkdir()
        (site / other / "__init__.py").write_text(f"WHO = 'the other {other}'\n")
    code = (
        "import models, serve, raytrade.models.registry as r, raytrade.serve.schemas as s; "
        "print(models.WHO, serve.WHO, r.__file__, s.__file__, sep='|')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    models_who, serve_who, registry_file, schemas_file = out.split("|")
    assert (models_who, serve_who) == ("the other models", "the other serve")
    assert registry_file.startswith(str(site)) and schemas_file.startswith(str(site))


def _lint_layers(root: Path) -> subprocess.CompletedProcess[str]:
    """``make layers`` on the tree under ``root``: import-linter with the project's contract, reading the
    packages through a tree of links that spells the import names (as the Makefile's ``.layout``)."""
    layout = root / ".layout" / "raytrade"
    layout.mkdir(parents=True, exist_ok=True)
    for folder in FOLDERS:
        link = layout / folder
        if not link.exists():
            link.symlink_to(root / folder)
    env = {**os.environ, "PYTHONPATH": str(root / ".layout")}
    lint_imports = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_an_upward_import_fails_the_layer_contract(tmp_path: Path) -> None:
    """The layer contract of ``make lint`` passes on the code as it is and fails, naming the import, once
    a lower layer imports a higher one (here replay -> cluster)."""
    import shutil

    for folder in FOLDERS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    clean = _lint_layers(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    (tmp_path / "replay" / "upward.py").write_text("from raytrade.cluster import cli\n")
    broken = _lint_layers(tmp_path)
    assert broken.returncode != 0
    assert "raytrade.replay.upward -> raytrade.cluster.cli" in broken.stdout, broken.stdout
