"""The compiled kernels' cache is keyed on every kernel module, so an edit of one never leaves another
running stale inlined code."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numba
import pytest

from raytrade.envs import kernel_cache
from raytrade.envs.kernel_cache import KERNEL_MODULES, kernel_cache_dir, source_digest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("replay", "envs", "models", "tune_specs", "serve", "cluster")


def test_every_module_that_caches_kernels_is_in_the_key() -> None:
    caching = sorted(
        str(p.relative_to(REPO))
        for folder in FOLDERS
        for p in (REPO / folder).rglob("*.py")
        if "njit(cache=True" in p.read_text()
    )
    assert caching == sorted(f"envs/{name}" for name in KERNEL_MODULES)


def test_an_edit_of_any_kernel_module_moves_the_cache(tmp_path: Path) -> None:
    for name in KERNEL_MODULES:
        shutil.copy(REPO / "envs" / name, tmp_path / name)
    files = [tmp_path / name for name in KERNEL_MODULES]
    before = source_digest(files)
    assert source_digest(files) == before  # stable
    for name in KERNEL_MODULES:
        path = tmp_path / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        assert source_digest(files) != before, name
        path.write_bytes(original)
    assert source_digest(files) == before


def test_the_kernels_compile_into_the_keyed_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import raytrade.envs.step_kernel  # noqa: F401  (its import points numba at the folder)

    if os.environ.get("NUMBA_CACHE_DIR"):
        pytest.skip("NUMBA_CACHE_DIR is set: the user's cache folder wins")
    assert str(kernel_cache_dir()) == numba.config.CACHE_DIR
    monkeypatch.setenv("RAYTRADE_KERNEL_CACHE", str(tmp_path))
    expected = tmp_path / source_digest(REPO / "envs" / n for n in KERNEL_MODULES)[:16]
    assert kernel_cache_dir() == expected
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    kernel_cache.use_kernel_cache()
    assert str(expected) == numba.config.CACHE_DIR
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "mine"))
    kernel_cache.use_kernel_cache()
    assert str(tmp_path / "mine") == numba.config.CACHE_DIR
