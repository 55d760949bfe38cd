"""Data check: what is wrong or surprising in a source, as tables and one-line defects.

Published benchmark files have leaks, duplicates and counts that differ from their papers; a
model trained on them silently inherits all of it. The check makes it visible before training.
All statistics are vectorised over the table (no per-row Python work).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import catalog
from .alphabet import NONSTANDARD, PAD
from .datasets import DatasetInfo, load_source
from .errors import PtmkitError
from .hooks import get_registry
from .sitetable import PROTEIN_IDS, SPLITS, SiteTable
from .textio import iter_lines

if TYPE_CHECKING:
    from .recipe import Recipe

_LABEL = {1: "positive", 0: "negative"}
_SPLIT_ORDER = ("train", "valid", "test", "unsplit")


@dataclass
class Section:
    """A titled table of the report (``rows`` hold plain values)."""

    title: str
    headers: list[str]
    rows: list[list[object]]
    note: str = ""

    def render(self) -> str:
        lines = [self.title, "-" * len(self.title)]
        if self.rows:
            cells = [self.headers] + [[_cell(v) for v in row] for row in self.rows]
            widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]
            numeric = [all(_is_number(row[i]) for row in self.rows) for i in range(len(widths))]
            for row in cells:
                parts = [
                    c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
                ]
                lines.append("  ".join(parts).rstrip())
        else:
            lines.append("none")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


@dataclass
class DataReport:
    """Sections (tables) and defects (one short line each) for one source."""

    name: str
    sections: list[Section] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    #: what the split step of a recipe did (data.split.group / dedupe), one line each
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        parts = [f"Data check: {self.name}", ""]
        for section in self.sections:
            parts += [section.render(), ""]
        if self.notes:
            parts += [f"Notes ({len(self.notes)})", "-" * len(f"Notes ({len(self.notes)})")]
            parts += [f"- {n}" for n in self.notes] + [""]
        parts.append(f"Defects ({len(self.defects)})")
        parts.append("-" * len(parts[-1]))
        parts += [f"- {d}" for d in self.defects] or ["none"]
        return "\n".join(parts) + "\n"


def check_source(source: str | Mapping[str, object], *, base_dir: Path, data_root: Path) -> DataReport:
    """Load a source leniently (bad marked sites are reported, not fatal) and check it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists what the reader warns about
        table, info = load_source(source, base_dir=base_dir, data_root=data_root, on_bad_site="warn")
    report = check_table(table, info)
    if catalog.is_catalog_name(source):
        entry = catalog.get(str(source))
        _check_files(report, entry, Path(data_root) / entry.collection)
    return report


def check_recipe(recipe: Recipe, *, data_root: Path) -> DataReport:
    """Check a recipe's data as its run would see it: read, residue-filtered and split
    (``data.split`` drawn with its seed, group and dedupe, or read from ``data.split.file``)."""
    from .datasets import prepare_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, info = prepare_data(recipe, data_root)
    # the paper's train counts hold the run's train + valid rows: comparing them would mislead
    info = replace(info, paper=None)
    if info.tasks:
        report = _check_tasks(table, info, recipe.name)
    else:
        report = check_table(table, info, f"{info.name} split as recipe {recipe.name!r} splits it")
    report.notes += [str(w.message) for w in caught if str(w.message).startswith("data.split")]
    preset = recipe.source.preset if recipe.source is not None else None
    if preset is not None:
        _check_files(report, preset, Path(data_root) / preset.collection)
    return report


def _check_tasks(table: SiteTable, info: DatasetInfo, recipe: str) -> DataReport:
    """A multi-task recipe's data, checked task by task (a window two tasks share, as T1 and T2
    do, is no duplicate, conflict or leak); sections and defects are named by their task."""
    report = DataReport(f"{info.name} split as recipe {recipe!r} splits it, task by task")
    for name, task_info in info.tasks.items():
        rows = table.subset(table.frame["task"].to_numpy() == name)
        own = check_table(rows, replace(task_info, paper=None), name)
        report.sections += [replace(sec, title=f"{name}: {sec.title}") for sec in own.sections]
        report.defects += [f"{name}: {d}" for d in own.defects]
    return report


