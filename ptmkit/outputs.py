"""Writing output files without ever losing or destroying one.

Regular files are written to ``NAME.partial`` beside the target and renamed over it only once
complete, so a crash, a kill or a full disk leaves the previous file intact. Special files
(``/dev/null``, ``/dev/stdout``, a FIFO) are written in place: renaming over them would replace
a device node with a regular file, which as root destroys ``/dev/null`` for the whole system.
Directories are refused before any work starts. Every command that writes a file goes through
:func:`check_output` (up front) and :func:`atomic_open` (when writing).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import PtmkitError

PARTIAL_SUFFIX = ".partial"


def is_special(path: Path) -> bool:
    """True for an existing path that is neither a regular file nor a directory (device, FIFO …)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_output(path: str | Path, what: str = "output") -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    A directory, a parent that is a file, or a folder without write permission is an error
    naming the path; a missing parent folder is created.
    """
    path = Path(path)
    if path.is_dir():
        raise PtmkitError(f"{what} {path} is a directory; give a file path inside it instead")
    if is_special(path):
        if not os.access(path, os.W_OK):
            raise PtmkitError(f"{what} {path}: not writable")
        return path
    parent = path.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise PtmkitError(f"{what} {path}: {folder} is a file, not a folder")
            break
    _writable_folder(parent, f"{what} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise PtmkitError(f"{what} {path}: the existing file is not writable")
    return path


def check_plot_dir(path: str | Path, what: str = "--plot") -> Path:
    """A folder for figures: created if missing; an existing file or an unwritable folder refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PtmkitError(f"{what} {path} is a file; give a folder for the figures")
    _writable_folder(path, f"{what} {path}")
    return path


def _writable_folder(folder: Path, label: str) -> None:
    """Create ``folder`` if missing; refuse it if files cannot be made in it (read-only mount …)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtmkitError(f"{label}: cannot create folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PtmkitError(f"{label}: folder {folder} is not writable")


def write_error(path: Path, exc: OSError) -> PtmkitError:
    """An OSError while writing ``path`` as one line that names the path (disk full, quota …)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PtmkitError(f"disk full while writing {path}: no space left on its file system; "
                           "the previous file (if any) is unchanged")
    return PtmkitError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it is replaced only once the block completes.

    Special files are opened directly. On any failure the ``.partial`` file is removed and the
    old file is left as it was; an OSError (e.g. disk full) becomes a PtmkitError naming the path.
    """
    path = Path(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    if path.is_dir():
        raise PtmkitError(f"{path} is a directory; give a file path inside it instead")
    if is_special(path):
        try:
            with open(path, mode, **kwargs) as fh:
                yield fh
        except OSError as exc:
            raise write_error(path, exc) from None
        return
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(partial, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if partial.exists():
            partial.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (or directly, for a special file)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)
