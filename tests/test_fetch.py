"""Fetching through file:// URLs (offline): verified, atomic, skips what is present."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ptmkit import catalog
from ptmkit.datasets import load_source
from ptmkit.errors import PtmkitError
from ptmkit.fetch import fetch, sha256_file


def source_url(folder: Path) -> str:
    return folder.as_uri() + "/"


def test_fetch_one_dataset(data_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "data"
    url = source_url(data_root / "uniptms")
    paths = fetch("uniptms:H1", target, base_url=url)
    assert paths == [target / "uniptms/H1/train.csv", target / "uniptms/H1/test.csv"]
    hashes = catalog.get("uniptms:H1").files
    for path in paths:
        assert sha256_file(path) == hashes[path.relative_to(target / "uniptms").as_posix()]
    inodes = [p.stat().st_ino for p in paths]
    # present and verified: kept as they are (a download would replace the file)
    assert fetch("uniptms:h1", target, base_url=url) == paths
    assert [p.stat().st_ino for p in paths] == inodes
    fetch("uniptms:H1", target, base_url=url, force=True)
    assert all(p.stat().st_ino != i for p, i in zip(paths, inodes, strict=True))
    table, _ = load_source("uniptms:H1", base_dir=tmp_path, data_root=target)
    assert len(table) == 1128


def test_fetch_whole_collection(data_root: Path, tmp_path: Path) -> None:
    paths = fetch("uniptms", tmp_path, base_url=source_url(data_root / "uniptms"))
    assert len(paths) == sum(len(d.files) for d in catalog.select("uniptms")) == 14
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in (tmp_path / "uniptms").rglob("*.part")) == []


def test_refetches_a_damaged_file(data_root: Path, tmp_path: Path) -> None:
    url = source_url(data_root / "uniptms")
    fetch("uniptms:C1", tmp_path, base_url=url)
    damaged = tmp_path / "uniptms/C1/fold_train.fasta"
    damaged.write_text(">+x\nC\n")
    assert damaged in fetch("uniptms:C1", tmp_path, base_url=url)
    assert sha256_file(damaged) == catalog.get("uniptms:C1").files["C1/fold_train.fasta"]


def test_hash_mismatch_leaves_no_file(data_root: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "uniptms" / "H1", mirror / "H1")
    tampered = mirror / "H1" / "test.csv"
    tampered.write_bytes(tampered.read_bytes().replace(b"P49589-2", b"P49589-3", 1))
    target = tmp_path / "data"
    with pytest.raises(PtmkitError) as err:
        fetch("uniptms:H1", target, base_url=source_url(mirror))
    message = str(err.value)
    expected = catalog.get("uniptms:H1").files["H1/test.csv"]
    assert "H1/test.csv" in message and expected in message
    assert sha256_file(tampered) in message
    folder = target / "uniptms" / "H1"
    assert sorted(p.name for p in folder.iterdir()) == ["train.csv"]  # no test.csv, no .part


def test_unreachable_source(tmp_path: Path) -> None:
    with pytest.raises(PtmkitError) as err:
        fetch("uniptms:K2", tmp_path / "data", base_url=source_url(tmp_path / "nowhere"))
    message = str(err.value)
    assert "K2/train_sequence.txt" in message and "PTMKIT_DATA" in message
    assert list((tmp_path / "data" / "uniptms" / "K2").iterdir()) == []


def test_unknown_and_unavailable_names(tmp_path: Path) -> None:
    with pytest.raises(PtmkitError, match="available: uniptms:T1"):
        fetch("uniptms:X1", tmp_path)
    with pytest.raises(PtmkitError, match="not in the authors' repository"):
        fetch("uniptms:H2", tmp_path)
    with pytest.raises(PtmkitError, match="collection"):
        fetch("other:T1", tmp_path)
