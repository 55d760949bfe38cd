"""MLflow tracking: where runs go, opening a store safely, heartbeats, and how a run ends.

Store rules (``resolve_store``): ``--uri`` / recipe ``tracking.uri`` > ``$MLFLOW_TRACKING_URI``
(empty = unset) > the nearest ``mlflow.db`` walking up from the working directory (so project
folders keep their store) > one per-user store ``<PTMKIT_HOME>/mlflow.db``. Every command that
opens a store goes through ``open_store``, which holds a file lock while MLflow creates or
migrates a sqlite database: MLflow's schema migration is not safe against a second process
doing the same (``duplicate column name: step``).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import platform
import signal
import sqlite3
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import platformdirs

from .errors import PtmkitError, Terminated, first_line

DEFAULT_DB = "mlflow.db"
#: Param values are capped by MLflow; longer recipe values are truncated (the full recipe is
#: always logged as an artifact).
MAX_PARAM = 6000
#: Seconds between heartbeats of a RUNNING run (``$PTMKIT_HEARTBEAT_S`` overrides, for tests).
HEARTBEAT_S = 60.0
#: A RUNNING run without a heartbeat for this long is stale: its process is gone (SIGKILL,
#: power cut, OOM killer). ``$PTMKIT_STALE_AFTER_S`` overrides. Ten heartbeats of slack.
STALE_AFTER_S = 600.0
HEARTBEAT_TAG = "ptmkit.heartbeat"
ERROR_TAG = "ptmkit.error"
#: The walk up to the nearest ``mlflow.db`` stops at these folders (os.pathsep-separated), as
#: git's GIT_CEILING_DIRECTORIES: tests and sandboxes keep a stray store above them out.
CEILING_ENV = "PTMKIT_CEILING_DIRS"


# ---------------------------------------------------------------------------- where runs go
@dataclass(frozen=True)
class Store:
    uri: str
    #: why this store was chosen, in words (printed by ``run`` and ``compare``)
    origin: str

    def describe(self) -> str:
        return f"{self.uri} ({self.origin})"


def ptmkit_home() -> Path:
    """``$PTMKIT_HOME``, else the user data dir (``~/.local/share/ptmkit`` on Linux)."""
    env = os.environ.get("PTMKIT_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("ptmkit"))


def _ceilings() -> list[Path]:
    dirs = [Path(d).expanduser().resolve() for d in os.environ.get(CEILING_ENV, "").split(os.pathsep) if d]
    return [*dirs, Path.home().resolve()]


def find_project_store(start: Path | None = None) -> Path | None:
    """The nearest ``mlflow.db`` of yours in ``start`` (the working dir) or a parent, up to a
    ceiling ($PTMKIT_CEILING_DIRS, your home, or a shared scratch folder such as /tmp)."""
    here = (start or Path.cwd()).resolve()
    ceilings = _ceilings()
    for folder in (here, *here.parents):
        if folder != here and _shared_scratch(folder):
            break  # /tmp, /scratch: another user's mlflow.db there must not receive your runs
        candidate = folder / DEFAULT_DB
        if candidate.is_file() and _owned(candidate):
            return candidate
        if folder in ceilings:
            break
    return None


def _shared_scratch(folder: Path) -> bool:
    """A sticky, world-writable folder (``/tmp``): anyone may have left a store there."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return True
    return bool(mode & stat.S_ISVTX and mode & stat.S_IWOTH)


