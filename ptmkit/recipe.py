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
import re
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import safeyaml
from .errors import PtmkitError, RecipeError, RegistryError
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


#: Task names become metric path parts (``test/<task>/mcc``) and package keys.
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # MLflow allows these in names
#: Names a task may not take: the aggregate over tasks is logged under ``<split>/macro/<metric>``.
RESERVED_TASK_NAMES = ("macro",)


class TaskSection(_Strict):
    source: str | dict[str, Any] = Field(
        description="this task's dataset: a preset ('uniptms:K1') or a reader mapping, as data.source"
    )
    residues: str | None = Field(None, description="keep only this task's sites on these centre residues")
    split_file: str | None = Field(
        None,
        description="reuse this task's saved splits (as data.split.file, relative to the recipe) instead of "
        "drawing them",
    )


class ProteinSection(_Strict):
    """How ``data.unit: protein`` cuts and batches proteins (see ptmkit.units)."""

    chunk: int = Field(
        1021,
        ge=17,
        description="longest piece of a protein one pass sees (odd; ESM-2's limit is 1022); longer "
        "proteins run as overlapping chunks",
    )
    overlap: int = Field(
        128, ge=0, description="residues neighbouring chunks share; a site is scored where it is most central"
    )
    batch_residues: int = Field(
        4096,
        ge=17,
        description="padded residues per batch (chunks of one length bucket; ~12 proteins of median "
        "length), for training and scoring",
    )

    @model_validator(mode="after")
    def _odd(self) -> ProteinSection:
        if self.chunk % 2 == 0:
            raise ValueError(
                f"data.protein.chunk must be odd (a piece has a centre residue), got {self.chunk}"
            )
        if self.overlap >= self.chunk:
            raise ValueError(
                f"data.protein.overlap ({self.overlap}) must be smaller than chunk ({self.chunk})"
            )
        return self


class DataSection(_Strict):
    source: str | dict[str, Any] | None = Field(
        None,
        description="a dataset preset ('uniptms:H1') or {reader: NAME, name, ptm, residues, window, "
        "...the reader's config}",
    )
    tasks: dict[str, TaskSection] | None = Field(
        None,
        description="several tasks in one model instead of one source: {name: {source, residues}}; "
        "each row carries its task, which the model's [N, T] output is read at",
    )
    window: int | None = Field(
        None,
        description="odd window width (crop fragments, window proteins); with tasks, the common width: "
        "narrower fragments are centred and padded",
    )
    residues: str | None = Field(None, description="keep only sites whose centre residue is one of these")
    split: SplitSection = Field(default_factory=SplitSection)
    unit: Literal["window", "protein"] = Field(
        "window",
        description="what one pass of the model sees: a window per site, or 'protein': whole proteins "
        "(chunked), every residue scored at once by a per-residue head; fragment rows stay windows",
    )
    protein: ProteinSection = Field(default_factory=ProteinSection)

    @model_validator(mode="after")
    def _one_source_or_tasks(self) -> DataSection:
        if (self.source is None) == (self.tasks is None):
            raise ValueError(
                "give either data.source (one task) or data.tasks (several), not both or neither"
            )
        if self.tasks is not None:
            if not self.tasks:
                raise ValueError("data.tasks: expected at least one task, {name: {source: ...}}")
            for name in self.tasks:
                if not TASK_NAME.match(name) or name in RESERVED_TASK_NAMES:
                    raise ValueError(
                        f"data.tasks: task name {name!r} is not valid; use letters, digits and _ . - "
                        f"(starting with a letter or digit), not {', '.join(RESERVED_TASK_NAMES)}"
                    )
            if self.window is None:
                raise ValueError("data.tasks needs data.window: the common window width of every task")
            if self.split.file:
                raise ValueError(
                    "data.split.file holds one source's rows; with data.tasks give each task's saved "
                    "split as data.tasks.<name>.split_file"
                )
        if "protein" in self.model_fields_set and self.unit != "protein":
            raise ValueError("data.protein sets how proteins are chunked: it needs data.unit: protein")
        return self

    @property
    def units(self) -> ProteinSection | None:
        """How proteins are cut into units in protein mode; None in window mode."""
        return self.protein if self.unit == "protein" else None


