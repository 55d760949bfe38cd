"""The package format: one folder that rebuilds a trained model without the training code path.

A package (``weights.pt``, ``recipe.yaml``, ``model.json``, ``features/``) holds the state dict,
the resolved recipe (which plugins, how wired), the fitted state of every feature and the
decision thresholds chosen on validation data. This module writes and reads that folder and
nothing else: storing it in MLflow is :mod:`ptmkit.model_store`, serving it through MLflow's
pyfunc is :mod:`ptmkit.serving`, scoring with it is :mod:`ptmkit.inference`.

Reading never unpickles anything a user may have received from someone else: weights load with
``torch.load(weights_only=True)``, the recipe with ``ptmkit.safeyaml``, JSON and ``.npz`` without
pickle; every file's sha256 is checked against ``model.json`` and the model is rebuilt from the
recipe through the plugin registry (which only knows installed plugins).
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, safeyaml
from .assembly import assemble
from .errors import PtmkitError, RecipeError, first_line
from .graph import ModelGraph
from .plugin_api import Feature
from .recipe import Recipe
from .thresholds import FIXED_RULE

FORMAT = "ptmkit-model/2"
#: A multi-task package (``tasks`` in model.json): an older ptmkit, which would read only its
#: top-level ptm/residues, refuses it by this format instead of scoring one task wrongly.
TASKS_FORMAT = "ptmkit-model/3"
#: Formats this loader reads (1: before checksums and feature state existed).
READABLE = ("ptmkit-model/1", FORMAT, TASKS_FORMAT)
WEIGHTS, RECIPE, META, FEATURES = "weights.pt", "recipe.yaml", "model.json", "features"
#: Key of the package among a pyfunc model's artifacts (``artifacts/<folder>/`` inside it).
PYFUNC_KEY = "ptmkit"


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

    A stateful feature (``Feature.stateful``) exports ``export_state() -> dict`` (JSON values or
    numpy arrays) and imports it with ``import_state(dict)``. One that overrides ``fit`` without
    declaring state (``stateful`` None) is recorded as ``unsaved`` so the loader refuses it instead
    of silently predicting with unfitted state; ``stateful = False`` has nothing to save.
    """
    stateful = getattr(type(feature), "stateful", None)
    if not stateful:
        return {"unsaved": True} if stateful is None and feature_has_fit(feature) else None
    state = feature.export_state()
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
        if getattr(type(feature), "stateful", None):
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
    feature.import_state(state)  # Feature.import_state says when the plugin lacks one


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
    tasks: list[ModelTask] | None = None,
) -> Path:
    """Write the package folder; ``model.json`` lists the sha256 of every other file.

    ``tasks`` (a multi-task model, in its output order): each task's name, PTM, residues and
    validation thresholds; the top-level ``thresholds`` then hold only the fixed cut-off."""
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
        "format": TASKS_FORMAT if tasks else FORMAT,
        "name": recipe.name,
        "dataset": dataset,
        "ptm": ptm,
        "residues": residues,
        "window": window,
        "features": feature_meta,
        "thresholds": {"default": float(FIXED_RULE), **thresholds},
        **({"tasks": [t.to_json() for t in tasks]} if tasks else {}),
        "best_epoch": best_epoch,
        "run_id": run_id,
        "ptmkit_version": __version__,
        "torch_version": torch.__version__,
        "files": files,
    }
    (directory / META).write_text(json.dumps(meta, indent=2))
    return directory


