"""``ptmkit compare``: runs side by side, straight from the MLflow store."""

from __future__ import annotations

import pandas as pd

from .errors import PtmkitError

DEFAULT_METRICS = (
    "test/mcc",
    "test/auc",
    "test/ap",
    "test/acc",
    "test/sen",
    "test/spec",
    "test/tuned_mcc",
)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def runs_table(
    uri: str,
    *,
    experiments: list[str] | None = None,
    tags: dict[str, str] | None = None,
    metrics: list[str] | None = None,
    status: str | None = None,
    sort: str | None = None,
    limit: int = 200,
) -> pd.DataFrame:
    """One row per run: name, dataset, recipe, status, and the chosen metrics."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in (tags or {}).items()]
    if status:
        clauses.append(f"attributes.status = {_quote(status.upper())}")
    if experiments:
        missing = [e for e in experiments if mlflow.get_experiment_by_name(e) is None]
        if missing:
            known = [e.name for e in mlflow.search_experiments()]
            raise PtmkitError(
                f"no experiment named {', '.join(missing)} in {uri}; "
                f"experiments: {', '.join(known) or 'none'}"
            )
    runs = mlflow.search_runs(
        experiment_names=experiments,
        search_all_experiments=not experiments,
        filter_string=" and ".join(clauses),
        max_results=limit,
        order_by=["attributes.start_time DESC"],
    )
    wanted = list(metrics or DEFAULT_METRICS)
    if runs.empty:
        return pd.DataFrame(columns=["run", "dataset", "recipe", "status", *wanted, "run_id"])
    experiments_by_id = {e.experiment_id: e.name for e in mlflow.search_experiments()}

    def col(name: str) -> pd.Series:
        return runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index)

    table = pd.DataFrame(
        {
            "run": col("tags.mlflow.runName"),
            "experiment": runs["experiment_id"].map(experiments_by_id),
            "dataset": col("tags.ptmkit.dataset"),
            "recipe": col("tags.ptmkit.recipe"),
            "status": runs["status"],
        }
    )
    for m in wanted:
        table[m] = pd.to_numeric(col(f"metrics.{m}"), errors="coerce")
    table["run_id"] = runs["run_id"].str.slice(0, 8)
    if sort:
        if sort not in table:
            raise PtmkitError(f"cannot sort by {sort!r}; columns: {', '.join(table.columns)}")
        table = table.sort_values(sort, ascending=False, na_position="last")
    return table.reset_index(drop=True)
