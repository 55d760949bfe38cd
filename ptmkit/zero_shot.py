"""Zero-shot PTM scoring with a PTM-aware language model: mask a residue, read its PTM tokens.

For each candidate residue of a protein the model sees the protein with that residue replaced by
the mask token and returns a distribution over its vocabulary; the probability of a
modified-residue token there (``<Phosphoserine>`` at a serine) is the residue's zero-shot score
for that PTM (PTM-Mamba's zero-shot PTM discovery). ``spacing`` masks several candidates of one
protein in the same pass when they are at least that many residues apart (0: one per pass,
exact); long proteins run as overlapping chunks of ``context`` tokens, each residue read from
the chunk where it is most central (``ptmkit.units``), as everywhere else in ptmkit. A model
with a context feature (PTM-Mamba's ESM-2) gets it on each pass, the masked residues hidden there
too, as in pretraining.

Used by ``ptmkit ptm-scan`` (a long table per residue and token) and by ``ptmkit evaluate`` on a
language model (the scores of a labelled source's rows: AUC and AP; a zero-shot score has no
validation-tuned threshold, so no threshold metrics are reported).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import language_models
from .alphabet import PAD
from .errors import PtmkitError
from .plugin_api import LanguageModel
from .sitetable import SiteTable
from .units import chunk_owner, chunk_spans


@dataclass(frozen=True)
class Query:
    """Score ``tokens`` at 0-based ``position`` of protein ``key`` (one row of the output)."""

    key: int
    position: int
    tokens: tuple[int, ...]


def _groups(positions: Sequence[int], spacing: int) -> list[list[int]]:
    """Positions (sorted) split into the fewest groups whose members are ``spacing`` apart."""
    if spacing <= 0:
        return [[p] for p in positions]
    groups: list[list[int]] = []
    for p in sorted(positions):
        for g in groups:
            if p - g[-1] >= spacing:
                g.append(p)
                break
        else:
            groups.append([p])
    return groups


def _passes(
    model: LanguageModel, sequences: Sequence[str], queries: Sequence[Query], context: int, spacing: int
) -> Iterator[tuple[list[int], list[tuple[int, int]]]]:
    """``(token ids with masks, [(query index, column)])`` per forward pass."""
    by_key: dict[int, list[int]] = {}
    for qi, q in enumerate(queries):
        by_key.setdefault(q.key, []).append(qi)
    for key, qis in by_key.items():
        seq = sequences[key]
        ids, lead = model.residue_ids(seq)
        trail = len(ids) - lead - len(seq)
        room = context - lead - trail
        if room < 1:
            raise PtmkitError(f"context {context} leaves no room for residues beside the special tokens")
        spans = chunk_spans(len(seq), room, min(room // 4, max(room - 1, 0)))
        owner = chunk_owner(len(seq), spans)
        per_chunk: dict[int, dict[int, list[int]]] = {}
        for qi in qis:
            p = queries[qi].position
            per_chunk.setdefault(int(owner[p]), {}).setdefault(p, []).append(qi)
        for k, at in per_chunk.items():
            start, end = spans[k]
            piece, piece_lead = model.residue_ids(seq[start:end])
            for group in _groups(list(at), spacing):
                masked = list(piece)
                cols = []
                for p in group:
                    col = piece_lead + p - start
                    masked[col] = model.mask_id
                    cols += [(qi, col) for qi in at[p]]
                yield masked, cols


def score(
    model: LanguageModel,
    sequences: Sequence[str],
    queries: Sequence[Query],
    *,
    context: int = 1024,
    spacing: int = 0,
    batch_tokens: int = 16384,
    device: str = "cpu",
    progress: bool = False,
) -> list[np.ndarray]:
    """For each query, the probabilities of its tokens at its masked position."""
    passes = list(_passes(model, sequences, queries, context, spacing))
    passes.sort(key=lambda p: len(p[0]))
    out: list[np.ndarray | None] = [None] * len(queries)
    model = model.to(device).eval()
    with (
        tqdm(total=len(queries), unit="site", disable=not progress, desc="zero-shot", leave=False) as bar,
        torch.inference_mode(),
    ):
        start = 0
        while start < len(passes):
            # passes are sorted by length: the batch's last pass is its longest
            stop = start + 1
            while stop < len(passes) and len(passes[stop][0]) * (stop - start + 1) <= batch_tokens:
                stop += 1
            batch = passes[start:stop]
            ids = torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(p[0]) for p in batch], batch_first=True, padding_value=model.pad_id
            ).to(device)
            _, logits = model(ids, language_models.context_batch(model, ids))
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            for row, (_, cols) in enumerate(batch):
                for qi, col in cols:
                    out[qi] = probs[row, col, list(queries[qi].tokens)].numpy()
                bar.update(len(cols))
            start = stop
    return [o if o is not None else np.zeros(0) for o in out]


def candidates(
    model: LanguageModel, residues: str | None = None, only: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Residue letter -> the PTM tokens scored there (all the model has, or ``only`` those)."""
    table = model.ptm_tokens()
    if not table:
        raise PtmkitError(f"{type(model).__name__} has no PTM tokens to score")
    if only:
        bad = [t for t in only if t not in table]
        if bad:
            raise PtmkitError(f"unknown PTM token {bad[0]!r}; the model has {', '.join(table)}")
        table = {t: r for t, r in table.items() if t in only}
    out: dict[str, list[str]] = {}
    for token, residue in table.items():
        if residues is None or residue in residues:
            out.setdefault(residue, []).append(token)
    if not out:
        raise PtmkitError(f"no PTM token of the model modifies {residues!r}")
    return out


