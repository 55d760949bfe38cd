"""PTM-Mamba's vocabulary and tokenizer, in pure Python, and converters from ptmkit's sources.

The 59 ids are PTM-Mamba's own, in its order (8 specials, 25 residue letters, ``PTM``, 25 PTM
tokens), so released checkpoints' embeddings line up. A modified residue is written by replacing
its letter with the PTM's token: ``M<N-acetylalanine>K...``. Converters turn a SiteTable (any
reader's output: ``#``-marked FASTA, whole proteins with site lists, labelled fragments) into such
sequences through :data:`PTM_TOKENS`, the table of (PTM name, residue) -> token.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from ptmkit.alphabet import PAD
from ptmkit.errors import PtmkitError
from ptmkit.sitetable import SiteTable

SPECIALS = ("<cls>", "<pad>", "<eos>", "<unk>", ".", "-", "<null_1>", "<mask>")
RESIDUES = tuple("LAGVSERTIDPKQNFYMHWCXBUZO")
PTM_MARKER = "PTM"
PTMS = (
    "<N-linked (GlcNAc...) asparagine>",
    "<Pyrrolidone carboxylic acid>",
    "<Phosphoserine>",
    "<Phosphothreonine>",
    "<N-acetylalanine>",
    "<N-acetylmethionine>",
    "<N6-acetyllysine>",
    "<Phosphotyrosine>",
    "<S-diacylglycerol cysteine>",
    "<N6-(pyridoxal phosphate)lysine>",
    "<N-acetylserine>",
    "<N6-carboxylysine>",
    "<N6-succinyllysine>",
    "<S-palmitoyl cysteine>",
    "<O-(pantetheine 4'-phosphoryl)serine>",
    "<Sulfotyrosine>",
    "<O-linked (GalNAc...) threonine>",
    "<Omega-N-methylarginine>",
    "<N-myristoyl glycine>",
    "<4-hydroxyproline>",
    "<Asymmetric dimethylarginine>",
    "<N5-methylglutamine>",
    "<4-aspartylphosphate>",
    "<S-geranylgeranyl cysteine>",
    "<4-carboxyglutamate>",
)
#: PTM token -> the residue it modifies (from the UniProt names)
TOKEN_RESIDUE: dict[str, str] = dict(zip(PTMS, "NQSTAMKYCKSKKCSYTRGPRQDCE", strict=True))
#: id -> token, PTM-Mamba's order (59 ids)
VOCAB: tuple[str, ...] = (*SPECIALS, *RESIDUES, PTM_MARKER, *PTMS)
IDS: dict[str, int] = {t: i for i, t in enumerate(VOCAB)}

#: (PTM name as sources call it, lower case; residue) -> PTM-Mamba token. A source whose PTM and
#: residue are not here cannot be written in tokens (docs/ptm-mamba.md lists the table).
PTM_TOKENS: dict[tuple[str, str], str] = {
    ("phosphorylation", "S"): "<Phosphoserine>",
    ("phosphorylation", "T"): "<Phosphothreonine>",
    ("phosphorylation", "Y"): "<Phosphotyrosine>",
    ("succinylation", "K"): "<N6-succinyllysine>",
    ("acetylation", "K"): "<N6-acetyllysine>",
    ("n-linked glycosylation", "N"): "<N-linked (GlcNAc...) asparagine>",
    ("o-glycosylation", "T"): "<O-linked (GalNAc...) threonine>",
    ("o-linked glycosylation", "T"): "<O-linked (GalNAc...) threonine>",
    ("methylation", "R"): "<Omega-N-methylarginine>",
    ("palmitoylation", "C"): "<S-palmitoyl cysteine>",
    ("s-palmitoylation", "C"): "<S-palmitoyl cysteine>",
    ("sulfation", "Y"): "<Sulfotyrosine>",
    ("hydroxylation", "P"): "<4-hydroxyproline>",
    ("carboxylation", "E"): "<4-carboxyglutamate>",
    ("myristoylation", "G"): "<N-myristoyl glycine>",
}

_TOKEN = re.compile(r"<[^<>]*>|.")


def ptm_token(ptm: str, residue: str) -> str:
    """The token of a modified ``residue`` of PTM type ``ptm``; an unmapped pair is an error
    naming the table and what it holds for that residue."""
    key = (ptm.strip().lower(), residue.upper())
    if key in PTM_TOKENS:
        return PTM_TOKENS[key]
    same = sorted({p for p, r in PTM_TOKENS if r == key[1]})
    have = f"; for {key[1]} it maps {', '.join(same)}" if same else f"; it maps no PTM of {key[1]}"
    raise PtmkitError(
        f"PTM type {ptm!r} on {residue!r} has no PTM-Mamba token in ptmkit_plugins.ptm_mamba.tokens."
        f"PTM_TOKENS (docs/ptm-mamba.md){have}"
    )


def tokenize(text: str, *, where: str = "sequence") -> list[str]:
    """Split ``M<N-acetylalanine>K...`` into tokens; an unknown token or letter is an error with
    its 1-based token position and the close matches."""
    tokens = _TOKEN.findall(text)
    for i, token in enumerate(tokens, 1):
        if token not in IDS:
            close = difflib.get_close_matches(token, VOCAB, n=3, cutoff=0.6)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise PtmkitError(f"{where}: unknown token {token!r} at token {i}{hint}")
    return tokens


def encode(text: str, *, where: str = "sequence") -> list[int]:
    """Token ids of a sequence (:func:`tokenize`), no special tokens added."""
    return [IDS[t] for t in tokenize(text, where=where)]


def decode(ids: list[int]) -> str:
    """The sequence of token ids (the inverse of :func:`encode`)."""
    bad = [i for i in ids if not 0 <= i < len(VOCAB)]
    if bad:
        raise PtmkitError(f"token id {bad[0]} is outside PTM-Mamba's vocabulary (0..{len(VOCAB) - 1})")
    return "".join(VOCAB[i] for i in ids)


def modified(sequence: str, sites: Mapping[int, str]) -> str:
    """``sequence`` with the residue at each 1-based position replaced by its token."""
    out = list(sequence)
    for position, token in sites.items():
        if not 1 <= position <= len(sequence):
            raise PtmkitError(f"site {position} lies outside the sequence (1..{len(sequence)})")
        out[position - 1] = token
    return "".join(out)


def table_sequences(table: SiteTable, ptms: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Token sequences of a SiteTable: ``(id, sequence, origin)`` per whole protein (every
    positive row's residue replaced by its PTM token) and per fragment without a protein (its
    window without padding; a positive's centre replaced). A row's PTM is ``ptms[task]`` (a
    multi-task table's tasks are names like ``K2``), else its ``task`` (a source's PTM name)."""
    ptms = dict(ptms or {})
    frame = table.frame
    known = frame["position"].notna() & frame["protein_id"].isin(table.proteins)
    out: list[tuple[str, str, str]] = []
    positives = frame[known & (frame["label"] == 1)]
    # each protein's first row names where it came from
    origins = frame[known].groupby("protein_id", sort=False)["origin"].first().to_dict()
    sites: dict[str, dict[int, str]] = {pid: {} for pid in origins}
    for row in positives.itertuples(index=False):
        ptm = ptms.get(str(row.task), str(row.task))
        sites[row.protein_id][int(row.position)] = ptm_token(ptm, str(row.residue))
    for pid, marks in sites.items():
        out.append((pid, modified(table.proteins[pid], marks), origins[pid]))
    for row in frame[~known].itertuples(index=False):
        window = str(row.window)
        half = len(window) // 2
        if row.label == 1:
            token = ptm_token(ptms.get(str(row.task), str(row.task)), str(row.residue))
            window = window[:half] + token + window[half + 1 :]
        out.append((str(row.protein_id), window.strip(PAD), str(row.origin)))
    return out
