"""Hostile data inputs, ``data check`` sources and split options (issue 11, part "data").

Every reader and ``predict`` open files through ptmkit.textio: gzip is read (by its magic bytes),
a directory, a non-UTF-8 byte, a truncated gzip stream and a duplicated CSV column fail with one
line naming the file (and line). Real files are written to tmp_path; where counts matter the
real UniPTMs files under the data root are used. One tiny real run on C2 (1 epoch, 512 windows
per epoch, a real sqlite MLflow store) checks that a run's own ``data/splits.tsv.gz`` goes back
in as ``data.split.file`` and that ``evaluate RUN uniptms:C2 --split test`` rebuilds its test split.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ptmkit import recipe as recipes
from ptmkit.cli import main
from ptmkit.datasets import load_source, prepare_data
from ptmkit.errors import DataError, PtmkitError, RecipeError
from ptmkit.predict import count_records, read_fasta
from ptmkit.splits import apply_split_file, assign_splits, dedupe_splits

ROOT = Path(__file__).parents[2]
BASE = ROOT / "experiments" / "base-bilstm.yaml"

# ---------------------------------------------------------------------------- one file per reader
# reader -> (a good file whose line 3 is a header or row, the source mapping reading it as `name`)
NEG = ">N1_2\nAAKAC\n"
READERS: dict[str, tuple[bytes, Callable[[str], dict[str, Any]]]] = {
    "fasta_fragments": (
        b">a|1\nAAKAA\n>b|0\nAAKAC\n",
        lambda f: {"reader": "fasta_fragments", "files": {"train": f}},
    ),
    "csv_sites": (
        b"protein,sequence,label\nP1,AAHAA,1\nP2,AAHAC,0\n",
        lambda f: {"reader": "csv_sites", "files": {"train": f}},
    ),
    "posneg_fasta": (
        b">P1_3\nAAKAA\n>P2_3\nAAKAC\n",
        lambda f: {"reader": "posneg_fasta", "positive": f, "negative": "neg.fa"},
    ),
    "protein_sites": (
        b">sp|P1|\t#3\nAAKAAKAA\n>sp|P2|\t#3\nCCKCCKCC\n",
        lambda f: {"reader": "protein_sites", "files": {"train": f}, "residues": "K", "window": 5},
    ),
    "musite_fasta": (
        b">sp|P1|X\nAAK#AAKAA\n>sp|P2|Y\nCCK#CCKCC\n",
        lambda f: {"reader": "musite_fasta", "files": {"train": f}, "residues": "K", "window": 5},
    ),
}
NAMES = list(READERS)


def _write(folder: Path, name: str, data: bytes) -> Path:
    (folder / "neg.fa").write_text(NEG)
    path = folder / name
    path.write_bytes(data)
    return path


def _latin1(data: bytes) -> bytes:
    """``data`` with an 0xE9 byte (Latin-1 'é') at column 3 of line 3."""
    lines = data.split(b"\n")
    lines[2] = lines[2][:2] + b"\xe9" + lines[2][2:]
    return b"\n".join(lines)


def check_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *parts: str) -> str:
    """The CLI's stderr is one ``error: ...`` line holding every part."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _rows(table: Any) -> list[tuple[Any, ...]]:
    frame = table.frame
    lines = [int(o.rsplit(":", 1)[1]) for o in frame["origin"]]
    return list(zip(frame["protein_id"], frame["window"], frame["label"], lines, strict=True))


# ---------------------------------------------------------------------------- gzip
@pytest.mark.parametrize("reader", NAMES)
@pytest.mark.parametrize("name", ["data.txt.gz", "data.txt"])  # suffix or magic bytes alone
def test_every_reader_reads_gzip(reader: str, name: str, tmp_path: Path) -> None:
    good, source = READERS[reader]
    _write(tmp_path, "plain.txt", good)
    _write(tmp_path, name, gzip.compress(good))
    plain, _ = load_source(source("plain.txt"), base_dir=tmp_path, data_root=tmp_path)
    zipped, _ = load_source(source(name), base_dir=tmp_path, data_root=tmp_path)
    assert _rows(zipped) == _rows(plain) and len(plain) >= 2  # same rows, same line numbers