def resolve_source(
    items: list[str],
    *,
    reader: str | None = None,
    options: Mapping[str, Any] | None = None,
    overrides: list[str] | None = None,
    base_dir: Path,
) -> tuple[str | dict[str, Any] | Recipe, Path]:
    """What ``ptmkit data check SOURCE...`` names, and the folder its paths are relative to.

    One of: a catalogue name (``uniptms:C2``); a recipe file (its data section, split as the run
    splits it); a reader mapping, inline (``'{reader: csv_sites, files: {train: a.csv}}'``) or
    in a YAML/JSON file; or data files with ``--reader NAME`` (``SPLIT=FILE`` or ``KEY=FILE``
    for a reader option such as ``positive=pos.fa``; one bare file is ``unsplit``).
    """
    from . import recipe as recipes
    from . import safeyaml

    options = dict(options or {})
    if reader is not None:
        return _files_source(items, reader, options), base_dir
    if options:
        raise PtmkitError("--option needs --reader (options of the reader that reads the files)")
    if len(items) != 1:
        raise PtmkitError(
            f"{len(items)} sources given; give one catalogue name, recipe or reader mapping, or the data "
            "files with --reader NAME (e.g. train=a.csv test=b.csv --reader csv_sites)"
        )
    item = items[0]
    if catalog.is_catalog_name(item):
        catalog.get(item)  # an unknown id fails here, listing the catalogue
        return item, base_dir
    path = Path(item).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.is_dir():
        raise PtmkitError(
            f"{item}: is a directory; give a data file with --reader, a recipe or a catalogue name"
        )
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            readers = ", ".join(get_registry().names("reader"))
            raise PtmkitError(f"{item}: a data file needs --reader NAME (readers: {readers})")
        text = "\n".join(line for _, line in iter_lines(path))
        data = safeyaml.load(text, str(path))
        if isinstance(data, dict) and "data" in data:
            return recipes.load(path, overrides), path.parent
        if isinstance(data, dict) and "reader" in data:
            return data, path.parent
        raise PtmkitError(
            f"{item}:1: neither a recipe (no 'data:' section) nor a reader mapping (no 'reader:' key)"
        )
    if item.lstrip().startswith("{") or ":" in item:
        data = safeyaml.load(item, "SOURCE")
        if isinstance(data, dict):
            if "reader" not in data:
                raise PtmkitError(
                    f"SOURCE {item!r}: a reader mapping needs a 'reader' key (e.g. reader: csv_sites)"
                )
            return data, base_dir
    raise PtmkitError(
        f"{item}: no such file, and not a catalogue name (like uniptms:H1) or a reader mapping "
        "(like '{reader: csv_sites, files: {train: a.csv}}')"
    )


def _files_source(items: list[str], reader: str, options: dict[str, Any]) -> dict[str, Any]:
    """``{reader, files: {...}, ...options}`` from ``train=a.csv test=b.csv`` (or one bare file)."""
    fields = get_registry().get("reader", reader).obj.Config.model_fields
    source: dict[str, Any] = {"reader": reader, **options}
    files: dict[str, str] = dict(source.pop("files", None) or {})
    bare: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key.isidentifier():
            if key in SPLITS:
                files[key] = value
            elif key in fields or key in ("name", "ptm", "residues"):
                source[key] = value
            else:
                valid = ", ".join([*SPLITS, *sorted(k for k in fields if k != "files")])
                raise PtmkitError(
                    f"{item!r}: {key!r} is neither a split nor an option of reader {reader!r}; valid: {valid}"
                )
        else:
            bare.append(item)
    if bare and "files" not in fields:
        raise PtmkitError(
            f"reader {reader!r} takes no 'files'; name each file by its option, e.g. "
            f"{' '.join(f'{k}=FILE' for k in fields if k in ('positive', 'negative')) or 'KEY=FILE'}"
        )
    if len(bare) > 1 or (bare and files):
        raise PtmkitError(f"several files: give each its split, e.g. train={bare[0]} test={bare[-1]}")
    if bare:
        files["unsplit"] = bare[0]
    if files:
        source["files"] = files
    return source


