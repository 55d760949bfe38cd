"""Readers on the real UniPTMs files, on malformed inputs, and ``load_source`` around them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from ptmkit import catalog
from ptmkit.datasets import DatasetInfo, load_source, resolve_data_root
from ptmkit.errors import DataError, PtmkitError, RecipeError
from ptmkit.hooks import get_registry
from ptmkit.plugin_api import ReadContext, Reader
from ptmkit.sitetable import COLUMNS, SiteTable, window_at

READERS = ["fasta_fragments", "csv_sites", "posneg_fasta", "protein_sites", "musite_fasta"]


#: What the core passes a reader in its ReadContext rather than in its config.
CONTEXT_KEYS = ("task", "residues", "window")


class Made:
    """A reader built from config, read with the context keys given next to the config."""

    def __init__(self, reader: Reader, context: dict[str, object]) -> None:
        self.reader = reader
        self.context = context

    def read(self, base: Path) -> SiteTable:
        return self.reader.read(ReadContext(base=Path(base), **self.context))  # type: ignore[arg-type]


def make(name: str, **config: object) -> Made:
    cls = get_registry().get("reader", name).obj
    context = {k: config.pop(k) for k in CONTEXT_KEYS if k in config}
    return Made(cls(cls.Config(**config)), context)


def counts(table: SiteTable) -> dict[str, tuple[int, int]]:
    """split -> (positives, negatives)."""
    size = table.frame.groupby(["split", "label"]).size()
    return {s: (int(size.get((s, 1), 0)), int(size.get((s, 0), 0))) for s in table.frame["split"].unique()}


def line_of(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def uniptms(data_root: Path) -> Path:
    return data_root / "uniptms"


def test_all_readers_registered() -> None:
    registry = get_registry()
    for name in READERS:
        spec = registry.get("reader", name)
        assert issubclass(spec.obj, Reader)
        for field in spec.obj.Config.model_fields.values():
            assert field.description, f"{name}: config field without description"


# --- real files --------------------------------------------------------------------------


def test_t1_fragments(uniptms: Path) -> None:
    files = {"train": "T1/Training.txt", "test": "T1/Independent.txt"}
    table = make("fasta_fragments", files=files, task="O-glycosylation").read(uniptms)
    assert counts(table) == {"train": (879, 878), "test": (200, 200)}
    assert table.width == 41
    assert list(table.frame.columns) == COLUMNS
    first = table.frame.iloc[0]
    assert (first.protein_id, first.residue, first.task) == ("Pos_1", "T", "O-glycosylation")
    assert first.window == "STGQATPLPVTSLSSASTGDTTPLPVTDTSSASTGQDTPLP"
    assert first.origin == f"{uniptms / 'T1/Training.txt'}:1"
    assert table.frame["position"].isna().all()
    last = table.frame.iloc[-1]
    assert last.origin == f"{uniptms / 'T1/Independent.txt'}:799"  # 400 records, 2 lines each
    assert set(table.frame["residue"]) == {"T"}


def test_t2_imbalanced_test(uniptms: Path) -> None:
    files = {"test": "T2/Imbalanced_Independent.txt"}
    table = make("fasta_fragments", files=files).read(uniptms)
    assert counts(table) == {"test": (182, 991)}
    assert set(table.frame["task"]) == {"ptm"}


def test_h1_csv(uniptms: Path) -> None:
    files = {"train": "H1/train.csv", "test": "H1/test.csv"}
    table = make("csv_sites", files=files, terminal_pad="X").read(uniptms)
    assert counts(table) == {"train": (512, 512), "test": (52, 52)}
    assert table.width == 37
    first = table.frame.iloc[0]
    assert (first.protein_id, first.residue, first.label) == ("Q5THK1-2", "H", 1)
    assert first.origin.endswith("H1/train.csv:2")  # line 1 is the CSV header row
    padded = table.frame[table.frame["origin"].str.endswith("H1/test.csv:76")].iloc[0]
    # test.csv:76 holds XXMPRAPRC... for O14746-4; the X run is padding, not residues
    assert padded.protein_id == "O14746-4"
    assert padded.window.startswith("--MPRAPRC")


def test_h1_without_terminal_pad_keeps_x(uniptms: Path) -> None:
    table = make("csv_sites", files={"test": "H1/test.csv"}).read(uniptms)
    assert table.frame["window"].str.startswith("XXMPRAPRC").sum() == 1


def test_k1_posneg(uniptms: Path) -> None:
    table = make(
        "posneg_fasta",
        positive="K1/positive.fasta",
        negative="K1/negative.fasta",
        terminal_pad="X",
    ).read(uniptms)
    assert counts(table) == {"unsplit": (13187, 47304)}
    assert table.width == 33
    first = table.frame.iloc[0]
    assert (first.protein_id, first.position, first.residue) == ("CPLM000004", 499, "K")
    assert first.origin.endswith("K1/positive.fasta:1")
    assert table.frame.iloc[-1].origin.endswith("K1/negative.fasta:94607")
    assert set(table.frame["residue"]) == {"K"}
    # X runs at window ends became padding; X inside windows (3 rows) stays
    windows = table.frame["window"]
    assert not windows.str.match(r"^X|.*X$").any()
    assert windows.str.contains("X").sum() == 3


def test_k2_protein_sites(uniptms: Path) -> None:
    files = {"train": "K2/train_sequence.txt", "test": "K2/test_sequence.txt"}
    with pytest.warns(UserWarning) as record:
        table = make("protein_sites", files=files, residues="K", on_bad_site="warn").read(uniptms)
    messages = sorted(str(w.message) for w in record)
    assert "'#position'" in messages[0] and "past the protein end" in messages[1]
    assert table.meta["listed_sites"] == {"train": 4756, "test": 254}
    # 4755 listed sites lie inside their protein; every other K is a negative
    assert counts(table) == {"train": (4755, 50549), "test": (254, 2977)}
    assert table.width == 33
    assert table.meta["bad_sites"] == [
        {
            "origin": f"{uniptms / 'K2/train_sequence.txt'}:1725",
            "protein_id": "P15559",
            "position": 307,
            "length": 274,
        }
    ]
    assert [d["token"] for d in table.meta["malformed_sites"]] == ["39"]
    assert table.meta["off_target_sites"] == []
    assert len(table.proteins) == 2198 + 124 - 2  # two proteins are in both files
    first = table.frame.iloc[0]
    assert first.origin.endswith("K2/train_sequence.txt:1")
    assert first.window == window_at(table.proteins[first.protein_id], first.position, 33)
    positive = table.frame[(table.frame.protein_id == "P0A901") & (table.frame.label == 1)]
    assert positive["position"].tolist() == [37]


def test_k2_window_is_configurable(uniptms: Path) -> None:
    table = make("protein_sites", files={"test": "K2/test_sequence.txt"}, residues="K", window=21).read(
        uniptms
    )
    assert table.width == 21
    assert counts(table) == {"test": (254, 2977)}


def test_k2_strict_by_default(uniptms: Path) -> None:
    reader = make("protein_sites", files={"train": "K2/train_sequence.txt"}, residues="K")
    with pytest.raises(DataError) as err:
        reader.read(uniptms)
    assert err.value.line == 767 and "'39'" in str(err.value)


def test_c1_sign_headers(uniptms: Path) -> None:
    files = {"train": "C1/fold_train.fasta", "test": "C1/independent_set_test.fasta"}
    table = make("fasta_fragments", files=files, header="sign").read(uniptms)
    assert counts(table) == {"train": (602, 602), "test": (83, 830)}
    assert table.width == 41
    first = table.frame.iloc[0]
    assert (first.protein_id, first.position, first.residue) == ("H0YN42", 133, "C")
    test = table.split("test").frame
    assert test.iloc[0].protein_id == "P10720"
    assert test["position"].isna().all()
    assert test.iloc[-1].origin.endswith("C1/independent_set_test.fasta:1825")


def test_c2_x_padding(uniptms: Path) -> None:
    table = make(
        "posneg_fasta", positive="C2/positive1.txt", negative="C2/negative1.txt", terminal_pad="X"
    ).read(uniptms)
    assert counts(table) == {"unsplit": (2705, 16697)}
    assert table.width == 31
    assert not table.frame["window"].str.contains("X").any()
    assert table.frame.iloc[0].protein_id == "A0A075B759"
    assert table.frame["position"].isna().all()


# --- malformed input ----------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read_error(tmp_path: Path, reader: str, text: str, **config: object) -> DataError:
    write(tmp_path, "f.txt", text)
    if reader in ("posneg_fasta",):
        write(tmp_path, "neg.txt", ">n\nAAKAA\n")
        config = {"positive": "f.txt", "negative": "neg.txt", **config}
    else:
        config = {"files": {"train": "f.txt"}, **config}
    with pytest.raises(DataError) as err:
        make(reader, **config).read(tmp_path)
    assert err.value.path == tmp_path / "f.txt"
    return err.value


def test_bad_character_names_line_char_and_alphabet(tmp_path: Path) -> None:
    err = read_error(tmp_path, "fasta_fragments", ">a|1\nAAKAA\n>b|0\nAA1AA\n")
    assert err.line == 4
    assert "'1'" in str(err) and "column 3" in str(err) and "ACDEFGHIKLMNPQRSTVWY" in str(err)
    assert str(err).startswith(f"{tmp_path / 'f.txt'}:4: ")


def test_lowercase_is_uppercased(tmp_path: Path) -> None:
    write(tmp_path, "f.txt", ">a|1\naakaa\n")
    table = make("fasta_fragments", files={"test": "f.txt"}).read(tmp_path)
    assert table.windows == ["AAKAA"] and table.frame.iloc[0].residue == "K"


def test_unparseable_label(tmp_path: Path) -> None:
    err = read_error(tmp_path, "fasta_fragments", ">a|1\nAAKAA\n>b|yes\nAAKAA\n")
    assert err.line == 3 and "'yes'" in str(err)


def test_header_not_matching(tmp_path: Path) -> None:
    err = read_error(tmp_path, "fasta_fragments", ">a|1\nAAKAA\n>no_label_here\nAAKAA\n")
    assert err.line == 3 and "does not match" in str(err)


def test_sign_header_without_sign(tmp_path: Path) -> None:
    err = read_error(tmp_path, "fasta_fragments", ">sampleP1_3\nAAKAA\n", header="sign")
    assert err.line == 1 and "label 's'" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    err = read_error(tmp_path, "posneg_fasta", "\n  \n")
    assert "empty" in str(err)


def test_sequence_before_header(tmp_path: Path) -> None:
    err = read_error(tmp_path, "posneg_fasta", "\nAAKAA\n>a\nAAKAA\n")
    assert err.line == 2 and "before any '>' header" in str(err)


def test_record_without_sequence(tmp_path: Path) -> None:
    err = read_error(tmp_path, "posneg_fasta", ">a\nAAKAA\n>b\n>c\nAAKAA\n")
    assert err.line == 3 and "no sequence" in str(err)


def test_uneven_widths(tmp_path: Path) -> None:
    err = read_error(tmp_path, "posneg_fasta", ">a\nAAKAA\n>b\nAAAKAAA\n")
    assert err.line == 4 and "width 7" in str(err) and "width 5" in str(err)


def test_even_width(tmp_path: Path) -> None:
    err = read_error(tmp_path, "posneg_fasta", ">a\nAAKA\n")
    assert err.line == 2 and "even" in str(err)


def test_files_of_one_source_share_a_width(tmp_path: Path) -> None:
    write(tmp_path, "pos.txt", ">a\nAAKAA\n")
    write(tmp_path, "neg.txt", ">b\nAAAKAAA\n")
    with pytest.raises(DataError) as err:
        make("posneg_fasta", positive="pos.txt", negative="neg.txt").read(tmp_path)
    assert err.value.path == tmp_path / "neg.txt" and err.value.line == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        make("fasta_fragments", files={"train": "absent.txt"}).read(tmp_path)


def test_csv_errors_use_physical_lines(tmp_path: Path) -> None:
    base = "protein,sequence,label\nP1,AAHAA,1\n"
    err = read_error(tmp_path, "csv_sites", base + "P2,AAHAA,2\n")
    assert err.line == 3 and "'2'" in str(err)
    err = read_error(tmp_path, "csv_sites", base + "\nP2,AAHAA\n")
    assert err.line == 4 and "2 fields" in str(err)
    err = read_error(tmp_path, "csv_sites", base + "P2,AA*AA,0\n")
    assert err.line == 3 and "'*'" in str(err)
    err = read_error(tmp_path, "csv_sites", "id,seq,label\nP1,AAHAA,1\n")
    assert err.line == 1 and "'protein'" in str(err)
    err = read_error(tmp_path, "csv_sites", base + "P2,AAAHAAA,0\n")
    assert err.line == 3 and "width 7" in str(err)


def test_csv_delimiter_and_position(tmp_path: Path) -> None:
    write(tmp_path, "f.tsv", "acc\twin\ty\tpos\nP1\taaHaa\t1\t12\nP2\tAAHAA\t0\t\n")
    table = make(
        "csv_sites",
        files={"test": "f.tsv"},
        delimiter="\t",
        id_column="acc",
        window_column="win",
        label_column="y",
        position_column="pos",
    ).read(tmp_path)
    assert table.frame["position"].tolist()[0] == 12
    assert table.frame["position"].isna().tolist() == [False, True]
    assert table.windows == ["AAHAA", "AAHAA"]


PROTEINS = ">sp|P1|\t#2\t#9\nMKAKSLKAK\n>sp|P2|\nKKA\n"


def test_protein_sites_rows(tmp_path: Path) -> None:
    write(tmp_path, "f.txt", PROTEINS)
    table = make("protein_sites", files={"train": "f.txt"}, residues="K", window=5).read(tmp_path)
    rows = table.frame[["protein_id", "position", "window", "label", "origin"]]
    assert rows.values.tolist() == [
        ["P1", 2, "-MKAK", 1, f"{tmp_path / 'f.txt'}:1"],
        ["P1", 4, "KAKSL", 0, f"{tmp_path / 'f.txt'}:1"],
        ["P1", 7, "SLKAK", 0, f"{tmp_path / 'f.txt'}:1"],
        ["P1", 9, "KAK--", 1, f"{tmp_path / 'f.txt'}:1"],
        ["P2", 1, "--KKA", 0, f"{tmp_path / 'f.txt'}:3"],
        ["P2", 2, "-KKA-", 0, f"{tmp_path / 'f.txt'}:3"],
    ]
    assert table.proteins == {"P1": "MKAKSLKAK", "P2": "KKA"}


def test_position_beyond_protein(tmp_path: Path) -> None:
    text = ">sp|P1|\t#2\nMKAK\n>sp|P2|\t#4\t#12\nMKAKA\n"
    err = read_error(tmp_path, "protein_sites", text, residues="K")
    assert err.line == 3 and "12" in str(err) and "length 5" in str(err)


def test_bad_sites_warn_and_skip(tmp_path: Path) -> None:
    write(tmp_path, "f.txt", ">sp|P1|\t#2\t#3\t#40\nMKAK\n")
    config = {"files": {"train": "f.txt"}, "residues": "K"}
    with pytest.warns(UserWarning) as record:
        table = make("protein_sites", on_bad_site="warn", **config).read(tmp_path)
    assert len(record) == 2
    assert table.meta["bad_sites"] == [
        {"origin": f"{tmp_path / 'f.txt'}:1", "protein_id": "P1", "position": 40, "length": 4}
    ]
    assert table.meta["off_target_sites"][0]["residue"] == "A"
    assert table.frame["label"].tolist() == [1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skipped = make("protein_sites", on_bad_site="skip", **config).read(tmp_path)
    assert skipped.meta["bad_sites"] == table.meta["bad_sites"]


def test_off_target_is_an_error_by_default(tmp_path: Path) -> None:
    err = read_error(tmp_path, "protein_sites", ">sp|P1|\t#3\nMKAK\n", residues="K")
    assert err.line == 1 and "'A'" in str(err)


def test_malformed_site_token(tmp_path: Path) -> None:
    err = read_error(tmp_path, "protein_sites", ">sp|P1|\t#2\t#x1\nMKAK\n", residues="K")
    assert err.line == 1 and "'#x1'" in str(err)


def test_protein_with_padding_character_is_rejected(tmp_path: Path) -> None:
    err = read_error(tmp_path, "protein_sites", ">sp|P1|\t#2\nMK-K\n", residues="K")
    assert err.line == 2 and "'-'" in str(err)


def test_musite_rows(tmp_path: Path) -> None:
    text = ">sp|Q1|NAME_HUMAN some protein\nMKS#LL\nT#AS\n>Q2\nSKT#\n"
    write(tmp_path, "m.fasta", text)
    table = make("musite_fasta", files={"test": "m.fasta"}, residues="ST", window=3, task="phospho").read(
        tmp_path
    )
    origin1, origin2 = f"{tmp_path / 'm.fasta'}:1", f"{tmp_path / 'm.fasta'}:4"
    rows = table.frame[["protein_id", "position", "residue", "window", "label", "origin"]]
    assert rows.values.tolist() == [
        ["Q1", 3, "S", "KSL", 1, origin1],
        ["Q1", 6, "T", "LTA", 1, origin1],
        ["Q1", 8, "S", "AS-", 0, origin1],
        ["Q2", 1, "S", "-SK", 0, origin2],
        ["Q2", 3, "T", "KT-", 1, origin2],
    ]
    assert set(table.frame["task"]) == {"phospho"} and set(table.frame["split"]) == {"test"}
    assert table.proteins == {"Q1": "MKSLLTAS", "Q2": "SKT"}


def test_musite_mark_on_wrong_residue(tmp_path: Path) -> None:
    err = read_error(tmp_path, "musite_fasta", ">Q1\nMK#S\n", residues="S")
    assert err.line == 1 and "'K'" in str(err)
    err = read_error(tmp_path, "musite_fasta", ">Q1\n#MKS\n", residues="S")
    assert "does not follow a residue" in str(err)


def test_config_validation() -> None:
    cls = get_registry().get("reader", "protein_sites").obj
    with pytest.raises(ValidationError, match="Extra inputs"):
        cls.Config(files={"train": "x"}, colour="red")
    with pytest.raises(ValidationError, match="unknown split"):
        cls.Config(files={"training": "x"})
    frag = get_registry().get("reader", "fasta_fragments").obj
    with pytest.raises(ValidationError, match="label"):
        frag.Config(files={"train": "x"}, header=r"(?P<id>.*)")
    assert frag.Config(files={"train": "x"}, header="sign").positive == ["+"]


# --- load_source ----------------------------------------------------------------------------


def test_load_catalogue_dataset(data_root: Path) -> None:
    table, info = load_source("UniPTMs:h1", base_dir=Path("."), data_root=data_root)
    assert isinstance(info, DatasetInfo)
    assert (info.name, info.ptm, info.residues, info.window) == (
        "uniptms:H1",
        "N-phosphorylation",
        "H",
        37,
    )
    assert info.paper and info.paper["counts"]["test"] == {"pos": 52, "neg": 52}
    assert info.paper["reference"]["UniPTMs"]["mcc"] == 0.705
    assert set(table.frame["task"]) == {"N-phosphorylation"}
    assert len(table) == 1128


@pytest.mark.parametrize("key", [d.id for d in catalog.select("uniptms")])
def test_catalogue_counts_are_what_the_files_hold(key: str, data_root: Path) -> None:
    entry = catalog.get(f"uniptms:{key}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K2's published bad site
        table, info = load_source(entry.name, base_dir=Path("."), data_root=data_root)
    assert counts(table) == entry.counts
    assert info.window == table.width == entry.window
    assert set(table.frame["residue"]) == set(entry.residues)


def test_catalogue_window_crops_fragments(data_root: Path) -> None:
    full, _ = load_source("uniptms:T1", base_dir=Path("."), data_root=data_root)
    table, info = load_source("uniptms:T1", base_dir=Path("."), data_root=data_root, window=21)
    assert info.window == table.width == 21
    assert table.windows[0] == full.windows[0][10:31]
    with pytest.raises(PtmkitError, match="wider than the 41-residue"):
        load_source("uniptms:T1", base_dir=Path("."), data_root=data_root, window=51)


def test_a_window_wider_than_a_presets_fragments_is_refused_at_parse_time(tmp_path: Path) -> None:
    """`ptmkit validate` and a suite's up-front check catch it, at the recipe line, without data."""
    from ptmkit import recipe as recipes
    from ptmkit.errors import RecipeError

    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\ndata:\n  source: uniptms:C2\n  window: 33\nfeatures:\n  onehot: {type: onehot}\n"
        "model:\n  nodes:\n    head: {type: mlp_head, inputs: [onehot]}\n"
    )
    with pytest.raises(
        RecipeError, match=r"r.yaml:4: data.window: data.window 33 is wider than the 31-residue"
    ):
        recipes.load(path)
    assert recipes.load(path, ["data.window=31"]).data.window == 31
    assert recipes.load(path, ["data.source=uniptms:K2"]).data.window == 33  # proteins: any window


