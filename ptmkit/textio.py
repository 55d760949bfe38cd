"""Opening input text files one way everywhere: gzip by its magic bytes, UTF-8 checked line by line.

The readers and ``ptmkit predict`` read FASTA/CSV through these functions, so a gzip file, a
directory, an unreadable file, a truncated gzip stream or a Latin-1 file behaves the same in
every command: it is read, or it fails with one line naming the file, the line and the value.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import DataError

#: First bytes of a gzip stream (RFC 1952); the suffix alone is not trusted.
GZIP_MAGIC = b"\x1f\x8b"
#: Other compressions recognised only to name them in the error.
OTHER_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
    b"(\xb5/\xfd": "zstd",
}
_BOM = b"\xef\xbb\xbf"


def check_input(path: Path) -> Path:
    """``path`` if it can be opened as an input file; a directory or a missing file is a DataError."""
    if path.is_dir():
        raise DataError("is a directory, not a file; give the data file inside it", path=path)
    if not path.exists():
        raise DataError("file not found", path=path)
    return path


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed when it is gzip (by magic bytes, so ``x.txt`` gzip works too)."""
    check_input(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror or exc})", path=path) from None
    with fh:
        head = fh.peek(8)[:8]
        if head.startswith(GZIP_MAGIC):
            with gzip.GzipFile(fileobj=fh, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
            return
        for magic, kind in OTHER_MAGIC.items():
            if head.startswith(magic):
                raise DataError(f"is {kind}-compressed; valid: plain text or gzip (.gz) text", path=path)
        yield fh  # type: ignore[misc]


def not_utf8(path: Path, number: int, raw: bytes, exc: UnicodeDecodeError) -> DataError:
    """``file:line: byte 0xe9 (column 7) is not UTF-8; expected UTF-8 text ...``."""
    column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
    return DataError(
        f"byte 0x{raw[exc.start]:02x} (column {column}) is not UTF-8; expected UTF-8 text "
        "(convert the file, e.g. iconv -f latin1 -t utf-8)",
        path=path,
        line=number,
    )


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a plain or gzip text file, without line ends, BOM dropped.

    Lines end at LF, CRLF or a lone CR (old Mac files); numbers are the lines an editor shows.
    A line that is not UTF-8, a truncated or corrupt gzip stream and read errors raise a
    DataError naming the file and line, never a traceback from the codec or zlib.
    """
    number = 0
    with open_binary(path) as fh:
        try:
            for raw in fh:
                if number == 0 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise not_utf8(path, number + 1, raw, exc) from None
                text = text.removesuffix("\n").removesuffix("\r")
                for part in text.split("\r") if "\r" in text else (text,):
                    number += 1
                    yield number, part
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(
                f"gzip data is truncated or corrupt after {number} line(s) ({exc}); valid: a "
                "complete gzip file (check it with gzip -t)",
                path=path,
                line=number + 1,
            ) from None
        except OSError as exc:
            raise DataError(f"cannot read the file ({exc.strerror or exc})", path=path) from None
