"""Recipes: YAML files (safe-loaded) that declare data, features, a model graph, losses, training.

A recipe may ``extends:`` a base recipe (paths relative to the recipe); mappings merge key by
key, except that a mapping whose ``type`` differs from the base's replaces it whole (swapping a
plugin must not inherit the old plugin's settings), lists replace, and ``null`` deletes a key.
``--set a.b.c=value`` overrides apply last (values parsed as YAML). Every key remembers where it
was written (``file:line``), so validation errors point at the line to fix.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import safeyaml
from .errors import RecipeError, RegistryError
from .plugin_api import PluginConfig
from .registry import PluginSpec, Registry
from .textio import not_utf8

Key = tuple[str | int, ...]


# ---------------------------------------------------------------------------- loading + merging
def read_recipe_text(path: Path) -> str:
    """The text of a recipe-like file; bytes that are not UTF-8 are named with file:line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        raw = data[start : end if end >= 0 else len(data)]
        line = data.count(b"\n", 0, exc.start) + 1
        moved = UnicodeDecodeError(exc.encoding, raw, exc.start - start, exc.end - start, exc.reason)
        raise RecipeError(str(not_utf8(path, line, raw, moved))) from None


def _compose_locations(node: yaml.Node, path: Key, where: str, out: dict[Key, str]) -> None:
    """``key path -> file:line`` for every key (the node graph is bounded by safeyaml.compose)."""
    out[path] = f"{where}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else key_node.start_mark.line
            out[path + (key,)] = f"{where}:{key_node.start_mark.line + 1}"
            _compose_locations(value_node, path + (key,), where, out)
            out[path + (key,)] = f"{where}:{key_node.start_mark.line + 1}"
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _compose_locations(item, path + (i,), where, out)


def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[Key, str]]:
    """Read one recipe file: bounded safe YAML (no alias bombs), every key located."""
    if path.is_dir():
        raise RecipeError(f"{path} is a directory, not a recipe file")
    try:
        text = read_recipe_text(path)
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    try:
        node = safeyaml.compose(text, str(path))
        data = safeyaml.construct(node)
    except safeyaml.YamlError as exc:
        raise RecipeError(str(exc)) from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a mapping of sections, got {type(data).__name__}")
    locations: dict[Key, str] = {}
    if node is not None:
        _compose_locations(node, (), str(path), locations)
    return data, locations


def merge(base: Any, child: Any) -> Any:
    if isinstance(base, dict) and isinstance(child, dict):
        if "type" in child and child.get("type") != base.get("type"):
            return {k: v for k, v in child.items() if v is not None}
        out = dict(base)
        for key, value in child.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out
    return child


def load_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[Key, str]]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"recipe extends itself: {chain}")
    data, locations = _load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, locations
    where = locations.get(("extends",), str(path))
    if not isinstance(parent, str):
        raise RecipeError(f"{where}: extends: expected a file path (got {parent!r})")
    # checked here, not in the callee, so the message points at the `extends:` line that is wrong
    target = (path.parent / parent).resolve()
    if target in (*seen, path):
        chain = " -> ".join(p.name for p in (*seen, path, target))
        raise RecipeError(
            f"{where}: extends: {parent!r} closes a cycle, the recipe extends itself ({chain}); "
            "valid: a base recipe that is not in this chain"
        )
    if not target.exists():
        raise RecipeError(f"{where}: extends: no such file {parent!r} (looked for {target})")
    base_data, base_locations = load_with_extends(target, (*seen, path))
    return merge(base_data, data), {**base_locations, **locations}


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected path=value, e.g. train.epochs=5")
    path, raw = item.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise RecipeError(f"--set {item!r}: empty key path")
    try:
        value = safeyaml.load(raw, f"--set {item}") if raw.strip() else ""
    except safeyaml.YamlTooLarge as exc:
        raise RecipeError(str(exc)) from None
    except safeyaml.YamlError:
        value = raw
    return keys, value