def test_catalogue_k2_warns_and_uses_window(data_root: Path) -> None:
    with pytest.warns(UserWarning) as record:
        table, info = load_source("uniptms:K2", base_dir=Path("."), data_root=data_root, window=15)
    assert info.window == table.width == 15
    assert set(table.frame["task"]) == {"succinylation"}
    assert len(table.meta["bad_sites"]) == 1
    assert any("P15559 307" in str(w.message) for w in record)


def test_catalogue_errors(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(PtmkitError, match="available: uniptms:T1, uniptms:T2"):
        load_source("uniptms:Z9", base_dir=tmp_path, data_root=data_root)
    with pytest.raises(PtmkitError, match="not in the authors' repository"):
        load_source("uniptms:H2", base_dir=tmp_path, data_root=data_root)
    with pytest.raises(PtmkitError) as err:
        load_source("uniptms:H1", base_dir=tmp_path, data_root=tmp_path)
    message = str(err.value)
    assert "H1/train.csv" in message and "ptmkit data fetch uniptms:H1" in message
    assert "PTMKIT_DATA" in message


def test_mapping_source(data_root: Path) -> None:
    source = {
        "reader": "posneg_fasta",
        "ptm": "S-sulfhydration",
        "residues": "C",
        "positive": "C2/positive1.txt",
        "negative": "C2/negative1.txt",
        "terminal_pad": "X",
        "window": 21,
    }
    table, info = load_source(source, base_dir=data_root / "uniptms", data_root=data_root)
    assert (info.name, info.ptm, info.residues, info.window) == (
        "posneg_fasta:positive1",  # the reader and its first file's stem (issue 11)
        "S-sulfhydration",
        "C",
        21,
    )
    assert info.paper is None
    assert set(table.frame["task"]) == {"S-sulfhydration"}


def test_mapping_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"\n  data\.source\.files: Field required"):
        load_source({"reader": "fasta_fragments"}, base_dir=tmp_path, data_root=tmp_path)
    with pytest.raises(RecipeError, match=r"data\.source\.window: window must be a positive odd width"):
        load_source(
            {"reader": "protein_sites", "files": {"train": "x"}, "residues": "K", "window": 4},
            base_dir=tmp_path,
            data_root=tmp_path,
        )
    with pytest.raises(
        RecipeError, match=r"data\.source\.reader: unknown reader plugin 'csv_site'.*Did you mean 'csv_sites'"
    ):
        load_source({"reader": "csv_site"}, base_dir=tmp_path, data_root=tmp_path)
    with pytest.raises(
        RecipeError, match=r"data\.source\.header_regex: unknown key for 'csv_sites'; valid keys: .*delimiter"
    ):
        load_source(
            {"reader": "csv_sites", "files": {"train": "x"}, "header_regex": "x"},
            base_dir=tmp_path,
            data_root=tmp_path,
        )
    with pytest.raises(RecipeError, match="reader"):
        load_source({"files": {}}, base_dir=tmp_path, data_root=tmp_path)


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PTMKIT_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "x") == tmp_path / "x"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("PTMKIT_DATA")
    assert resolve_data_root().parts[-2:] == ("ptmkit", "data")