@dataclass(frozen=True)
class ModelTask:
    """One task of a packaged model: what it predicts, on which residues, with which cut-offs
    (``default`` is the fixed 0.5; the others were chosen on that task's validation rows)."""

    name: str
    ptm: str
    residues: str
    thresholds: dict[str, float]
    #: the task's own window width when narrower than the model's (its fragments were centred
    #: and padded in training; predict masks its windows to this width); None: the model's
    width: int | None = None
    #: a protein-mode model's task trained on fragments: predict scores it on its own windows,
    #: as it was trained, not on whole-protein units
    windowed: bool = False

    def to_json(self) -> dict[str, Any]:
        cuts = {"default": float(FIXED_RULE), **self.thresholds}
        out: dict[str, Any] = {
            "name": self.name,
            "ptm": self.ptm,
            "residues": self.residues,
            "thresholds": cuts,
        }
        if self.width is not None:
            out["width"] = self.width
        return {**out, "windowed": True} if self.windowed else out

    def threshold(self, rule: str, ref: str = "") -> float:
        """The cut-off of a named rule (``ptmkit.thresholds.RULES``; ``0.5`` is ``default``)."""
        key = "default" if rule in (FIXED_RULE, "default") else rule
        if key not in self.thresholds:
            have = ", ".join(FIXED_RULE if k == "default" else k for k in self.thresholds)
            where = f"model {ref}" + (f", task {self.name}" if self.name != self.ptm else "")
            raise PtmkitError(f"{where}: no threshold rule {rule!r}; it has {have}")
        return float(self.thresholds[key])


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

    def trained_width(self, task: ModelTask) -> int:
        """The window width ``task`` was trained on: its own when its fragments were narrower
        (centred and padded to the model's), else the model's."""
        return min(task.width or self.window, self.window)

    @property
    def ptm(self) -> str:
        return str(self.meta["ptm"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.meta["thresholds"].items()}

    @functools.cached_property
    def tasks(self) -> list[ModelTask]:
        """The model's tasks in output order; a one-task model has one, named by its PTM (read
        from ``meta`` once: predict asks for them per batch)."""
        if "tasks" in self.meta:
            return [
                ModelTask(
                    str(t["name"]),
                    str(t["ptm"]),
                    str(t["residues"]),
                    {k: float(v) for k, v in t["thresholds"].items()},
                    None if t.get("width") is None else int(t["width"]),
                    bool(t.get("windowed", False)),
                )
                for t in self.meta["tasks"]
            ]
        return [ModelTask(self.ptm, self.ptm, self.residues, self.thresholds)]

    def task(self, name: str) -> ModelTask:
        """The task called ``name`` (see :attr:`tasks`)."""
        return next(t for t in self.tasks if t.name == name)

    @property
    def multitask(self) -> bool:
        """Several tasks, scored as one [N, T] output (``tasks`` in model.json)."""
        return "tasks" in self.meta

    def threshold(self, rule: str) -> float:
        """The cut-off of a named rule (``ptmkit.thresholds.RULES``; ``0.5`` is stored as ``default``).

        A multi-task model has one per task: :meth:`ModelTask.threshold` of ``tasks``."""
        if self.multitask:
            raise PtmkitError(
                f"model {self.ref} has {len(self.tasks)} tasks, each with its own thresholds; "
                "ask a task (LoadedModel.tasks[i].threshold)"
            )
        return self.tasks[0].threshold(rule, self.ref)


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


def verify_files(root: Path, files: dict[str, str], ref: str, what: str = "package") -> None:
    """Every file ``model.json`` lists is inside ``root``, present, and has its recorded sha256."""
    for rel, expected in files.items():
        path = _inside(root, rel)
        if not path.is_file():
            raise PtmkitError(f"model {ref}: {rel} is missing from the {what} ({root})")
        if sha256(path) != expected:
            raise PtmkitError(
                f"model {ref}: {rel} does not match the sha256 recorded in {META} (the file was "
                f"modified or corrupted after the {what} was written); refusing to load it"
            )


def _verify(root: Path, meta: dict[str, Any], ref: str) -> None:
    if not (root / WEIGHTS).is_file():
        raise PtmkitError(f"model {ref}: weights file {root / WEIGHTS} is missing; the package is incomplete")
    verify_files(root, meta.get("files") or {}, ref)


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
    from .ensemble import FORMAT as ENSEMBLE_FORMAT

    if meta.get("format") == ENSEMBLE_FORMAT:  # members averaged: each one read by this loader
        from .ensemble import read_ensemble

        return read_ensemble(root, meta, ref, device=device)
    if meta.get("format") not in READABLE:
        raise PtmkitError(
            f"model {ref}: unknown package format {meta.get('format')!r}; "
            f"this ptmkit reads {', '.join((*READABLE, ENSEMBLE_FORMAT))}"
        )
    _verify(root, meta, ref)
    try:
        raw = safeyaml.load(recipes.read_recipe_text(root / RECIPE), f"model {ref}: {RECIPE}")
        if not isinstance(raw, dict):
            raise PtmkitError(f"model {ref}: {RECIPE} is not a recipe mapping")
        recipe = recipes.parse(raw, get_registry(), path=None, lenient_source=True)
    except OSError as exc:
        raise PtmkitError(f"model {ref}: cannot read {RECIPE}: {exc}") from None
    except RecipeError as exc:
        raise PtmkitError(
            f"model {ref}: its recipe needs plugins or settings this install lacks: {exc}"
        ) from None
    try:  # the one build step, as at training (losses are not needed to score)
        built = assemble(recipe, losses=False, warn_unused=False)
    except RecipeError as exc:
        raise PtmkitError(f"model {ref}: its recipe does not build in this install: {exc}") from None
    features, model = built.features, built.graph
    names = list(features)
    stored: dict[str, dict[str, Any]] = meta.get("features", {})
    if sorted(names) != sorted(stored):
        raise PtmkitError(
            f"model {ref}: recipe features {names} differ from {META} features {sorted(stored)}"
        )
    keys: dict[str, str] = {}
    for name, feature in features.items():
        entry = stored[name]
        check_feature(ref, name, feature, entry)
        load_feature_state(name, feature, entry.get("state"), root)
        keys[name] = feature_key(name, feature, entry.get("state"))
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
