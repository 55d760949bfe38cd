"""Shared parsing for the readers: strict line handling, FASTA records, row building.

Every reader goes through these helpers so that all of them report malformed input the same
way (file, physical line, offending value, what is valid) and all of them parse in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import Field, field_validator

from ptmkit.alphabet import ALLOWED, NONSTANDARD, PAD, STANDARD
from ptmkit.alphabet import PROTEIN_LETTERS as PROTEIN_LETTERS  # letters of a whole protein
from ptmkit.errors import DataError
from ptmkit.fasta import iter_records
from ptmkit.plugin_api import PluginConfig
from ptmkit.sitetable import COLUMNS, SPLITS, SiteTable
from ptmkit.textio import iter_lines

#: Named header regexes (matched with ``re.fullmatch`` against the header after ``>``).
HEADER_PRESETS: dict[str, str] = {
    # T1/T2: ``>Pos_1|1|test`` -> id Pos_1, label 1 (further |-fields are ignored)
    "pipe": r"(?P<id>[^|]*)\|(?P<label>[^|]*)(?:\|.*)?",
    # C1: ``>+sampleH0YN42_133`` -> label +, id H0YN42, position 133 (position optional)
    "sign": r"(?P<label>\S)(?:sample)?(?P<id>\S+?)(?:_(?P<position>\d+))?",
    # K1/C2: ``>Pos|CPLM000004_499`` or ``>A0A075B759`` -> id, optional _position
    "id": r"(?:[^|\s]*\|)?(?P<id>[^|\s]+?)(?:_(?P<position>\d+))?(?:\s.*)?",
}
#: Default label values of the presets: (positive, negative).
PRESET_LABELS: dict[str, tuple[list[str], list[str]]] = {
    "pipe": (["1"], ["0"]),
    "sign": (["+"], ["-"]),
}


def valid_letters_text(allowed: frozenset[str]) -> str:
    """Human description of an alphabet for error messages."""
    text = f"the 20 standard amino acids {STANDARD}, non-standard {NONSTANDARD}"
    if PAD in allowed:
        text += f" and padding {PAD!r}"
    if "#" in allowed:
        text += " and '#' after a modified residue"
    return text + " (lowercase is accepted)"


def compile_header(value: str, required: tuple[str, ...] = ()) -> re.Pattern[str]:
    """Compile a preset name or regex; raise ValueError (-> config error) when unusable."""
    pattern = HEADER_PRESETS.get(value, value)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"header is neither a preset ({', '.join(HEADER_PRESETS)}) nor a valid regex: {exc}"
        ) from None
    missing = [g for g in required if g not in compiled.groupindex]
    if missing:
        raise ValueError(f"header regex needs the named group(s) {', '.join(missing)}")
    return compiled


class FilesMixin(PluginConfig):
    """Config part shared by readers that map split names to files."""

    files: dict[str, str] = Field(
        description="split name (train/valid/test/unsplit) -> file path, relative to the recipe"
    )

    @field_validator("files")
    @classmethod
    def _known_splits(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("give at least one split -> file entry")
        bad = [k for k in value if k not in SPLITS]
        if bad:
            raise ValueError(f"unknown split name(s) {bad}; use {', '.join(SPLITS)}")
        return value


def check_pad(value: str | None) -> str | None:
    if value is not None and len(value) != 1:
        raise ValueError("terminal_pad must be a single letter")
    return value.upper() if value else value


def check_window(value: int) -> int:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"window must be an odd positive width, got {value}")
    return value


def check_residues(value: str) -> str:
    value = value.upper()
    bad = sorted(set(value) - set(STANDARD))
    if not value or bad:
        raise ValueError(f"residues must be letters of {STANDARD}, got {value!r}")
    return value


def first_header(path: Path) -> str | None:
    """The text after '>' of the first FASTA header, or None when the first non-blank line is
    not one (or the file cannot be read): for ``Reader.sniff``, which must never raise."""
    try:
        for _, line in iter_lines(path):
            if line.strip():
                return line.strip()[1:] if line.lstrip().startswith(">") else None
    except (OSError, EOFError, ValueError, DataError):
        return None
    return None


def read_lines(path: Path) -> list[str]:
    """Physical lines of a plain or gzip text file (CRLF tolerated, BOM dropped).

    Opened by :func:`ptmkit.textio.iter_lines`, like ``ptmkit predict`` does: gzip by its magic
    bytes, a directory, non-UTF-8 bytes or a truncated gzip stream fail with file and line.
    Empty files are errors.
    """
    lines = [text for _, text in iter_lines(path)]
    if not any(line.strip() for line in lines):
        raise DataError("file is empty", path=path)
    return lines


def bad_character(path: Path, line_no: int, line: str, allowed: frozenset[str]) -> DataError:
    """DataError for the first character of ``line`` outside ``allowed``."""
    for col, char in enumerate(line, 1):
        if char.upper() not in allowed:
            return DataError(
                f"character {char!r} (column {col}) is not valid in a sequence; valid are "
                f"{valid_letters_text(allowed)}",
                path=path,
                line=line_no,
            )
    raise AssertionError("bad_character called on a valid line")  # pragma: no cover


@dataclass(slots=True)
class FastaRecord:
    header: str  # text after '>', trailing whitespace stripped
    line: int  # physical line of the header
    seq_line: int  # physical line of the first sequence line
    sequence: str  # upper-cased, lines joined


def iter_fasta(path: Path, allowed: frozenset[str] = ALLOWED) -> Iterator[FastaRecord]:
    """Records of a FASTA file in one streaming pass (:func:`ptmkit.fasta.iter_records`); sequence
    lines may wrap, blank lines are ignored. A letter outside ``allowed`` and a record without
    sequence are errors naming their line."""
    for rec in iter_records(path):
        if not rec.parts:
            raise DataError(f"record '>{rec.header}' has no sequence", path=path, line=rec.line)
        for number, text in rec.parts:
            if not allowed.issuperset(text.upper()):
                raise bad_character(path, number, text, allowed)
        yield FastaRecord(rec.header, rec.line, rec.seq_line, rec.text().upper())


@dataclass
class Rows:
    """Column lists filled row by row during the parse, turned into one frame at the end."""

    task: str
    columns: dict[str, list[object]] = field(default_factory=lambda: {c: [] for c in COLUMNS})

    def add(
        self,
        protein_id: str,
        position: int | None,
        window: str,
        label: int,
        split: str,
        origin: str,
    ) -> None:
        c = self.columns
        c["protein_id"].append(protein_id)
        c["position"].append(pd.NA if position is None else position)
        c["residue"].append(window[len(window) // 2])
        c["window"].append(window)
        c["label"].append(label)
        c["task"].append(self.task)
        c["split"].append(split)
        c["origin"].append(origin)

    def table(
        self, proteins: dict[str, str] | None = None, meta: dict[str, object] | None = None
    ) -> SiteTable:
        frame = pd.DataFrame(self.columns, columns=COLUMNS)
        frame["position"] = frame["position"].astype("Int64")
        frame["label"] = frame["label"].astype("int64")
        return SiteTable(frame, dict(proteins or {}), dict(meta or {}))


class WindowChecker:
    """Enforces one odd window width per file (and one width per table)."""

    def __init__(self) -> None:
        self.width = 0
        self.file_width = 0
        self.first = ""  # where the table's width was set

    def start_file(self) -> None:
        self.file_width = 0

    def check(self, path: Path, line: int, window: str, pad: str | None) -> str:
        """Validate width and centre; rewrite terminal runs of ``pad`` to padding."""
        n = len(window)
        if n != self.file_width:
            if self.file_width:
                raise DataError(
                    f"window has width {n}, but earlier windows in this file have width "
                    f"{self.file_width}; all windows of a file must have one width",
                    path=path,
                    line=line,
                )
            if n % 2 == 0:
                raise DataError(
                    f"window width {n} is even; a window needs a centre residue (odd width)",
                    path=path,
                    line=line,
                )
            if self.width and n != self.width:
                raise DataError(
                    f"windows have width {n}, but {self.first} has width {self.width}; all files "
                    "of one source must share a width",
                    path=path,
                    line=line,
                )
            self.file_width = n
            if not self.width:
                self.width, self.first = n, str(path)
        if pad is not None:
            window = pad_ends(window, pad)
        if window[n // 2] == PAD:
            raise DataError("the centre of the window is padding, not a residue", path=path, line=line)
        return window


def pad_ends(window: str, pad: str) -> str:
    """Rewrite runs of ``pad`` at either end (never the centre) to the padding symbol."""
    half = len(window) // 2
    left = min(len(window) - len(window.lstrip(pad)), half)
    right = min(len(window) - len(window.rstrip(pad)), half)
    if not left and not right:
        return window
    return PAD * left + window[left : len(window) - right] + PAD * right


def parse_label(value: str, positive: list[str], negative: list[str], path: Path, line: int) -> int:
    if value in positive:
        return 1
    if value in negative:
        return 0
    raise DataError(
        f"label {value!r} is not one of {positive} (positive) or {negative} (negative)",
        path=path,
        line=line,
    )


def header_match(pattern: re.Pattern[str], header: str, path: Path, line: int) -> re.Match[str]:
    match = pattern.fullmatch(header)
    if match is None:
        raise DataError(
            f"header '>{header}' does not match the header pattern {pattern.pattern!r}",
            path=path,
            line=line,
        )
    return match


def group(match: re.Match[str], name: str) -> str | None:
    return match.group(name) if name in match.re.groupindex else None


def position_of(match: re.Match[str], path: Path, line: int) -> int | None:
    value = group(match, "position")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise DataError(f"position {value!r} in the header is not a 1-based number", path=path, line=line)
    return int(value)
