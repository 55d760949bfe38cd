"""Whole-protein units: the pieces of proteins a protein-mode model runs on, and their batches.

With ``data.unit: protein`` one pass of the model sees a whole protein (a long one in overlapping
chunks) and a per-residue head scores every residue at once. Rows stay what labels, splits,
metrics and thresholds are about: each row is read at its residue's column of the unit that owns
it, so both modes give one score per row and share everything downstream of the model.

A unit is written as a centred window (``windows_at``) around the middle residue of its piece, so
every feature encodes it as it encodes a site's window, and the language-model features slice it
from their whole-protein embedding. Units are grouped into length buckets (widths about sqrt(2)
apart) so a batch pads little. Rows without a protein (fragments) are units of their own window.
The encoded form and its batches are ``ptmkit.inference.UnitEncoded``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import PtmkitError
from .sitetable import COLUMNS, SiteTable, windows_at

#: The smallest bucket width (shorter proteins are padded to it).
MIN_WIDTH = 17


def chunk_spans(length: int, max_length: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` chunks of at most ``max_length`` residues covering ``length`` residues.

    Starts are ``0, step, 2*step, ...`` with ``step = max_length - overlap``; the last chunk is
    aligned to the end, so neighbouring chunks share at least ``overlap`` residues.
    """
    if max_length < 1 or not 0 <= overlap < max_length:
        raise ValueError(f"need max_length >= 1 and 0 <= overlap < max_length, got {max_length}, {overlap}")
    if length <= max_length:
        return [(0, length)]
    step = max_length - overlap
    spans = []
    start = 0
    while start + max_length < length:
        spans.append((start, start + max_length))
        start += step
    spans.append((length - max_length, length))
    return spans


