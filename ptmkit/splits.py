"""Seeded, stratified train/validation/test assignment for sources that lack some splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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
    return _with_splits(table, split)


def _with_splits(table: SiteTable, split: np.ndarray) -> SiteTable:
    """``table`` with these split names, checked: known names, both classes in every split."""
    unknown = set(split) - {"train", "valid", "test"}
    if unknown:
        raise PtmkitError(f"unknown split names {sorted(unknown)}; use train, valid, test or unsplit")
    labels = table.frame["label"].to_numpy()
    for name in ("train", "valid", "test"):
        part = labels[split == name]
        if len(part) == 0 or len(np.unique(part)) < 2:
            raise PtmkitError(
                f"the {name} split needs both positive and negative sites, got {len(part)} rows "
                f"with labels {sorted(set(part.tolist()))}"
            )
    frame = table.frame.copy()
    frame["split"] = split
    return SiteTable(frame, table.proteins, table.meta)


def row_keys(table: SiteTable) -> pd.Series:
    """A machine-independent key per row: ``<dir>/<file>:<line>`` of its origin (+ ``#<position>``).

    The origin's last two path parts (``K1/positive.fasta``) name the file whatever the data
    root; the position (when known) separates the sites of one whole-protein record.
    """
    frame = table.frame
    origin = frame["origin"].astype(str)
    parts = origin.str.rpartition(":")
    short = ["/".join(Path(p).parts[-2:]) for p in parts[0]]
    line = parts[2]
    return pd.Series(
        [
            f"{p}:{n}" if pd.isna(pos) else f"{p}:{n}#{pos}"
            for p, n, pos in zip(short, line, frame["position"], strict=True)
        ],
        index=frame.index,
    )


def save_split_file(table: SiteTable, path: Path) -> None:
    """Write every row's split (key, label, split; gzip TSV) so a later run can reuse it exactly.

    Written via a temporary file and a rename: a crash never leaves a half-written split.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({"key": row_keys(table), "label": table.frame["label"], "split": table.frame["split"]})
    if out["key"].duplicated().any():
        dup = out.loc[out["key"].duplicated(), "key"].iloc[0]
        raise PtmkitError(f"cannot save a split file: row key {dup!r} is not unique")
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, sep="\t", index=False, compression="gzip")
    tmp.replace(path)


def apply_split_file(table: SiteTable, path: Path) -> SiteTable:
    """Give every row the split recorded in ``path`` (written by :func:`save_split_file`).

    The file must cover exactly these rows with the same labels: a split saved from other
    data is refused with the first row that differs.
    """
    if not path.is_file():
        raise PtmkitError(f"data.split.file: {path} does not exist")
    try:
        saved = pd.read_csv(path, sep="\t", dtype={"key": str, "label": int, "split": str})
    except (ValueError, OSError) as exc:
        raise PtmkitError(f"{path}: not a ptmkit split file ({exc})") from None
    missing_cols = {"key", "label", "split"} - set(saved.columns)
    if missing_cols:
        raise PtmkitError(f"{path}: missing column(s) {sorted(missing_cols)}; expected key, label, split")
    bad = ~saved["split"].isin(["train", "valid", "test"])
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise PtmkitError(
            f"{path}:{i + 2}: split {saved['split'].iloc[i]!r} is not one of train, valid, test"
        )
    keys = row_keys(table)
    lookup = saved.set_index("key")
    absent = ~keys.isin(lookup.index)
    if absent.any() or len(saved) != len(keys):
        first = keys[absent].iloc[0] if absent.any() else "(extra rows in the file)"
        raise PtmkitError(
            f"{path}: holds {len(saved)} rows, the data {len(keys)}; first row of the data not in "
            f"the file: {first}. The split was saved from different data"
        )
    rows = lookup.loc[keys.to_numpy()]
    differs = rows["label"].to_numpy() != table.frame["label"].to_numpy()
    if differs.any():
        i = int(np.argmax(differs))
        raise PtmkitError(
            f"{path}: row {keys.iloc[i]} has label {rows['label'].iloc[i]} in the file but "
            f"{table.frame['label'].iloc[i]} in the data. The split was saved from different data"
        )
    return _with_splits(table, rows["split"].to_numpy(dtype=object))
