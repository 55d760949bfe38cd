"""Seeded, stratified train/validation/test assignment for sources that lack some splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from .errors import PtmkitError
from .sitetable import SiteTable


def _carve(
    index: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels, minlength=2)
    stratify = labels if counts.min() >= 2 else None
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)


def assign_splits(table: SiteTable, *, valid: float, test: float, seed: int) -> SiteTable:
    """Give every row a split. Published test sets are kept as they are; ``unsplit`` rows are
    divided into test (``test`` fraction) and train; validation is always carved from training
    rows only, so test data never influences any choice."""
    frame = table.frame.copy()
    split = frame["split"].to_numpy(dtype=object)
    labels = frame["label"].to_numpy()
    unsplit = np.nonzero(split == "unsplit")[0]
    if len(unsplit):
        if (split == "test").any():
            split[unsplit] = "train"
        else:
            keep, held = _carve(unsplit, labels[unsplit], test, seed)
            split[keep] = "train"
            split[held] = "test"
    if not (split == "valid").any():
        train = np.nonzero(split == "train")[0]
        if len(train) < 4:
            raise PtmkitError(f"only {len(train)} training rows: too few to carve a validation set")
        _, held = _carve(train, labels[train], valid, seed + 1)
        split[held] = "valid"
    unknown = set(split) - {"train", "valid", "test"}
    if unknown:
        raise PtmkitError(f"unknown split names {sorted(unknown)}; use train, valid, test or unsplit")
    frame["split"] = split
    for name in ("train", "valid", "test"):
        part = labels[split == name]
        if len(part) == 0 or len(np.unique(part)) < 2:
            raise PtmkitError(
                f"the {name} split needs both positive and negative sites, got {len(part)} rows "
                f"with labels {sorted(set(part.tolist()))}"
            )
    return SiteTable(frame, table.proteins, table.meta)
