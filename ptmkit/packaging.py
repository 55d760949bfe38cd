"""The packaged model: what a run stores so the model can be used without the training code path.

A package is one folder (``weights.pt``, ``recipe.yaml``, ``model.json``, ``features/``) holding
everything needed to rebuild the model: the state dict, the resolved recipe (which plugins, how
wired), the fitted state of every feature and the decision thresholds chosen on validation data.
A run logs it twice under the name ``model``: as plain run artifacts (``model/``) and as the
artifacts of an ``mlflow.pyfunc`` model (``artifacts/model/`` inside it, as its ``MLmodel``
records), so that MLflow can register and serve it. ``runs:/<id>/model`` downloads both, merged
into one folder.

Loading never unpickles anything a user may have received from someone else: ``load_model``
reads the files itself (weights with ``torch.load(weights_only=True)``, the recipe with
``ptmkit.safeyaml``, JSON and ``.npz`` without pickle), checks their sha256 against
``model.json`` and rebuilds the model from the recipe through the plugin registry (which only
knows installed plugins). It never calls ``mlflow.pyfunc.load_model``: that executes the
package's Python code (``ptmkit_pyfunc.py``) and is meant for MLflow-native serving of models
from a source one trusts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__, runids, safeyaml
from .errors import PtmkitError, RecipeError, first_line
from .featurize import build_features
from .graph import ModelGraph, used_features
from .plugin_api import Feature
from .recipe import Recipe

FORMAT = "ptmkit-model/2"
#: Formats this loader reads (1: before checksums and feature state existed).
READABLE = ("ptmkit-model/1", FORMAT)
WEIGHTS, RECIPE, META, FEATURES = "weights.pt", "recipe.yaml", "model.json", "features"
#: Name of the logged model and of the run artifact folder.
ARTIFACT = "model"
#: Folder name of the package inside a pyfunc model's ``artifacts/``.
PYFUNC_KEY = "ptmkit"
#: Threshold rules, in the order the CLI offers them. ``0.5`` is the fixed default cut-off.
RULES = ("val_spec95", "val_max_mcc", "val_mcc_bootstrap", "val_mcc_smooth", "0.5")

_PYFUNC_CODE = '''"""MLflow models-from-code entry point of a ptmkit model (written by ptmkit.packaging)."""

import mlflow

from ptmkit.packaging import PtmkitPyfunc

mlflow.models.set_model(PtmkitPyfunc())
'''


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- feature state
def feature_has_fit(feature: Feature) -> bool:
    """True when the plugin overrides ``Feature.fit`` (so it may hold learned state)."""
    return type(feature).fit is not Feature.fit


def save_feature_state(name: str, feature: Feature, directory: Path) -> dict[str, Any] | None:
    """Write the state a feature learned in ``fit`` as JSON (+ ``.npz`` arrays), never pickle.

    A stateful feature exposes ``export_state() -> dict`` (JSON values or numpy arrays) and
    ``import_state(dict)``. A feature that overrides ``fit`` without ``export_state`` is recorded
    as ``unsaved`` so the loader refuses it instead of silently predicting with unfitted state.
    """
    export = getattr(feature, "export_state", None)
    if export is None:
        return {"unsaved": True} if feature_has_fit(feature) else None
    state = export()
    if not isinstance(state, dict):
        raise PtmkitError(f"feature {name!r}: export_state() must return a dict, got {type(state).__name__}")
    arrays = {k: np.asarray(v) for k, v in state.items() if isinstance(v, np.ndarray | torch.Tensor)}
    values = {k: v for k, v in state.items() if k not in arrays}
    for key, array in arrays.items():
        if array.dtype == object:
            raise PtmkitError(f"feature {name!r}: state array {key!r} has dtype object (would need pickle)")
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    try:
        (directory / f"{name}.json").write_text(json.dumps(values, sort_keys=True, indent=1))
    except TypeError as exc:
        raise PtmkitError(f"feature {name!r}: state is not JSON-serialisable: {exc}") from None
    files["json"] = f"{FEATURES}/{name}.json"
    if arrays:
        np.savez(directory / f"{name}.npz", **{k: a for k, a in arrays.items()})
        files["npz"] = f"{FEATURES}/{name}.npz"
    return files


def load_feature_state(name: str, feature: Feature, entry: dict[str, Any] | None, root: Path) -> None:
    """Give a rebuilt feature back its fitted state (JSON + ``.npz`` loaded with allow_pickle=False)."""
    if entry is None:
        if feature_has_fit(feature) and hasattr(feature, "export_state"):
            raise PtmkitError(f"feature {name!r} is stateful but the package holds no state for it")
        return
    if entry.get("unsaved"):
        raise PtmkitError(
            f"feature {name!r} ({type(feature).__name__}) learned state in fit() but its plugin has no "
            "export_state(), so the package cannot reproduce it; add export_state/import_state to "
            "the plugin and train again"
        )
    state: dict[str, Any] = json.loads(_inside(root, entry["json"]).read_text())
    if "npz" in entry:
        with np.load(_inside(root, entry["npz"]), allow_pickle=False) as npz:
            state.update({k: npz[k] for k in npz.files})
    load = getattr(feature, "import_state", None)
    if load is None:
        raise PtmkitError(f"feature {name!r}: the package holds state but the plugin has no import_state()")
    load(state)


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refusing paths that leave the package folder."""
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise PtmkitError(f"{root}: package file {rel!r} points outside the package")
    return path


