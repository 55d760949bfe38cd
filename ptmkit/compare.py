"""``ptmkit compare``: runs side by side, straight from the MLflow store.

Metric names are the names ``ptmkit run`` logs (docs/tracking.md): ``test/mcc`` is MCC on the
test split at threshold 0.5, ``test/tuned_mcc`` at the threshold that maximised MCC on
validation, ``val_best/mcc`` that threshold on validation itself, ``val/mcc`` per epoch. A bare
name is short for the test metric: ``mcc`` = ``test/mcc``, ``tuned_mcc`` = ``test/tuned_mcc``
(the names of the sweep table's columns). Unknown metric or param names are errors with the
closest names, never an empty column.
"""

from __future__ import annotations

import contextlib
import difflib
from datetime import datetime

import pandas as pd

from .errors import PtmkitError
from .thresholds import VALIDATION_RULES

#: Metrics that need a threshold (logged at 0.5 as ``test/<m>``, tuned as ``test/tuned_<m>``).
THRESHOLD_METRICS = ("acc", "sen", "spec", "mcc")
#: Metrics of the scores alone.
SCORE_METRICS = ("auc", "ap")
#: Every metric ``ptmkit run`` logs (per-epoch ones at each step, the rest once).
LOGGED_METRICS = (
    *(f"test/{m}" for m in (*THRESHOLD_METRICS, *SCORE_METRICS)),
    *(f"test/tuned_{m}" for m in THRESHOLD_METRICS),
    "test/sen_at_spec95",
    *(f"val_best/{m}" for m in (*THRESHOLD_METRICS, *SCORE_METRICS)),
    "val/loss",
    "val/ap",
    "val/auc",
    "val/mcc",
    "train/loss",
    "train/best_epoch",
    "train/epochs_run",
    *(f"threshold/{rule}" for rule in VALIDATION_RULES),
    "time/features_s",
    "time/train_s",
    "time/epoch_s",
    "time/epoch_s_median",
    "time/inference_s",
    "time/total_s",
    "speed/test_windows_per_s",
)
DEFAULT_METRICS = (
    "test/mcc",
    "test/auc",
    "test/ap",
    "test/acc",
    "test/sen",
    "test/spec",
    "test/tuned_mcc",
)
#: Params that never tell runs apart by themselves: derived (split sizes, parameter count) or
#: shown in a column of their own (run name, experiment).
NOT_OVERRIDES = ("tracking.", "data.n_", "model.parameters")
#: ``differs`` shows at most this many ``key=value`` items per run (then ``+N more``).
MAX_DIFFERS = 4
MAX_VALUE = 24
MINUTE = "%Y-%m-%d %H:%M"
#: Columns every table has, in order (metric and param columns go between status/started and differs).
BASE_COLUMNS = ("run_id", "run", "experiment", "dataset", "recipe", "status", "started")


