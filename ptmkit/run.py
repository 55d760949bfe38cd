"""One recipe, one run, in named phases: setup -> fit -> evaluate -> package, recorded by a tracker.

- :func:`setup`: seed, threads, ``assemble(recipe)`` (features, graph, losses: built and so
  checked before any data is read, in the order that fixes the initial weights), read the data.
- :func:`record_inputs`: the run's tags, params, recipe and split file.
- :func:`fit`: fit the features on the training rows, encode every row, train with early stopping.
- :func:`evaluate`: thresholds chosen on validation, the test split scored and reported.
- :func:`package`: the model folder, handed to the tracker.

Every record goes through a :class:`ptmkit.trackers.Tracker` (an MLflow run by default,
``NullTracker`` for a run without MLflow), so the phases hold no MLflow calls.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics, plots, thresholds, tracking
from . import train as training
from .assembly import Assembly, assemble
from .datasets import DatasetInfo
from .inference import Encoded, encode, infer
from .package import write_package
from .recipe import Recipe
from .sitetable import SiteTable
from .trackers import MlflowTracker, Tracker
from .train import Callback, TrainResult, pick_device, seed_everything

#: Test-set inference is timed this many times; the median is logged.
INFERENCE_REPEATS = 3
SPLITS = ("train", "valid", "test")


@dataclass
class RunSummary:
    """What ``ptmkit run`` prints and sweeps/benchmarks tabulate.

    With a ``NullTracker`` there is no store: ``run_id``, ``experiment``, ``experiment_id`` and
    ``tracking_uri`` are empty and ``store`` starts with "none".
    """

    run_id: str
    experiment: str
    tracking_uri: str
    dataset: str
    test: dict[str, float]
    threshold: float
    best_epoch: int
    epochs_run: int
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0
    experiment_id: str = ""
    parameters: int = 0
    epoch_seconds: float = 0.0
    windows_per_second: float = 0.0
    #: wall seconds per phase: features, train, inference (one test pass)
    phases: dict[str, float] = field(default_factory=dict)
    #: the store and why it was chosen ("sqlite:///.../mlflow.db (the per-user store; ...)")
    store: str = ""
    #: the test rows with their scores and calls (what ``predictions/test_predictions.csv`` holds)
    test_rows: pd.DataFrame | None = None
    #: windows of the training and validation rows (to score the test set without overlaps)
    train_windows: frozenset[str] = frozenset()


@dataclass
class Setup:
    """The setup phase's result: the assembled recipe and its data, split."""

    assembly: Assembly
    table: SiteTable
    info: DatasetInfo

    @property
    def recipe(self) -> Recipe:
        return self.assembly.recipe


@dataclass
class Fitted:
    """The fit phase's result: the encoded splits and the trained model's record."""

    train: Encoded
    valid: Encoded
    test: Encoded
    result: TrainResult
    features_seconds: float
    train_seconds: float


@dataclass
class Evaluation:
    """The evaluate phase's result: thresholds chosen on validation, test scores and metrics."""

    thresholds: dict[str, float]
    threshold: float
    test: dict[str, float]
    val_scores: np.ndarray
    test_scores: np.ndarray
    inference_seconds: float
    test_rows: pd.DataFrame


def plugin_versions(recipe: Recipe) -> dict[str, str]:
    """``plugin.<distribution>: version`` for every third-party package the recipe uses."""
    uses = [*recipe.features.values(), *recipe.nodes.values(), *recipe.losses]
    return {f"plugin.{u.spec.provider}": u.spec.version for u in uses if u.spec.provider != "ptmkit"}


def counts(table: SiteTable) -> dict[str, tuple[int, int]]:
    out = {}
    for name in SPLITS:
        labels = table.labels[table.frame["split"].to_numpy() == name]
        out[name] = (int(labels.sum()), int(len(labels) - labels.sum()))
    return out


def split_rows(table: SiteTable, encoded: Encoded, name: str) -> Encoded:
    """The rows of split ``name`` of a table encoded as a whole."""
    return encoded.rows(torch.from_numpy(np.nonzero(table.frame["split"].to_numpy() == name)[0]))


class TrackEpochs(Callback):
    """Each epoch's row to the tracker (step = epoch), the phase text, and a heartbeat."""

    def __init__(self, tracker: Tracker, epochs: int) -> None:
        self.tracker, self.epochs = tracker, epochs

    def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        self.tracker.log_metrics(row, step=epoch)
        self.tracker.phase(f"epoch {epoch + 1} of {self.epochs}" if epoch < self.epochs else "testing")
        self.tracker.beat()


