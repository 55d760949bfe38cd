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

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import recipe as recipes
from . import safeyaml
from .assembly import assemble
from .errors import RecipeError
from .hooks import get_registry
from .recipe import Recipe

#: Columns of the comparison table: test metrics at 0.5, at the validation-chosen threshold
#: (``tuned_*``), SEN at 95 % SPEC, cost. Named as ``ptmkit run`` logs them without ``test/``
#: (``mcc`` is ``test/mcc``; docs/tracking.md).
TABLE_METRICS = (
    "acc",
    "sen",
    "spec",
    "mcc",
    "auc",
    "ap",
    "tuned_mcc",
    "tuned_sen",
    "tuned_spec",
    "sen_at_spec95",
)
#: Which threshold each threshold-dependent column is measured at: (label, its SEN, its SPEC).
#: A classifier that calls every site positive (or negative) there is flagged, never starred.
THRESHOLDS = {
    "0.5": ("sen", "spec", ("acc", "sen", "spec", "mcc")),
    "the validation threshold": (
        "tuned_sen",
        "tuned_spec",
        ("tuned_acc", "tuned_sen", "tuned_spec", "tuned_mcc"),
    ),
}


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
    if path.is_dir():
        raise RecipeError(f"{path} is a directory, not a sweep file")
    try:
        raw = safeyaml.load(recipes.read_recipe_text(path), str(path))
    except FileNotFoundError:
        raise RecipeError(f"sweep file not found: {path}") from None
    except OSError as exc:
        raise RecipeError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    except safeyaml.YamlError as exc:
        raise RecipeError(str(exc)) from None
    if raw is not None and not isinstance(raw, dict):
        kind = type(raw).__name__
        raise RecipeError(f"{path}:1: a sweep file is a mapping (base, variants, ...), got {kind}")
    try:
        spec = SweepFile.model_validate(raw or {})
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise RecipeError("invalid sweep:\n  " + "\n  ".join(lines)) from None
    if not spec.variants:
        raise RecipeError(f"{path}: variants: at least one variant is needed")
    rank_by = _rank_by(spec.rank_by, path)
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
            assemble(built[name], registry)  # the graph and losses are checked too, before any run
        except RecipeError as exc:  # GraphError is one
            raise RecipeError(f"{path}: variant {name!r}: {exc}") from None
        descriptions[name] = variant.description
    first = next(iter(built.values()))
    return Sweep(
        name=spec.name or path.stem,
        path=path,
        experiment=spec.experiment or first.tracking.experiment,
        rank_by=rank_by,
        recipes=built,
        descriptions=descriptions,
    )