#: Epoch-row keys early stopping may monitor (``ptmkit.train.fit`` logs them every epoch).
MONITORS = ("val/ap", "val/auc", "val/mcc", "val/loss", "train/loss")
#: A multi-task recipe may also monitor one task, or the mean over tasks: ``val/<task|macro>/<metric>``.
TASK_MONITOR = re.compile(r"^val/(?P<task>[^/]+)/(?P<metric>ap|auc|mcc)$")
#: ``train.momentum`` of ``optimizer: sgd`` when the recipe gives none.
SGD_MOMENTUM = 0.9


class EarlyStoppingSection(_Strict):
    monitor: str = Field("val/ap", description=f"epoch metric to watch, one of {', '.join(MONITORS)}")
    mode: Literal["max", "min"] = Field(
        "max", description="'max': higher is better, 'min': lower is (default: min for a .../loss monitor)"
    )
    min_delta: float = Field(
        0.0, ge=0, description="an epoch is the new best only if it beats the best by more than this"
    )
    patience: int = Field(5, ge=1, description="epochs without a new best before training stops")

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, value: str) -> str:
        if value not in MONITORS and not TASK_MONITOR.match(value):
            raise ValueError(
                f"unknown monitor {value!r}; valid: {', '.join(MONITORS)}, and with data.tasks "
                "val/macro/<ap|auc|mcc> (mean over tasks) or val/<task>/<ap|auc|mcc>"
            )
        return value

    @model_validator(mode="after")
    def _loss_is_minimised(self) -> EarlyStoppingSection:
        if "mode" not in self.model_fields_set and self.monitor.endswith("/loss"):
            self.mode = "min"  # a loss that is "maximised" would keep the worst epoch
        return self


class ScheduleSection(_Strict):
    type: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="the lr after warmup: constant, or a cosine or linear decay to min_lr at the last epoch "
        "(train.epochs, or the epoch in which train.budget.windows is reached)",
    )
    warmup_epochs: float | None = Field(
        None, ge=0, description="rise linearly to train.lr over this many epochs (may be fractional)"
    )
    warmup_steps: int | None = Field(None, ge=0, description="the same in optimisation steps")
    min_lr: float = Field(0.0, ge=0, description="the lr at the end of a cosine or linear decay")

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleSection:
        if self.warmup_epochs is not None and self.warmup_steps is not None:
            raise ValueError("give warmup_epochs or warmup_steps, not both")
        if self.min_lr and self.type == "constant":
            raise ValueError("min_lr applies to a cosine or linear schedule (type is constant)")
        return self

    @property
    def is_constant(self) -> bool:
        """No scheduler at all: the lr stays train.lr (what runs did before schedules existed)."""
        return self.type == "constant" and not (self.warmup_epochs or self.warmup_steps)


