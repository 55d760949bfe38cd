"""Seeded, stratified train/validation/test assignment for sources that lack some splits.

Options (``data.split``): ``group: protein`` keeps every protein in one split (a grouped,
stratified carve), ``dedupe: true`` removes rows whose window already occurs in an earlier split
(valid vs train, test vs train + valid). Both default off, so drawn splits stay what they were.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .errors import PtmkitError, first_line
from .outputs import atomic_open
from .sitetable import PROTEIN_IDS, SiteTable

#: Values of ``data.split.group``.
GROUPS = ("protein",)


def _carve(
    index: np.ndarray, labels: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    if groups is not None:
        return _carve_groups(index, labels, groups, fraction, seed)
    counts = np.bincount(labels, minlength=2)
    stratify = labels if counts.min() >= 2 else None
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)


def _carve_groups(
    index: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole groups until both classes reach ``fraction`` of their rows (seeded, greedy).

    Groups are visited in a seeded random order; one is held out when that brings the held
    positives and negatives (relative to their targets) closer to ``fraction``. Unlike sklearn's
    StratifiedGroupKFold this works for any fraction, not only 1/k.
    """
    keys, inverse = np.unique(groups, return_inverse=True)
    pos = np.bincount(inverse, weights=labels, minlength=len(keys)).tolist()
    neg = (np.bincount(inverse, minlength=len(keys)) - np.asarray(pos)).tolist()
    want_pos, want_neg = fraction * sum(pos), fraction * sum(neg)
    scale_pos, scale_neg = max(want_pos, 1.0), max(want_neg, 1.0)
    held = np.zeros(len(keys), dtype=bool)
    got_pos = got_neg = 0.0
    for g in np.random.default_rng(seed).permutation(len(keys)).tolist():
        new_pos, new_neg = got_pos + pos[g], got_neg + neg[g]
        before = abs(got_pos - want_pos) / scale_pos + abs(got_neg - want_neg) / scale_neg
        after = abs(new_pos - want_pos) / scale_pos + abs(new_neg - want_neg) / scale_neg
        if after < before:
            held[g] = True
            got_pos, got_neg = new_pos, new_neg
    mask = held[inverse]
    return np.sort(index[~mask]), np.sort(index[mask])


def _groups(table: SiteTable, group: str | None) -> np.ndarray | None:
    """The group of every row for ``data.split.group`` (None: no grouping)."""
    if group is None:
        return None
    if group not in GROUPS:
        raise PtmkitError(f"data.split.group: unknown grouping {group!r}; valid: {', '.join(GROUPS)}")
    if table.meta.get(PROTEIN_IDS) is False:
        raise PtmkitError(
            "data.split.group: protein needs protein ids, but this source's ids name records (e.g. "
            "fasta_fragments with header 'pipe': Pos_1); give a header regex with an id group"
        )
    return table.frame["protein_id"].astype(str).to_numpy()


def assign_splits(
    table: SiteTable, *, valid: float, test: float, seed: int, group: str | None = None
) -> SiteTable:
    """Give every row a split. Published test sets are kept as they are; ``unsplit`` rows are
    divided into test (``test`` fraction) and train; validation is always carved from training
    rows only, so test data never influences any choice.

    ``group="protein"`` carves whole proteins (no protein in two carved splits); a published
    test split is kept, and the test proteins that also occur in training are reported (warning).
    """
    frame = table.frame.copy()
    split = frame["split"].to_numpy(dtype=object)
    labels = frame["label"].to_numpy()
    groups = _groups(table, group)
    unsplit = np.nonzero(split == "unsplit")[0]
    published_test = bool((split == "test").any())
    if len(unsplit):
        if published_test:
            split[unsplit] = "train"
        else:
            part = None if groups is None else groups[unsplit]
            keep, held = _carve(unsplit, labels[unsplit], test, seed, part)
            split[keep] = "train"
            split[held] = "test"
    if not (split == "valid").any():
        train = np.nonzero(split == "train")[0]
        if len(train) < 4:
            raise PtmkitError(f"only {len(train)} training rows: too few to carve a validation set")
        part = None if groups is None else groups[train]
        _, held = _carve(train, labels[train], valid, seed + 1, part)
        split[held] = "valid"
    if groups is not None and published_test:
        _warn_shared_test_proteins(groups, split)
    return _with_splits(table, split)


