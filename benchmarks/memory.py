"""Peak resident memory of this process, per measured phase (Linux: VmHWM, reset between jobs)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def release() -> None:
    """Give freed memory back to the OS (garbage collection, then glibc's ``malloc_trim``).

    A long-lived worker otherwise keeps the heap of its largest earlier job as resident memory,
    and the next job's peak would be that, not its own.
    """
    gc.collect()
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):  # not glibc
            libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (find_library runs ldconfig)."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB; None without /proc."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_mb() -> float:
    """Resident set size now, in MiB (0 where /proc is unavailable)."""
    return _status_mb("VmRSS") or 0.0


def reset_peak() -> bool:
    """Release freed memory and reset the kernel's peak-RSS mark to the current RSS, so the
    next reading covers only what follows.

    Writing ``5`` to ``/proc/self/clear_refs`` does that on Linux >= 4.0; elsewhere the peak
    stays process-wide and :func:`peak_mb` reports the high-water mark since start.
    """
    release()
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident set size in MiB since the last :func:`reset_peak` (or process start)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