def scan(
    model: LanguageModel,
    proteins: dict[str, str],
    *,
    residues: str | None = None,
    tokens: Sequence[str] = (),
    **kw: object,
) -> pd.DataFrame:
    """The long table of ``ptmkit ptm-scan``: one row per (protein, candidate residue, token)."""
    table = candidates(model, residues, tokens)
    vocab = {t: i for i, t in enumerate(model.vocab)}
    ids = list(proteins)
    seqs = [proteins[i] for i in ids]
    queries = [
        Query(k, p, tuple(vocab[t] for t in table[c]))
        for k, s in enumerate(seqs)
        for p, c in enumerate(s)
        if c in table
    ]
    probs = score(model, seqs, queries, **kw)  # type: ignore[arg-type]
    rows = []
    for q, p in zip(queries, probs, strict=True):
        letter = seqs[q.key][q.position]
        for token_id, value in zip(q.tokens, p, strict=True):
            rows.append((ids[q.key], q.position + 1, letter, model.vocab[token_id], float(value)))
    frame = pd.DataFrame(rows, columns=["protein_id", "position", "residue", "ptm_token", "probability"])
    frame["rank_in_protein"] = (
        frame.groupby(["protein_id", "ptm_token"])["probability"]
        .rank(ascending=False, method="first")
        .astype(int)
    )
    return frame


def table_scores(
    model: LanguageModel, table: SiteTable, ptm: str, *, token: str | None = None, **kw: object
) -> tuple[np.ndarray, list[str]]:
    """Zero-shot score of every row of a labelled table, and the token scored: the probability
    of the token of ``ptm`` on the row's residue (``model.ptm_token``; or ``token`` for every
    row) at the masked residue, read in its whole protein (a fragment without a protein: in its
    window)."""
    frame = table.frame
    vocab = {t: i for i, t in enumerate(model.vocab)}
    if token is not None and token not in vocab:
        raise PtmkitError(f"unknown token {token!r}; PTM tokens: {', '.join(model.ptm_tokens())}")
    seqs: list[str] = []
    keys: dict[str, int] = {}
    queries = []
    names = []
    for row in frame.itertuples(index=False):
        name = token or model.ptm_token(ptm, str(row.residue))
        names.append(name)
        token_id = vocab[name]
        pid = str(row.protein_id)
        if pd.notna(row.position) and pid in table.proteins:
            seq, position = table.proteins[pid], int(row.position) - 1
            if pid not in keys:
                keys[pid] = len(seqs)
                seqs.append(seq)
            key = keys[pid]
        else:
            window = str(row.window)
            half = len(window) // 2
            left = len(window[:half]) - len(window[:half].lstrip(PAD))
            seq, position = window.strip(PAD), half - left
            key = len(seqs)
            seqs.append(seq)
        queries.append(Query(key, position, (token_id,)))
    probs = score(model, seqs, queries, **kw)  # type: ignore[arg-type]
    return np.array([float(p[0]) for p in probs]), names