def apply_override(data: dict, item: str, locations: dict[Key, str]) -> None:
    """Apply one ``a.b.c=value`` override in place (list items by index: ``losses.0.weight``)."""
    keys, value = _parse_override(item)
    target: Any = data
    walked: list[str | int] = []
    for key in keys[:-1]:
        if isinstance(target, list):
            try:
                target = target[int(key)]
            except (ValueError, IndexError):
                raise RecipeError(
                    f"--set {item!r}: no list item {key!r} at {'.'.join(map(str, walked))}"
                ) from None
            walked.append(int(key))
            continue
        if not isinstance(target, dict):
            raise RecipeError(f"--set {item!r}: {'.'.join(map(str, walked))} is not a mapping")
        target = target.setdefault(key, {})
        walked.append(key)
    last = keys[-1]
    if isinstance(target, list):
        try:
            target[int(last)] = value
        except (ValueError, IndexError):
            raise RecipeError(f"--set {item!r}: no list item {last!r}") from None
        walked.append(int(last))
    elif isinstance(target, dict):
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
        walked.append(last)
    else:
        raise RecipeError(f"--set {item!r}: {'.'.join(map(str, walked))} is not a mapping")
    key = tuple(walked)
    for stale in [k for k in locations if len(k) > len(key) and k[: len(key)] == key]:
        del locations[stale]  # the file lines of what the override replaced would mislead
    locations[key] = f"--set {item}"


# ---------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSection(_Strict):
    valid: float = Field(0.1, gt=0, lt=1, description="fraction of training rows held out for validation")
    test: float = Field(0.2, gt=0, lt=1, description="test fraction when the source has no test split")
    seed: int = Field(0, description="seed of the stratified splits")
    file: str | None = Field(
        None,
        description="reuse the splits saved in this file (ptmkit.splits.save_split_file, or a run's "
        "data/splits.tsv.gz; relative to the recipe) instead of drawing them",
    )
    group: Literal["protein"] | None = Field(
        None,
        description="'protein': carve test and validation by whole proteins, so no protein is in two "
        "splits (null: by rows, as before)",
    )
    dedupe: bool = Field(
        False,
        description="remove validation rows whose window is in training, and test rows whose window is "
        "in training or validation (a warning says how many)",
    )


class DataSection(_Strict):
    source: str | dict[str, Any] = Field(description="'uniptms:H1' or {reader: NAME, ...reader config}")
    window: int | None = Field(None, description="odd window width (crop fragments, window proteins)")
    residues: str | None = Field(None, description="keep only sites whose centre residue is one of these")
    split: SplitSection = Field(default_factory=SplitSection)


class TrainSection(_Strict):
    epochs: int = Field(30, ge=1, description="maximum number of epochs")
    batch_size: int = Field(64, ge=1, description="windows per optimisation step")
    epoch_windows: int | None = Field(
        None, ge=2, description="train on a fresh random subset of this many windows per epoch (null: all)"
    )
    balance: bool = Field(
        False,
        description="class-balanced epochs: as many positives as negatives per epoch, drawn afresh "
        "(losses then see a 1:1 class ratio)",
    )
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay")
    patience: int = Field(5, ge=1, description="epochs without validation-AP gain before stopping")
    grad_clip: float | None = Field(1.0, description="max gradient norm (null: no clipping)")
    seed: int = Field(0, description="seed for weights, batches and dropout")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null: torch default)")
    device: Literal["cpu", "cuda", "mps", "auto"] = Field("cpu", description="where to train")


class TrackingSection(_Strict):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the nearest mlflow.db up from "
        "the working directory, else <PTMKIT_HOME>/mlflow.db)",
    )
    experiment: str = Field("ptmkit", description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name (default: the recipe name)")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags for the run")


@dataclass
class PluginUse:
    """One plugin use in a recipe: where, which plugin, its validated config."""

    where: str  # key path, e.g. "model.nodes.enc"
    spec: PluginSpec
    config: PluginConfig
    inputs: list[str] = field(default_factory=list)
    weight: float = 1.0

    def build(self, *args: Any) -> Any:
        return self.spec.obj(self.config, *args)


