"""How ptmkit experiments open in the MLflow 3 UI: the model-training view, with test metrics shown.

MLflow 3 opens experiments in its GenAI view (traces, "Detect issues") unless told otherwise.
What it offers, and what ptmkit sets on every experiment it creates or runs in:

- the experiment tag ``mlflow.experimentKind = custom_model_development`` ("Machine learning").
  MLflow 3.0 - 3.x UIs without the sidebar's workflow switch choose the view from it;
- a saved view, the experiment tag ``mlflow.sharedViewState.ptmkit-training``: the runs table with
  ptmkit's columns (test MCC at both thresholds, AUC, AP, SEN at 95 % SPEC, the dataset and the
  epochs) instead of MLflow's default (source, models, dataset). It is listed under "Views" on the
  experiment's Runs tab, and ``viewStateShareKey=ptmkit-training`` in a URL opens it;
- newer UIs (3.17 here) take the view from a global GenAI / Machine-learning switch in the sidebar,
  remembered by the browser, defaulting to GenAI; ``workflowType=machine_learning`` in the URL sets
  it. ``experiment_url`` builds that link; ``ptmkit ui`` and ``ptmkit run`` can print it.

Existing tags are kept: a kind a user chose in the UI wins over ptmkit's default.
"""

from __future__ import annotations

import json
import time
from typing import Any

KIND_TAG = "mlflow.experimentKind"
#: MLflow's value for classical model training (the UI calls it "Machine learning").
KIND = "custom_model_development"
#: Prefix of MLflow's saved / shared views of an experiment's runs table.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "ptmkit-training"
VIEW_TAG = VIEW_TAG_PREFIX + VIEW_ID
VIEW_NAME = "ptmkit: test metrics"
#: Runs-table columns of the view, as MLflow names them (``group.`key```).
VIEW_METRICS = ("test/tuned_mcc", "test/mcc", "test/auc", "test/ap", "test/sen_at_spec95", "train/best_epoch")
VIEW_PARAMS = ("data.source", "train.epochs")
VIEW_TAGS = ("ptmkit.dataset",)


def _column(group: str, key: str) -> str:
    return f"{group}.`{key}`"


def view_state() -> dict[str, Any]:
    """The runs-table state of ptmkit's saved view (MLflow fills in every key not given)."""
    columns = [
        *(_column("metrics", m) for m in VIEW_METRICS),
        *(_column("params", p) for p in VIEW_PARAMS),
        *(_column("tags", t) for t in VIEW_TAGS),
    ]
    return {
        "selectedColumns": columns,
        "columnOrder": columns,  # as listed, not MLflow's alphabetical order
        "columnWidths": {c: 135 for c in columns},  # "test/sen_at_spec95" in full, not cut
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "viewMaximized": False,
        "runListHidden": False,
    }


def view_tag_value(created_ms: int | None = None) -> str:
    """The saved-view envelope MLflow's UI reads: name, times and the state as a JSON string."""
    created = int(time.time() * 1000) if created_ms is None else created_ms
    state = json.dumps(view_state(), separators=(",", ":"))
    return json.dumps({"name": VIEW_NAME, "createdAt": created, "updatedAt": created, "state": state})


def experiment_tags() -> dict[str, str]:
    """Tags for a new experiment: the model-training kind and ptmkit's saved view."""
    return {KIND_TAG: KIND, VIEW_TAG: view_tag_value()}


def _same_view(value: str | None) -> bool:
    try:
        return json.loads(json.loads(value or "")["state"]) == view_state()
    except (ValueError, KeyError, TypeError):
        return False


def missing_tags(existing: dict[str, str]) -> dict[str, str]:
    """What an existing experiment lacks: the kind if unset, the view if absent or outdated."""
    out = {}
    if not existing.get(KIND_TAG):
        out[KIND_TAG] = KIND
    if not _same_view(existing.get(VIEW_TAG)):
        out[VIEW_TAG] = view_tag_value()
    return out


def ensure_experiment(uri: str, experiment_id: str, existing: dict[str, str]) -> str:
    """Give an existing experiment what ``missing_tags`` finds missing; returns its id.

    Never fatal: a store that refuses experiment tags still records runs.
    """
    from mlflow.tracking import MlflowClient

    todo = missing_tags(existing)
    if todo:
        client = MlflowClient(uri)
        for key, value in todo.items():
            try:
                client.set_experiment_tag(experiment_id, key, value)
            except Exception:  # read-only or restricted server: the view is a convenience
                break
    return experiment_id


def experiment_url(base: str, experiment_id: str) -> str:
    """The link that opens an experiment's runs in the model-training view with ptmkit's columns."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_ID}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
