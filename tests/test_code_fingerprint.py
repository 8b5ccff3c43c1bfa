"""``models.registry.code_fingerprint``: a content key of the package's own sources, what a search's run
file records and what an experiment reuses a search under (``cluster.run_reuse``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from raytrade.models import registry
from raytrade.models.registry import CODE_PACKAGES, code_fingerprint, sources_sha256


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_the_sources_hash_is_each_files_path_length_and_bytes_in_path_order(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"x.py": b"1", "sub/y.py": b"yy", "notes.txt": b"not code"})
    b = _tree(tmp_path / "b", {"__init__.py": b""})
    expected = hashlib.sha256(b"a/sub/y.py\x002\x00yy" + b"a/x.py\x001\x001" + b"b/__init__.py\x000\x00")
    assert sources_sha256({"b": b, "a": a}) == expected.hexdigest()


def test_a_renamed_source_changes_the_hash_and_a_non_source_file_does_not(tmp_path: Path) -> None:
    pkg = _tree(tmp_path / "pkg", {"x.py": b"print(1)\n"})
    before = sources_sha256({"pkg": pkg})
    (pkg / "README.md").write_text("docs")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert sources_sha256({"pkg": pkg}) == before
    (pkg / "x.py").rename(pkg / "z.py")
    assert sources_sha256({"pkg": pkg}) != before


def test_the_code_fingerprint_hashes_the_imported_package_folders_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import raytrade.cluster as cluster

    root = Path(cluster.__file__).resolve().parents[1]  # the folders sit side by side in every layout
    first = code_fingerprint()
    assert first == sources_sha256({name: root / name for name in CODE_PACKAGES})
    monkeypatch.setattr(registry, "sources_sha256", lambda folders: "rehashed")
    assert code_fingerprint() == first