# ---------------------------------------------------------------------------- the phases
def setup(recipe: Recipe, data_root: Path) -> Setup:
    """Seed, set threads, assemble the recipe (checked before any data is read), read the data."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.train.seed)
    assembly = assemble(recipe)
    table, info = assembly.read(data_root)
    return Setup(assembly, table, info)


def record_inputs(s: Setup, tracker: Tracker, work: Path) -> dict[str, tuple[int, int]]:
    """Tags, params, the resolved recipe and every row's split; returns the split counts."""
    recipe, table, info = s.recipe, s.table, s.info
    tracker.set_tags(
        {
            "ptmkit.dataset": info.name,
            "ptmkit.ptm": info.ptm,
            "ptmkit.residue": info.residues,
            "ptmkit.recipe": recipe.name,
            "ptmkit.recipe_hash": recipe.digest(),
            "ptmkit.data_digest": table.digest()[:16],
            **{f"version.{k}": v for k, v in tracking.package_versions().items()},
            **plugin_versions(recipe),
            **recipe.tracking.tags,
        }
    )
    tracker.log_params(tracking.clip_params(recipe.flat()))
    tracker.log_text(recipe.to_yaml(), "recipe.yaml")
    split_counts = counts(table)
    for name, (pos, neg) in split_counts.items():
        tracker.log_params({f"data.n_{name}_pos": pos, f"data.n_{name}_neg": neg})
    splits_file = work / "splits.tsv.gz"
    table.frame.to_csv(splits_file, sep="\t", index=False, compression="gzip")
    tracker.log_artifact(splits_file, "data")
    return split_counts


def fit(
    s: Setup, tracker: Tracker, work: Path, *, progress: bool = True, callbacks: Sequence[Callback] = ()
) -> Fitted:
    """Fit the features on the training rows, encode all rows, train (best epoch kept)."""
    recipe, table, assembly = s.recipe, s.table, s.assembly
    tracker.phase("feature encoding")
    t0 = time.perf_counter()
    train_rows = table.split("train")
    for feature in assembly.features.values():
        feature.fit(train_rows)
    encoded = encode(assembly.features, table, progress=progress)
    features_seconds = time.perf_counter() - t0
    tracker.log_metrics({"time/features_s": features_seconds})
    train, valid, test = (split_rows(table, encoded, name) for name in SPLITS)
    assert train.labels is not None
    # with class-balanced epochs the losses see a 1:1 ratio (e.g. weighted_ce's auto weight = 1)
    seen_labels = np.array([0.0, 1.0]) if recipe.train.balance else train.labels.numpy()
    for _, loss in assembly.losses:
        loss.setup(seen_labels)
    tracker.log_params({"model.parameters": assembly.parameters})

    epochs = recipe.train.epochs
    tracker.phase(f"epoch 1 of {epochs}")
    t0 = time.perf_counter()
    result = training.fit(
        assembly.graph,
        assembly.losses,
        train,
        valid,
        recipe.train,
        work / "best.pt",
        callbacks=(TrackEpochs(tracker, epochs), *callbacks),
        progress=progress,
    )
    tracker.phase("testing")
    train_seconds = time.perf_counter() - t0
    tracker.log_metrics(
        {
            "time/train_s": train_seconds,
            "train/best_epoch": result.best_epoch,
            "train/epochs_run": result.epochs_run,
            "train/windows_seen": result.windows_seen,
            "train/best_is_last": float(result.best_is_last),
            "time/epoch_s_median": float(np.median([h["time/epoch_s"] for h in result.history])),
        }
    )
    tracker.set_tags({"ptmkit.stopped_by": result.stopped_by})
    return Fitted(train, valid, test, result, features_seconds, train_seconds)


def evaluate(s: Setup, fitted: Fitted, tracker: Tracker, work: Path, *, repeats: int) -> Evaluation:
    """Thresholds on validation (every rule), the test split scored ``repeats`` times (median
    time), metrics at 0.5 and at ``thresholds.RUN_RULE``, predictions and plots."""
    recipe, table, info, model = s.recipe, s.table, s.info, s.assembly.graph
    result, valid, test = fitted.result, fitted.valid, fitted.test
    assert valid.labels is not None and test.labels is not None
    device = pick_device(recipe.train.device)
    val_scores = result.best_val_scores
    if val_scores is None:
        val_scores = infer(model, valid, device=device).scores
    val_labels = valid.labels.numpy().astype(int)
    # every rule is chosen on validation only and kept (threshold/<rule>, the package's thresholds)
    rules = thresholds.choose_all(val_labels, val_scores)
    threshold = rules[thresholds.RUN_RULE]
    timings = []
    for _ in range(max(repeats, 1)):  # median of repeats: one pass is too noisy to report
        t0 = time.perf_counter()
        test_scores = infer(model, test, device=device).scores
        timings.append(time.perf_counter() - t0)
    infer_seconds = float(np.median(timings))
    test_labels = test.labels.numpy().astype(int)
    report = metrics.evaluate(test_labels, test_scores, threshold)
    val_report = metrics.at_threshold(val_labels, val_scores, threshold)
    tracker.log_metrics({f"test/{k}": v for k, v in report.items()})
    tracker.log_metrics({f"val_best/{k}": v for k, v in val_report.items()})
    tracker.log_metrics(
        {
            **{f"threshold/{name}": value for name, value in rules.items()},
            "time/inference_s": infer_seconds,
            "speed/test_windows_per_s": len(test) / max(infer_seconds, 1e-9),
        }
    )

    frame = table.frame[table.frame["split"] == "test"].drop(columns=["split"]).copy()
    frame["score"] = test_scores
    frame["call"] = (test_scores >= threshold).astype(int)
    predictions = work / "test_predictions.csv"
    frame.to_csv(predictions, index=False)
    tracker.log_artifact(predictions, "predictions")

    title = f"{recipe.name} on {info.name}"
    plots.roc_pr(
        {"validation": (val_labels, val_scores), "test": (test_labels, test_scores)},
        work / "roc_pr.png",
        title,
    )
    plots.training_curves(result.history, result.best_epoch, work / "training.png", title)
    tracker.log_artifact(work / "roc_pr.png", "plots")
    tracker.log_artifact(work / "training.png", "plots")
    return Evaluation(rules, threshold, report, val_scores, test_scores, infer_seconds, frame)