def feature_key(name: str, feature: Feature, entry: dict[str, Any] | None) -> str:
    """Key under which encodings may be shared across models: cache key + fitted-state digest."""
    if not entry or entry.get("unsaved"):
        return feature.cache_key()
    return f"{feature.cache_key()}:{entry.get('state_sha256', '')[:16]}"


def feature_identity(feature: Feature) -> dict[str, Any]:
    """What a feature's cache key is made of, stored so a change of the key *formula* alone
    (not of the plugin) does not make trained models unloadable."""
    cls = type(feature)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "version": str(feature.version),
        "config": feature.config.model_dump(mode="json"),
    }


def check_feature(ref: str, name: str, feature: Feature, entry: dict[str, Any]) -> None:
    """Refuse a feature that would encode differently from training (version or config changed)."""
    if entry.get("cache_key") == feature.cache_key():
        return
    if "version" not in entry:  # a format-1 package: nothing finer to compare against
        warnings.warn(
            f"model {ref}: feature {name!r} has another cache key than at training "
            f"({feature.cache_key()} != {entry.get('cache_key')}); the package predates the stored "
            "plugin identity, so it cannot be checked whether the encoding changed",
            UserWarning,
            stacklevel=3,
        )
        return
    now = feature_identity(feature)
    changed = [k for k in ("version", "config") if entry.get(k) != now[k]]
    if changed:
        what = "; ".join(f"{k} {entry.get(k)!r} at training, {now[k]!r} now" for k in changed)
        raise PtmkitError(
            f"model {ref}: feature {name!r} encodes differently in this install ({what}), so the "
            "model would see other inputs than it was trained on"
        )