def _rank_by(name: str, path: Path) -> str:
    """A table column from a metric name in the one scheme (``mcc``, ``test/mcc``, ``tuned_mcc``)."""
    import difflib

    from .compare import table_metric
    from .errors import PtmkitError

    try:
        column: str | None = table_metric(name)
    except PtmkitError:
        column = None
    if column not in TABLE_METRICS:
        close = difflib.get_close_matches(name.removeprefix("test/"), TABLE_METRICS, n=2, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RecipeError(
            f"{path}: rank_by: {name!r} is not a column of the sweep table{hint}; valid: "
            f"{', '.join(TABLE_METRICS)} (or test/<name>, as logged)"
        )
    return column


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def degenerate_call(sen: object, spec: object) -> str | None:
    """What is wrong with a classifier whose test SEN/SPEC at its threshold are ``sen``/``spec``:
    it calls every site positive (or negative), or finds no true site; None when it is fine."""
    sen_, spec_ = _number(sen), _number(spec)
    if math.isnan(sen_) or math.isnan(spec_):
        return None
    if sen_ >= 1 and spec_ <= 0:
        return "calls every site positive"
    if sen_ <= 0 and spec_ >= 1:
        return "calls every site negative"
    if sen_ <= 0:
        return "calls no true site positive"
    if spec_ <= 0:
        return "calls no negative site negative"
    return None


def degenerate(frame: pd.DataFrame) -> dict[str, dict[Any, str]]:
    """Per threshold label: the rows that are degenerate there, with why."""
    out: dict[str, dict[Any, str]] = {}
    for label, (sen, spec, _) in THRESHOLDS.items():
        if sen not in frame or spec not in frame:
            continue
        for idx in frame.index:
            why = degenerate_call(frame.at[idx, sen], frame.at[idx, spec])
            if why:
                out.setdefault(label, {})[idx] = why
    return out


def comparison(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The sweep table, with a ``note`` naming degenerate classifiers (``degenerate at 0.5: calls
    every site positive``): their SEN of 1 or SPEC of 1 is no achievement."""
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "variant"
    notes: dict[Any, list[str]] = {}
    for label, rows_ in degenerate(frame).items():
        for idx, why in rows_.items():
            notes.setdefault(idx, []).append(f"degenerate at {label}: {why}")
    frame["note"] = [("; ".join(notes[i]) if i in notes else "") for i in frame.index]
    return frame


def _excluded(frame: pd.DataFrame) -> dict[str, set[Any]]:
    """Per column: the rows that may not be starred there (degenerate at that column's threshold)."""
    out: dict[str, set[Any]] = {}
    for label, rows in degenerate(frame).items():
        for col in THRESHOLDS[label][2]:
            out.setdefault(col, set()).update(rows)
    return out


def best_variant(frame: pd.DataFrame, rank_by: str) -> Any | None:
    """The finished, non-degenerate row with the highest ``rank_by``; None when there is none."""
    finished = frame[frame["status"] == "FINISHED"] if "status" in frame else frame
    if rank_by not in finished:
        return None
    values = pd.to_numeric(finished[rank_by], errors="coerce").drop(
        list(_excluded(finished).get(rank_by, ())), errors="ignore"
    )
    return None if values.dropna().empty else values.idxmax()


def highlight(frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Mark the best value of each metric column (``*`` in text, bold in Markdown).

    A degenerate classifier (all calls one way at a column's threshold) is never starred in
    that column: an all-positive model's SEN of 1.000 is not the best sensitivity.
    """
    out = frame.copy().astype(object)
    excluded = _excluded(frame)
    for col in TABLE_METRICS:
        if col not in frame or frame[col].isna().all():
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        eligible = values.drop(list(excluded.get(col, ())), errors="ignore")
        best = eligible.max() if eligible.notna().any() else None
        for idx in frame.index:
            value = frame.at[idx, col]
            if isinstance(value, float) and not math.isnan(value):
                text = f"{value:.3f}"
                if best is not None and value == best and idx not in excluded.get(col, ()):
                    text = f"**{text}**" if fmt == "markdown" else f"{text}*"
                out.at[idx, col] = text
    return out


#: Tags of a sweep's parent run: the sweep's name, and (split sweeps) its id and that it is split.
SWEEP_TAG, SWEEP_ID_TAG, SPLIT_TAG, VARIANT_TAG = (
    "ptmkit.sweep",
    "ptmkit.sweep.id",
    "ptmkit.sweep.split",
    "ptmkit.sweep.variant",
)


def _parent_tags(sweep: Sweep) -> dict[str, str]:
    return {SWEEP_TAG: sweep.name, "ptmkit.recipe": "sweep"}


def _parent_params(sweep: Sweep) -> dict[str, str]:
    return {"sweep.variants": str(len(sweep.recipes)), "sweep.rank_by": sweep.rank_by}


def store_of(sweep: Sweep) -> str:
    """The tracking URI the sweep's runs go to (its recipes' ``tracking.uri``, else the default)."""
    from . import tracking

    return tracking.tracking_uri(next(iter(sweep.recipes.values())).tracking.uri)


def variant_row(run: Any, description: str = "") -> dict[str, Any]:
    """A variant's row of the comparison table, read from its MLflow run: the one source of rows
    for a sweep run whole and for one rebuilt from its variants' runs (``ptmkit sweep report``)."""
    row: dict[str, Any] = {"description": description}
    if run is None or run.info.status != "FINISHED":
        return {**row, "status": "FAILED" if run is not None else "MISSING"}
    metrics, params = run.data.metrics, run.data.params
    return {
        **row,
        "status": "FINISHED",
        **{k: metrics.get(f"test/{k}", float("nan")) for k in TABLE_METRICS},
        "params": int(params.get("model.parameters", 0)),
        "epoch_s": round(float(metrics.get("time/epoch_s_median", float("nan"))), 2),
        "run_id": run.info.run_id[:8],
    }


def publish_table(client: Any, parent_id: str, sweep: Sweep, rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The comparison table from ``rows``, logged to the parent run: ``comparison.md``/``.csv``/
    ``.png``, the best variant as a tag and its metrics as ``best/*``."""
    import tempfile

    from .plots import sweep_bars
    from .table import render

    table = comparison(rows)
    finished = table[table["status"] == "FINISHED"] if "status" in table else table
    best = best_variant(table, sweep.rank_by)  # never a degenerate classifier
    if best is not None:
        client.set_tag(parent_id, "ptmkit.best_variant", best)
        for k in TABLE_METRICS:
            client.log_metric(parent_id, f"best/{k}", float(finished.at[best, k]))
    client.log_text(parent_id, render(highlight(table, "markdown"), "markdown"), "comparison.md")
    client.log_text(parent_id, render(table, "csv"), "comparison.csv")
    if len(finished):
        with tempfile.TemporaryDirectory() as tmp:
            png = sweep_bars(finished, ["mcc", "auc", "ap"], Path(tmp) / "comparison.png", sweep.name)
            client.log_artifact(parent_id, str(png))
    return table


def run_sweep(sweep: Sweep, *, data_root: Path, progress: bool = True) -> pd.DataFrame:
    """Run every variant as a nested MLflow run under one parent; log and return the table."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from . import tracking
    from .run import run

    uri = store_of(sweep)
    experiment_id = tracking.setup(uri, sweep.experiment)
    client = MlflowClient(uri)
    rows: dict[str, dict[str, Any]] = {}
    where = tracking.Phase("sweep setup")  # a signal ends the parent KILLED "during variant x (2/4)"
    with contextlib.ExitStack() as stack:
        with tracking.deferred_signals():  # as MlflowTracker.start: created and guarded whole
            parent = stack.enter_context(mlflow.start_run(experiment_id=experiment_id, run_name=sweep.name))
            stack.enter_context(tracking.ending_on_error(where))
        stack.enter_context(tracking.Heartbeat(parent.info.run_id, uri))
        with tracking.deferred_signals():
            mlflow.set_tags(_parent_tags(sweep))
            mlflow.log_params(_parent_params(sweep))
            mlflow.log_text(sweep.path.read_text(), "sweep.yaml")
        for i, (name, recipe) in enumerate(sweep.recipes.items(), 1):
            print(f"[{i}/{len(sweep.recipes)}] {name}", file=sys.stderr)
            where.now = f"variant {name} ({i}/{len(sweep.recipes)})"
            try:
                summary = run(recipe, data_root=data_root, progress=progress, nested=True)
            except Exception as exc:  # one broken variant must not cost the others
                print(f"  variant {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows[name] = {"description": sweep.descriptions[name], "status": "FAILED"}
                continue
            rows[name] = variant_row(client.get_run(summary.run_id), sweep.descriptions[name])
        where.now = "the sweep table"
        with tracking.deferred_signals():
            table = publish_table(client, parent.info.run_id, sweep, rows)
        table.attrs["parent_run_id"] = parent.info.run_id
        table.attrs["tracking_uri"] = uri
    return table


# ---------------------------------------------------------------------------- split sweeps
def start_parent(sweep: Sweep, *, sweep_id: str | None = None) -> str:
    """A split sweep's first step: the parent run (RUNNING until ``report`` ends it); its id.
    With ``sweep_id`` the variants find it by that id; a second parent of one id is refused."""
    from mlflow.tracking import MlflowClient

    from . import tracking

    uri = store_of(sweep)
    experiment_id = tracking.setup(uri, sweep.experiment)
    client = MlflowClient(uri)
    if sweep_id is not None and _find_parent(client, experiment_id, sweep_id) is not None:
        raise RecipeError(
            f"sweep id {sweep_id!r} already has a parent run in experiment {sweep.experiment!r}"
        )
    tags = {**_parent_tags(sweep), SPLIT_TAG: "true", "mlflow.runName": sweep.name}
    if sweep_id is not None:
        tags[SWEEP_ID_TAG] = sweep_id
    parent = client.create_run(experiment_id, run_name=sweep.name, tags=tags)
    for key, value in _parent_params(sweep).items():
        client.log_param(parent.info.run_id, key, value)
    client.log_text(parent.info.run_id, sweep.path.read_text(), "sweep.yaml")
    client.set_tag(parent.info.run_id, tracking.HEARTBEAT_TAG, f"{time.time():.0f}")
    return parent.info.run_id


def _find_parent(client: Any, experiment_id: str, sweep_id: str) -> Any | None:
    found = client.search_runs([experiment_id], f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}'")
    return found[0] if found else None


def resolve_parent(sweep: Sweep, *, parent_run: str | None, sweep_id: str | None) -> str:
    """The parent run of a split sweep, by id or by sweep id, checked to be this sweep's."""
    from mlflow.tracking import MlflowClient

    from . import tracking

    uri = store_of(sweep)
    client = MlflowClient(uri)
    if parent_run is None and sweep_id is None:
        raise RecipeError("name the sweep's parent run: --parent-run ID or --sweep-id ID (from --start)")
    if parent_run is not None:
        try:
            run = client.get_run(parent_run)
        except Exception as exc:  # noqa: BLE001 - an unknown id, another store
            raise RecipeError(
                f"--parent-run {parent_run}: no such run in {uri} ({tracking.first_line(exc)})"
            ) from None
    else:
        experiment_id = tracking.setup(uri, sweep.experiment)
        run = _find_parent(client, experiment_id, str(sweep_id))
        if run is None:
            raise RecipeError(
                f"--sweep-id {sweep_id}: no parent run in experiment {sweep.experiment!r} at {uri}; "
                f"create it first: ptmkit sweep {sweep.path} --start --sweep-id {sweep_id}"
            )
    if run.data.tags.get(SWEEP_TAG) != sweep.name:
        raise RecipeError(
            f"run {run.info.run_id} is not a parent of sweep {sweep.name!r} "
            f"(its {SWEEP_TAG} tag: {run.data.tags.get(SWEEP_TAG)!r})"
        )
    return run.info.run_id


def run_variant(
    sweep: Sweep, name: str, *, parent_id: str, data_root: Path, progress: bool = True
) -> dict[str, Any]:
    """One variant of a split sweep (one job of an array), as a child of ``parent_id``; its row."""
    from mlflow.tracking import MlflowClient

    from . import tracking
    from .run import run

    if name not in sweep.recipes:
        raise RecipeError(f"--only {name}: no such variant; variants: {', '.join(sweep.recipes)}")
    client = MlflowClient(store_of(sweep))
    client.set_tag(parent_id, tracking.HEARTBEAT_TAG, f"{time.time():.0f}")  # the parent lives on
    summary = run(sweep.recipes[name], data_root=data_root, progress=progress, parent_run_id=parent_id)
    client.set_tag(summary.run_id, VARIANT_TAG, name)
    client.set_tag(parent_id, tracking.HEARTBEAT_TAG, f"{time.time():.0f}")
    return variant_row(client.get_run(summary.run_id), sweep.descriptions[name])


def report(sweep: Sweep, *, parent_id: str, partial: bool = False) -> pd.DataFrame:
    """Rebuild the comparison table from the variants' runs under ``parent_id``, log it to the
    parent and end the parent (FINISHED; FAILED if a variant failed). Every variant must have
    finished or failed: a missing or running one is an error unless ``partial``."""
    from mlflow.tracking import MlflowClient

    uri = store_of(sweep)
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
    )
    latest: dict[str, Any] = {}
    for child in children:  # a variant run again (a retried job) counts by its latest run
        latest[child.data.tags.get(VARIANT_TAG) or child.info.run_name] = child
    waiting = [n for n in sweep.recipes if n not in latest or latest[n].info.status == "RUNNING"]
    if waiting and not partial:
        raise RecipeError(
            f"sweep {sweep.name}: variants not finished yet: {', '.join(waiting)} (parent {parent_id}); "
            "run them (--only NAME) or report what there is with --partial"
        )
    rows = {n: variant_row(latest.get(n), sweep.descriptions[n]) for n in sweep.recipes}
    table = publish_table(client, parent_id, sweep, rows)
    failed = any(r["status"] != "FINISHED" for r in rows.values())
    client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    table.attrs["parent_run_id"] = parent_id
    table.attrs["tracking_uri"] = uri
    return table
