"""Download catalogue datasets into the data root, verified by sha256 and written atomically.

A file appears under its final name only after its hash matched the catalogue, so an
interrupted or tampered download never leaves a file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from . import catalog
from .errors import PtmkitError
from .outputs import write_error

_CHUNK = 1 << 16


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    name: str,
    data_root: Path,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> list[Path]:
    """Download a collection (``uniptms``: every dataset) or one preset (``uniptms:K2``) under
    ``<data_root>/<collection>/``.

    Files already present with the catalogue hash are kept (only verified) unless ``force``.
    Returns every file of the selected datasets, each present and verified when it returns.
    ``base_url`` (default: the collection's) may be a ``file://`` URL (offline mirrors, tests).
    """
    paths: list[Path] = []
    for entry in catalog.select(name):
        url = base_url or catalog.collection_of(entry).base_url
        if not url:
            raise PtmkitError(f"{entry.name}: its collection names no download location; pass --base-url")
        if not url.endswith("/"):
            url += "/"
        root = Path(data_root) / entry.collection
        for rel, expected in entry.files.items():
            target = root / rel
            if force or not target.is_file() or sha256_file(target) != expected:
                _download(url + rel, target, expected, rel, timeout, entry.collection)
            paths.append(target)
    return paths


def _copy_url(url: str, out: BinaryIO, h: Any, timeout: float, collection: str) -> None:
    """Stream ``url`` into ``out``; a network failure is a PtmkitError, a write failure an OSError."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _unreachable(url, exc, collection) from None
    with response:
        while True:
            try:
                block = response.read(_CHUNK)
            except OSError as exc:
                raise _unreachable(url, exc, collection) from None
            if not block:
                return
            h.update(block)
            out.write(block)


def _unreachable(url: str, exc: Exception, collection: str) -> PtmkitError:
    reason = getattr(exc, "reason", exc)
    return PtmkitError(
        f"could not download {url}: {reason}. Without network access, copy the "
        f"{collection} files from a machine that has them and set "
        f"PTMKIT_DATA (or --data-root) to the folder holding {collection}/"
    )


def _download(url: str, target: Path, expected: str, rel: str, timeout: float, collection: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_url(url, out, h, timeout, collection)
        except OSError as exc:  # writing, not downloading, failed: disk full, read-only ...
            raise write_error(target, exc) from None
        got = h.hexdigest()
        if got != expected:
            raise PtmkitError(
                f"{rel}: sha256 mismatch for {url}: expected {expected}, got {got}; the "
                "download was discarded"
            )
        tmp.chmod(0o644)  # mkstemp creates 0600; data files are meant to be shared
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
