"""Saved splits (data.split.file) and the per-epoch window cap (train.epoch_windows)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from ptmkit import recipe as recipes
from ptmkit.datasets import load_source, prepare_data
from ptmkit.errors import PtmkitError
from ptmkit.splits import apply_split_file, assign_splits, row_keys, save_split_file
from ptmkit.train import epoch_rows

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def c2(data_root: Path):  # noqa: ANN201
    table, _ = load_source("uniptms:C2", base_dir=ROOT, data_root=data_root, window=None)
    return table


def test_row_keys_are_unique_and_machine_independent(c2) -> None:  # noqa: ANN001
    keys = row_keys(c2)
    assert keys.is_unique
    assert keys.iloc[0] == "C2/positive1.txt:1"  # dir/file:line#position, no absolute path


def test_k2_keys_separate_the_sites_of_one_protein(data_root: Path) -> None:
    table, _ = load_source("uniptms:K2", base_dir=ROOT, data_root=data_root, window=33)
    assert not table.frame["origin"].is_unique  # many sites per protein record
    assert row_keys(table).is_unique


def test_saved_split_is_reused_exactly(c2, tmp_path: Path) -> None:  # noqa: ANN001
    drawn = assign_splits(c2, valid=0.1, test=0.2, seed=7)
    path = tmp_path / "C2.tsv.gz"
    save_split_file(drawn, path)
    again = apply_split_file(c2, path)
    assert (again.frame["split"] == drawn.frame["split"]).all()
    # 80/20 of 19,402 windows, stratified
    assert (again.frame["split"] == "test").sum() == pytest.approx(0.2 * len(c2), abs=1)


def test_split_file_from_other_data_is_refused(c2, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "C2.tsv.gz"
    save_split_file(assign_splits(c2, valid=0.1, test=0.2, seed=0), path)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    key, label, split = lines[1].split("\t")
    lines[1] = "\t".join([key, str(1 - int(label)), split])
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(PtmkitError, match=r"C2/positive1.txt:1 has label 0 in the file but 1"):
        apply_split_file(c2, path)
    short = tmp_path / "short.tsv.gz"
    short.write_bytes(gzip.compress(("\n".join(lines[:100]) + "\n").encode()))
    with pytest.raises(PtmkitError, match="holds 99 rows, the data 19402"):
        apply_split_file(c2, short)
    bad = tmp_path / "bad.tsv.gz"
    wrong = lines[1].rsplit("\t", 1)[0] + "\ttraining"
    bad.write_bytes(gzip.compress(f"{lines[0]}\n{wrong}\n".encode()))
    with pytest.raises(PtmkitError, match=r"bad.tsv.gz:2: split 'training' is not one of"):
        apply_split_file(c2, bad)
    with pytest.raises(PtmkitError, match="does not exist"):
        apply_split_file(c2, tmp_path / "absent.tsv.gz")


def test_recipe_reads_the_split_file(c2, tmp_path: Path, data_root: Path) -> None:  # noqa: ANN001
    drawn = assign_splits(c2, valid=0.1, test=0.2, seed=3)  # not the recipe's seed 0
    save_split_file(drawn, tmp_path / "C2.tsv.gz")
    recipe = recipes.load(
        ROOT / "experiments" / "base-bilstm.yaml",
        ["data.source=uniptms:C2", f"data.split.file={tmp_path / 'C2.tsv.gz'}"],
    )
    table, _ = prepare_data(recipe, data_root)
    assert (table.frame["split"].to_numpy() == drawn.frame["split"].to_numpy()).all()


def test_epoch_rows_cap_draws_a_fresh_subset_each_epoch() -> None:
    gen = torch.Generator().manual_seed(0)
    assert sorted(epoch_rows(10, None, gen).tolist()) == list(range(10))
    assert sorted(epoch_rows(10, 50, gen).tolist()) == list(range(10))
    seen = set()
    for _ in range(20):
        rows = epoch_rows(1000, 100, gen)
        assert len(rows) == 100 and len(set(rows.tolist())) == 100
        seen |= set(rows.tolist())
    assert len(seen) > 800  # successive epochs cover the set instead of repeating one subset


def test_epoch_windows_is_validated() -> None:
    with pytest.raises(recipes.RecipeError, match="epoch_windows"):
        recipes.load(ROOT / "experiments" / "base-bilstm.yaml", ["train.epoch_windows=1"])


def test_balanced_epochs_draw_equal_classes_afresh() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([1.0] * 100 + [0.0] * 900)
    rows = epoch_rows(1000, 64, gen, labels)
    assert len(rows) == 64 and int(labels[rows].sum()) == 32
    full = epoch_rows(1000, None, gen, labels)  # no cap: every positive and as many negatives
    assert len(full) == 200 and int(labels[full].sum()) == 100
    negatives = set()
    for _ in range(10):
        negatives |= {int(i) for i in epoch_rows(1000, None, gen, labels) if labels[i] == 0}
    assert len(negatives) > 600  # each epoch draws other negatives
    assert len(epoch_rows(1000, 10_000, gen, labels)) == 200  # a cap above the classes' size