def package(s: Setup, fitted: Fitted, evaluation: Evaluation, tracker: Tracker, work: Path) -> Path:
    """Write the model package (``ptmkit.package``) and hand it to the tracker."""
    tracker.phase("packaging the model")
    directory = write_package(
        work / "model",
        model=s.assembly.graph,
        recipe=s.recipe,
        features=s.assembly.features,
        dataset=s.info.name,
        ptm=s.info.ptm,
        residues=s.info.residues,
        window=s.table.width,
        thresholds=evaluation.thresholds,
        best_epoch=fitted.result.best_epoch,
        run_id=tracker.run_id or None,
    )
    tracker.log_package(directory)
    return directory


def run(
    recipe: Recipe,
    *,
    data_root: Path,
    tracker: Tracker | None = None,
    progress: bool = True,
    nested: bool = False,
    inference_repeats: int = INFERENCE_REPEATS,
    parent_run_id: str | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunSummary:
    """Train and evaluate ``recipe``, recording everything through ``tracker``.

    ``tracker`` defaults to an MLflow run in the store ``recipe.tracking`` resolves to;
    ``nested`` / ``parent_run_id`` configure that default (nest under this process's active run,
    or under a run started by another process: suite workers). The graph is built (and so
    checked) before any data is read; a crash ends the run FAILED, a signal KILLED.
    ``inference_repeats`` test passes are timed and the median logged (a suite passes 1).
    """
    if tracker is None:
        tracker = MlflowTracker(recipe.tracking, nested=nested, parent_run_id=parent_run_id)
    elif nested or parent_run_id:
        raise ValueError("nested and parent_run_id configure the default MlflowTracker; give them to it")
    started = time.perf_counter()
    s = setup(recipe, data_root)
    with (
        tracker.start(recipe.tracking.run_name or recipe.name),
        tempfile.TemporaryDirectory(prefix="ptmkit-run-") as tmp,
    ):
        work = Path(tmp)
        split_counts = record_inputs(s, tracker, work)
        fitted = fit(s, tracker, work, progress=progress, callbacks=callbacks)
        evaluation = evaluate(s, fitted, tracker, work, repeats=inference_repeats)
        package(s, fitted, evaluation, tracker, work)
        tracker.phase("the end of the run")
        seconds = time.perf_counter() - started
        tracker.log_metrics({"time/total_s": seconds})
    result, test = fitted.result, fitted.test
    return RunSummary(
        run_id=tracker.run_id,
        experiment=tracker.experiment,
        tracking_uri=tracker.uri,
        dataset=s.info.name,
        test=evaluation.test,
        threshold=evaluation.threshold,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        counts=split_counts,
        seconds=seconds,
        experiment_id=tracker.experiment_id,
        parameters=s.assembly.parameters,
        epoch_seconds=float(np.median([h["time/epoch_s"] for h in result.history])),
        windows_per_second=len(test) / max(evaluation.inference_seconds, 1e-9),
        phases={
            "features_s": fitted.features_seconds,
            "train_s": fitted.train_seconds,
            "inference_s": evaluation.inference_seconds,
        },
        store=tracker.store,
        test_rows=evaluation.test_rows,
        train_windows=frozenset(s.table.frame.loc[s.table.frame["split"] != "test", "window"]),
    )


def metrics_table(summary: RunSummary) -> pd.DataFrame:
    """Rows: threshold rules; columns: metrics. What ``ptmkit run`` prints."""
    t = summary.test
    rows = {
        "threshold 0.5": {k: t[k] for k in metrics.NAMES},
        f"validation-max-MCC threshold {summary.threshold:.3f}": {
            **{k: t[f"tuned_{k}"] for k in ("acc", "sen", "spec", "mcc")},
            "auc": t["auc"],
            "ap": t["ap"],
        },
    }
    return pd.DataFrame.from_dict(rows, orient="index")[list(metrics.NAMES)]