class BudgetSection(_Strict):
    windows: int | None = Field(
        None, ge=1, description="stop after the epoch in which this many training windows were seen"
    )
    seconds: float | None = Field(
        None,
        gt=0,
        description="stop after the epoch in which this many seconds of training passed (wall clock: "
        "runs with it are not reproducible to the epoch across machines)",
    )


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
    task_balance: bool = Field(
        False,
        description="with data.tasks: task-balanced epochs, as many windows of every task per epoch "
        "(drawn afresh; a small task's windows repeat)",
    )
    task_weights: Literal["uniform", "size"] = Field(
        "uniform",
        description="with data.tasks: each row's loss weight by its task, uniform, or size: "
        "w_t proportional to n_t^-task_weight_exponent, normalised to mean 1 over tasks",
    )
    task_weight_exponent: float = Field(
        0.25, ge=0, le=1, description="task_weights: size exponent (0.25 = MTPrompt-PTM's n^-(1-0.75))"
    )
    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw",
        description="adamw (decoupled weight decay), adam (weight decay as an L2 penalty) or sgd "
        "(with train.momentum)",
    )
    lr: float = Field(1e-3, gt=0, description="learning rate (with a schedule: the rate after warmup)")
    weight_decay: float = Field(1e-2, ge=0, description="weight decay of the optimizer")
    momentum: float | None = Field(
        None, ge=0, lt=1, description=f"SGD momentum (optimizer sgd only; null: {SGD_MOMENTUM})"
    )
    schedule: ScheduleSection = Field(
        default_factory=ScheduleSection,
        description="lr schedule, stepped every optimisation step: 'cosine' or {type, warmup_epochs | "
        "warmup_steps, min_lr} (default constant: no schedule)",
    )
    early_stopping: EarlyStoppingSection = Field(
        default_factory=EarlyStoppingSection,
        description="{monitor, mode, min_delta, patience}: when to stop and which epoch's weights are kept",
    )
    patience: int = Field(
        5,
        ge=1,
        description="the older spelling of early_stopping.patience (still read); both may be given "
        "only with the same value (as a filled recipe writes them)",
    )
    budget: BudgetSection = Field(
        default_factory=BudgetSection,
        description="{windows, seconds}: a training budget besides train.epochs (the first reached ends "
        "training at the end of that epoch)",
    )
    grad_clip: float | None = Field(1.0, description="max gradient norm (null: no clipping)")
    compile: bool = Field(
        False,
        description="train through torch.compile (inductor; needs a C++ compiler at run time, falls back to "
        "eager with a warning without one)",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="training step arithmetic: fp32, or bf16 autocast (matmuls/convs in bfloat16; weights, "
        "optimiser and validation stay fp32; slower than fp32 on CPUs without avx512_bf16/amx_bf16)",
    )
    seed: int = Field(0, description="seed for weights, batches and dropout")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null: torch default)")
    device: Literal["cpu", "cuda", "mps", "auto"] = Field("cpu", description="where to train")

    @field_validator("momentum")
    @classmethod
    def _sgd_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        optimizer = info.data.get("optimizer")
        if value is not None and optimizer is not None and optimizer != "sgd":
            raise ValueError(f"momentum applies to optimizer sgd only (optimizer is {optimizer})")
        return value

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_by_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value  # schedule: cosine

    @field_validator("schedule")
    @classmethod
    def _min_below_lr(cls, value: ScheduleSection, info: ValidationInfo) -> ScheduleSection:
        lr = info.data.get("lr")
        if lr is not None and value.min_lr > lr:
            raise ValueError(f"min_lr {value.min_lr:g} is above train.lr {lr:g}; a decay ends below the lr")
        return value

    @field_validator("patience")
    @classmethod
    def _patience_once(cls, value: int, info: ValidationInfo) -> int:
        stopping = info.data.get("early_stopping")
        if stopping is not None and "patience" in stopping.model_fields_set and stopping.patience != value:
            raise ValueError(
                f"patience is given twice, differently (train.patience {value}, "
                f"train.early_stopping.patience {stopping.patience}); keep early_stopping.patience"
            )
        return value

    @model_validator(mode="after")
    def _one_patience(self) -> TrainSection:
        """``train.patience`` (old recipes, packaged recipes) is early stopping's patience."""
        if "patience" in self.model_fields_set:
            self.early_stopping.patience = self.patience
        else:
            self.patience = self.early_stopping.patience
        return self