def report(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Threshold-free metrics of zero-shot scores (AUC, AP) and the AP of a random ranking."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(set(labels.tolist())) < 2:
        raise PtmkitError("zero-shot metrics need positive and negative sites")
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "ap": float(average_precision_score(labels, scores)),
        "ap_random": float(np.mean(labels)),
        "sites": float(len(labels)),
        "positive": float(np.sum(labels)),
    }


@dataclass
class ZeroShotEvaluation:
    source: str
    split: str | None
    table: SiteTable
    scores: np.ndarray
    tokens: list[str]
    report: dict[str, float]
    by_token: dict[str, dict[str, float]]
    split_from: str | None = None

    def frame(self) -> pd.DataFrame:
        rows = {"all": self.report, **{f"{t}": r for t, r in self.by_token.items()}}
        frame = pd.DataFrame.from_dict(rows, orient="index")[["sites", "positive", "auc", "ap", "ap_random"]]
        frame[["sites", "positive"]] = frame[["sites", "positive"]].astype(int)
        frame.index.name = "scored token"
        return frame

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "split": self.split,
            "split_from": self.split_from,
            "protocol": "zero-shot: the probability of the PTM token at the masked residue; no threshold",
            "metrics": self.report,
            "by_token": self.by_token,
        }


def held_out_split(model: LanguageModel, table: SiteTable, split: str) -> SiteTable:
    """Rows of the proteins a pretraining run held out as ``split`` (in its package), for a source
    without a split of its own."""
    held = (getattr(model, "package_info", {}) or {}).get("held_out", {}).get(split)
    if not held:
        raise PtmkitError(
            f"the source has no {split!r} split, and the model's package lists no held-out {split} proteins"
        )
    keep = table.frame["protein_id"].astype(str).isin(set(held)).to_numpy()
    if not keep.any():
        raise PtmkitError(f"none of the model's held-out {split} proteins are in this source")
    return table.subset(keep)


def evaluate_source(
    model: LanguageModel,
    source: str,
    *,
    reader: str | None = None,
    split: str | None = None,
    options: dict[str, object] | None = None,
    data_root: object,
    token: str | None = None,
    ptm: str | None = None,
    residues: str | None = None,
    **kw: object,
) -> ZeroShotEvaluation:
    """Zero-shot metrics of ``model`` on a labelled source (a catalogue name or an annotated
    file), optionally one split (a source without that split: the proteins the model's
    pretraining held out as it, from its package)."""
    from pathlib import Path

    from . import catalog
    from .datasets import read_source
    from .evaluate import check_reader_options, guess_reader
    from .hooks import get_registry
    from .recipe import parse_source

    registry = get_registry()
    if catalog.is_catalog_name(source):
        if reader or options:
            raise PtmkitError("--reader/--option apply to files; a dataset preset brings its own reader")
        use = parse_source(source, registry, prefix=("SOURCE",))
        if residues:
            use = replace(use, residues=residues.upper())
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise PtmkitError(f"{source}: no such file and not a dataset preset (like uniptms:K2)")
        if not (ptm and residues):
            raise PtmkitError(
                f"{source}: a file's sites need their PTM type and residues for a zero-shot evaluation: "
                "give --ptm (e.g. succinylation) and --residues (e.g. K)"
            )
        name = reader or guess_reader(path)
        check_reader_options(name, options or {})
        settings = {
            "reader": name,
            "files": {"unsplit": str(path.resolve())},  # --split: the pretraining's held-out proteins
            "ptm": ptm,
            "residues": residues,
            **(options or {}),
        }
        use = parse_source(settings, registry, prefix=("SOURCE",))
    table, info = read_source(use, base_dir=Path.cwd(), data_root=Path(str(data_root)), window=None)
    split_from = None
    if split:
        if split in set(table.frame["split"]):
            table = table.split(split)
        else:
            table = held_out_split(model, table, split)
            split_from = "the model's pretraining held-out proteins"
    scores, names = table_scores(model, table, info.ptm, token=token, **kw)
    labels = table.labels
    by_token = {}
    for name in dict.fromkeys(names):
        sel = np.array([n == name for n in names])
        if len(set(labels[sel].tolist())) == 2:
            by_token[name] = report(labels[sel], scores[sel])
    return ZeroShotEvaluation(
        source, split, table, scores, names, report(labels, scores), by_token, split_from
    )