def _owned(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.getuid()
    except OSError:
        return False


def normalise_uri(uri: str) -> str:
    """A plain path to a file (``--uri runs/mlflow.db``) means that sqlite file; a relative
    sqlite path (``sqlite:///mlflow.db``) is made absolute from the working folder. MLflow keeps
    one store per URI string in a process, so a relative URI would otherwise keep writing to the
    first folder it was used in after the process moved to another."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest, sep, query = uri.removeprefix("sqlite:///").partition("?")
        if rest and rest != ":memory:":
            return f"sqlite:///{Path(rest).expanduser().resolve()}{sep}{query}"
        return uri
    if "://" in uri or uri.startswith(("databricks", "file:")):
        return uri
    path = Path(uri).expanduser()
    if path.is_file() or path.suffix == ".db":
        return f"sqlite:///{path.resolve()}"
    return uri


def resolve_store(explicit: str | None = None) -> Store:
    """Which store a command uses, and why (the precedence in the module docstring)."""
    if explicit:
        return Store(normalise_uri(explicit), "given by --uri / tracking.uri")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return Store(normalise_uri(env), "from $MLFLOW_TRACKING_URI")
    found = find_project_store()
    if found is not None:
        return Store(f"sqlite:///{found}", f"nearest {DEFAULT_DB} above the working directory")
    return Store(f"sqlite:///{ptmkit_home() / DEFAULT_DB}", "the per-user store; set PTMKIT_HOME to move it")


def tracking_uri(explicit: str | None = None) -> str:
    """The URI ``resolve_store`` picks. MLflow 3 refuses its plain file store, hence sqlite."""
    return resolve_store(explicit).uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working dir), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def artifact_root(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts next to the database (not in the cwd)."""
    db = sqlite_path(uri)
    if db is not None:
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


# ---------------------------------------------------------------------------- opening a store
class StoreNotFound(PtmkitError):
    """A read-only command (compare, predict RUN) named a sqlite store that does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no MLflow store at {path}")


@contextlib.contextmanager
def store_lock(uri: str, *, required: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<db>.lock`` (sqlite stores only; others need none).

    ``required=False`` (reading an existing store): a folder where no lock file can be made — a
    read-only mount, a team store in someone else's folder — reads without the lock instead.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    lock = db.with_name(db.name + ".lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115 - held for the duration of the block
    except OSError as exc:
        if not required:
            yield
            return
        raise PtmkitError(f"cannot lock MLflow store {db}: {exc.strerror} ({lock})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_sqlite(db: Path) -> None:
    """Refuse a file that is not an MLflow sqlite database, without modifying it.

    An empty file or a database without tables is fine (MLflow creates its tables); a text
    file, or another program's database, is not. Safe while another process creates MLflow's
    tables: ``experiments`` is the first table MLflow creates.
    """
    if db.is_dir():
        raise PtmkitError(f"{db} is not an MLflow database (it is a directory)")
    if not db.exists() or db.stat().st_size == 0:
        return
    try:
        with open(db, "rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise PtmkitError(f"{db} is not an MLflow database (not an SQLite file)")
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            names = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise PtmkitError(f"{db} is not an MLflow database ({exc})") from None
    except OSError as exc:
        raise PtmkitError(f"cannot read MLflow store {db}: {exc.strerror}") from None
    if names and not {"experiments", "alembic_version"} & names:
        raise PtmkitError(
            f"{db} is not an MLflow database (an SQLite file with other tables: "
            f"{', '.join(sorted(names)[:5])})"
        )


def _open_locked(uri: str, create: bool) -> None:
    """The part of ``open_store`` that runs under the lock: checks, then MLflow's migration."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        check_sqlite(db)
        if not db.exists() and not create:
            raise StoreNotFound(db)
    MlflowClient(uri)  # builds the store: creates tables and migrates them, once


def open_store(uri: str, *, create: bool = True) -> str:
    """Point MLflow (tracking and registry) at ``uri`` and make sure the store is usable.

    The one function every command opens a store with. Setting both process-wide URIs also
    keeps MLflow's own helpers (model URIs, registry clients) from falling back to its default
    ``sqlite:///mlflow.db`` in the working directory. ``create=False``: a missing sqlite file is
    ``StoreNotFound`` and nothing is created.
    """
    import mlflow

    uri = normalise_uri(uri)
    db = sqlite_path(uri)
    if db is not None and create and not db.parent.is_dir():
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PtmkitError(f"cannot create the folder of MLflow store {db}: {exc.strerror}") from None
    if db is not None:
        check_sqlite(db)  # read-only, before the lock: a text file gets no lock file beside it
    try:
        lock = store_lock(uri, required=create) if (create or _exists(uri)) else contextlib.nullcontext()
        # the lock wait stays interruptible; signals are held only while MLflow migrates (a
        # migration cut in half would break the store for everyone)
        with lock, deferred_signals():
            _open_locked(uri, create)
    except PtmkitError:
        raise
    except Exception as exc:  # connection refused, bad URI, locked db ...
        raise PtmkitError(f"cannot use MLflow tracking store {uri!r}: {first_line(exc)}") from exc
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _exists(uri: str) -> bool:
    db = sqlite_path(uri)
    return db is None or db.exists()


def setup(uri: str, experiment: str) -> str:
    """Open the store and make sure ``experiment`` exists; returns its id.

    Get-or-create runs under the store lock too: two runs starting together would otherwise
    both create the experiment and one would die on the unique name.
    """
    import mlflow

    from . import mlflow_ui

    uri = open_store(uri)
    try:
        with store_lock(uri), deferred_signals():
            found = mlflow.get_experiment_by_name(experiment)
            if found is not None:  # model-training view in the MLflow UI (ptmkit.mlflow_ui)
                return mlflow_ui.ensure_experiment(uri, found.experiment_id, found.tags)
            root = artifact_root(uri)
            location = f"{root}/{experiment}" if root else None
            tags = mlflow_ui.experiment_tags()
            return mlflow.create_experiment(experiment, artifact_location=location, tags=tags)
    except Exception as exc:
        raise PtmkitError(f"cannot use MLflow tracking store {uri!r}: {first_line(exc)}") from exc


# ---------------------------------------------------------------------------- heartbeats
def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise PtmkitError(f"${name}: expected a number of seconds (got {value!r})") from None


def heartbeat_interval() -> float:
    value = _env_seconds("PTMKIT_HEARTBEAT_S", HEARTBEAT_S)
    if not value >= 0.1:  # a zero interval would be a busy loop of store writes
        raise PtmkitError(f"$PTMKIT_HEARTBEAT_S: expected at least 0.1 seconds (got {value:g})")
    return value


def check_stale_limit(limit: float, what: str) -> float:
    """A stale limit shorter than two heartbeats would call live runs stale: refuse it."""
    shortest = 2 * heartbeat_interval()
    if not limit >= shortest:
        raise PtmkitError(
            f"{what}: {limit:g} s is shorter than two heartbeats ({shortest:g} s): live runs would "
            f"look stale; give at least {shortest:g}"
        )
    return limit


def stale_after() -> float:
    return check_stale_limit(_env_seconds("PTMKIT_STALE_AFTER_S", STALE_AFTER_S), "$PTMKIT_STALE_AFTER_S")


class Heartbeat:
    """Writes ``ptmkit.heartbeat`` (unix seconds) on a run now, every ``interval`` s, and on ``beat``.

    A daemon thread: it dies with the process (SIGKILL, OOM killer, power cut), and that silence
    is what marks a run stale. (A main thread that hangs while the process lives keeps beating:
    staleness detects dead processes, not stuck ones.) Write errors (a store busy for a moment)
    are skipped, never raised.
    """

    def __init__(self, run_id: str, uri: str, interval: float | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.interval = heartbeat_interval() if interval is None else interval
        self._client = MlflowClient(uri)
        self._last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"ptmkit-heartbeat-{run_id[:8]}", daemon=True)

    def beat(self, soon: bool = False) -> None:
        """Write the heartbeat; ``soon=True`` (each epoch end) skips it when the last one is
        younger than a few seconds, so fast epochs do not double the store's writes."""
        now = time.time()
        if soon and now - self._last < min(self.interval / 2, 5.0):
            return
        self._last = now
        with contextlib.suppress(Exception):
            self._client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(now)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def is_stale(
    status: str,
    start_s: float | None,
    heartbeat_s: float | None,
    *,
    now: float | None = None,
    limit: float | None = None,
) -> bool:
    """RUNNING, and no sign of life (heartbeat, else start) for more than ``limit`` seconds."""
    if status != "RUNNING":
        return False
    last = max(heartbeat_s or 0.0, start_s or 0.0)
    return (time.time() if now is None else now) - last > (stale_after() if limit is None else limit)


def last_alive(start_s: float | None, heartbeat_s: float | None) -> float:
    return max(heartbeat_s or 0.0, start_s or 0.0)


def parse_heartbeat(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass
class StaleRun:
    run_id: str
    name: str
    experiment: str
    last_alive: float

    def since(self) -> str:
        return datetime.fromtimestamp(self.last_alive).astimezone().isoformat(timespec="seconds")


def stale_runs(uri: str, *, older_than: float | None = None, now: float | None = None) -> list[StaleRun]:
    """Every RUNNING run of the store (all experiments) whose last sign of life is too old."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)}
    out = []
    for run in search_all_runs(client, list(experiments), "attributes.status = 'RUNNING'"):
        start = run.info.start_time / 1000 if run.info.start_time else None
        beat = parse_heartbeat(run.data.tags.get(HEARTBEAT_TAG))
        if run.data.tags.get("ptmkit.sweep.split") == "true":  # a split sweep's parent lives in its variants
            beat = max([beat or 0.0, *_children_alive(client, run)])
        if is_stale(run.info.status, start, beat, now=now, limit=older_than):
            out.append(
                StaleRun(
                    run.info.run_id,
                    run.data.tags.get("mlflow.runName", ""),
                    experiments.get(run.info.experiment_id, run.info.experiment_id),
                    last_alive(start, beat),
                )
            )
    return out


def _children_alive(client: Any, run: Any) -> list[float]:
    """The last signs of life (heartbeat, start, end) of a run's child runs."""
    kids = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    out = []
    for kid in kids:
        times = [parse_heartbeat(kid.data.tags.get(HEARTBEAT_TAG)) or 0.0]
        times += [(t or 0) / 1000 for t in (kid.info.start_time, kid.info.end_time)]
        out.append(max(times))
    return out


def search_all_runs(
    client: Any, experiment_ids: list[str], filter_string: str, *, deleted: bool = False
) -> list:
    """Every run of ``experiment_ids`` matching ``filter_string``, page by page (MLflow caps a page)."""
    from mlflow.entities import ViewType

    view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
    runs: list = []
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids, filter_string, run_view_type=view, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def mark_failed(uri: str, stale: StaleRun) -> bool:
    """End a stale run FAILED, at its last sign of life, saying why in ``ptmkit.error``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(stale.run_id)  # it may have beaten or ended since it was listed
    beat = parse_heartbeat(run.data.tags.get(HEARTBEAT_TAG))
    if run.info.status != "RUNNING" or (beat or 0.0) > stale.last_alive:
        return False
    client.set_tag(stale.run_id, ERROR_TAG, f"stale: no heartbeat since {stale.since()}")
    client.set_terminated(stale.run_id, "FAILED", end_time=int(stale.last_alive * 1000))
    return True


# ---------------------------------------------------------------------------- how a run ends
def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def interruption(exc: BaseException) -> str | None:
    """'terminated by SIGTERM' / 'interrupted by SIGINT' for a signal; None for a crash."""
    if isinstance(exc, Terminated):
        return f"terminated by {signal_name(exc.signum)}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    return None


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while a run's end is written: a second signal must not leave
    the run half-ended, nor be lost (it is delivered once the end is written)."""
    with deferred_signals():
        yield


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def sigterm_unwinds() -> Callable[[], None]:
    """Make SIGTERM unwind like SIGINT (``Terminated``), so runs are ended KILLED, not left
    RUNNING; returns the undo (in-process callers such as tests get their handler back)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@dataclass
class Phase:
    """What a run is doing, for the reason a signal ends it with ("during epoch 3 of 20")."""

    now: str = "setup"


@contextlib.contextmanager
def ending_on_error(phase: Phase) -> Iterator[None]:
    """Around the body of an active run: any exception ends that run (``end_active_run``)."""
    try:
        yield
    except BaseException as exc:
        end_active_run(exc, phase.now)
        raise


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the block runs (seconds at most), then deliver the first
    one to the handler it would have met. (Main thread only; elsewhere a no-op.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in saved:  # inside the try: a signal between the two still gets both restored
            signal.signal(s, lambda signum, frame: caught.append(signum))
        yield
    finally:
        raised = None
        for s, handler in saved.items():
            while True:  # a real handler restored first may raise before the next is restored
                try:
                    signal.signal(s, handler if handler is not None else signal.SIG_DFL)
                    break
                except BaseException as exc:
                    raised = raised or exc
        if raised is not None:
            raise raised
        if caught:  # delivered even if the block raised: the signal wins (exit 143 / 130)
            signal.raise_signal(caught[0])


def run_ending(exc: BaseException, phase: str) -> tuple[str, str]:
    """(status, reason) ``exc`` ends a run with: KILLED for a signal, FAILED for a crash. In a
    torchrun job, another rank's recorded failure comes first (FAILED with that rank's error):
    this rank's own exception is then only the echo of it (a broken collective, torchrun's
    SIGTERM)."""
    job = sys.modules.get("ptmkit.distributed")  # imported by every torchrun job; torch otherwise
    peer = job.peer_failure() if job is not None else None
    if peer:
        echo = f"{type(exc).__name__}: {first_line(exc)}"
        return "FAILED", f"{peer} (rank {job.world().rank} then: {echo} during {phase})"
    reason = interruption(exc)
    if reason:
        return "KILLED", f"{reason} during {phase}"
    return "FAILED", f"{type(exc).__name__}: {exc}"


def end_active_run(exc: BaseException, phase: str) -> None:
    """End the active MLflow run for ``exc``: KILLED for a signal, FAILED for a crash, with the
    reason in ``ptmkit.error`` (``terminated by SIGTERM during epoch 3``)."""
    import mlflow

    status, message = run_ending(exc, phase)
    reason = interruption(exc)
    with shielded():
        if reason:
            release_interrupted(exc)
        try:
            _while_locked(lambda: mlflow.set_tag(ERROR_TAG, message[:5000]))
        except Exception as err:  # the store went away: still try to end the run
            _warn_unrecorded("the error tag", err)
        try:
            _while_locked(lambda: mlflow.end_run(status))
        except Exception as err:
            _warn_unrecorded(f"status {status}", err)


def release_interrupted(exc: BaseException) -> None:
    """Let go of what the frames a signal unwound still hold: a statement or transaction of the
    store cut short there keeps sqlite's lock while its cursor lives, and this process's own
    end-of-run write would then wait on it. Only the unwound frames' locals are dropped (the
    traceback's file and line numbers stay for printing); frames still running are left alone."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__context__
    gc.collect()


#: How long the end of a run keeps retrying a write that sqlite refused as "database is locked".
LOCKED_RETRY_S = 30.0


def _while_locked(write: Callable[[], object], budget: float = LOCKED_RETRY_S) -> None:
    """Run ``write``, retrying while sqlite says "database is locked": when several processes end
    their runs at the same moment (a signal to a whole group), each waits its turn for longer than
    sqlite's own 5 s, so no run is left RUNNING for want of one write."""
    deadline = time.monotonic() + budget
    pause = 0.05
    while True:
        try:
            write()
            return
        except Exception as err:
            if "database is locked" not in str(err) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _warn_unrecorded(what: str, err: Exception) -> None:
    import sys

    print(f"warning: could not record {what} in the MLflow store: {first_line(err)}", file=sys.stderr)


# ---------------------------------------------------------------------------- what a run records
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("ptmkit", "torch", "mlflow", "scikit-learn", "numpy", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_name() -> str:
    """The CPU model, for benchmark reports (figures mean little without the machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def clip_params(params: dict[str, str]) -> dict[str, str]:
    return {k[:250]: (v if len(v) <= MAX_PARAM else v[: MAX_PARAM - 3] + "...") for k, v in params.items()}
