"""Sweeps: one base recipe, named variants (each a few overrides), nested MLflow runs, one table.

A sweep file::

    name: table9-backbones
    base: ../uniptms-lite.yaml          # relative to the sweep file
    set: [data.source=uniptms:T2]       # applied to every variant
    experiment: uniptms-ablations       # default: the base recipe's
    variants:
      bilstm-mamba: {}                  # the base as it is
      bilstm-transformer:
        description: Transformer instead of Mamba
        patch: {model: {nodes: {enc2: {type: transformer, inputs: [enc1]}}}}
        set: [train.lr=0.0005]

``patch`` merges like ``extends`` (a node whose ``type`` changes is replaced whole), then the
sweep's ``set`` and the variant's ``set`` apply. Every variant is validated before any runs.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import recipe as recipes
from .errors import RecipeError
from .hooks import get_registry
from .recipe import Recipe

#: Columns of the comparison table: test metrics at 0.5, the tuned MCC, cost.
TABLE_METRICS = ("acc", "sen", "spec", "mcc", "auc", "ap", "tuned_mcc", "sen_at_spec95")


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field("", description="one line shown in the table")
    patch: dict[str, Any] = Field(default_factory=dict, description="mapping merged onto the base recipe")
    set: list[str] = Field(default_factory=list, description="path=value overrides")


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="parent run name (default: the file name)")
    base: str = Field(description="base recipe, relative to the sweep file")
    experiment: str | None = Field(None, description="MLflow experiment (default: the base recipe's)")
    set: list[str] = Field(default_factory=list, description="overrides applied to every variant")
    rank_by: str = Field("mcc", description="test metric that picks the best variant")
    variants: dict[str, Variant | None] = Field(description="variant name -> overrides")


@dataclass
class Sweep:
    name: str
    path: Path
    experiment: str
    rank_by: str
    recipes: dict[str, Recipe]
    descriptions: dict[str, str]


def load(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read a sweep file and validate every variant's recipe up front."""
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"sweep file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    try:
        spec = SweepFile.model_validate(raw or {})
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise RecipeError("invalid sweep:\n  " + "\n  ".join(lines)) from None
    if not spec.variants:
        raise RecipeError(f"{path}: variants: at least one variant is needed")
    if spec.rank_by not in TABLE_METRICS:
        raise RecipeError(f"{path}: rank_by: {spec.rank_by!r} is not one of {', '.join(TABLE_METRICS)}")
    base_path = (path.parent / spec.base).resolve()
    base, locations = recipes.load_with_extends(base_path)
    registry = get_registry()
    built: dict[str, Recipe] = {}
    descriptions: dict[str, str] = {}
    for name, variant in spec.variants.items():
        variant = variant or Variant()
        data = recipes.merge(copy.deepcopy(base), copy.deepcopy(variant.patch))
        where = dict(locations)
        for item in [*spec.set, *variant.set, *(overrides or [])]:
            recipes.apply_override(data, item, where)
        data.setdefault("tracking", {})
        data["tracking"] = {**data["tracking"], "run_name": name}
        if spec.experiment:
            data["tracking"]["experiment"] = spec.experiment
        try:
            built[name] = recipes.parse(data, registry, path=base_path, locations=where)
        except RecipeError as exc:
            raise RecipeError(f"{path}: variant {name!r}: {exc}") from None
        descriptions[name] = variant.description
    first = next(iter(built.values()))
    return Sweep(
        name=spec.name or path.stem,
        path=path,
        experiment=spec.experiment or first.tracking.experiment,
        rank_by=spec.rank_by,
        recipes=built,
        descriptions=descriptions,
    )


def comparison(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "variant"
    return frame


def highlight(frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Mark the best value of each metric column (``*`` in text, bold in Markdown)."""
    out = frame.copy().astype(object)
    for col in TABLE_METRICS:
        if col not in frame or frame[col].isna().all():
            continue
        best = frame[col].max()
        for idx in frame.index:
            value = frame.at[idx, col]
            if isinstance(value, float) and not math.isnan(value):
                text = f"{value:.3f}"
                if value == best:
                    text = f"**{text}**" if fmt == "markdown" else f"{text}*"
                out.at[idx, col] = text
    return out


def run_sweep(sweep: Sweep, *, data_root: Path, progress: bool = True) -> pd.DataFrame:
    """Run every variant as a nested MLflow run under one parent; log and return the table."""
    import mlflow

    from . import tracking
    from .plots import sweep_bars
    from .run import run
    from .table import render

    first = next(iter(sweep.recipes.values()))
    uri = tracking.tracking_uri(first.tracking.uri)
    experiment_id = tracking.setup(uri, sweep.experiment)
    rows: dict[str, dict[str, Any]] = {}
    with mlflow.start_run(experiment_id=experiment_id, run_name=sweep.name) as parent:
        mlflow.set_tags({"ptmkit.sweep": sweep.name, "ptmkit.recipe": "sweep"})
        mlflow.log_params({"sweep.variants": len(sweep.recipes), "sweep.rank_by": sweep.rank_by})
        mlflow.log_text(sweep.path.read_text(), "sweep.yaml")
        for i, (name, recipe) in enumerate(sweep.recipes.items(), 1):
            print(f"[{i}/{len(sweep.recipes)}] {name}", file=sys.stderr)
            row: dict[str, Any] = {"description": sweep.descriptions[name]}
            try:
                summary = run(recipe, data_root=data_root, progress=progress, nested=True)
            except Exception as exc:  # one broken variant must not cost the others
                print(f"  variant {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows[name] = {**row, "status": "FAILED"}
                continue
            rows[name] = {
                **row,
                "status": "FINISHED",
                **{k: summary.test[k] for k in TABLE_METRICS},
                "params": summary.parameters,
                "epoch_s": round(summary.epoch_seconds, 2),
                "run_id": summary.run_id[:8],
            }
        table = comparison(rows)
        finished = table[table["status"] == "FINISHED"] if "status" in table else table
        if len(finished):
            best = finished[sweep.rank_by].astype(float).idxmax()
            mlflow.set_tag("ptmkit.best_variant", best)
            mlflow.log_metrics({f"best/{k}": float(finished.at[best, k]) for k in TABLE_METRICS})
        mlflow.log_text(render(highlight(table, "markdown"), "markdown"), "comparison.md")
        mlflow.log_text(render(table, "csv"), "comparison.csv")
        if len(finished):
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                png = sweep_bars(finished, ["mcc", "auc", "ap"], Path(tmp) / "comparison.png", sweep.name)
                mlflow.log_artifact(str(png))
        table.attrs["parent_run_id"] = parent.info.run_id
        table.attrs["tracking_uri"] = uri
    return table
