"""Sequence context for language-model features: what to embed for each window, and chunking.

* Whole-protein rows (the table has ``proteins`` and the row's protein and position are known):
  the full protein is embedded once and each window is sliced from it, so a site sees its whole
  protein as context, not just its window.
* Fragment rows (no protein, or position ``<NA>``): the window's own residues are embedded. Padding
  (``-``) is never given to the model; each maximal run of non-padding letters is embedded as one
  sequence, and letters such as ``X`` inside it stay as they are.

Proteins longer than the model's limit (``max_length`` residues) are embedded in overlapping chunks
(``ptmkit.units.chunk_spans``, which protein mode cuts with too) and stitched (``chunk_owner``):
every residue takes its vector from the chunk in which it lies farthest from an artificial chunk
edge (a protein end is not an edge: the model saw the real terminus there). With chunk starts
``step = max_length - overlap`` apart and the last chunk aligned to the protein end, this switches
chunks in the middle of each overlap, so every residue keeps at least ``overlap // 2`` residues of
context on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptmkit.alphabet import PAD
from ptmkit.errors import PtmkitError
from ptmkit.sitetable import SiteTable
from ptmkit.units import chunk_owner, chunk_spans

__all__ = ["Segment", "chunk_owner", "chunk_spans", "plan_segments", "stitch"]

_RUN = re.compile(f"[^{re.escape(PAD)}]+")


@dataclass(frozen=True)
class Segment:
    """Window columns ``[win_start, win_start + length)`` of row ``row`` are residues
    ``[seq_start, seq_start + length)`` of sequence ``seq``."""

    row: int
    seq: str
    seq_start: int
    win_start: int
    length: int


def plan_segments(table: SiteTable) -> list[Segment]:
    """Where each row's real residues come from (see the module docstring)."""
    if not len(table):
        return []
    width = table.width
    half = width // 2
    frame = table.frame
    proteins = table.proteins
    segments: list[Segment] = []
    rows = zip(frame["window"], frame["protein_id"], frame["position"], frame["origin"], strict=True)
    for i, (window, pid, pos, origin) in enumerate(rows):
        seq = proteins.get(pid) if proteins and not pd.isna(pos) else None
        if seq is None:
            segments.extend(
                Segment(i, m.group(), 0, m.start(), len(m.group())) for m in _RUN.finditer(window)
            )
            continue
        centre = int(pos) - 1
        if not 0 <= centre < len(seq):
            raise PtmkitError(f"{origin}: position {pos} is outside protein {pid!r} ({len(seq)} residues)")
        lo, hi = max(0, centre - half), min(len(seq), centre + half + 1)
        start = lo - (centre - half)
        expected = PAD * start + seq[lo:hi] + PAD * (width - start - (hi - lo))
        if expected != window:
            raise PtmkitError(
                f"{origin}: window {window!r} does not match protein {pid!r} around position {pos} "
                f"({expected!r}); the embedding would be sliced from the wrong residues"
            )
        segments.append(Segment(i, seq, lo, start, hi - lo))
    return segments


def stitch(length: int, spans: list[tuple[int, int]], parts: list[np.ndarray]) -> np.ndarray:
    """Assemble the [length, D] embedding from per-chunk embeddings using :func:`chunk_owner`."""
    if len(spans) == 1:
        return parts[0]
    owner = chunk_owner(length, spans)
    out = np.empty((length, parts[0].shape[1]), dtype=parts[0].dtype)
    for k, (start, _) in enumerate(spans):
        mine = np.nonzero(owner == k)[0]
        out[mine] = parts[k][mine - start]
    return out
