"""FASTA records and MusiteDeep '#' marks, parsed one way for the readers and ``ptmkit predict``.

:func:`iter_records` streams a plain or gzip FASTA file (through :func:`ptmkit.textio.iter_lines`:
gzip by magic bytes, CRLF/CR line ends, BOM, non-UTF-8 bytes named by file and line) and keeps
every sequence line with its line number, so each caller can say where a bad letter is.
:func:`parse_marks` turns ``MKS#LLK#`` into the clean sequence and the 1-based marked positions.
What counts as a valid letter, and what happens to an invalid one, is the caller's policy
(the readers refuse the file, predict skips the protein with a warning).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .textio import iter_lines

#: The character written after a modified residue (MusiteDeep's format).
MARK = "#"


@dataclass(slots=True)
class Record:
    """One FASTA record: the header (text after '>'), its line, and the sequence lines."""

    header: str
    line: int  # physical line of the header
    parts: list[tuple[int, str]]  # (physical line, text stripped of surrounding whitespace)

    @property
    def seq_line(self) -> int:
        """Physical line of the first sequence line (0 when the record has none)."""
        return self.parts[0][0] if self.parts else 0

    def text(self) -> str:
        """The sequence lines joined, as written (case and inner characters kept)."""
        return "".join(text for _, text in self.parts)


def iter_records(
    path: Path,
    *,
    empty: str = "file is empty",
    before_header: str = "sequence line before any '>' header line",
) -> Iterator[Record]:
    """Records of a FASTA file in one streaming pass; sequence lines may wrap, blank lines are skipped.

    A sequence line before the first header raises ``before_header`` at its line; a file with
    no non-blank line raises ``empty``. A header followed by no sequence line is yielded with
    empty ``parts`` (the caller decides whether that is an error).
    """
    header: str | None = None
    header_line = 0
    parts: list[tuple[int, str]] = []
    for number, raw in iter_lines(path):
        line = raw.strip()
        if not line:
            continue
        if line[0] == ">":
            if header is not None:
                yield Record(header, header_line, parts)
            header, header_line, parts = line[1:], number, []
            continue
        if header is None:
            raise DataError(before_header, path=path, line=number)
        parts.append((number, line))
    if header is None:
        raise DataError(empty, path=path)
    yield Record(header, header_line, parts)


def site_token(token: str) -> int | None:
    """The 1-based position of a ``#37`` header token (K2 style), or None when it is not one."""
    digits = token[1:]
    if token[:1] == MARK and digits.isdigit() and int(digits) > 0:
        return int(digits)
    return None


class MisplacedMark(ValueError):
    """A '#' that follows no residue; ``index`` is its 1-based index in the marked sequence."""

    def __init__(self, index: int) -> None:
        super().__init__(f"'{MARK}' at sequence index {index} follows no residue")
        self.index = index


def parse_marks(marked: str) -> tuple[str, list[int]]:
    """``MKS#LLK#`` -> (``MKSLLK``, [3, 6]): '#' after each modified residue, positions 1-based.

    A '#' at the start or right after another '#' raises :class:`MisplacedMark`.
    """
    if MARK not in marked:
        return marked, []
    positions: list[int] = []
    start = 0
    while (i := marked.find(MARK, start)) != -1:
        if i == 0 or marked[i - 1] == MARK:
            raise MisplacedMark(i + 1)
        positions.append(i - len(positions))  # 1-based position of the residue before '#'
        start = i + 1
    return marked.replace(MARK, ""), positions
