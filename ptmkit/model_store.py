"""Packaged models in an MLflow store: log, resolve, download, load and register them.

A run stores its package once, as the artifacts of an ``mlflow.pyfunc`` model named ``model``
(``artifacts/model/`` inside it, as its ``MLmodel`` records), so MLflow can register and serve
it. ``runs:/<id>/model`` (MLflow 3 resolves it to that logged model), a run id or a prefix of
one, and ``models:/<name>@<alias>`` all download that model; :func:`package.package_root` finds
the package inside it (runs of older ptmkit also logged a plain ``model/`` copy; both load).

Loading goes through :func:`ptmkit.package.read_package` only. It never calls
``mlflow.pyfunc.load_model``: that executes the model's Python code (``ptmkit_pyfunc.py``) and
is meant for MLflow-native serving (:mod:`ptmkit.serving`) of models from a source one trusts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from . import runids
from .errors import PtmkitError, first_line
from .package import META, PYFUNC_KEY, LoadedModel, package_root, read_package

#: Name of the logged model (``runs:/<id>/model``).
ARTIFACT = "model"


def log_package(directory: Path) -> str | None:
    """Log the package once, as the pyfunc logged model ``model`` of the active run.

    Returns the logged model id. The pyfunc uses MLflow's models-from-code (a three-line
    ``ptmkit_pyfunc.py``, :data:`ptmkit.serving.ENTRY_POINT`) rather than a cloudpickled object,
    so the stored model holds no pickle.
    """
    import mlflow

    from . import serving

    with tempfile.TemporaryDirectory(prefix="ptmkit-pyfunc-") as tmp:
        code = Path(tmp) / "ptmkit_pyfunc.py"
        code.write_text(serving.ENTRY_POINT)
        with quiet_mlflow(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            info = mlflow.pyfunc.log_model(
                name=ARTIFACT,
                python_model=str(code),
                artifacts={PYFUNC_KEY: str(directory)},
                pip_requirements=serving.pip_requirements(),
                signature=serving.signature(),
            )
    return getattr(info, "model_id", None)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """No artifact progress bars or INFO chatter from MLflow inside ptmkit commands."""
    import logging

    logger = logging.getLogger("mlflow")
    level = logger.level
    old = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        if old is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old


def resolve_ref(ref: str) -> str | Path:
    """A local folder (Path) or an MLflow URI (str) for a MODEL argument."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if ref.startswith(("runs:/", "models:/")):
        return ref
    if path.exists():
        raise PtmkitError(f"model {ref!r} is a file; give the model folder that holds {META}")
    if runids.is_hex(ref):  # a run id or a prefix of one; ``download`` resolves it in the store
        try:
            return f"runs:/{runids.normalise(ref)}/{ARTIFACT}"
        except runids.RunIdError as exc:
            raise runids.RunIdError(f"model {ref!r} is not a folder, and as a run id: {exc}") from None
    raise PtmkitError(
        f"model {ref!r} is neither a folder, a run id (or its first {runids.MIN_PREFIX}+ hex digits), "
        "runs:/<run_id>/model nor models:/<name>@<alias>"
    )


def _check_store(uri: str) -> None:
    """Open the store read-side (``tracking.open_store``): never creates one, refuses a file that
    is not a database, and points MLflow's own helpers at it (else they create ./mlflow.db)."""
    from . import tracking

    try:
        tracking.open_store(uri, create=False)
    except tracking.StoreNotFound as exc:
        raise PtmkitError(
            f"no MLflow store at {exc.path}; pass --uri, set MLFLOW_TRACKING_URI, or run from a folder "
            "at or below the one holding the run's mlflow.db"
        ) from None


def download(ref: str, destination: Path, tracking_uri: str | None = None) -> Path:
    """Download an MLflow model URI into ``destination`` (a copy, never the store's own files)."""
    import mlflow

    from .tracking import tracking_uri as default_uri

    uri = tracking_uri or default_uri()
    _check_store(uri)
    if ref.startswith("runs:/"):  # a prefix becomes the full id; a run without a model is refused
        ref = runids.resolve_runs_uri(ref, uri)
    try:
        with quiet_mlflow():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=ref, dst_path=str(destination), tracking_uri=uri, registry_uri=uri
            )
    except Exception as exc:  # MlflowException, missing run or alias, unreachable server
        raise PtmkitError(f"cannot load model {ref} from {uri}: {first_line(exc)}") from None
    return Path(local)


def load_model(
    ref: str | Path, *, tracking_uri: str | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load a packaged model from a folder, a run id, ``runs:/<id>/model`` or ``models:/name@alias``.

    Reads only data formats (no pickle, no code from the package) and rebuilds the model from
    the recipe through the registry.
    """
    target = resolve_ref(str(ref))
    if isinstance(target, Path):
        return read_package(package_root(target), str(ref), device=device)
    with tempfile.TemporaryDirectory(prefix="ptmkit-model-") as tmp:
        local = download(target, Path(tmp), tracking_uri)
        return read_package(package_root(local), str(ref), device=device)


@contextlib.contextmanager
def fetched(
    ref: str | Path, *, tracking_uri: str | None = None, device: str | torch.device = "cpu"
) -> Iterator[tuple[LoadedModel, Path]]:
    """``load_model`` plus the package folder it was read from, kept for the block (an ensemble
    copies its members' packages): a local folder as is, a store's model in a temporary copy."""
    target = resolve_ref(str(ref))
    if isinstance(target, Path):
        root = package_root(target)
        yield read_package(root, str(ref), device=device), root
        return
    with tempfile.TemporaryDirectory(prefix="ptmkit-model-") as tmp:
        root = package_root(download(target, Path(tmp), tracking_uri))
        yield read_package(root, str(ref), device=device), root


def register(run_id: str, name: str, *, alias: str | None = None, tracking_uri: str | None = None) -> int:
    """Register a run's model as a version of ``name`` (and point ``alias`` at it); returns the version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from .tracking import tracking_uri as default_uri

    uri = tracking_uri or default_uri()
    _check_store(uri)
    client = MlflowClient(uri, registry_uri=uri)
    shown = run_id.strip().lower()
    run_id = runids.resolve(run_id, uri)  # a unique prefix of >= 8 hex digits is enough
    runids.require_model(uri, run_id, ARTIFACT, shown=shown)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with quiet_mlflow():
            version = mlflow.register_model(f"runs:/{run_id}/{ARTIFACT}", name)
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except Exception as exc:
        raise PtmkitError(f"cannot register run {run_id} as {name!r}: {exc}") from None
    return int(version.version)