def check_table(table: SiteTable, info: DatasetInfo, label: str | None = None) -> DataReport:
    """Every check that needs only the rows and what is known about the dataset."""
    about = f"{info.ptm}, residues {info.residues or '?'}, window {table.width}, {len(table)} rows"
    report = DataReport(f"{label or info.name} ({about})")
    frame = table.frame
    _counts(report, frame, table.meta, info.paper)
    _duplicates(report, frame)
    _conflicts(report, frame)
    _overlap(report, frame, table.meta.get(PROTEIN_IDS) is not False)
    _residues(report, frame, info.residues)
    _marked_sites(report, table.meta)
    return report


def _splits(frame: pd.DataFrame) -> list[str]:
    present = set(frame["split"].unique())
    return [s for s in _SPLIT_ORDER if s in present] + sorted(present - set(_SPLIT_ORDER))


def _split_rank(split: str) -> int:
    return _SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER)


def _counts(report: DataReport, frame: pd.DataFrame, meta: dict[str, object], paper: dict | None) -> None:
    size = frame.groupby(["split", "label"]).size()
    have = {s: (int(size.get((s, 1), 0)), int(size.get((s, 0), 0))) for s in _splits(frame)}
    want: dict[str, tuple[int, int]] = {}
    if paper:
        want = {s: (c["pos"], c["neg"]) for s, c in paper.get("counts", {}).items()}
    headers = ["split", "positive", "negative", "total"]
    if want:
        headers += ["paper pos", "paper neg"]
    rows: list[list[object]] = []
    for split, (pos, neg) in have.items():
        row: list[object] = [split, pos, neg, pos + neg]
        if want:
            row += list(want.get(split, ("", "")))
        rows.append(row)
    for split in [s for s in want if s not in have]:
        rows.append([split, "", "", "", *want[split]])
    listed = meta.get("listed_sites")
    note = ""
    if isinstance(listed, dict) and listed:
        note = "sites listed in the headers: " + ", ".join(f"{s} {n}" for s, n in listed.items())
    report.sections.append(Section("Counts (rows per split and label)", headers, rows, note))
    if not want:
        return
    if set(have) == {"unsplit"} and "unsplit" not in want:
        total = tuple(sum(c[i] for c in want.values()) for i in (0, 1))
        split_text = ", ".join(f"{s} {p}/{n}" for s, (p, n) in want.items())
        verdict = (
            "totals match"
            if total == have["unsplit"]
            else (f"totals differ: files {_pn(have['unsplit'])} vs paper {_pn(total)}")
        )
        report.defects.append(
            f"no train/test split in the files; the paper's split is {split_text} ({verdict})"
        )
        return
    diffs = [
        f"{s} {_pn(have.get(s, (0, 0)))} vs paper {_pn(c)}"
        for s, c in want.items()
        if have.get(s, (0, 0)) != c
    ]
    if diffs:
        report.defects.append("counts differ from the paper: " + "; ".join(diffs))


def _pn(counts: tuple[int, int]) -> str:
    return f"{counts[0]}/{counts[1]}"


def _duplicates(report: DataReport, frame: pd.DataFrame) -> None:
    per_window = frame.groupby(["split", "label", "window"]).size()
    rows: list[list[object]] = []
    groups = sorted(
        per_window.groupby(level=["split", "label"]),
        key=lambda kv: (_split_rank(kv[0][0]), -int(kv[0][1])),
    )
    for (split, label), sizes in groups:
        extra, repeated = int((sizes - 1).sum()), int((sizes > 1).sum())
        rows.append([split, _LABEL[int(label)], int(sizes.sum()), len(sizes), extra, repeated])
        if extra:
            report.defects.append(
                f"{split}: {extra} duplicate {_LABEL[int(label)]} rows ({repeated} distinct windows repeated)"
            )
    report.sections.append(
        Section(
            "Duplicate windows (within a split and label)",
            ["split", "label", "rows", "distinct", "duplicate rows", "windows repeated"],
            rows,
        )
    )