def run_status(runs: pd.DataFrame) -> pd.Series:
    """MLflow's status, with ``RUNNING (stale)`` for runs whose process is gone (no heartbeat
    for ``tracking.stale_after()`` seconds; ``ptmkit runs mark-stale`` ends them FAILED)."""
    from . import tracking

    tag = f"tags.{tracking.HEARTBEAT_TAG}"
    beats = runs[tag] if tag in runs else pd.Series(None, index=runs.index)
    starts = pd.to_datetime(runs["start_time"], utc=True) if "start_time" in runs else None
    limit = tracking.stale_after()
    out = runs["status"].astype(object).copy()
    for idx in runs.index[runs["status"] == "RUNNING"]:
        start = starts[idx].timestamp() if starts is not None and pd.notna(starts[idx]) else None
        if tracking.is_stale("RUNNING", start, tracking.parse_heartbeat(beats[idx]), limit=limit):
            out[idx] = "RUNNING (stale)"
    return out


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------- names
def _close(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""


def metric_name(name: str, known: set[str] | None = None) -> str:
    """The logged name of a metric as a user may type it: ``test/mcc``, ``mcc`` or ``MCC``.

    ``known`` adds the metrics the store's runs hold (a plugin or script may log more); a name
    in neither is an error with the closest names.
    """
    known = set(LOGGED_METRICS) | (known or set())
    key = name.strip()
    for candidate in (key, key.lower()):
        if candidate in known:
            return candidate
        if f"test/{candidate}" in known:  # mcc, or a task's K1/mcc, macro/ap
            return f"test/{candidate}"
    short = sorted(k.removeprefix("test/") for k in known if k.startswith("test/"))
    hint = _close(key.lower(), sorted(known) + short)
    tests = ", ".join(sorted(k for k in known if k.startswith("test/")))
    raise PtmkitError(
        f"unknown metric {name!r}{hint}; valid: {tests}, "
        "val_best/*, val/*, train/*, threshold/*, time/* (a bare name such as mcc means test/mcc; "
        "see docs/tracking.md)"
    )


def _task_metrics(runs: pd.DataFrame, wanted: list[str]) -> list[str]:
    """``test/<task>/<m>`` then ``test/macro/<m>`` for each shown ``test/<m>``, over the tasks of
    the runs' ``ptmkit.tasks`` tags (in first-seen order)."""
    tag = "tags.ptmkit.tasks"
    names: list[str] = []
    for value in runs[tag].dropna() if tag in runs else []:
        names += [n for n in str(value).split(",") if n and n not in names]
    base = [m.removeprefix("test/") for m in wanted if m.startswith("test/") and m.count("/") == 1]
    return [f"test/{t}/{m}" for m in base for t in [*names, "macro"]] if names else []


def table_metric(name: str) -> str:
    """The sweep-table column of a test metric (``test/tuned_mcc`` or ``tuned_mcc`` -> ``tuned_mcc``)."""
    logged = metric_name(name)
    if not logged.startswith("test/"):
        raise PtmkitError(f"{name!r} is not a test metric; sweep tables rank by test metrics such as mcc")
    return logged.removeprefix("test/")


def param_name(name: str, known: set[str]) -> str:
    """A param key as the user may type it: in full (``train.epochs``) or by a unique last part
    (``epochs``); else an error with the closest keys."""
    key = name.strip()
    if key in known:
        return key
    ends = sorted(k for k in known if k.endswith("." + key))
    if len(ends) == 1:
        return ends[0]
    if len(ends) > 1:
        raise PtmkitError(f"param {name!r} is ambiguous: {', '.join(ends[:8])}; give the full key")
    hint = _close(key, sorted(known))
    if not hint:  # a misspelt last part: suggest the full keys it would have matched
        parts = difflib.get_close_matches(key, sorted({k.rsplit(".", 1)[-1] for k in known}), n=3, cutoff=0.5)
        full = [k for k in sorted(known) if k.rsplit(".", 1)[-1] in parts][:3]
        hint = f" (did you mean {', '.join(full)}?)" if full else ""
    if not known:
        raise PtmkitError(f"unknown param {name!r}: the listed runs have no params")
    sample = ", ".join(sorted(k for k in known if not k.startswith(NOT_OVERRIDES))[:12])
    raise PtmkitError(f"unknown param {name!r}{hint}; params of the listed runs include: {sample}, ...")


# ---------------------------------------------------------------------------- columns
def _short(value: object) -> str:
    text = "-" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def _priority(key: str) -> tuple[int, str]:
    """Order of ``differs`` items: the dataset, then training settings, then the rest."""
    order = ("data.source", "train.", "data.", "losses", "features.", "model.")
    return next((i for i, p in enumerate(order) if key.startswith(p)), len(order)), key


def differs(runs: pd.DataFrame, groups: pd.Series) -> pd.Series:
    """``key=value`` of the params whose values differ between runs of the same recipe.

    Runs of different recipes already differ by the ``recipe`` column; within one recipe, the
    params that vary are what ``--set`` or a sweep variant changed (epochs, lr, a node type).
    """
    params = [c for c in runs.columns if c.startswith("params.") and not c[7:].startswith(NOT_OVERRIDES)]
    out = pd.Series("", index=runs.index, dtype=object)
    for _, index in groups.fillna("").groupby(groups.fillna("")).groups.items():
        if len(index) < 2:
            continue
        block = runs.loc[index, params]
        block = block[block.notna().any(axis=1)]  # a run killed before logging params says nothing
        if len(block) < 2:
            continue
        varying = [c for c in params if block[c].fillna("\0").astype(str).nunique() > 1]
        varying.sort(key=lambda c: _priority(c[7:]))
        for i in block.index:
            items = [f"{c[7:]}={_short(runs.at[i, c])}" for c in varying[:MAX_DIFFERS]]
            if len(varying) > MAX_DIFFERS:
                items.append(f"+{len(varying) - MAX_DIFFERS} more")
            out[i] = ", ".join(items)
    return out


def started(runs: pd.DataFrame) -> pd.Series:
    """Start time in the local time zone, to the minute (what a user remembers a run by)."""
    if "start_time" not in runs:
        return pd.Series("", index=runs.index, dtype=object)
    times = pd.to_datetime(runs["start_time"], utc=True)
    # fromtimestamp applies the local zone's rules at each run's own date (DST included)
    return times.map(lambda t: "" if pd.isna(t) else datetime.fromtimestamp(t.timestamp()).strftime(MINUTE))


def _sort_key(sort: str, table: pd.DataFrame, metric_keys: set[str], param_keys: set[str]) -> tuple[str, str]:
    """(kind, name) of what ``--sort`` names: a table column, a metric (or its alias) or a param."""
    if sort in table:
        return "column", sort
    with contextlib.suppress(PtmkitError):
        return "metric", metric_name(sort, metric_keys)
    with contextlib.suppress(PtmkitError):
        return "param", param_name(sort, param_keys)
    names = [*table.columns, *sorted(metric_keys), *(k.removeprefix("test/") for k in LOGGED_METRICS)]
    raise PtmkitError(
        f"cannot sort by {sort!r}{_close(sort, names)}; valid: a column ({', '.join(table.columns)}), "
        "a metric or a param"
    )


def _sort(
    table: pd.DataFrame, sort: str, runs: pd.DataFrame, metric_keys: set[str], param_keys: set[str]
) -> pd.DataFrame:
    """Sort by a column, a metric or a param (added as a column when not shown); numbers and
    times descending (best and newest first), text ascending."""
    kind, column = _sort_key(sort, table, metric_keys, param_keys)
    source = f"{'metrics' if kind == 'metric' else 'params'}.{column}"
    if column not in table:
        values = runs[source] if source in runs else pd.Series(float("nan"), index=runs.index)
        table[column] = pd.to_numeric(values, errors="coerce") if kind == "metric" else values
    numeric = pd.api.types.is_numeric_dtype(table[column]) or column == "started"
    return table.sort_values(column, ascending=not numeric, na_position="last", kind="stable")


# ---------------------------------------------------------------------------- the table
def runs_table(
    uri: str,
    *,
    experiments: list[str] | None = None,
    tags: dict[str, str] | None = None,
    metrics: list[str] | None = None,
    params: list[str] | None = None,
    status: str | None = None,
    sort: str | None = None,
    limit: int = 200,
    full_ids: bool = False,
    tasks: bool = False,
) -> pd.DataFrame:
    """One row per run: id, name, dataset, recipe, status, start, metrics, params, what differs.

    ``run_id`` is the shortest prefix (>= 8 hex digits) unique in the whole store, which
    ``predict``, ``evaluate`` and ``register`` accept back; ``full_ids`` shows all 32 digits.
    ``tasks``: also each task's ``test/<task>/<metric>`` for every metric shown, and their mean
    over tasks (``test/macro/<metric>``), for the multi-task runs' tasks in the table.
    """
    import mlflow

    from . import runids, tracking

    try:
        tracking.open_store(uri, create=False)  # refuses a file that is not a database; never creates
    except tracking.StoreNotFound as exc:
        raise PtmkitError(f"no runs: store {exc.path} does not exist") from None
    clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in (tags or {}).items()]
    if status:
        clauses.append(f"attributes.status = {_quote(status.upper())}")
    if experiments:
        missing = [e for e in experiments if mlflow.get_experiment_by_name(e) is None]
        if missing:
            known = [e.name for e in mlflow.search_experiments()]
            raise PtmkitError(
                f"no experiment named {', '.join(missing)} in {uri}{_close(missing[0], known)}; "
                f"experiments: {', '.join(known) or 'none'}"
            )
    runs = mlflow.search_runs(
        experiment_names=experiments,
        search_all_experiments=not experiments,
        filter_string=" and ".join(clauses),
        max_results=limit,
        order_by=["attributes.start_time DESC"],
    )
    metric_keys = {c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}
    param_keys = {c.removeprefix("params.") for c in runs.columns if c.startswith("params.")}
    asked = [m for m in metrics or DEFAULT_METRICS if m.strip()]
    wanted = list(dict.fromkeys(metric_name(m, metric_keys) for m in asked))
    if tasks:
        wanted = [*wanted, *_task_metrics(runs, wanted)]
    if runs.empty:
        return pd.DataFrame(columns=[*BASE_COLUMNS, *wanted, *(params or []), "differs"])
    shown = [param_name(p, param_keys) for p in params or [] if p.strip()]
    experiments_by_id = {e.experiment_id: e.name for e in mlflow.search_experiments()}

    def col(name: str) -> pd.Series:
        return runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index)

    ids = runs["run_id"].tolist()
    short = {i: i for i in ids} if full_ids else runids.short_ids(ids, runids.all_run_ids(uri))
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"].map(short),
            "run": col("tags.mlflow.runName"),
            "experiment": runs["experiment_id"].map(experiments_by_id),
            "dataset": col("tags.ptmkit.dataset"),
            "recipe": col("tags.ptmkit.recipe"),
            "status": run_status(runs),
            "started": started(runs),
        }
    )
    for m in wanted:
        table[m] = pd.to_numeric(col(f"metrics.{m}"), errors="coerce")
    for p in dict.fromkeys(shown):
        table[p] = col(f"params.{p}")
    table["differs"] = differs(runs, col("tags.ptmkit.recipe"))
    if sort:
        table = _sort(table, sort, runs, metric_keys, param_keys)
        table = table[[c for c in table.columns if c != "differs"] + ["differs"]]
    return table.reset_index(drop=True)
