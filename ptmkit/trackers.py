"""Where a run's record goes: the :class:`Tracker` protocol, MLflow's tracker and a null one.

``ptmkit.run`` records through a tracker only (as Lightning's loop talks to its logger):
tags, params, per-step metrics, texts, artifact files and folders, the packaged model, what
the run is doing now (the reason a signal ends it with) and how it ended. :class:`MlflowTracker`
is what ``ptmkit run`` uses; :class:`NullTracker` writes nothing anywhere and keeps the record
in memory, so tests and benchmarks can train without a store and read what a run would log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import tracking

if TYPE_CHECKING:
    from .recipe import TrackingSection


@runtime_checkable
class Tracker(Protocol):
    """What a run records, and where. ``start`` opens the run; everything else logs into it."""

    #: the run's id once started ("" for a tracker without ids)
    run_id: str
    #: the store's URI and why it was chosen, in words ("" / "none" without a store)
    uri: str
    store: str
    experiment: str
    experiment_id: str
    #: RUNNING while open, then FINISHED, FAILED (a crash) or KILLED (SIGINT/SIGTERM)
    status: str

    def start(self, run_name: str) -> contextlib.AbstractContextManager[Tracker]:
        """Open the run; leaving the block ends it (an exception ends it FAILED or KILLED)."""
        ...

    def phase(self, what: str) -> None:
        """What the run is doing now ("epoch 3 of 20"), for the reason a signal ends it with."""
        ...

    def beat(self) -> None:
        """A sign of life (at each epoch end); trackers without heartbeats ignore it."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_text(self, text: str, path: str) -> None:
        """``text`` as the artifact file ``path`` (``recipe.yaml``)."""
        ...

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """The file ``path`` as an artifact, under ``folder`` (``plots``) if given."""
        ...

    def log_package(self, directory: Path) -> None:
        """The packaged model folder (``ptmkit.package.write_package``)."""
        ...


def ending(exc: BaseException, phase: str) -> tuple[str, str]:
    """(status, reason) an exception ends a run with, as ``tracking.end_active_run`` records it."""
    return tracking.run_ending(exc, phase)


class MlflowTracker:
    """One MLflow run: the store by ``tracking.resolve_store``, the experiment set up under the
    store lock, heartbeats while it runs, and FAILED/KILLED with ``ptmkit.error`` on the way out.

    ``nested`` nests under the active run of this process (a sweep), ``parent_run_id`` under a
    run started by another process (benchmark suite workers); ``resume_run_id`` reopens an ended
    run (a resumed pretraining) instead of starting one.

    SIGINT/SIGTERM are held back while a write to the store runs (milliseconds for a tag, param,
    metric or heartbeat; seconds for the packaged model), then delivered: a signal landing inside
    SQLAlchemy's transaction could leave this process holding sqlite's lock, and the run's own
    end (KILLED), or other processes' writes, would wait on it.
    """

    def __init__(
        self,
        config: TrackingSection,
        *,
        nested: bool = False,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> None:
        self.config = config
        self.resume_run_id = resume_run_id
        self.nested = nested
        self.parent_run_id = parent_run_id
        self.run_id = ""
        self.uri = ""
        self.store = ""
        self.experiment = config.experiment
        self.experiment_id = ""
        self.status = ""
        self._phase = tracking.Phase()
        self._heartbeat: tracking.Heartbeat | None = None

    @contextlib.contextmanager
    def start(self, run_name: str) -> Iterator[MlflowTracker]:
        import mlflow

        store = tracking.resolve_store(self.config.uri)
        self.uri, self.store = store.uri, store.describe()
        self.experiment_id = tracking.setup(self.uri, self.experiment)
        with contextlib.ExitStack() as stack:
            try:
                # created and guarded whole: a signal held meanwhile lands inside ending_on_error
                with tracking.deferred_signals():
                    active = stack.enter_context(
                        mlflow.start_run(
                            run_id=self.resume_run_id,
                            experiment_id=None if self.resume_run_id else self.experiment_id,
                            run_name=None if self.resume_run_id else run_name,
                            nested=self.nested,
                            parent_run_id=self.parent_run_id,
                        )
                    )
                    self.run_id, self.status = active.info.run_id, "RUNNING"
                    # a crash ends the run FAILED, SIGINT/SIGTERM KILLED; both with the reason in ptmkit.error
                    stack.enter_context(tracking.ending_on_error(self._phase))
                self._heartbeat = stack.enter_context(tracking.Heartbeat(self.run_id, self.uri))
                yield self
            except BaseException as exc:
                if self.run_id:
                    self.status = ending(exc, self._phase.now)[0]
                raise
            finally:
                self._heartbeat = None
        self.status = "FINISHED"

    def phase(self, what: str) -> None:
        self._phase.now = what

    def beat(self) -> None:
        if self._heartbeat is not None:
            with tracking.deferred_signals():
                self._heartbeat.beat(soon=True)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        with tracking.deferred_signals():  # no write cut in half (see the class)
            mlflow.set_tags(dict(tags))

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        with tracking.deferred_signals():  # no write cut in half (see the class)
            mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        with tracking.deferred_signals():  # no write cut in half (see the class)
            mlflow.log_metrics(dict(metrics), step=step)

    def log_text(self, text: str, path: str) -> None:
        import mlflow

        mlflow.log_text(text, path)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), folder)

    def log_package(self, directory: Path) -> None:
        from .model_store import log_package

        with tracking.deferred_signals():
            log_package(directory)


@dataclass
class NullTracker:
    """Records nothing to disk; keeps what a run logged in memory, for tests and benchmarks.

    ``metrics`` holds every value logged per name as ``(step, value)``; ``last`` the latest.
    Artifacts are listed by their artifact path (``plots/roc_pr.png``, ``model/weights.pt``);
    with ``keep_files=True`` their bytes are kept too (the files themselves live in the run's
    temporary folder and are gone after the run).
    """

    keep_files: bool = False
    run_id: str = ""
    uri: str = ""
    store: str = "none (NullTracker: nothing recorded)"
    experiment: str = ""
    experiment_id: str = ""
    status: str = ""
    #: the reason the run ended with, when it did not finish (as ``ptmkit.error`` would hold)
    error: str = ""
    run_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int | None, float]]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes | None] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)

    @property
    def last(self) -> dict[str, float]:
        """The latest value of every metric."""
        return {name: values[-1][1] for name, values in self.metrics.items()}

    @contextlib.contextmanager
    def start(self, run_name: str) -> Iterator[NullTracker]:
        self.run_name, self.status, self.error = run_name, "RUNNING", ""
        try:
            yield self
        except BaseException as exc:
            self.status, self.error = ending(exc, self.phases[-1] if self.phases else "setup")
            raise
        self.status = "FINISHED"

    def phase(self, what: str) -> None:
        if not self.phases or self.phases[-1] != what:
            self.phases.append(what)

    def beat(self) -> None:
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update({k: str(v) for k, v in params.items()})  # MLflow keeps params as text

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append((step, float(value)))

    def log_text(self, text: str, path: str) -> None:
        self.texts[path] = text

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        name = f"{folder}/{path.name}" if folder else path.name
        self.artifacts[name] = path.read_bytes() if self.keep_files else None

    def log_package(self, directory: Path) -> None:
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = f"model/{file.relative_to(directory).as_posix()}"
            self.artifacts[name] = file.read_bytes() if self.keep_files else None
