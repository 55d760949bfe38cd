"""Writing output files without ever losing or destroying one.

Regular files are written to a hidden ``.NAME.<random>.partial`` beside the target and renamed
over it only once complete, so a crash, a kill or a full disk leaves the previous file intact
(and two writers of one path never share a partial file). Special files (``/dev/null``, a FIFO,
a terminal) and links into ``/dev`` or ``/proc`` (``/dev/stdout``) are written in place: renaming
over them would replace a device node or the link with a regular file, which as root destroys
``/dev/null`` for the whole system. Any other link is followed: its target is replaced, the link
kept. Directories are refused before any work starts. Every command that writes a file goes
through :func:`check_output` (up front) and :func:`atomic_open` (when writing).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import PtmkitError

PARTIAL_SUFFIX = ".partial"
#: Links into these trees (``/dev/stdout``, ``/proc/self/fd/1``) are written through, in place.
_PSEUDO = ("/dev/", "/proc/")


def is_special(path: Path) -> bool:
    """True when ``path`` must be written in place: an existing path (links followed) that is
    neither a regular file nor a directory (device, FIFO, socket), or a link into /dev or /proc."""
    path = Path(path)
    if path.is_symlink():
        real = os.path.realpath(path)
        if str(path.absolute()).startswith(_PSEUDO) or real.startswith(_PSEUDO):
            return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _replaced(path: Path) -> Path:
    """The file a rename must replace: the target of a link (the link itself stays)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


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
    parent = _replaced(path).parent  # a link's target is what gets replaced
    refuse_file_above(parent, f"{what} {path}")
    _writable_folder(parent, f"{what} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise PtmkitError(f"{what} {path}: the existing file is not writable")
    return path


def refuse_file_above(folder: Path, label: str) -> None:
    """Refuse a folder path whose nearest existing part is a file (``out.tsv/results/``)."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise PtmkitError(f"{label}: {part} is a file, not a folder")
            return


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
        return PtmkitError(
            f"disk full while writing {path}: no space left on its file system; "
            "the previous file (if any) is unchanged"
        )
    return PtmkitError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it is replaced only once the block completes.

    Special files are opened directly. On any failure the partial file is removed and the old
    file is left as it was. An OSError while writing becomes a PtmkitError naming the path; one
    raised by the block about another file (a figure saved meanwhile) names that file instead.
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
            raise _located(exc, path, path) from None
        return
    target = _replaced(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    partial = Path(name)
    try:
        with open(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _keep_mode(partial, target)
        os.replace(partial, target)
    except OSError as exc:
        raise _located(exc, path, partial) from None
    finally:
        if partial.exists():
            partial.unlink()


def _keep_mode(partial: Path, target: Path) -> None:
    """mkstemp makes 0600 files: give the new file the old one's mode, else the umask default."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(partial, mode)


def _located(exc: OSError, path: Path, ours: Path) -> PtmkitError:
    """``write_error`` for the file the OSError is about: ours (the output) or another one."""
    other = exc.filename
    if other is not None and Path(str(other)) not in (ours, path):
        return write_error(Path(str(other)), exc)
    return write_error(path, exc)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (or directly, for a special file)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def check_new_dir(path: str | Path) -> Path:
    """Refuse, before any work, an output folder that exists and is not empty, or lies under a file."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        what = "folder that is not empty" if path.is_dir() else "file"
        raise PtmkitError(f"{path} is a {what}; give a new folder (nothing is overwritten)")
    refuse_file_above(path.parent, str(path))
    return path


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A new folder ``path``, filled in a hidden partial folder beside it and renamed into place
    once the block completes: a failure leaves no half-written folder. An existing non-empty
    ``path`` is refused up front (a model folder is never overwritten)."""
    path = check_new_dir(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o777 & ~umask)  # mkdtemp makes 0700: the folder is meant to be shared
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield partial
        if path.is_dir():
            path.rmdir()  # empty (checked above): replaced by the complete folder
        os.replace(partial, path)
    except OSError as exc:
        raise _located(exc, path, partial) from None
    finally:
        if partial.exists():
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