class DistillSection(_Strict):
    """Teachers whose scores of the training and validation rows the ``distill`` loss learns from."""

    teachers: dict[str, str] = Field(
        description="task -> teacher model (run id, models:/name@alias or package folder); `all`: one "
        "multi-task teacher for every task it has"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow store of teachers given by run id or registry name (default: the recipe's)"
    )

    @model_validator(mode="after")
    def _some(self) -> DistillSection:
        if not self.teachers:
            raise ValueError("distill.teachers: name at least one teacher (task: model)")
        return self


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


#: Keys of a source mapping the core reads; every other key is the reader plugin's config.
SOURCE_KEYS = {
    "reader": "the reader plugin (ptmkit plugins list --kind reader)",
    "name": "the dataset tag runs are labelled and compared by (default: reader:<first file stem>)",
    "ptm": "the PTM type (packaged with the model, shown by predict)",
    "task": "the task column's value (default: ptm)",
    "residues": "target residue letters (readers of whole proteins cut a window at each)",
    "window": "odd window width (readers of proteins cut it; pre-cut windows are centre-cropped)",
}


@dataclass
class SourceUse:
    """A data source resolved at parse time: the reader plugin use plus what the core reads.

    ``preset`` is the catalogue entry (``uniptms:H1``) when the source names one; its files are
    then relative to ``<data_root>/<collection>``, else to the recipe's folder.
    """

    where: str
    reader: PluginUse
    name: str
    ptm: str
    task: str
    residues: str  # "" when the source names none
    window: int | None
    preset: Any = None  # ptmkit.catalog.Dataset (not imported here: catalog asks the registry)

    def filled(self) -> str | dict[str, Any]:
        """The source as a filled recipe writes it: the preset name, or every key with defaults."""
        if self.preset is not None:
            return str(self.preset.name)
        out: dict[str, Any] = {"reader": self.reader.spec.name, "name": self.name, "ptm": self.ptm}
        if self.task != self.ptm:
            out["task"] = self.task
        if self.residues:
            out["residues"] = self.residues
        if self.window is not None:
            out["window"] = self.window
        return {**out, **self.reader.config.model_dump(mode="json")}


def _check_window(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % 2 == 0:
        raise RecipeError(
            f"{where}: window must be a positive odd width (got {value!r}); "
            "valid: 1, 3, 5, ... (e.g. 31 or 33)"
        )
    return value


def _check_residues(value: Any, where: str) -> str:
    from .alphabet import STANDARD

    text = str(value or "").strip().upper()
    bad = sorted(set(text) - set(STANDARD))
    if bad or (value is not None and not text):
        raise RecipeError(f"{where}: residues must be letters of {STANDARD} (got {value!r}), e.g. K or ST")
    return text


def parse_source(
    raw: Any,
    registry: Registry,
    *,
    locations: dict[Key, str] | None = None,
    prefix: Key = ("data", "source"),
    data_residues: str | None = None,
) -> SourceUse:
    """Resolve a source (preset name or reader mapping) to its validated reader plugin use.

    A misspelled reader, an unknown reader key or a bad value fails here, located at its recipe
    line, so ``ptmkit validate`` catches it before any data is read. ``data_residues`` is the
    recipe's ``data.residues`` (a reader of whole proteins may take its targets from there).
    """
    from . import catalog

    locate = raw_locator(locations)
    where = ".".join(map(str, prefix))
    if isinstance(raw, str):
        if not catalog.is_catalog_name(raw):
            have = ", ".join(f"{c}:<id>" for c in catalog.collections()) or "none installed"
            raise RecipeError(
                f"{locate(prefix)}: {raw!r} is not a dataset preset (registered: {have}); give a preset "
                "name like 'uniptms:H1' or a mapping with a 'reader' key"
            )
        try:
            entry = catalog.get(raw)
        except PtmkitError as exc:
            raise RecipeError(f"{locate(prefix)}: {exc}") from None
        preset = {"reader": entry.reader, **entry.config}
        use = _plugin_use(registry, "reader", preset, prefix, locate, set(), "reader")
        window = entry.window if use.spec.obj.cuts_windows else None
        return SourceUse(where, use, entry.name, entry.ptm, entry.ptm, entry.residues, window, entry)
    if not isinstance(raw, dict):
        raise RecipeError(f"{locate(prefix)}: expected a dataset preset name or a mapping, got {raw!r}")
    if "reader" not in raw:
        raise RecipeError(
            f"{locate(prefix)}: missing 'reader' (the reader plugin's name; "
            "see ptmkit plugins list --kind reader)"
        )
    for key in ("ptm", "task"):
        value = raw.get(key)
        if key in raw and (not isinstance(value, str) or not value.strip()):
            raise RecipeError(f"{locate(prefix + (key,))}: expected a non-empty name (got {value!r})")
    # a plugin API 1 reader may declare core keys (residues, window, task) as its own config fields
    try:
        own = set(registry.get("reader", str(raw["reader"])).obj.Config.model_fields)
    except RegistryError:
        own = set()  # _plugin_use reports the unknown reader with its line
    reserved = set(SOURCE_KEYS) - {"reader"} - own
    use = _plugin_use(registry, "reader", raw, prefix, locate, reserved, "reader")
    ptm = raw.get("ptm", raw.get("task", "ptm"))
    task = raw.get("task", ptm)
    residues = _check_residues(raw["residues"], locate(prefix + ("residues",))) if "residues" in raw else ""
    window = _check_window(raw["window"], locate(prefix + ("window",))) if "window" in raw else None
    if "residues" in use.spec.obj.requires and not (residues or data_residues):
        raise RecipeError(
            f"{locate(prefix)}: reader {use.spec.name!r} makes every target residue of a protein a "
            "candidate, so it needs residues: give data.source.residues (e.g. K or ST) or data.residues"
        )
    if window is None and use.spec.obj.cuts_windows:
        window = use.spec.obj.default_window
    from .datasets import source_name

    name = source_name(use.spec.name, raw.get("name"), raw, locate(prefix + ("name",)))
    return SourceUse(where, use, name, ptm.strip(), task.strip(), residues, window)


def raw_locator(locations: dict[Key, str] | None) -> _Locator:
    """A locator over ``locations`` (empty: key paths only, for sources given on the command line)."""
    return _Locator(locations or {})


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
    source: SourceUse | None = None
    requires: list[str] = field(default_factory=list)
    #: ``data.tasks`` resolved, in recipe order (empty for a one-source recipe)
    tasks: dict[str, SourceUse] = field(default_factory=dict)
    #: the teachers of a distilled run (``ptmkit.distill``); None: no distillation
    distill: DistillSection | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def filled(self) -> dict[str, Any]:
        """The validated recipe with every default written out (confection's filled config).

        What runs log, hash and package: two recipes that run the same are equal here even when
        one relies on defaults, and a default changed in a later ptmkit cannot silently change
        what a packaged model was. Plugin names are canonical (an alias is written as the name).
        Parsing it again gives the same filled recipe.
        """

        def use(u: PluginUse, **extra: Any) -> dict[str, Any]:
            return {"type": u.spec.name, **extra, **u.config.model_dump(mode="json")}

        data = self.data.model_dump(mode="json")
        if self.source is not None:
            data["source"] = self.source.filled()
        for key in ("source", "tasks"):  # a recipe has one or the other
            if data[key] is None:
                del data[key]
        if data["unit"] == "window":  # window recipes read (and hash) as before protein mode existed
            del data["unit"], data["protein"]
        for name, task in self.tasks.items():
            data["tasks"][name]["source"] = task.filled()
        model: dict[str, Any] = {"nodes": {n: use(u, inputs=list(u.inputs)) for n, u in self.nodes.items()}}
        if self.output is not None:
            model["output"] = self.output
        out: dict[str, Any] = {"name": self.name}
        if self.requires:
            out["requires"] = list(self.requires)
        out.update(
            data=data,
            features={n: use(u) for n, u in self.features.items()},
            model=model,
            losses=[use(u, weight=u.weight) for u in self.losses],
        )
        if self.distill is not None:  # recipes without teachers read (and hash) as before
            out["distill"] = self.distill.model_dump(mode="json")
        out.update(train=self.train.model_dump(mode="json"), tracking=self.tracking.model_dump(mode="json"))
        return out

    def digest(self) -> str:
        """Hash of the filled recipe: equal for recipes that differ only in spelling out defaults."""
        filled = self.filled()
        if "tasks" in filled["data"]:  # the tasks' order is the model's output order: part of it
            filled["data"]["task_order"] = list(filled["data"]["tasks"])
        canonical = json.dumps(filled, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        """The filled recipe as YAML (what ``recipe.yaml`` of a run and of a package holds)."""
        return yaml.safe_dump(self.filled(), sort_keys=False)

    def flat(self) -> dict[str, str]:
        """``a.b.c -> value`` of the filled recipe, for logging as MLflow params."""
        return flatten(self.filled())


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


def _nested_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the sub-model ``loc`` (all but its last key) lies in, when it is one
    (``train.early_stopping.monitr`` lists early_stopping's keys, not train's)."""
    for key in loc[:-1]:
        field_info = model.model_fields.get(str(key)) if model is not None else None
        candidates = [field_info.annotation] if field_info is not None else []
        candidates += list(getattr(candidates[0], "__args__", ())) if candidates else []
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return list(model.model_fields) if model is not None else None


def _format_errors(
    exc: ValidationError,
    prefix: Key,
    locate: _Locator,
    valid_keys: list[str],
    owner: str = "",
    model: type[BaseModel] | None = None,
) -> RecipeError:
    """One line per problem: ``file:line: key.path: what is wrong (got value)``."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            nested = _nested_keys(model, tuple(err["loc"])) if len(err["loc"]) > 1 else None
            keys = nested if nested is not None else valid_keys
            lines.append(f"{locate(loc)}: unknown key{owner}; valid keys: {', '.join(keys)}")
        elif err["type"] == "missing":
            lines.append(f"{locate(loc)}: {err['msg']}")
        else:
            lines.append(f"{locate(loc)}: {err['msg']} (got {err.get('input')!r})")
    return RecipeError("invalid recipe:\n  " + "\n  ".join(lines))


def _validate_section(model: type[BaseModel], data: Any, prefix: Key, locate: _Locator) -> Any:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise _format_errors(exc, prefix, locate, list(model.model_fields), model=model) from None


def _plugin_use(
    registry: Registry,
    kind: str,
    raw: Any,
    prefix: Key,
    locate: _Locator,
    reserved: set[str],
    type_key: str = "type",
) -> PluginUse:
    """Look the plugin named by ``raw[type_key]`` up and validate the rest as its config."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{locate(prefix)}: expected a mapping with a {type_key!r} key, got {raw!r}")
    if type_key not in raw:
        raise RecipeError(f"{locate(prefix)}: missing {type_key!r} (the registered {kind} plugin name)")
    try:
        spec = registry.get(kind, str(raw[type_key]))
    except RegistryError as exc:
        hint = ""
        if locate.missing:
            need = ", ".join(locate.missing)
            hint = f" This recipe requires {need}, not installed here: pip install {' '.join(locate.missing)}"
        raise RecipeError(f"{locate(prefix + (type_key,))}: {exc}{hint}") from None
    config_data = {k: v for k, v in raw.items() if k != type_key and k not in reserved}
    try:
        config = spec.obj.Config.model_validate(config_data)
    except ValidationError as exc:
        valid = sorted(set(spec.obj.Config.model_fields) | reserved | {type_key})
        raise _format_errors(exc, prefix, locate, valid, f" for {spec.name!r}") from None
    return PluginUse(where=".".join(map(str, prefix)), spec=spec, config=config)


TOP_LEVEL = ("name", "requires", "data", "features", "model", "losses", "distill", "train", "tracking")


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


def _check_task_options(data: DataSection, train: TrainSection, locate: _Locator) -> None:
    """Task monitors name a task of this recipe; task options need tasks. Default monitor of a
    multi-task recipe: the mean validation AP over tasks (as MTPrompt-PTM stops)."""
    stopping = train.early_stopping
    names = list(data.tasks or {})
    match = TASK_MONITOR.match(stopping.monitor)
    where = locate(("train", "early_stopping", "monitor"))
    if match and not names:
        raise RecipeError(f"{where}: {stopping.monitor!r} is a per-task monitor, but no data.tasks")
    if match and match["task"] != "macro" and match["task"] not in names:
        raise RecipeError(
            f"{where}: {stopping.monitor!r} names no task of this recipe; tasks: {', '.join(names)} "
            "(or val/macro/<metric> for their mean)"
        )
    if names and "monitor" not in stopping.model_fields_set:
        stopping.monitor = "val/macro/ap"
    if not names:
        for key in ("task_balance", "task_weights"):
            if key in train.model_fields_set and getattr(train, key) not in (False, "uniform"):
                raise RecipeError(f"{locate(('train', key))}: train.{key} needs data.tasks (several tasks)")


def _parse_tasks(
    data: DataSection, registry: Registry, locate: _Locator, *, lenient: bool = False
) -> dict[str, SourceUse | None]:
    """Each task's source, resolved as ``data.source`` would be, and named after its task
    (``lenient``: a source that does not resolve here is None, as for a packaged model's)."""
    out: dict[str, SourceUse | None] = {}
    for name, task in (data.tasks or {}).items():
        prefix: Key = ("data", "tasks", name)
        if task.residues:  # checked and upper-cased once, as data.residues is
            checked = _check_residues(task.residues, locate(prefix + ("residues",)))
            assert data.tasks is not None
            data.tasks[name] = task = task.model_copy(update={"residues": checked})
        residues = task.residues if task.residues is not None else data.residues
        try:
            use = parse_source(
                task.source,
                registry,
                locations=locate.locations,
                prefix=prefix + ("source",),
                data_residues=residues,
            )
        except RecipeError:
            if not lenient:
                raise
            out[name] = None
            continue
        out[name] = replace(use, task=name, residues=residues or use.residues)
    return out


def parse_data(
    raw: Any, registry: Registry, locate: _Locator, *, lenient_source: bool = False
) -> tuple[DataSection, SourceUse | None, dict[str, SourceUse]]:
    """The ``data:`` section validated, with its source or tasks resolved (what a training
    recipe and a pretraining recipe share); window and residues are checked before any data is
    read."""
    data = _validate_section(DataSection, raw, ("data",), locate)
    if data.window is not None:  # caught here, before any data is read: a window needs a centre
        _check_window(data.window, locate(("data", "window")))
    if data.residues is not None:  # "" is no filter, as before
        residues = _check_residues(data.residues, locate(("data", "residues"))) if data.residues else None
        data = data.model_copy(update={"residues": residues})
    source: SourceUse | None = None
    tasks: dict[str, SourceUse] = {}
    try:
        if data.tasks is not None:
            resolved = _parse_tasks(data, registry, locate, lenient=lenient_source)
            if all(u is not None for u in resolved.values()):  # else: a package read leniently
                tasks = {n: u for n, u in resolved.items() if u is not None}
        else:
            source = parse_source(
                data.source, registry, locations=locate.locations, data_residues=data.residues
            )
    except RecipeError:
        if not lenient_source:
            raise
    preset = source.preset if source is not None else None
    fixed = preset is not None and not source.reader.spec.obj.cuts_windows
    if fixed and data.window is not None and data.window > preset.window:
        # fragments can be centre-cropped, never widened: say so before any data is read
        raise RecipeError(
            f"{locate(('data', 'window'))}: data.window {data.window} is wider than the "
            f"{preset.window}-residue fragments {preset.name} holds; "
            f"choose a window of at most {preset.window}"
        )
    return data, source, tasks


def parse(
    raw: dict[str, Any],
    registry: Registry,
    *,
    path: Path | None = None,
    locations: dict[Key, str] | None = None,
    lenient_source: bool = False,
) -> Recipe:
    """Validate a resolved recipe mapping against the core schema and every plugin's config.

    ``lenient_source``: a source that does not resolve here (its reader or dataset plugin is not
    installed) leaves ``Recipe.source`` None instead of failing: a packaged model is scored
    without reading its training data, so it must load where its reader is missing.
    """
    locate = _Locator(locations or {})
    if raw.get("kind") == "pretrain":
        raise RecipeError(
            f"{locate(('kind',))}: a language-model pretraining recipe (kind: pretrain); run it with "
            "ptmkit pretrain (ptmkit validate checks it too)"
        )
    unknown = [k for k in raw if k not in TOP_LEVEL]
    if unknown:
        raise RecipeError(
            f"{locate((unknown[0],))}: unknown section {unknown[0]!r}; sections are {', '.join(TOP_LEVEL)}"
        )
    locate.missing = missing_distributions(raw.get("requires"), locate)
    for section in ("data", "features", "model"):
        if section not in raw:
            raise RecipeError(f"{path or 'recipe'}: missing section {section!r}")
    data, source, tasks = parse_data(raw["data"], registry, locate, lenient_source=lenient_source)
    train = _validate_section(TrainSection, raw.get("train"), ("train",), locate)
    _check_task_options(data, train, locate)
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

    raw_losses = raw.get("losses") or _default_loss(nodes, output)
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
    distill = None
    if raw.get("distill") is not None:
        distill = _validate_section(DistillSection, raw["distill"], ("distill",), locate)
        known = list(tasks) or [str(source.task) if source is not None else "ptm"]
        for task in distill.teachers:
            if task != "all" and task not in known:
                raise RecipeError(
                    f"{locate(('distill', 'teachers', task))}: no task {task!r} in this recipe; tasks: "
                    f"{', '.join(known)} (or `all` for one multi-task teacher)"
                )

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
        source=source,
        tasks=tasks,
        requires=list(raw.get("requires") or []),
        distill=distill,
    )


def _default_loss(nodes: dict[str, PluginUse], output: Any) -> list[dict[str, Any]]:
    """The loss a recipe without ``losses:`` trains with: the one its output head declares
    (none when the output node cannot be told yet or is not a head: building the graph then
    reports the graph's problem, or ``build_losses`` that there is no loss)."""
    if isinstance(output, str) and output in nodes:
        head = output
    else:
        read = {r.partition(".")[0] for u in nodes.values() for r in u.inputs}
        sinks = [n for n in nodes if n not in read]
        if len(sinks) != 1:
            return []
        head = sinks[0]
    spec = nodes[head].spec
    loss = getattr(spec.obj, "default_loss", None)
    if loss is None and spec.kind == "head" and spec.api < 2:
        loss = API1_DEFAULT_LOSS  # what recipes without losses trained with before heads declared one
    return [{"type": loss}] if isinstance(loss, str) else []


#: The loss of a recipe without ``losses:`` whose head comes from a plugin API 1 package (such heads
#: declare no ``default_loss``); API 2 heads declare their own (``Head.default_loss``).
API1_DEFAULT_LOSS = "bce"


def resolve_file(path: Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[Key, str]]:
    """A recipe file's mapping with ``extends`` merged and ``--set`` overrides applied, and where
    every key was written (what both recipe kinds validate)."""
    data, locations = load_with_extends(path)
    data = copy.deepcopy(data)
    for item in overrides or []:
        apply_override(data, item, locations)
    return data, locations


def load(path: str | Path, overrides: list[str] | None = None, registry: Registry | None = None) -> Recipe:
    """Load, merge (``extends``), override (``--set``) and validate a recipe file."""
    from .hooks import get_registry

    path = Path(path)
    data, locations = resolve_file(path, overrides)
    return parse(data, registry or get_registry(), path=path.resolve(), locations=locations)