def _warn_shared_test_proteins(groups: np.ndarray, split: np.ndarray) -> None:
    """A published test split is kept as published; say how many of its proteins training saw."""
    test = split == "test"
    seen = pd.Index(groups[(split == "train") | (split == "valid")]).unique()
    test_proteins = pd.Index(groups[test]).unique()
    shared = test_proteins.intersection(seen)
    if len(shared):
        rows = int(np.isin(groups[test], shared.to_numpy()).sum())
        warnings.warn(
            f"data.split.group: protein: {len(shared)} of {len(test_proteins)} proteins of the "
            f"published test split also occur in training rows ({rows} of {int(test.sum())} test rows, "
            f"e.g. {sorted(shared)[0]}); the published test split is kept, grouping governs the "
            "validation carve only",
            UserWarning,
            stacklevel=3,
        )


def dedupe_splits(table: SiteTable) -> SiteTable:
    """Drop validation rows whose window is in training and test rows whose window is in training
    or validation (``data.split.dedupe``); warn with the counts. Training rows are all kept."""
    frame = table.frame
    split = frame["split"].to_numpy()
    windows = frame["window"]
    in_train = windows.isin(pd.Index(windows[split == "train"]).unique()).to_numpy()
    in_earlier = windows.isin(pd.Index(windows[(split == "train") | (split == "valid")]).unique()).to_numpy()
    drop_valid = (split == "valid") & in_train
    drop_test = (split == "test") & in_earlier
    n_valid, n_test = int(drop_valid.sum()), int(drop_test.sum())
    if not n_valid and not n_test:
        return table
    warnings.warn(
        f"data.split.dedupe: removed {n_valid} of {int((split == 'valid').sum())} validation rows whose "
        f"window is also in training, and {n_test} of {int((split == 'test').sum())} test rows whose "
        "window is also in training or validation",
        UserWarning,
        stacklevel=3,
    )
    kept = table.subset(~(drop_valid | drop_test))
    meta = {**table.meta, "dedupe_removed": {"valid": n_valid, "test": n_test}}
    kept = SiteTable(kept.frame, table.proteins, meta)
    return _with_splits(kept, kept.frame["split"].to_numpy(dtype=object))


def warn_label_conflicts(table: SiteTable, split: str = "train") -> int:
    """Warn when one window is labelled both positive and negative in ``split``; return the count.

    Training on contradictory labels is legal but rarely intended (C2, K2 hold a few).
    """
    part = table.frame[table.frame["split"] == split]
    spans = part.groupby("window", sort=False)["label"].nunique()
    both = spans.index[spans > 1]
    if not len(both):
        return 0
    rows = part[part["window"] == both[0]]
    pos, neg = rows[rows["label"] == 1].iloc[0], rows[rows["label"] == 0].iloc[0]
    warnings.warn(
        f"{len(both)} {'training' if split == 'train' else split} window(s) are labelled both positive "
        f"and negative, e.g. {both[0]}: {_site(pos)} positive, {_site(neg)} negative "
        "(`ptmkit data check` lists such windows; data.split.dedupe does not remove them)",
        UserWarning,
        stacklevel=3,
    )
    return len(both)


def _site(row: pd.Series) -> str:
    """``P12345:67`` (protein:position), or ``Pos_1 (T1/Training.txt:1)`` when no position is known."""
    if not pd.isna(row["position"]):
        return f"{row['protein_id']}:{row['position']}"
    return f"{row['protein_id']} ({'/'.join(Path(str(row['origin'])).parts[-2:])})"


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
    return _keys(frame["origin"], frame["position"])