@dataclass
class Recipe:
    """A validated recipe: everything a run needs, nothing left to look up by string."""

    name: str
    path: Path | None
    raw: dict[str, Any]  # the resolved mapping (after extends and overrides)
    data: DataSection
    features: dict[str, PluginUse]
    nodes: dict[str, PluginUse]
    output: str | None
    losses: list[PluginUse]
    train: TrainSection
    tracking: TrackingSection
    locations: dict[Key, str]

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def digest(self) -> str:
        canonical = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)

    def flat(self) -> dict[str, str]:
        """``a.b.c -> value`` for logging as MLflow params."""
        return flatten(self.raw)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): json.dumps(value) if isinstance(value, list) else str(value)}


class _Locator:
    """Turns a key path into ``file:line key.path`` for messages."""

    def __init__(self, locations: dict[Key, str]) -> None:
        self.locations = locations
        self.missing: list[str] = []  # required plugin distributions that are not installed

    def __call__(self, path: Key) -> str:
        dotted = ".".join(str(p) for p in path)
        for n in range(len(path), -1, -1):
            where = self.locations.get(tuple(path[:n]))
            if where:
                return f"{where}: {dotted}" if dotted else where
        return dotted


def _format_errors(
    exc: ValidationError, prefix: Key, locate: _Locator, valid_keys: list[str], owner: str = ""
) -> RecipeError:
    """One line per problem: ``file:line: key.path: what is wrong (got value)``."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{locate(loc)}: unknown key{owner}; valid keys: {', '.join(valid_keys)}")
        elif err["type"] == "missing":
            lines.append(f"{locate(loc)}: {err['msg']}")
        else:
            lines.append(f"{locate(loc)}: {err['msg']} (got {err.get('input')!r})")
    return RecipeError("invalid recipe:\n  " + "\n  ".join(lines))


def _validate_section(model: type[BaseModel], data: Any, prefix: Key, locate: _Locator) -> Any:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise _format_errors(exc, prefix, locate, list(model.model_fields)) from None


def _plugin_use(
    registry: Registry, kind: str, raw: Any, prefix: Key, locate: _Locator, reserved: set[str]
) -> PluginUse:
    if not isinstance(raw, dict):
        raise RecipeError(f"{locate(prefix)}: expected a mapping with a 'type' key, got {raw!r}")
    if "type" not in raw:
        raise RecipeError(f"{locate(prefix)}: missing 'type' (the registered {kind} plugin name)")
    try:
        spec = registry.get(kind, str(raw["type"]))
    except RegistryError as exc:
        hint = ""
        if locate.missing:
            need = ", ".join(locate.missing)
            hint = f" This recipe requires {need}, not installed here: pip install {' '.join(locate.missing)}"
        raise RecipeError(f"{locate(prefix + ('type',))}: {exc}{hint}") from None
    config_data = {k: v for k, v in raw.items() if k != "type" and k not in reserved}
    try:
        config = spec.obj.Config.model_validate(config_data)
    except ValidationError as exc:
        valid = sorted(set(spec.obj.Config.model_fields) | reserved | {"type"})
        raise _format_errors(exc, prefix, locate, valid, f" for {spec.name!r}") from None
    return PluginUse(where=".".join(map(str, prefix)), spec=spec, config=config)


TOP_LEVEL = ("name", "requires", "data", "features", "model", "losses", "train", "tracking")


def missing_distributions(requires: Any, locate: _Locator) -> list[str]:
    """Plugin distributions a recipe declares under ``requires:`` that are not installed."""
    if requires is None:
        return []
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise RecipeError(f"{locate(('requires',))}: requires: expected a list of distribution names")
    missing = []
    for name in requires:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def parse(
    raw: dict[str, Any],
    registry: Registry,
    *,
    path: Path | None = None,
    locations: dict[Key, str] | None = None,
) -> Recipe:
    """Validate a resolved recipe mapping against the core schema and every plugin's config."""
    locate = _Locator(locations or {})
    unknown = [k for k in raw if k not in TOP_LEVEL]
    if unknown:
        raise RecipeError(
            f"{locate((unknown[0],))}: unknown section {unknown[0]!r}; sections are {', '.join(TOP_LEVEL)}"
        )
    locate.missing = missing_distributions(raw.get("requires"), locate)
    for section in ("data", "features", "model"):
        if section not in raw:
            raise RecipeError(f"{path or 'recipe'}: missing section {section!r}")
    data = _validate_section(DataSection, raw["data"], ("data",), locate)
    if data.window is not None and (data.window < 1 or data.window % 2 == 0):
        # caught here, before any data is read: a window needs a centre residue
        raise RecipeError(
            f"{locate(('data', 'window'))}: window must be a positive odd width (got {data.window}); "
            "valid: 1, 3, 5, ... (e.g. 31 or 33)"
        )
    train = _validate_section(TrainSection, raw.get("train"), ("train",), locate)
    tracking = _validate_section(TrackingSection, raw.get("tracking"), ("tracking",), locate)

    if not isinstance(raw["features"], dict) or not raw["features"]:
        raise RecipeError(f"{locate(('features',))}: features: expected a mapping of name -> {{type: ...}}")
    features = {
        str(name): _plugin_use(registry, "feature", spec, ("features", name), locate, set())
        for name, spec in raw["features"].items()
    }

    model = raw["model"]
    if not isinstance(model, dict) or not isinstance(model.get("nodes"), dict) or not model["nodes"]:
        raise RecipeError(f"{locate(('model',))}: model: expected {{nodes: {{name: {{type, inputs, ...}}}}}}")
    extra = [k for k in model if k not in ("nodes", "output")]
    if extra:
        raise RecipeError(f"{locate(('model', extra[0]))}: unknown key; model has 'nodes' and 'output'")
    nodes: dict[str, PluginUse] = {}
    for name, spec in model["nodes"].items():
        prefix: Key = ("model", "nodes", str(name))
        use = _plugin_use(registry, "module", spec, prefix, locate, {"inputs"})
        inputs = spec.get("inputs")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            raise RecipeError(
                f"{locate(prefix + ('inputs',))}: inputs: expected a non-empty list of names, got {inputs!r}"
            )
        use.inputs = inputs
        nodes[str(name)] = use
    output = model.get("output")

    raw_losses = raw.get("losses") or [{"type": "bce"}]
    if isinstance(raw_losses, dict):
        raw_losses = [raw_losses]
    if not isinstance(raw_losses, list):
        raise RecipeError(f"{locate(('losses',))}: losses: expected a list of {{type, weight, ...}}")
    losses = []
    for i, spec in enumerate(raw_losses):
        use = _plugin_use(registry, "loss", spec, ("losses", i), locate, {"weight"})
        weight = spec.get("weight", 1.0)
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise RecipeError(
                f"{locate(('losses', i, 'weight'))}: weight: expected a number (got {weight!r})"
            )
        use.weight = float(weight)
        losses.append(use)

    name = str(raw.get("name") or (path.stem if path else "recipe"))
    return Recipe(
        name=name,
        path=path,
        raw=raw,
        data=data,
        features=features,
        nodes=nodes,
        output=output,
        losses=losses,
        train=train,
        tracking=tracking,
        locations=locations or {},
    )


def load(path: str | Path, overrides: list[str] | None = None, registry: Registry | None = None) -> Recipe:
    """Load, merge (``extends``), override (``--set``) and validate a recipe file."""
    from .hooks import get_registry

    path = Path(path)
    data, locations = load_with_extends(path)
    data = copy.deepcopy(data)
    for item in overrides or []:
        apply_override(data, item, locations)
    return parse(data, registry or get_registry(), path=path.resolve(), locations=locations)
