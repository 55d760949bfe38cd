"""The data check finds every defect the UniPTMs README lists, with the files' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptmkit import catalog
from ptmkit.datacheck import DataReport, check_source, check_table
from ptmkit.datasets import DatasetInfo, load_source


@pytest.fixture(scope="module")
def reports(data_root: Path) -> dict[str, DataReport]:
    return {
        key: check_source(f"uniptms:{key}", base_dir=Path("."), data_root=data_root)
        for key in (d.id for d in catalog.select("uniptms"))
    }


def has(report: DataReport, *parts: str) -> bool:
    """True when one defect line contains every part."""
    return any(all(p in d for p in parts) for d in report.defects)


def test_t1_leak(reports: dict[str, DataReport]) -> None:
    assert has(reports["T1"], "train/test overlap: 19 windows occur in both", "19 test rows")
    assert has(reports["T1"], "counts differ from the paper", "train 879/878 vs paper 878/878")


def test_t2_copy_of_t1_and_counts(reports: dict[str, DataReport]) -> None:
    report = reports["T2"]
    assert has(report, "T2/Training.txt is byte-identical to T1/Training.txt")
    assert has(
        report,
        "counts differ from the paper",
        "train 879/878 vs paper 862/1503",
        "test 182/991 vs paper 216/375",
    )
    # the original is not blamed for being copied
    assert not has(reports["T1"], "byte-identical")


def test_c1_test_counts(reports: dict[str, DataReport]) -> None:
    assert has(reports["C1"], "counts differ from the paper", "test 83/830 vs paper 358/3580")
    assert not has(reports["C1"], "train 602/602")


def test_c2_duplicates_and_conflicts(reports: dict[str, DataReport]) -> None:
    report = reports["C2"]
    assert has(report, "184 duplicate positive rows", "123 distinct windows")
    assert has(report, "493 duplicate negative rows", "359 distinct windows")
    assert has(report, "3 windows labelled both positive and negative")
    assert has(report, "no train/test split", "train 2164/13358", "totals match")


def test_k2_site_past_protein_end(reports: dict[str, DataReport]) -> None:
    report = reports["K2"]
    assert has(report, "1 marked site(s) past the protein end", "P15559 site 307 (length 274)")
    assert has(report, "not written as '#position'", "P0ACR9 token '39'")
    assert not has(report, "counts differ")  # 4755/50549 and 254/2977, as in the paper


def test_k1_unsplit(reports: dict[str, DataReport]) -> None:
    assert has(reports["K1"], "no train/test split", "train 10549/37843", "totals match")


def test_h1_shares_proteins_between_train_and_test(reports: dict[str, DataReport]) -> None:
    # its only defect: most test rows are on proteins that training rows also come from (issue 11)
    assert reports["H1"].defects == [
        "train/test: 69 proteins have rows in both splits (75 of 104 test rows, 152 of 1024 train "
        "rows), e.g. A2RUS2-2 (H1/train.csv:63, H1/test.csv:3)"
    ]
    # T1's ids are record names (Pos_1), not proteins: never compared as proteins
    assert not has(reports["T1"], "proteins have rows in both")


def test_render_is_aligned_text(reports: dict[str, DataReport]) -> None:
    text = reports["C2"].render()
    assert text.startswith("Data check: uniptms:C2 (S-sulfhydration")
    assert "unsplit      2705     16697  19402" in text
    assert "Defects (4)" in text
    titles = [s.title for s in reports["K2"].sections]
    assert "Marked sites that cannot be used (dropped)" in titles
    assert "Files" in titles


def test_check_table_on_hand_written_source(tmp_path: Path) -> None:
    (tmp_path / "pos.txt").write_text(">a\nAAKAA\n>b\nAAKAA\n>c\nABKAX\n>d\nCCSCC\n")
    (tmp_path / "neg.txt").write_text(">e\nAAKAA\n>f\nGGKGG\n")
    source = {"reader": "posneg_fasta", "positive": "pos.txt", "negative": "neg.txt"}
    table, info = load_source(source, base_dir=tmp_path, data_root=tmp_path)
    info = DatasetInfo(info.name, "test-ptm", "K", info.window, None)
    report = check_table(table, info)
    assert report.defects == [
        "unsplit: 1 duplicate positive rows (1 distinct windows repeated)",
        "unsplit: 1 windows labelled both positive and negative",
        "non-standard residues in 1 windows: B 1, X 1 (padding is '-')",
        "centre residue is not K in 1 rows: S 1",
    ]


def test_check_source_accepts_mappings(data_root: Path) -> None:
    source = {
        "reader": "protein_sites",
        "files": {"test": "K2/test_sequence.txt"},
        "residues": "K",
        "window": 33,
    }
    report = check_source(source, base_dir=data_root / "uniptms", data_root=data_root)
    assert "Counts (rows per split and label)" in report.render()
    assert not has(report, "marked site")