def _conflicts(report: DataReport, frame: pd.DataFrame) -> None:
    labels = frame.groupby(["split", "window"])["label"].nunique()
    both = labels[labels > 1]
    rows: list[list[object]] = []
    for split in _splits(frame):
        n = int((both.index.get_level_values("split") == split).sum())
        rows.append([split, n])
        if n:
            report.defects.append(f"{split}: {n} windows labelled both positive and negative")
    examples = ", ".join(both.index.get_level_values("window")[:3])
    note = f"e.g. {examples}" if examples else ""
    report.sections.append(
        Section("Windows labelled both ways (within a split)", ["split", "windows"], rows, note)
    )


def _overlap(report: DataReport, frame: pd.DataFrame, proteins_known: bool) -> None:
    """Identical windows in two splits, and proteins with rows in two splits (every reader whose
    ids name proteins: a protein in both train and test leaks its neighbourhood, if not its windows)."""
    splits = [s for s in _splits(frame) if s != "unsplit"]
    headers = ["splits", "windows", "rows in first", "rows in second", "label differs"]
    if proteins_known:
        headers += ["proteins", "their rows in first", "their rows in second"]
    rows: list[list[object]] = []
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            a = frame[frame["split"] == first]
            b = frame[frame["split"] == second]
            shared = pd.Index(a["window"].unique()).intersection(pd.Index(b["window"].unique()))
            in_a = a[a["window"].isin(shared)]
            in_b = b[b["window"].isin(shared)]
            # label sets per window are equal iff their min and max agree (labels are 0/1)
            span_a = in_a.groupby("window")["label"].agg(["min", "max"])
            span_b = in_b.groupby("window")["label"].agg(["min", "max"]).reindex(span_a.index)
            differ = int((span_a != span_b).any(axis=1).sum())
            row: list[object] = [f"{first}/{second}", len(shared), len(in_a), len(in_b), differ]
            if len(shared):
                report.defects.append(
                    f"{first}/{second} overlap: {len(shared)} windows occur in both "
                    f"({len(in_a)} {first} rows, {len(in_b)} {second} rows; {differ} with "
                    "different labels)"
                )
            if proteins_known:
                common = pd.Index(a["protein_id"].unique()).intersection(pd.Index(b["protein_id"].unique()))
                on_a = a[a["protein_id"].isin(common)]
                on_b = b[b["protein_id"].isin(common)]
                row += [len(common), len(on_a), len(on_b)]
                if len(common):
                    example = sorted(common)[0]
                    where_a = _row_text(on_a[on_a["protein_id"] == example].iloc[0])
                    where_b = _row_text(on_b[on_b["protein_id"] == example].iloc[0])
                    report.defects.append(
                        f"{first}/{second}: {len(common)} proteins have rows in both splits "
                        f"({len(on_b)} of {len(b)} {second} rows, {len(on_a)} of {len(a)} {first} "
                        f"rows), e.g. {example} ({where_a}, {where_b})"
                    )
            rows.append(row)
    if splits[1:]:
        note = "" if proteins_known else "protein ids name records (e.g. Pos_1), not proteins: not compared"
        title = "Overlap between splits (identical windows, shared proteins)"
        report.sections.append(Section(title, headers, rows, note))