@pytest.mark.parametrize("reader", ["csv_sites", "protein_sites"])
def test_truncated_gzip_names_the_file(
    reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, source = READERS[reader]
    whole = gzip.compress(good * 50 if reader == "csv_sites" else good)
    _write(tmp_path, "cut.gz", whole[: len(whole) // 2])
    code, _, err = check_cli(capsys, "data", "check", json.dumps(source(str(tmp_path / "cut.gz"))))
    assert code == 2
    one_line_error(err, "cut.gz", "gzip data is truncated or corrupt")


def test_other_compression_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, source = READERS["fasta_fragments"]
    _write(tmp_path, "data.bz2", bz2.compress(good))
    code, _, err = check_cli(capsys, "data", "check", json.dumps(source(str(tmp_path / "data.bz2"))))
    assert code == 2
    one_line_error(err, "data.bz2", "bzip2-compressed", "valid: plain text or gzip")


def test_empty_gzip_is_an_empty_file(tmp_path: Path) -> None:
    _, source = READERS["csv_sites"]
    _write(tmp_path, "empty.csv.gz", gzip.compress(b""))
    with pytest.raises(DataError, match="empty.csv.gz: file is empty"):
        load_source(source("empty.csv.gz"), base_dir=tmp_path, data_root=tmp_path)


# ---------------------------------------------------------------------------- directories
@pytest.mark.parametrize("reader", NAMES)
def test_directory_as_data_file(reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, source = READERS[reader]
    _write(tmp_path, "placeholder", b"")
    (tmp_path / "adir").mkdir()
    code, _, err = check_cli(capsys, "data", "check", json.dumps(source(str(tmp_path / "adir"))))
    assert code == 2
    line = one_line_error(err, f"{tmp_path / 'adir'}: is a directory")
    assert "not found" not in line


def test_directory_as_split_file(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "splits").mkdir()
    code, _, err = check_cli(
        capsys, "data", "check", str(BASE), "--set", f"data.split.file={tmp_path / 'splits'}"
    )
    assert code == 2
    one_line_error(err, "data.split.file:", "splits is a directory, not a split file")


# ---------------------------------------------------------------------------- non-UTF-8
@pytest.mark.parametrize("reader", NAMES)
def test_non_utf8_names_file_line_and_byte(
    reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, source = READERS[reader]
    _write(tmp_path, "latin1.txt", _latin1(good))
    code, _, err = check_cli(capsys, "data", "check", json.dumps(source(str(tmp_path / "latin1.txt"))))
    assert code == 2
    one_line_error(err, "latin1.txt:3: byte 0xe9 (column 3) is not UTF-8; expected UTF-8 text")


def test_non_utf8_inside_gzip(tmp_path: Path) -> None:
    good, source = READERS["csv_sites"]
    _write(tmp_path, "latin1.csv.gz", gzip.compress(_latin1(good)))
    with pytest.raises(DataError, match=r"latin1.csv.gz:3: byte 0xe9 .* expected UTF-8 text"):
        load_source(source("latin1.csv.gz"), base_dir=tmp_path, data_root=tmp_path)


# ---------------------------------------------------------------------------- CSV columns
def test_duplicated_csv_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "dup.csv", b"protein,sequence,label,sequence\nP1,AAHAA,1,AAHAC\n")
    code, _, err = check_cli(capsys, "data", "check", f"train={path}", "--reader", "csv_sites")
    assert code == 2
    one_line_error(err, "dup.csv:1: column name 'sequence' appears twice", "columns 2 and 4")


def test_truncated_csv_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "cut.csv", b"protein,sequence,label\nP1,AAHAA,1\nP2,AAH")
    code, _, err = check_cli(capsys, "data", "check", str(path), "--reader", "csv_sites")
    assert code == 2
    one_line_error(err, "cut.csv:3: row has 2 fields, the header row has 3")


# ---------------------------------------------------------------------------- predict's FASTA
def test_predict_fasta_gzip_by_magic_bytes(tmp_path: Path) -> None:
    text = ">sp|P1|A\nMKAK\nSL\n>P2 b\nMCCK\n"
    (tmp_path / "plain.fa").write_text(text)
    (tmp_path / "zipped.fa").write_bytes(gzip.compress(text.encode()))  # no .gz suffix
    plain = [(p.protein_id, p.sequence) for p in read_fasta(tmp_path / "plain.fa")]
    assert [(p.protein_id, p.sequence) for p in read_fasta(tmp_path / "zipped.fa")] == plain
    assert plain == [("P1", "MKAKSL"), ("P2", "MCCK")]
    assert count_records(tmp_path / "zipped.fa") == 2


def _cut_gzip_fasta() -> bytes:
    whole = gzip.compress("".join(f">P{i}\nMKCAAGHLKKC\n" for i in range(2000)).encode())
    return whole[: len(whole) // 2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "proteins.fa: is a directory"),
        (
            lambda p: p.write_bytes(b">P1\nMKC\n>P\xe92\nMKC\n"),
            "proteins.fa:3: byte 0xe9 (column 3) is not UTF-8",
        ),
        (lambda p: p.write_bytes(_cut_gzip_fasta()), "gzip data is truncated"),
    ],
    ids=["directory", "latin1", "truncated-gzip"],
)
def test_predict_refuses_bad_fasta_and_keeps_the_old_output(
    make: Callable[[Path], None],
    message: str,
    c2_run: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fasta = tmp_path / "proteins.fa"
    make(fasta)
    out = tmp_path / "sites.tsv"
    out.write_text("old results\n")
    code, _, err = check_cli(
        capsys, "predict", c2_run["run_id"], str(fasta), "-o", str(out), "--uri", c2_run["uri"], "--quiet"
    )
    assert code == 2
    one_line_error(err, message)
    assert out.read_text() == "old results\n"  # nothing lost


@pytest.mark.slow
def test_evaluate_directory_source(
    c2_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = check_cli(
        capsys, "evaluate", c2_run["run_id"], str(tmp_path), "--uri", c2_run["uri"], "--quiet"
    )
    assert code == 2
    one_line_error(err, f"{tmp_path}: is a directory")


# ---------------------------------------------------------------------------- data check sources
def test_data_check_files_with_reader_reports_shared_proteins(
    data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1 = data_root / "uniptms" / "H1"
    code, out, _ = check_cli(
        capsys,
        "data",
        "check",
        f"train={h1 / 'train.csv'}",
        f"test={h1 / 'test.csv'}",
        "--reader",
        "csv_sites",
        "--option",
        "terminal_pad=X",
        "--option",
        "residues=H",
    )
    assert code == 0
    assert out.startswith("Data check: csv_sites:train (ptm, residues H, window 37, 1128 rows)")
    # 75 of H1's 104 test rows are on proteins training rows also come from
    assert (
        "- train/test: 69 proteins have rows in both splits (75 of 104 test rows, 152 of 1024 train rows), "
        "e.g. A2RUS2-2 (H1/train.csv:63, H1/test.csv:3)" in out
    )
    assert "Defects (1)" in out


def test_data_check_inline_mapping_and_name(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (
        "{reader: posneg_fasta, name: my-c2, residues: C, positive: C2/positive1.txt, "
        "negative: C2/negative1.txt, terminal_pad: X}"
    )
    with contextlib.chdir(data_root / "uniptms"):
        code, out, _ = check_cli(capsys, "data", "check", source)
    assert code == 0
    assert out.startswith("Data check: my-c2 (ptm, residues C, window 31, 19402 rows)")
    assert "unsplit: 3 windows labelled both positive and negative" in out


def test_data_check_mapping_file_paths_relative_to_it(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pos.fa").write_text(">P1_3\nAAKAA\n>P2_5\nAACAA\n")
    (tmp_path / "neg.fa").write_text(">P3_3\nAAKAA\n")
    (tmp_path / "src.yaml").write_text("reader: posneg_fasta\npositive: pos.fa\nnegative: neg.fa\n")
    code, out, _ = check_cli(capsys, "data", "check", str(tmp_path / "src.yaml"))
    assert code == 0
    assert out.startswith("Data check: posneg_fasta:pos (ptm, residues ")
    assert "unsplit: 1 windows labelled both positive and negative" in out


def test_data_check_recipe_reports_the_runs_splits(
    data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check_cli(
        capsys,
        "data",
        "check",
        str(BASE),
        "--set",
        "data.source=uniptms:C2",
        "--set",
        "data.split.dedupe=true",
    )
    assert code == 0
    assert out.startswith("Data check: uniptms:C2 split as recipe 'bilstm-baseline' splits it")
    assert "train      1947     12021  13968" in out  # train/valid/test as the run sees them
    assert (
        "- data.split.dedupe: removed 85 of 1553 validation rows whose window is also in training, and "
        "231 of 3881 test rows whose window is also in training or validation" in out
    )
    assert "train/test: 1232 proteins have rows in both splits" in out
    assert "overlap:" not in out  # dedupe left no window in two splits


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing-here.csv"], "nothing-here.csv: no such file, and not a catalogue name"),
        (["a.csv", "b.csv", "--reader", "csv_sites"], "several files: give each its split, e.g. train=a.csv"),
        (["a.csv", "b.csv"], "2 sources given"),
        (["{files: {train: a.csv}}"], "a reader mapping needs a 'reader' key"),
        (["uniptms:K9"], "unknown dataset 'uniptms:K9'"),
        (
            ["training=a.csv", "--reader", "csv_sites"],
            "'training' is neither a split nor an option of reader",
        ),
        (
            ["a.csv", "--reader", "posneg_fasta"],
            "takes no 'files'; name each file by its option, e.g. positive=FILE",
        ),
        (["uniptms:H1", "--option", "x=1"], "--option needs --reader"),
        (["{reader: csv_sites, files: {train: a.csv}, name: 3}"], "data.source.name: expected a non-empty"),
    ],
    ids=[
        "missing",
        "two-bare",
        "two-no-reader",
        "no-reader-key",
        "unknown-id",
        "bad-key",
        "posneg-bare",
        "option-no-reader",
        "bad-name",
    ],
)
def test_data_check_source_errors(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.csv").write_text("protein,sequence,label\nP1,AAHAA,1\n")
    (tmp_path / "b.csv").write_text("protein,sequence,label\nP1,AAHAA,1\n")
    code, _, err = check_cli(capsys, "data", "check", *args)
    assert code == 2
    one_line_error(err, message)


def test_data_check_plain_file_needs_a_reader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.csv").write_text("protein,sequence,label\n")
    code, _, err = check_cli(capsys, "data", "check", str(tmp_path / "x.csv"))
    assert code == 2
    one_line_error(err, "x.csv: a data file needs --reader NAME (readers: csv_sites, fasta_fragments")


# ---------------------------------------------------------------------------- dataset tags
@pytest.mark.parametrize(
    ("extra", "name"),
    [({}, "csv_sites:pk_train"), ({"name": "pk-2024"}, "pk-2024")],
)
def test_file_sources_get_a_dataset_tag(extra: dict[str, str], name: str, tmp_path: Path) -> None:
    (tmp_path / "pk_train.csv.gz").write_bytes(
        gzip.compress(b"protein,sequence,label\nP1,AAHAA,1\nP2,AAHAC,0\n")
    )
    source = {"reader": "csv_sites", "files": {"train": "pk_train.csv.gz"}, **extra}
    _, info = load_source(source, base_dir=tmp_path, data_root=tmp_path)
    assert info.name == name


# ---------------------------------------------------------------------------- labels both ways
def test_windows_labelled_both_ways_in_training_warn(tmp_path: Path) -> None:
    (tmp_path / "train.fa").write_text(">P1_3|1\nAAKAA\n>P2_7|0\nAAKAA\n>P3_2|1\nCCKCC\n>P4_4|0\nGGKGG\n")
    for split in ("valid", "test"):
        (tmp_path / f"{split}.fa").write_text(">V1_3|1\nCAKAC\n>V2_3|0\nGAKAG\n")
    (tmp_path / "r.yaml").write_text(
        "name: both-ways\n"
        "data:\n  source:\n    reader: fasta_fragments\n"
        "    header: '(?P<id>[^_]+)_(?P<position>\\d+)\\|(?P<label>[01])'\n"
        "    files: {train: train.fa, valid: valid.fa, test: test.fa}\n"
        "features: {onehot: {type: onehot}}\n"
        "model: {nodes: {head: {type: mlp_head, inputs: [onehot], pool: center}}}\n"
    )
    with pytest.warns(UserWarning) as caught:
        prepare_data(recipes.load(tmp_path / "r.yaml"), tmp_path)
    assert [str(w.message) for w in caught] == [
        "1 training window(s) are labelled both positive and negative, e.g. AAKAA: P1:3 positive, "
        "P2:7 negative (`ptmkit data check` lists such windows; data.split.dedupe does not remove them)"
    ]


@pytest.mark.slow
def test_label_conflicts_reach_the_cli_as_warning_lines(c2_run: dict[str, Any]) -> None:
    assert (
        "warning: 2 training window(s) are labelled both positive and negative, e.g. "
        "SLLDEGTAAAEAMAMCNNILKGKKKTFVIAS: Q94B78 (C2/positive1.txt:4207) positive, O80988 "
        "(C2/negative1.txt:4483) negative" in c2_run["stderr"]
    )


# ---------------------------------------------------------------------------- split options
@pytest.fixture(scope="module")
def c2(data_root: Path):  # noqa: ANN201
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, _ = load_source("uniptms:C2", base_dir=ROOT, data_root=data_root)
    return table


def _proteins_in_two_splits(table: Any) -> int:
    return int((table.frame.groupby("protein_id")["split"].nunique() > 1).sum())


def test_defaults_draw_the_same_split_as_before(c2) -> None:  # noqa: ANN001
    drawn = assign_splits(c2, valid=0.1, test=0.2, seed=0)
    assert drawn.frame["split"].value_counts().to_dict() == {"train": 13968, "test": 3881, "valid": 1553}
    assert _proteins_in_two_splits(drawn) == 1448  # what group: protein is for


def test_group_by_protein_keeps_every_protein_in_one_split(c2) -> None:  # noqa: ANN001
    grouped = assign_splits(c2, valid=0.1, test=0.2, seed=0, group="protein")
    assert _proteins_in_two_splits(grouped) == 0
    counts = grouped.frame.groupby(["split", "label"]).size()
    for label, total in ((1, 2705), (0, 16697)):  # stratified: each class near its fraction
        assert counts[("test", label)] / total == pytest.approx(0.2, abs=0.01)
        assert counts[("valid", label)] / (total - counts[("test", label)]) == pytest.approx(0.1, abs=0.01)
    again = assign_splits(c2, valid=0.1, test=0.2, seed=0, group="protein")
    other = assign_splits(c2, valid=0.1, test=0.2, seed=1, group="protein")
    assert (again.frame["split"] == grouped.frame["split"]).all()  # seeded
    assert not (other.frame["split"] == grouped.frame["split"]).all()


def test_group_with_a_published_test_split_warns_and_groups_valid(data_root: Path) -> None:
    recipe = recipes.load(BASE, ["data.source=uniptms:K2", "data.window=33", "data.split.group=protein"])
    with pytest.warns(
        UserWarning,
        match=r"2 of 124 proteins of the published test split also occur in training rows \(83 of 3231",
    ):
        table, _ = prepare_data(recipe, data_root)
    frame = table.frame
    train = set(frame.loc[frame["split"] == "train", "protein_id"])
    assert not train & set(frame.loc[frame["split"] == "valid", "protein_id"])


def test_group_needs_protein_ids(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check_cli(
        capsys,
        "data",
        "check",
        str(BASE),
        "--set",
        "data.source=uniptms:T1",
        "--set",
        "data.split.group=protein",
    )
    assert code == 2
    one_line_error(err, "data.split.group: protein needs protein ids", "Pos_1")


def test_unknown_group_is_a_recipe_error(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(f"extends: {BASE}\ndata:\n  split:\n    group: chain\n")
    with pytest.raises(
        RecipeError, match=r"r.yaml:4: data.split.group: Input should be 'protein' \(got 'chain'\)"
    ):
        recipes.load(tmp_path / "r.yaml")


def test_dedupe_removes_windows_seen_in_an_earlier_split(c2) -> None:  # noqa: ANN001
    drawn = assign_splits(c2, valid=0.1, test=0.2, seed=0)
    with pytest.warns(UserWarning, match=r"removed 85 of 1553 validation rows .* and 231 of 3881 test rows"):
        kept = dedupe_splits(drawn)
    frame = kept.frame
    train = set(frame.loc[frame["split"] == "train", "window"])
    valid = set(frame.loc[frame["split"] == "valid", "window"])
    assert not train & valid and not (train | valid) & set(frame.loc[frame["split"] == "test", "window"])
    assert (frame["split"] == "train").sum() == 13968  # training rows are never removed
    assert kept.meta["dedupe_removed"] == {"valid": 85, "test": 231}


# ---------------------------------------------------------------------------- the run's own splits
@pytest.fixture(scope="module")
def c2_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Any]:
    """One tiny real run on C2 (a drawn 70/10/20 split), through the CLI in a subprocess, own store."""
    folder = tmp_path_factory.mktemp("c2run")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    (folder / "c2.yaml").write_text(
        "name: c2-tiny\n"
        "data: {source: uniptms:C2, split: {valid: 0.1, test: 0.2, seed: 0}}\n"
        "features: {onehot: {type: onehot}}\n"
        "model:\n  nodes:\n"
        "    encoder: {type: bilstm, inputs: [onehot], hidden: 4}\n"
        "    head: {type: mlp_head, inputs: [encoder], pool: center, hidden: [4]}\n"
        "train: {epochs: 1, batch_size: 256, epoch_windows: 512, lr: 0.01, patience: 1, seed: 0,"
        " threads: 1}\n"
        f"tracking: {{experiment: data-tests, uri: '{uri}'}}\n"
    )
    # a real process, so its stderr is what a user sees (warnings included)
    done = subprocess.run(
        [sys.executable, "-m", "ptmkit.cli", "run", str(folder / "c2.yaml"), "--quiet"],
        cwd=folder,
        env={**os.environ, "PTMKIT_DATA": str(data_root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("data-tests").experiment_id])
    return {"run_id": run.info.run_id, "run": run, "uri": uri, "folder": folder, "stderr": done.stderr}


@pytest.mark.slow
def test_runs_splits_file_goes_back_in_as_split_file(
    c2_run: dict[str, Any], data_root: Path, tmp_path: Path
) -> None:
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{c2_run['run_id']}/data/splits.tsv.gz",
        dst_path=str(tmp_path),
        tracking_uri=c2_run["uri"],
    )
    recipe = recipes.load(c2_run["folder"] / "c2.yaml", ["data.split.seed=5", f"data.split.file={local}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again, _ = prepare_data(recipe, data_root)
        drawn, _ = prepare_data(recipes.load(c2_run["folder"] / "c2.yaml"), data_root)
    assert (again.frame["split"] == drawn.frame["split"]).all()  # the run's split, not seed 5's
    params = c2_run["run"].data.params
    assert (again.frame["split"] == "test").sum() == int(params["data.n_test_pos"]) + int(
        params["data.n_test_neg"]
    )


@pytest.mark.slow
def test_evaluate_rebuilds_the_runs_test_split(
    c2_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    rid = c2_run["run_id"]
    code, out, _ = check_cli(
        capsys,
        "evaluate",
        rid,
        "uniptms:C2",
        "--split",
        "test",
        "--uri",
        c2_run["uri"],
        "--json",
        "e.json",
        "--quiet",
    )
    assert code == 0
    assert "3881 sites (541 positive, 3340 negative)" in out
    assert f"test split rebuilt from runs:/{rid}/data/splits.tsv.gz" in out
    result = json.loads(Path("e.json").read_text())
    logged = c2_run["run"].data.metrics
    for key in ("auc", "ap", "mcc", "acc", "tuned_mcc"):
        assert result["metrics"][key] == pytest.approx(logged[f"test/{key}"], abs=1e-9), key


@pytest.mark.slow
def test_evaluate_without_the_runs_store_says_where_it_looked(
    c2_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{c2_run['run_id']}/model",
        dst_path=str(tmp_path / "m"),
        tracking_uri=c2_run["uri"],
    )
    other = f"sqlite:///{tmp_path / 'other.db'}"
    capsys.readouterr()  # the download's progress bar
    code, _, err = check_cli(
        capsys, "evaluate", model, "uniptms:C2", "--split", "test", "--uri", other, "--quiet"
    )
    assert code == 2
    one_line_error(err, "uniptms:C2 has no 'test' split (it has unsplit)", "data/splits.tsv.gz", "--uri")
    assert not (tmp_path / "other.db").exists()  # reading never creates a store


def test_deduped_runs_splits_file_is_accepted_with_dedupe(c2, tmp_path: Path) -> None:  # noqa: ANN001
    """A run with dedupe logs only the rows it kept (the table run.py writes to data/splits.tsv.gz)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = dedupe_splits(assign_splits(c2, valid=0.1, test=0.2, seed=0))
    path = tmp_path / "splits.tsv.gz"
    kept.frame.to_csv(path, sep="\t", index=False, compression="gzip")  # as run.py logs it
    again = apply_split_file(c2, path, dedupe=True)
    assert (
        len(again) == len(kept) and (again.frame["split"].to_numpy() == kept.frame["split"].to_numpy()).all()
    )
    with pytest.raises(PtmkitError, match="holds 19086 rows, the data 19402.*data.split.dedupe: true"):
        apply_split_file(c2, path)