def chunk_owner(length: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """Index of the span each residue is read from: the one where the residue is farthest from an
    artificial edge (protein ends do not count); ties go to the earlier chunk."""
    idx = np.arange(length)
    best = np.full(length, -1, dtype=np.int64)
    best_score = np.full(length, -np.inf)
    for k, (start, end) in enumerate(spans):
        inside = (idx >= start) & (idx < end)
        left = np.where(start > 0, idx - start, np.inf)
        right = np.where(end < length, end - 1 - idx, np.inf)
        score = np.where(inside, np.minimum(left, right), -np.inf)
        better = score > best_score
        best[better] = k
        best_score[better] = score[better]
    if (best < 0).any():
        raise ValueError("chunks do not cover the sequence")
    return best


def bucket_widths(chunk: int) -> list[int]:
    """Odd widths from ``MIN_WIDTH`` up to ``chunk``, each about sqrt(2) times the last (padding a
    unit to its bucket costs under 1.42x, 1.2x on average)."""
    widths = [chunk]
    while widths[-1] > MIN_WIDTH:
        smaller = max(MIN_WIDTH, math.ceil(widths[-1] / math.sqrt(2)) | 1)
        if smaller >= widths[-1]:
            break
        widths.append(smaller)
    return sorted(widths)


@dataclass
class UnitPlan:
    """Where each row of a table is scored: ``tables[bucket[i]]`` row ``unit[i]``, column
    ``column[i]``. Each bucket's table has one row per unit (all of one width)."""

    tables: list[SiteTable]
    bucket: np.ndarray
    unit: np.ndarray
    column: np.ndarray


def on_proteins(table: SiteTable) -> np.ndarray:
    """bool [N]: rows whose whole protein is known (a position in one of ``table.proteins``);
    in protein mode these are read from protein units, the others from their own window."""
    frame = table.frame
    return frame["position"].notna().to_numpy() & frame["protein_id"].isin(table.proteins).to_numpy()


def windowed_tasks(table: SiteTable) -> list[str]:
    """Tasks none of whose rows has its whole protein (fragment sets): protein mode reads them
    from their own windows, in training and in predict."""
    frame = table.frame
    having = set(frame.loc[on_proteins(table), "task"].unique())
    return [t for t in frame["task"].unique() if t not in having]


def own_windows(table: SiteTable, width: int, window: int) -> SiteTable:
    """The rows as a task trained on fragments of ``width`` saw them: each row's window re-cut at
    ``width`` from its protein (rows without one keep theirs) and centred and padded to the
    model's ``window``. Predict and evaluate score such tasks on these, never on protein units."""
    frame = table.frame.copy()
    known = on_proteins(table)
    if known.any():
        cut = [
            windows_at(table.proteins[pid], (int(p),), width)[0]
            for pid, p in zip(frame.loc[known, "protein_id"], frame.loc[known, "position"], strict=True)
        ]
        frame.loc[known, "window"] = SiteTable(frame.loc[known].assign(window=cut)).fit_width(window).windows
    rest = ~known
    if rest.any() and len(frame.loc[rest, "window"].iat[0]) != window:
        frame.loc[rest, "window"] = SiteTable(frame.loc[rest]).fit_width(window).windows
    return SiteTable(frame, table.proteins, table.meta)


def plan_units(
    table: SiteTable,
    chunk: int,
    overlap: int,
    windowed: np.ndarray | None = None,
    *,
    per_task: bool = False,
) -> UnitPlan:
    """Cut the proteins of ``table``'s rows into units (only pieces that own a row), and place
    every row. A row whose protein is known (``table.proteins`` and a position) is read from the
    chunk of its protein where it is most central (:func:`chunk_owner`); other rows, and rows
    where ``windowed`` is True (tasks trained on fragments), are units of their own window.
    ``per_task``: a piece is one unit per task of its rows (the unit table's ``task`` says which),
    for models conditioned on the task; otherwise one unit serves every task."""
    widths = bucket_widths(chunk)
    frame = table.frame
    n = len(frame)
    positions = frame["position"]
    known = on_proteins(table)
    if windowed is not None:
        known &= ~np.asarray(windowed, dtype=bool)
    # width -> (protein, centre, window, origin, task); (protein, task, start) -> width, unit, centre
    units: dict[int, list[tuple[str, int | None, str, str, str]]] = {}
    slot: dict[tuple[str, str, int], tuple[int, int, int]] = {}
    bucket_w = np.zeros(n, dtype=np.int64)
    unit = np.zeros(n, dtype=np.int64)
    column = np.zeros(n, dtype=np.int64)
    ids = frame["protein_id"].to_numpy()
    origins = frame["origin"].to_numpy()
    residues = frame["residue"].to_numpy().astype(str)
    tasks = frame["task"].to_numpy().astype(str)
    rows = np.nonzero(known)[0]
    pos = positions.to_numpy(dtype="float64", na_value=np.nan)
    group = [ids[rows], tasks[rows]] if per_task else ids[rows]
    for key_, where in pd.Series(rows).groupby(group, sort=False):
        pid = key_[0] if per_task else key_
        task = str(key_[1]) if per_task else "unit"
        sequence = table.proteins[pid]
        length = len(sequence)
        at = pos[where.to_numpy()].astype(np.int64)
        if (at < 1).any() or (at > length).any():
            bad = int(at[(at < 1) | (at > length)][0])
            raise PtmkitError(
                f"{origins[where.iat[0]]}: position {bad} is outside protein {pid!r} ({length} residues)"
            )
        letters = np.frombuffer(sequence.encode("ascii"), dtype="S1")[at - 1].astype(str)
        wrong = np.nonzero(letters != residues[where.to_numpy()])[0]
        if len(wrong):  # positions of another isoform would be read at the wrong residues
            k = wrong[0]
            raise PtmkitError(
                f"{origins[where.iat[k]]}: protein {pid!r} has {str(letters[k])!r} at position {at[k]}, but "
                f"the row's residue is {str(residues[where.iat[k]])!r}: a position of another sequence?"
            )
        spans = chunk_spans(length, chunk, overlap)
        owner = chunk_owner(length, spans)[at - 1] if len(spans) > 1 else np.zeros(len(at), dtype=np.int64)
        for k in np.unique(owner):
            start, end = spans[k]
            size = end - start
            width = next(w for w in widths if w >= (size | 1))
            key = (pid, task, start)
            if key not in slot:
                centre = start + (size + 1) // 2  # 1-based: the unit covers the whole piece
                window = windows_at(sequence, (centre,), width)[0]
                units.setdefault(width, []).append((pid, centre, window, origins[where.iat[0]], task))
                slot[key] = (width, len(units[width]) - 1, centre)
            w, u, centre = slot[key]
            mine = where.to_numpy()[owner == k]
            bucket_w[mine], unit[mine] = w, u
            column[mine] = pos[mine].astype(np.int64) - centre + w // 2
    alone = np.nonzero(~known)[0]
    windows = frame["window"].to_numpy()
    for i in alone:  # a fragment row is its own unit, read at its centre; no position: features
        width = len(windows[i])  # embed the window itself, as for any fragment
        listed = units.setdefault(width, [])
        listed.append((ids[i], None, windows[i], origins[i], str(tasks[i]) if per_task else "unit"))
        bucket_w[i], unit[i], column[i] = width, len(listed) - 1, width // 2
    order = sorted(units)
    tables = [_unit_table(units[w], table.proteins) for w in order]
    index = {w: b for b, w in enumerate(order)}
    bucket = np.array([index[w] for w in bucket_w], dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    return UnitPlan(tables, bucket, unit, column)


def _unit_table(units: list[tuple[str, int | None, str, str, str]], proteins: dict[str, str]) -> SiteTable:
    pids, centres, windows, origins, tasks = zip(*units, strict=True) if units else ((), (), (), (), ())
    frame = pd.DataFrame(
        {
            "protein_id": list(pids),
            "position": pd.array(list(centres), dtype="Int64"),
            "residue": [w[len(w) // 2] for w in windows],
            "window": list(windows),
            "label": np.zeros(len(pids), dtype=np.int64),
            "task": list(tasks),
            "split": "unsplit",
            "origin": list(origins),
        },
        columns=COLUMNS,
    )
    return SiteTable(frame, proteins)