# ---------------------------------------------------------------------------- writing
def write_package(
    directory: Path,
    *,
    model: ModelGraph,
    recipe: Recipe,
    features: dict[str, Feature],
    dataset: str,
    ptm: str,
    residues: str,
    window: int,
    thresholds: dict[str, float],
    best_epoch: int,
    run_id: str | None = None,
) -> Path:
    """Write the package folder; ``model.json`` lists the sha256 of every other file."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / WEIGHTS)
    (directory / RECIPE).write_text(recipe.to_yaml())
    feature_meta: dict[str, dict[str, Any]] = {}
    for name, feature in features.items():
        state = save_feature_state(name, feature, directory / FEATURES)
        entry: dict[str, Any] = {
            "plugin": recipe.features[name].spec.name,
            "cache_key": feature.cache_key(),
            **feature_identity(feature),
            "dim": feature.dim,
            "state": state,
        }
        if state and not state.get("unsaved"):
            digest = hashlib.sha256()
            for rel in sorted(v for k, v in state.items() if k in ("json", "npz")):
                digest.update(sha256(directory / rel).encode())
            entry["state"]["state_sha256"] = digest.hexdigest()
        feature_meta[name] = entry
    files = {
        str(p.relative_to(directory).as_posix()): sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != META
    }
    meta = {
        "format": FORMAT,
        "name": recipe.name,
        "dataset": dataset,
        "ptm": ptm,
        "residues": residues,
        "window": window,
        "features": feature_meta,
        "thresholds": {"default": 0.5, **thresholds},
        "best_epoch": best_epoch,
        "run_id": run_id,
        "ptmkit_version": __version__,
        "torch_version": torch.__version__,
        "files": files,
    }
    (directory / META).write_text(json.dumps(meta, indent=2))
    return directory


def _pip_requirements() -> list[str]:
    from importlib import metadata

    reqs = [f"ptmkit=={__version__}"]
    for name in ("torch", "mlflow", "pandas", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{name}=={metadata.version(name).split('+')[0]}")
    return reqs


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "protein_id", required=False), ColSpec("string", "sequence")])
    outputs = Schema(
        [
            ColSpec("string", "protein_id"),
            ColSpec("long", "position"),
            ColSpec("string", "residue"),
            ColSpec("string", "ptm_type"),
            ColSpec("double", "score"),
            ColSpec("long", "call"),
            ColSpec("string", "model"),
        ]
    )
    params = ParamSchema(
        [ParamSpec("rule", "string", default="val_spec95"), ParamSpec("threshold", "double", default=None)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_package(directory: Path) -> str | None:
    """Log the package as run artifacts ``model/`` and as the pyfunc logged model ``model``.

    Returns the logged model id. The pyfunc uses MLflow's models-from-code (a three-line
    ``ptmkit_pyfunc.py``) rather than a cloudpickled object, so the package holds no pickle.
    """
    import mlflow

    mlflow.log_artifacts(str(directory), ARTIFACT)
    with tempfile.TemporaryDirectory(prefix="ptmkit-pyfunc-") as tmp:
        code = Path(tmp) / "ptmkit_pyfunc.py"
        code.write_text(_PYFUNC_CODE)
        with _quiet_mlflow(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            info = mlflow.pyfunc.log_model(
                name=ARTIFACT,
                python_model=str(code),
                artifacts={PYFUNC_KEY: str(directory)},
                pip_requirements=_pip_requirements(),
                signature=_signature(),
            )
    return getattr(info, "model_id", None)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
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


# ---------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A package rebuilt in memory: model in eval mode, features with their state, thresholds."""

    ref: str
    meta: dict[str, Any]
    recipe: Recipe
    features: dict[str, Feature]
    model: ModelGraph
    feature_keys: dict[str, str]

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.recipe.name)

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def residues(self) -> str:
        return str(self.meta["residues"])

    @property
    def ptm(self) -> str:
        return str(self.meta["ptm"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.meta["thresholds"].items()}

    def threshold(self, rule: str) -> float:
        """The cut-off of a named rule: ``0.5``, ``val_max_mcc`` or ``val_spec95``."""
        key = "default" if rule in ("0.5", "default") else rule
        if key not in self.meta["thresholds"]:
            have = ", ".join("0.5" if k == "default" else k for k in self.meta["thresholds"])
            raise PtmkitError(f"model {self.ref}: no threshold rule {rule!r}; it has {have}")
        return float(self.meta["thresholds"][key])

    @torch.no_grad()
    def scores(
        self, tensors: dict[str, torch.Tensor], mask: torch.Tensor, batch_size: int = 2048
    ) -> np.ndarray:
        """Sigmoid scores for pre-encoded rows (the same forward pass as ``train.predict``)."""
        device = next(self.model.parameters(), torch.empty(0)).device
        out = []
        for start in range(0, len(mask), batch_size):
            part = {k: v[start : start + batch_size].to(device) for k, v in tensors.items()}
            logits = self.model(part, mask[start : start + batch_size].to(device))["logits"]
            out.append(torch.sigmoid(logits).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def _pyfunc_package(directory: Path) -> Path | None:
    """The package folder inside a pyfunc model, as its ``MLmodel`` file (ptmkit.safeyaml) says."""
    mlmodel = directory / "MLmodel"
    if not mlmodel.is_file():
        return None
    try:
        spec = safeyaml.load(mlmodel.read_text(encoding="utf-8"), str(mlmodel)) or {}
        rel = spec["flavors"]["python_function"]["artifacts"][PYFUNC_KEY]["path"]
    except (PtmkitError, OSError, UnicodeDecodeError, KeyError, TypeError):
        return None
    candidate = (directory / str(rel)).resolve()
    if directory.resolve() not in candidate.parents:  # a path escaping the model folder is not ours
        return None
    return candidate


def package_root(directory: Path) -> Path:
    """The folder holding ``model.json``: the folder itself, or the package inside a pyfunc model."""
    for candidate in (directory, _pyfunc_package(directory)):
        if candidate is not None and (candidate / META).is_file():
            return candidate
    raise PtmkitError(
        f"{directory}: not a ptmkit model (no {META} here nor in a pyfunc model's artifacts); give a "
        "model folder, a run id, runs:/<run_id>/model or models:/<name>@<alias>"
    )


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
        with _quiet_mlflow():
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


def _verify(root: Path, meta: dict[str, Any], ref: str) -> None:
    files: dict[str, str] = meta.get("files") or {}
    if not (root / WEIGHTS).is_file():
        raise PtmkitError(f"model {ref}: weights file {root / WEIGHTS} is missing; the package is incomplete")
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            raise PtmkitError(f"model {ref}: {rel} is missing from the package ({root})")
        if sha256(path) != expected:
            raise PtmkitError(
                f"model {ref}: {rel} does not match the sha256 recorded in {META} (the file was "
                "modified or corrupted after training); refusing to load it"
            )


def _corrupt(path: Path, ref: str, why: str) -> PtmkitError:
    return PtmkitError(
        f"model {ref}: corrupt weights file {path}: {why}; its sha256 matches {META}, so it was damaged "
        "before the checksum was recorded (or the checksum was rewritten): re-download or retrain"
    )


def _load_weights(path: Path, ref: str) -> Any:
    """``torch.load(weights_only=True)``, telling a damaged file ("corrupt") from one holding Python
    objects ("could run code"): both fail to load, but only the second is a security matter."""
    if path.stat().st_size == 0:
        raise _corrupt(path, ref, "the file is empty")
    with open(path, "rb") as fh:
        head = fh.read(4)
    is_zip = head == b"PK\x03\x04"  # every torch.save since torch 1.6 writes a zip archive
    if not is_zip and not head.startswith(b"\x80"):  # nor a (legacy) pickle stream
        raise _corrupt(path, ref, f"not a torch.save file (starts with {head!r}, not a zip or pickle header)")
    if is_zip:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _corrupt(path, ref, f"truncated or damaged zip archive ({exc})") from None
        if bad is not None:
            raise _corrupt(path, ref, f"member {bad!r} fails its CRC check")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise _corrupt(path, ref, f"unreadable pickle data ({first_line(exc, 160)})") from None
        raise PtmkitError(
            f"model {ref}: {WEIGHTS} is not a plain state dict loadable with torch.load(weights_only=True): "
            "it holds Python objects other than tensors, and unpickling them could run code; refusing "
            "to load it"
        ) from None
    except Exception as exc:  # a legacy (non-zip) file cut short, or not a torch file at all
        why = f"not a torch.save file ({type(exc).__name__}: {first_line(exc, 160)})"
        raise _corrupt(path, ref, why) from None


def read_package(root: Path, ref: str = "", *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from a package folder: checks, recipe, features + state, weights."""
    from . import recipe as recipes
    from .hooks import get_registry

    ref = ref or str(root)
    try:
        meta = json.loads((root / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PtmkitError(f"model {ref}: cannot read {META}: {exc}") from None
    if meta.get("format") not in READABLE:
        raise PtmkitError(
            f"model {ref}: unknown package format {meta.get('format')!r}; "
            f"this ptmkit reads {', '.join(READABLE)}"
        )
    _verify(root, meta, ref)
    try:
        raw = safeyaml.load(recipes.read_recipe_text(root / RECIPE), f"model {ref}: {RECIPE}")
        if not isinstance(raw, dict):
            raise PtmkitError(f"model {ref}: {RECIPE} is not a recipe mapping")
        recipe = recipes.parse(raw, get_registry(), path=None)
    except OSError as exc:
        raise PtmkitError(f"model {ref}: cannot read {RECIPE}: {exc}") from None
    except RecipeError as exc:
        raise PtmkitError(
            f"model {ref}: its recipe needs plugins or settings this install lacks: {exc}"
        ) from None
    names = used_features(recipe)
    stored: dict[str, dict[str, Any]] = meta.get("features", {})
    if sorted(names) != sorted(stored):
        raise PtmkitError(
            f"model {ref}: recipe features {names} differ from {META} features {sorted(stored)}"
        )
    features = build_features(recipe, names)
    keys: dict[str, str] = {}
    for name, feature in features.items():
        entry = stored[name]
        check_feature(ref, name, feature, entry)
        load_feature_state(name, feature, entry.get("state"), root)
        keys[name] = feature_key(name, feature, entry.get("state"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="features .* are declared but unused")
        model = ModelGraph(recipe, {n: f.dim for n, f in features.items()})
    state = _load_weights(root / WEIGHTS, ref)
    if not isinstance(state, dict):
        raise PtmkitError(f"model {ref}: {WEIGHTS} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PtmkitError(f"model {ref}: weights do not fit the recipe's model: {exc}") from None
    model.to(torch.device(device))
    model.eval()
    return LoadedModel(ref=ref, meta=meta, recipe=recipe, features=features, model=model, feature_keys=keys)


# ---------------------------------------------------------------------------- registry
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
        with _quiet_mlflow():
            version = mlflow.register_model(f"runs:/{run_id}/{ARTIFACT}", name)
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except Exception as exc:
        raise PtmkitError(f"cannot register run {run_id} as {name!r}: {exc}") from None
    return int(version.version)


# ---------------------------------------------------------------------------- MLflow pyfunc
def _make_pyfunc_class() -> type:
    """Build the PythonModel subclass on first use: importing mlflow.pyfunc costs about a second,
    which ``ptmkit predict`` on a local folder should not pay."""
    import mlflow.pyfunc

    class PtmkitPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow-native serving: DataFrame (protein_id, sequence) in, the long site table out.

        ``load_context`` goes through ptmkit's own safe loader on the package artifacts, so only
        the entry-point code (``ptmkit_pyfunc.py``) runs as code. Params: ``rule``, ``threshold``.
        """

        def load_context(self, context: Any) -> None:
            self.loaded = read_package(Path(context.artifacts[PYFUNC_KEY]), "pyfunc")

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            from .predict import predict_frame

            params = params or {}
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            return predict_frame(
                [self.loaded],
                frame,
                rule=params.get("rule") or "val_spec95",
                threshold=params.get("threshold"),
            )

    PtmkitPyfunc.__module__ = __name__
    PtmkitPyfunc.__qualname__ = "PtmkitPyfunc"
    return PtmkitPyfunc


def __getattr__(name: str) -> Any:
    """``ptmkit.packaging.PtmkitPyfunc`` (the class ``ptmkit_pyfunc.py`` instantiates), made lazily."""
    if name == "PtmkitPyfunc":
        cls = _make_pyfunc_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