def _keys(origin: pd.Series, position: pd.Series) -> pd.Series:
    """Row keys from origins and positions (positions: Int64 with <NA>, or text with '')."""
    parts = origin.astype(str).str.rpartition(":")
    short = ["/".join(Path(p).parts[-2:]) for p in parts[0]]
    return pd.Series(
        [
            f"{p}:{n}" if pd.isna(pos) or pos == "" else f"{p}:{n}#{pos}"
            for p, n, pos in zip(short, parts[2], position, strict=True)
        ],
        index=origin.index,
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
    with atomic_open(path, "wb") as fh:
        out.to_csv(fh, sep="\t", index=False, compression="gzip")


def read_split_file(path: Path, task: str | None = None) -> pd.DataFrame:
    """``key, label, split`` of a saved split: a :func:`save_split_file` file or a run's own
    ``data/splits.tsv.gz`` (the whole table: origin, position, ..., label, split). ``task``: of
    a multi-task run's table (a ``task`` column), only that task's rows."""
    if path.is_dir():
        raise PtmkitError(f"data.split.file: {path} is a directory, not a split file")
    if not path.exists():
        raise PtmkitError(f"data.split.file: {path} does not exist")
    try:
        saved = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # UnicodeDecodeError is a ValueError
        raise PtmkitError(f"{path}: not a ptmkit split file ({first_line(exc)})") from None
    columns = set(saved.columns)
    if task is not None and "task" in columns:
        saved = saved[saved["task"] == task].reset_index(drop=True)
    if {"key", "label", "split"} <= columns:
        keys = saved["key"]
    elif {"origin", "label", "split"} <= columns:  # a run's data/splits.tsv.gz
        position = saved["position"] if "position" in columns else pd.Series([""] * len(saved))
        keys = _keys(saved["origin"], position)
    else:
        missing = sorted({"key", "label", "split"} - columns)
        raise PtmkitError(
            f"{path}: missing column(s) {missing}; expected key, label, split (save_split_file) or a "
            "run's data/splits.tsv.gz (origin, position, label, split)"
        )
    bad_label = ~saved["label"].isin(["0", "1"])
    if bad_label.any():
        i = int(np.argmax(bad_label.to_numpy()))
        raise PtmkitError(f"{path}:{i + 2}: label {saved['label'].iloc[i]!r} is not one of 0, 1")
    bad = ~saved["split"].isin(["train", "valid", "test"])
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise PtmkitError(
            f"{path}:{i + 2}: split {saved['split'].iloc[i]!r} is not one of train, valid, test"
        )
    return pd.DataFrame(
        {"key": keys.to_numpy(), "label": saved["label"].astype(int), "split": saved["split"]}
    )


def apply_split_file(
    table: SiteTable, path: Path, *, dedupe: bool = False, task: str | None = None
) -> SiteTable:
    """Give every row the split recorded in ``path`` (:func:`save_split_file` or a run's
    ``data/splits.tsv.gz``).

    The file must cover exactly these rows with the same labels: a split saved from other
    data is refused with the first row that differs. With ``dedupe`` (a run that had
    ``data.split.dedupe: true`` logs only the rows it kept) a row missing from the file is
    accepted, and dropped, when its window occurs in the file's training or validation rows.
    ``task``: the rows are that task's (the file may be a multi-task run's splits).
    """
    saved = read_split_file(path, task)
    keys = row_keys(table)
    lookup = saved.set_index("key")
    absent = ~keys.isin(lookup.index)
    if absent.any() and dedupe:
        known = lookup.loc[keys[~absent].to_numpy(), "split"].to_numpy()
        windows = table.frame["window"]
        earlier = windows[~absent.to_numpy()][np.isin(known, ["train", "valid"])]
        if windows[absent].isin(pd.Index(earlier).unique()).all():  # the rows dedupe removed
            table = table.subset(~absent.to_numpy())
            keys = keys[~absent].reset_index(drop=True)
            absent = pd.Series(False, index=keys.index)
    if absent.any() or len(saved) != len(keys):
        first = keys[absent].iloc[0] if absent.any() else "(extra rows in the file)"
        hint = ""
        if absent.any() and not dedupe:
            hint = " (or it comes from a run with data.split.dedupe: true: set that here too)"
        raise PtmkitError(
            f"{path}: holds {len(saved)} rows, the data {len(keys)}; first row of the data not in "
            f"the file: {first}. The split was saved from different data{hint}"
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
