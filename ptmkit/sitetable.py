"""SiteTable: one row per candidate site, the single currency between readers and features."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .alphabet import PAD

#: Column order of every SiteTable frame.
COLUMNS = ["protein_id", "position", "residue", "window", "label", "task", "split", "origin"]
#: Split names the core understands. ``unsplit`` rows are assigned by the splitter.
SPLITS = ("train", "valid", "test", "unsplit")
#: ``meta`` key a reader sets to False when ``protein_id`` names a record (``Pos_1``), not a
#: protein: the data check then compares no proteins and ``data.split.group: protein`` refuses.
PROTEIN_IDS = "protein_ids"


@dataclass
class SiteTable:
    """Candidate sites with their sequence context.

    Columns: ``protein_id`` (str), ``position`` (1-based position of the centre residue in its
    protein, <NA> when a fragment file does not say), ``residue`` (centre letter), ``window``
    (odd-width context centred on the site, padded with ``-``), ``label`` (0/1), ``task`` (PTM
    name), ``split`` (train/valid/test/unsplit) and ``origin`` (``file:line`` the row came from,
    so every report can point back at the source).

    ``proteins`` holds full sequences when the source has them (whole-protein formats), so that
    protein-level features (language models) can embed whole proteins and slice windows.
    """

    frame: pd.DataFrame
    proteins: dict[str, str] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"SiteTable frame lacks columns {missing}")
        self.frame = self.frame[COLUMNS].reset_index(drop=True)

    @classmethod
    def from_records(
        cls,
        records: list[dict[str, object]],
        proteins: dict[str, str] | None = None,
        meta: dict[str, object] | None = None,
    ) -> SiteTable:
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        frame["position"] = frame["position"].astype("Int64")
        frame["label"] = frame["label"].astype("int64")
        return cls(frame, dict(proteins or {}), dict(meta or {}))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def windows(self) -> list[str]:
        return self.frame["window"].tolist()

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.int64)

    @property
    def width(self) -> int:
        """Window width (all windows share it; 0 for an empty table)."""
        return len(self.frame["window"].iat[0]) if len(self.frame) else 0

    def subset(self, mask: np.ndarray | pd.Series) -> SiteTable:
        """Rows where ``mask`` is true, sharing proteins and meta."""
        return SiteTable(self.frame[np.asarray(mask)].copy(), self.proteins, self.meta)

    def split(self, name: str) -> SiteTable:
        return self.subset(self.frame["split"].to_numpy() == name)

    def concat(self, other: SiteTable) -> SiteTable:
        frame = pd.concat([self.frame, other.frame], ignore_index=True)
        return SiteTable(frame, {**self.proteins, **other.proteins}, {**self.meta, **other.meta})

    def crop(self, width: int) -> SiteTable:
        """Centre-crop every window to ``width`` (odd, not larger than the current width)."""
        current = self.width
        if width == current or not len(self):
            return self
        if width % 2 == 0 or width > current:
            raise ValueError(f"cannot crop windows of width {current} to {width}")
        start = (current - width) // 2
        frame = self.frame.copy()
        frame["window"] = frame["window"].str.slice(start, start + width)
        return SiteTable(frame, self.proteins, self.meta)

    def fit_width(self, width: int) -> SiteTable:
        """Windows of ``width``: centre-cropped when wider, centred and padded with ``-`` when
        narrower (so tasks with fragments of different widths share one table)."""
        if width % 2 == 0 or width < 1:
            raise ValueError(f"window width must be odd and positive, got {width}")
        if width <= self.width or not len(self):
            return self.crop(width)
        pad = PAD * ((width - self.width) // 2)
        frame = self.frame.copy()
        frame["window"] = pad + frame["window"] + pad
        return SiteTable(frame, self.proteins, self.meta)

    def digest(self) -> str:
        """sha256 over the rows that matter for learning: a run's data fingerprint."""
        h = hashlib.sha256()
        # the task joins the fingerprint only where there are several (one-task digests unchanged)
        several = self.frame["task"].nunique() > 1
        names = ["protein_id", "position", "window", "label", "split"] + (["task"] if several else [])
        cols = self.frame[names]
        for row in cols.itertuples(index=False):
            h.update("\t".join(map(str, row)).encode())
            h.update(b"\n")
        return h.hexdigest()


def windows_at(sequence: str, positions: Sequence[int], width: int) -> list[str]:
    """Contexts of odd ``width`` centred on each 1-based position, padded with ``-`` past the ends.

    The one window cutter: readers and ``ptmkit predict`` both cut through it, so a site gets the
    same window whichever command reads it. One padded copy of the sequence, then a slice per site.
    """
    if width % 2 == 0 or width < 1:
        raise ValueError(f"window width must be odd and positive, got {width}")
    if len(positions) and (min(positions) < 1 or max(positions) > len(sequence)):
        bad = next(p for p in positions if not 1 <= p <= len(sequence))
        raise ValueError(f"position {bad} lies outside the sequence (1..{len(sequence)})")
    pad = PAD * (width // 2)
    padded = pad + sequence + pad
    return [padded[p - 1 : p - 1 + width] for p in positions]


def window_at(sequence: str, position: int, width: int) -> str:
    """The window of one site (:func:`windows_at`; cut many sites of a protein with that)."""
    return windows_at(sequence, (position,), width)[0]
