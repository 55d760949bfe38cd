"""User-facing errors: one clear message each, never a bare traceback (the CLI prints them)."""

from __future__ import annotations


class PtmkitError(Exception):
    """Base class for errors the CLI shows as one message (``--debug`` adds the traceback)."""


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message (capped), or its type when it has no message: what
    a one-line error shows of a library exception."""
    text = str(exc).strip()
    if not text:
        return exc if isinstance(exc, str) else type(exc).__name__
    return text.splitlines()[0][:limit]


class DataError(PtmkitError):
    """A source file is malformed; the message names file, line and the offending value."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class RegistryError(PtmkitError):
    """Unknown or duplicate plugin names, or a plugin that failed to load."""


class RecipeError(PtmkitError):
    """A recipe is invalid; the message carries the key path (and file:line when known)."""


class GraphError(RecipeError):
    """The model graph is inconsistent: missing input, cycle, unused node, dimension mismatch."""


class Terminated(BaseException):
    """SIGTERM (or another terminating signal) arrived: unwinds like KeyboardInterrupt does for
    SIGINT, so a run is ended KILLED with the reason instead of being left RUNNING."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)

    def __str__(self) -> str:
        import signal

        try:
            return f"terminated by {signal.Signals(self.signum).name}"
        except ValueError:
            return f"terminated by signal {self.signum}"
