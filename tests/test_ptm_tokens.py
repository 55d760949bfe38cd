"""PTM-Mamba's vocabulary and tokenizer, and token sequences from real sources (issue 15, part 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ptmkit_plugins.ptm_mamba import tokens

from ptmkit.datasets import load_source
from ptmkit.errors import PtmkitError

DATA = Path(os.environ.get("PTMKIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def test_the_vocabulary_has_ptm_mambas_59_ids_in_its_order() -> None:
    assert len(tokens.VOCAB) == 59
    assert tokens.VOCAB[:8] == ("<cls>", "<pad>", "<eos>", "<unk>", ".", "-", "<null_1>", "<mask>")
    assert "".join(tokens.VOCAB[8:33]) == "LAGVSERTIDPKQNFYMHWCXBUZO"
    assert tokens.IDS["PTM"] == 33
    assert tokens.IDS["<N-linked (GlcNAc...) asparagine>"] == 34
    assert tokens.IDS["<Phosphoserine>"] == 36
    assert tokens.IDS["<N6-succinyllysine>"] == 46
    assert tokens.IDS["<4-carboxyglutamate>"] == 58


def test_a_modified_sequence_round_trips_through_ids() -> None:
    text = "M<N-acetylalanine>KS<Phosphoserine>L"
    ids = tokens.encode(text)
    assert ids == [tokens.IDS[t] for t in ("M", "<N-acetylalanine>", "K", "S", "<Phosphoserine>", "L")]
    assert tokens.decode(ids) == text


def test_unknown_tokens_are_refused_with_their_position_and_close_matches() -> None:
    with pytest.raises(
        PtmkitError, match=r"P1: unknown token '<Phosphoserin>' at token 3; close: <Phosphoserine>"
    ):
        tokens.encode("MK<Phosphoserin>L", where="P1")
    with pytest.raises(PtmkitError, match="unknown token 'J' at token 2"):
        tokens.encode("MJ")
    with pytest.raises(PtmkitError, match="outside PTM-Mamba's vocabulary"):
        tokens.decode([3, 59])


def test_an_unmapped_ptm_type_names_the_table() -> None:
    assert tokens.ptm_token("Succinylation", "k") == "<N6-succinyllysine>"
    with pytest.raises(
        PtmkitError, match=r"'N-phosphorylation' on 'H' has no PTM-Mamba token in .*PTM_TOKENS"
    ):
        tokens.ptm_token("N-phosphorylation", "H")
    with pytest.raises(PtmkitError, match="for S it maps phosphorylation"):
        tokens.ptm_token("sulfation", "S")


def test_k2_whole_proteins_become_token_sequences_with_every_listed_site() -> None:
    table, _ = load_source("uniptms:K2", base_dir=DATA, data_root=DATA, on_bad_site="warn")
    seqs = tokens.table_sequences(table)
    assert len(seqs) == len(table.proteins)
    by_id = {pid: seq for pid, seq, _ in seqs}
    pid = table.frame.loc[table.frame["label"] == 1, "protein_id"].iat[0]
    toks = tokens.tokenize(by_id[pid])
    assert len(toks) == len(table.proteins[pid])  # one token per residue
    marked = [i + 1 for i, t in enumerate(toks) if t == "<N6-succinyllysine>"]
    want = sorted(
        table.frame.loc[(table.frame["protein_id"] == pid) & (table.frame["label"] == 1), "position"]
    )
    assert marked == want
    total = sum(s.count("<N6-succinyllysine>") for _, s, _ in seqs)
    sites = table.frame.loc[table.frame["label"] == 1].drop_duplicates(["protein_id", "position"])
    assert total == len(sites)  # (a protein in both of K2's files is one sequence)


def test_marked_fasta_and_fragments_convert_and_fragments_of_an_unmapped_ptm_are_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.fasta").write_text(">sp|P1|X\nMKS#LLT#K\n")
    source = {
        "reader": "musite_fasta",
        "ptm": "phosphorylation",
        "residues": "ST",
        "files": {"unsplit": "p.fasta"},
    }
    table, _ = load_source(source, base_dir=tmp_path, data_root=tmp_path, window=5)
    assert tokens.table_sequences(table) == [
        ("P1", "MK<Phosphoserine>LL<Phosphothreonine>K", f"{tmp_path / 'p.fasta'}:1")
    ]
    frags, _ = load_source("uniptms:T1", base_dir=DATA, data_root=DATA)
    out = tokens.table_sequences(frags)  # the preset names its PTM O-glycosylation: in the table
    positive = next(s for (_, s, _), y in zip(out, frags.labels, strict=True) if y == 1)
    assert "<O-linked (GalNAc...) threonine>" in positive and "-" not in tokens.tokenize(positive)
    h1, _ = load_source("uniptms:H1", base_dir=DATA, data_root=DATA)
    with pytest.raises(PtmkitError, match="N-phosphorylation"):
        tokens.table_sequences(h1)
