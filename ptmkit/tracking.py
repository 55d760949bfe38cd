"""MLflow tracking: where runs go, what a run records, and the comparison table."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from .errors import PtmkitError

DEFAULT_DB = "mlflow.db"
#: Param values are capped by MLflow; longer recipe values are truncated (the full recipe is
#: always logged as an artifact).
MAX_PARAM = 6000


def tracking_uri(explicit: str | None = None) -> str:
    """The recipe's URI, else ``$MLFLOW_TRACKING_URI``, else a sqlite store in the working dir.

    MLflow 3 refuses its plain file store, so the embedded default is sqlite; teams point
    ``MLFLOW_TRACKING_URI`` at a tracking server instead.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def artifact_root(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts next to the database (not in the cwd)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def setup(uri: str, experiment: str) -> str:
    """Point MLflow at ``uri`` and make sure ``experiment`` exists; returns its id."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        root = artifact_root(uri)
        location = f"{root}/{experiment}" if root else None
        return mlflow.create_experiment(experiment, artifact_location=location)
    except Exception as exc:  # connection refused, bad URI, locked db ...
        raise PtmkitError(f"cannot use MLflow tracking store {uri!r}: {exc}") from exc


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