def _residues(report: DataReport, frame: pd.DataFrame, residues: str) -> None:
    windows = frame["window"]
    rows: list[list[object]] = []
    found = []
    for letter in NONSTANDARD:
        hits = windows.str.count(letter)
        total = int(hits.sum())
        if total:
            rows.append([letter, total, int((hits > 0).sum())])
            found.append(f"{letter} {total}")
    if found:
        n = int(windows.str.contains(f"[{NONSTANDARD}]", regex=True).sum())
        report.defects.append(
            f"non-standard residues in {n} windows: {', '.join(found)} (padding is {PAD!r})"
        )
    report.sections.append(
        Section("Non-standard residues (BZJUOX) in windows", ["letter", "count", "windows"], rows)
    )
    centre = frame["residue"].value_counts()
    rows = [[str(r), int(n), "yes" if r in residues else "NO"] for r, n in centre.items()]
    if residues:
        off = centre[[r not in residues for r in centre.index]]
        if len(off):
            listed = ", ".join(f"{r} {int(n)}" for r, n in off.items())
            report.defects.append(f"centre residue is not {residues} in {int(off.sum())} rows: {listed}")
    report.sections.append(Section("Centre residues", ["residue", "rows", "target"], rows))


def _marked_sites(report: DataReport, meta: dict[str, object]) -> None:
    kinds = {
        "bad_sites": "past the protein end",
        "off_target_sites": "not on a target residue",
        "malformed_sites": "not written as '#position'",
    }
    rows: list[list[object]] = []
    for key, what in kinds.items():
        items = meta.get(key) or []
        assert isinstance(items, list)
        for item in items:
            value = item.get("position", item.get("token"))
            detail = f"length {item['length']}" if "length" in item else item.get("residue", "")
            rows.append([_short(str(item["origin"])), item["protein_id"], value, what, detail])
        if items:
            shown = "; ".join(_site_text(it) for it in items[:3])
            report.defects.append(f"{len(items)} marked site(s) {what}, dropped: {shown}")
    if any(k in meta for k in kinds):
        report.sections.append(
            Section(
                "Marked sites that cannot be used (dropped)",
                ["origin", "protein", "site", "problem", "detail"],
                rows,
            )
        )


def _site_text(item: dict[str, object]) -> str:
    """``P15559 site 307 (length 274) at K2/train_sequence.txt:1725``."""
    what = f"token {item['token']!r}" if "token" in item else f"site {item['position']}"
    detail = f" (length {item['length']})" if "length" in item else ""
    if "residue" in item:
        detail = f" (residue {item['residue']})"
    return f"{item['protein_id']} {what}{detail} at {_short(str(item['origin']))}"


def _check_files(report: DataReport, entry: catalog.Dataset, base: Path) -> None:
    """Hashes against the catalogue, and published files that are copies of other datasets'."""
    siblings = catalog.collection_of(entry).datasets
    order = [d.id for d in siblings]
    others: dict[str, tuple[str, bool]] = {}  # sha -> (file, listed before this dataset)
    for other in siblings:
        if other.id != entry.id:
            earlier = order.index(other.id) < order.index(entry.id)
            for rel, sha in other.files.items():
                others.setdefault(sha, (rel, earlier))
    rows: list[list[object]] = []
    for rel, expected in entry.files.items():
        got = hashlib.sha256((base / rel).read_bytes()).hexdigest()
        same, earlier = others.get(expected, ("", False))
        status = "ok" if got == expected else "DIFFERS from the published file"
        rows.append([rel, expected[:12], status, same])
        if got != expected:
            report.defects.append(f"{rel}: sha256 {got[:12]}... is not the published {expected[:12]}...")
        if same and earlier:  # the copy is the defect, not the original
            report.defects.append(f"{rel} is byte-identical to {same}")
    report.sections.append(Section("Files", ["file", "sha256", "status", "identical to"], rows))


def _row_text(row: pd.Series) -> str:
    """``K2/train.txt:12 site 40`` (the site only for whole proteins, where one line holds many)."""
    site = "" if pd.isna(row["position"]) else f" site {row['position']}"
    return f"{_short(str(row['origin']))}{site}"


def _short(origin: str) -> str:
    """``/a/b/K2/train.txt:12`` -> ``K2/train.txt:12`` for readable tables."""
    path = Path(origin)
    return str(Path(path.parent.name) / path.name)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) or value == ""
