"""``raytrade ingest --source csv``: a file is crypto when it sits in a folder named ``crypto`` under
``--path``; a ``crypto`` folder above ``--path`` says nothing about the files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raytrade.replay import read_frame
from tests.test_ingest_bad_prints import DAYS, ingest, walk, write_csv


def test_a_crypto_folder_above_path_does_not_make_equities_crypto(tmp_path: Path) -> None:
    """``--path /tmp/x/crypto/yahoo`` stored every equity as crypto (365 periods a year, crypto fees,
    long-only): the folder test read the whole path, not the part under ``--path``."""
    folder = write_csv(tmp_path / "crypto" / "yahoo", walk())
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    assert set(read_frame(tmp_path / "store", "bars")["asset_class"]) == {"equity"}


def test_a_crypto_folder_below_path_still_makes_its_files_crypto(tmp_path: Path) -> None:
    coin = walk("SUI").assign(ts=pd.date_range("2024-01-01", periods=len(DAYS), freq="D", tz="UTC"))
    folder = write_csv(tmp_path / "data" / "crypto", coin).parent
    write_csv(folder / "yahoo", walk())
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    classes = read_frame(tmp_path / "store", "bars").groupby("symbol")["asset_class"].first()
    assert classes.to_dict() == {"KGC": "equity", "SUI": "crypto"}


def test_path_naming_a_crypto_folder_makes_its_files_crypto(tmp_path: Path) -> None:
    """``--path ../shared/data/crypto``: the folder ingested is itself the crypto folder."""
    coin = walk("SUI").assign(ts=pd.date_range("2024-01-01", periods=len(DAYS), freq="D", tz="UTC"))
    folder = write_csv(tmp_path / "data" / "crypto", coin)
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    assert set(read_frame(tmp_path / "store", "bars")["asset_class"]) == {"crypto"}


def test_path_dot_inside_a_crypto_folder_makes_its_files_crypto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cd data/crypto && raytrade ingest --path .``: ``Path('.').parent`` is ``.``, so the folder's
    name was never seen and a coin not named like a pair was refused for its weekends."""
    coin = walk("SUI").assign(ts=pd.date_range("2024-01-01", periods=len(DAYS), freq="D", tz="UTC"))
    folder = write_csv(tmp_path / "data" / "crypto", coin)
    monkeypatch.chdir(folder)
    code, out = ingest(Path("."), tmp_path / "store")
    assert code == 0, out
    assert set(read_frame(tmp_path / "store", "bars")["asset_class"]) == {"crypto"}


def test_path_dot_in_a_folder_linked_as_crypto_makes_its_files_crypto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``crypto`` a link to ``real_coins``: ``os.getcwd()`` names the target, so the link's name was
    lost; the shell's ``$PWD`` keeps it."""
    coin = walk("SUI").assign(ts=pd.date_range("2024-01-01", periods=len(DAYS), freq="D", tz="UTC"))
    write_csv(tmp_path / "real_coins", coin)
    (tmp_path / "crypto").symlink_to(tmp_path / "real_coins")
    monkeypatch.chdir(tmp_path / "crypto")
    monkeypatch.setenv("PWD", str(tmp_path / "crypto"))
    code, out = ingest(Path("."), tmp_path / "store")
    assert code == 0, out
    assert set(read_frame(tmp_path / "store", "bars")["asset_class"]) == {"crypto"}
