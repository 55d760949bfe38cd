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

from . import distill, distributed, metrics, plots, thresholds, tracking
from . import train as training
from .assembly import Assembly, assemble
from .datasets import DatasetInfo
from .inference import Encoded, encode, infer
from .package import ModelTask, write_package
from .recipe import Recipe
from .sitetable import SiteTable
from .trackers import MlflowTracker, NullTracker, Tracker
from .train import Callback, TrainResult, pick_device, seed_everything
from .units import windowed_tasks

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
    #: a multi-task run's tasks (``test`` then also holds ``<task>/<metric>`` and ``macro/<metric>``)
    tasks: list[str] = field(default_factory=list)
    #: per task, its (positives, negatives) per split, as ``counts``
    task_counts: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    #: processes that trained the model (torchrun) and this one's rank; a rank other than 0
    #: records nothing and its summary holds no test metrics
    world_size: int = 1
    rank: int = 0


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
    #: a multi-task model's rules per task, {task: {rule: threshold}} (``thresholds`` is then empty)
    task_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)


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


def counts_by_task(table: SiteTable, tasks: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """``counts`` of each task's rows (a multi-task table)."""
    return {t: counts(table.subset(table.frame["task"].to_numpy() == t)) for t in tasks}


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
    if recipe.tasks:
        tracker.set_tags({"ptmkit.tasks": ",".join(recipe.tasks)})
        for task, task_counts in counts_by_task(table, list(recipe.tasks)).items():
            for name, (pos, neg) in task_counts.items():
                if name != "unsplit":
                    tracker.log_params(
                        {f"data.tasks.{task}.n_{name}_pos": pos, f"data.tasks.{task}.n_{name}_neg": neg}
                    )
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
    tasks = list(recipe.tasks)
    encoded = encode(
        assembly.features,
        table,
        tasks=tasks or None,
        progress=progress,
        protein=recipe.data.units,
        per_task=assembly.graph.reads_task,
    )
    features_seconds = time.perf_counter() - t0
    tracker.log_metrics({"time/features_s": features_seconds})
    if recipe.distill is not None:  # the teachers score every row once, before training
        tracker.phase("teacher scores")
        teachers = distill.teacher_logits(recipe, table, tracking_uri=recipe.tracking.uri, progress=progress)
        encoded.targets = {"teacher": torch.from_numpy(teachers.logits)}
        tracker.set_tags(teachers.tags())  # the references are params already (distill.teachers.*)
        tracker.log_artifact(distill.write_logits(teachers, table, work / "teacher_logits.csv"), "distill")
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
        tasks=tasks,
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
    recipe, info, model = s.recipe, s.info, s.assembly.graph
    result, valid, test = fitted.result, fitted.valid, fitted.test
    assert valid.labels is not None and test.labels is not None
    device = pick_device(recipe.train.device)
    val_scores = result.best_val_scores
    if val_scores is None:
        val_scores = infer(model, valid, device=device).scores
    val_labels = valid.labels.numpy().astype(int)
    tasks = list(recipe.tasks)
    if tasks:
        return _evaluate_tasks(s, fitted, tracker, work, repeats=repeats, val_scores=val_scores)
    # every rule is chosen on validation only and kept (threshold/<rule>, the package's thresholds)
    rules = thresholds.choose_all(val_labels, val_scores)
    threshold = rules[thresholds.RUN_RULE]
    test_scores, infer_seconds = timed_scores(model, test, device, repeats)
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

    curves = {"validation": (val_labels, val_scores), "test": (test_labels, test_scores)}
    frame = log_test_outputs(
        s, fitted, tracker, work, test_scores, threshold, curves, f"{recipe.name} on {info.name}"
    )
    return Evaluation(rules, threshold, report, val_scores, test_scores, infer_seconds, frame)


def log_test_outputs(
    s: Setup,
    fitted: Fitted,
    tracker: Tracker,
    work: Path,
    test_scores: np.ndarray,
    cut: float | np.ndarray,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
) -> pd.DataFrame:
    """The test rows with scores and calls (``cut``: one threshold, or each row's), the ROC/PR
    ``curves`` and the training curves, as artifacts; returns the test rows."""
    frame = s.table.frame[s.table.frame["split"] == "test"].drop(columns=["split"]).copy()
    frame["score"] = test_scores
    frame["call"] = (test_scores >= cut).astype(int)
    predictions = work / "test_predictions.csv"
    frame.to_csv(predictions, index=False)
    tracker.log_artifact(predictions, "predictions")
    result = fitted.result
    plots.roc_pr(curves, work / "roc_pr.png", title)
    plots.training_curves(
        result.history, result.best_epoch, work / "training.png", f"{s.recipe.name} on {s.info.name}"
    )
    tracker.log_artifact(work / "roc_pr.png", "plots")
    tracker.log_artifact(work / "training.png", "plots")
    return frame


def timed_scores(
    model: torch.nn.Module, rows: Encoded, device: torch.device, repeats: int
) -> tuple[np.ndarray, float]:
    """Scores of ``rows`` and the median seconds of ``repeats`` passes (one is too noisy to report)."""
    timings = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        scores = infer(model, rows, device=device).scores
        timings.append(time.perf_counter() - t0)
    return scores, float(np.median(timings))


def _evaluate_tasks(
    s: Setup, fitted: Fitted, tracker: Tracker, work: Path, *, repeats: int, val_scores: np.ndarray
) -> Evaluation:
    """The evaluate phase of a multi-task model: every threshold rule chosen on each task's own
    validation rows; test metrics per task (``test/<task>/<metric>``), their mean over tasks
    (``test/macro/<metric>``) and pooled over all rows at each row's own task threshold
    (``test/<metric>``); a per-task table, and one ROC/PR curve per task."""
    recipe, table, model = s.recipe, s.table, s.assembly.graph
    valid, test = fitted.valid, fitted.test
    assert valid.labels is not None and test.labels is not None
    assert valid.task is not None and test.task is not None
    tasks = list(recipe.tasks)
    val_labels, val_task = valid.labels.numpy().astype(int), valid.task.numpy()
    rules = {
        t: thresholds.choose_all(val_labels[val_task == i], val_scores[val_task == i])
        for i, t in enumerate(tasks)
    }
    cuts = [rules[t][thresholds.RUN_RULE] for t in tasks]
    test_scores, infer_seconds = timed_scores(model, test, pick_device(recipe.train.device), repeats)
    test_labels, test_task = test.labels.numpy().astype(int), test.task.numpy()
    row_cut = np.asarray(cuts)[test_task]
    report = metrics.evaluate(test_labels, test_scores, row_cut)  # type: ignore[arg-type]
    per_task = metrics.by_task(metrics.evaluate, test_labels, test_scores, test_task, tasks, cuts)
    val_report = metrics.by_task(metrics.at_threshold, val_labels, val_scores, val_task, tasks, cuts)
    tracker.log_metrics({f"test/{k}": v for k, v in {**report, **per_task}.items()})
    tracker.log_metrics({f"val_best/{k}": v for k, v in val_report.items()})
    tracker.log_metrics(
        {
            **{f"threshold/{t}/{name}": value for t in tasks for name, value in rules[t].items()},
            "time/inference_s": infer_seconds,
            "speed/test_windows_per_s": len(test) / max(infer_seconds, 1e-9),
        }
    )
    table_path = work / "metrics_by_task.csv"
    task_table(per_task, tasks, table).to_csv(table_path)
    tracker.log_artifact(table_path, "metrics")

    title = f"{recipe.name}: test split, one curve per task"
    curves = {t: (test_labels[test_task == i], test_scores[test_task == i]) for i, t in enumerate(tasks)}
    both = {t: c for t, c in curves.items() if len(np.unique(c[0])) == 2}
    frame = log_test_outputs(s, fitted, tracker, work, test_scores, row_cut, both, title)
    test_report = {**report, **per_task}
    return Evaluation({}, float("nan"), test_report, val_scores, test_scores, infer_seconds, frame, rules)


def task_table(per_task: dict[str, float], tasks: list[str], table: SiteTable) -> pd.DataFrame:
    """Rows: tasks then ``macro`` (their mean); columns: the test metrics and each task's split
    sizes (what ``metrics/metrics_by_task.csv`` holds)."""
    names = [*tasks, metrics.MACRO]
    order = {k: i for i, k in enumerate(metrics.NAMES)}
    keys = sorted({k.split("/", 1)[1] for k in per_task}, key=lambda k: (order.get(k, len(order)), k))
    out = pd.DataFrame({k: [per_task.get(f"{n}/{k}", np.nan) for n in names] for k in keys}, index=names)
    out.index.name = "task"
    for split in SPLITS:
        sizes = table.frame.loc[table.frame["split"] == split, "task"].value_counts()
        out[f"n_{split}"] = [int(sizes.get(n, 0)) for n in tasks] + [int(sizes.sum())]
    return out


def package(s: Setup, fitted: Fitted, evaluation: Evaluation, tracker: Tracker, work: Path) -> Path:
    """Write the model package (``ptmkit.package``) and hand it to the tracker."""
    tracker.phase("packaging the model")
    windowed = set(windowed_tasks(s.table)) if s.recipe.data.units else set()
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
        tasks=[
            ModelTask(
                name,
                task.ptm,
                task.residues,
                cuts,
                task.window if task.window < s.table.width else None,
                name in windowed,
            )
            for name, cuts in evaluation.task_thresholds.items()
            for task in [s.info.tasks[name]]
        ]
        or None,
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

    Under torchrun every rank calls this: all train (``ptmkit.train.fit`` shares each batch),
    rank 0 alone records, evaluates and packages; the others return after training with an
    empty summary (``rank`` > 0). A failure on any rank ends rank 0's run FAILED with its error.
    """
    if tracker is None:
        tracker = MlflowTracker(recipe.tracking, nested=nested, parent_run_id=parent_run_id)
    elif nested or parent_run_id:
        raise ValueError("nested and parent_run_id configure the default MlflowTracker; give them to it")
    with distributed.joined(recipe.train.device) as world:
        if not world.main:
            return _follow(recipe, data_root, world)
        return _run(recipe, data_root, tracker, world, progress, inference_repeats, callbacks)


def _follow(recipe: Recipe, data_root: Path, world: distributed.World) -> RunSummary:
    """A rank other than 0: the same setup and training (no progress bars), nothing recorded."""
    s = setup(recipe, data_root)
    with tempfile.TemporaryDirectory(prefix="ptmkit-rank-") as tmp:
        fitted = fit(s, NullTracker(), Path(tmp), progress=False)
    return RunSummary(
        run_id="",
        experiment="",
        tracking_uri="",
        dataset=s.info.name,
        test={},
        threshold=float("nan"),
        best_epoch=fitted.result.best_epoch,
        epochs_run=fitted.result.epochs_run,
        counts=counts(s.table),
        store=f"none ({world.label()}: rank 0 records the run)",
        world_size=world.size,
        rank=world.rank,
    )


def _run(
    recipe: Recipe,
    data_root: Path,
    tracker: Tracker,
    world: distributed.World,
    progress: bool,
    inference_repeats: int,
    callbacks: Sequence[Callback],
) -> RunSummary:
    """The phases in order, recorded by ``tracker`` (rank 0 of a torchrun job, or the one process)."""
    started = time.perf_counter()
    s = setup(recipe, data_root)
    with (
        tracker.start(recipe.tracking.run_name or recipe.name),
        tempfile.TemporaryDirectory(prefix="ptmkit-run-") as tmp,
    ):
        work = Path(tmp)
        split_counts = record_inputs(s, tracker, work)
        if world.active:
            tracker.set_tags({"ptmkit.world_size": str(world.size), "ptmkit.backend": world.backend})
            tracker.log_params({"distributed.world_size": world.size, "distributed.backend": world.backend})
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
        tasks=list(recipe.tasks),
        task_counts=counts_by_task(s.table, list(recipe.tasks)),
        world_size=world.size,
    )


def metrics_table(summary: RunSummary) -> pd.DataFrame:
    """Rows: threshold rules; columns: metrics. What ``ptmkit run`` prints.

    A multi-task run: one row per task at its own validation-max-MCC threshold, their mean
    (``macro``) and all rows pooled, each row's call at its task's threshold."""
    t = summary.test
    if summary.tasks:

        def tuned(prefix: str) -> dict[str, float]:
            nan = float("nan")
            return {
                **{k: t.get(f"{prefix}tuned_{k}", nan) for k in ("acc", "sen", "spec", "mcc")},
                "auc": t.get(f"{prefix}auc", nan),
                "ap": t.get(f"{prefix}ap", nan),
            }

        rows = {f"{name} (its validation-max-MCC threshold)": tuned(f"{name}/") for name in summary.tasks}
        rows["mean over tasks (macro)"] = tuned(f"{metrics.MACRO}/")
        rows["all rows pooled"] = tuned("")
        return pd.DataFrame.from_dict(rows, orient="index")[list(metrics.NAMES)]
    rows = {
        "threshold 0.5": {k: t[k] for k in metrics.NAMES},
        f"validation-max-MCC threshold {summary.threshold:.3f}": {
            **{k: t[f"tuned_{k}"] for k in ("acc", "sen", "spec", "mcc")},
            "auc": t["auc"],
            "ap": t["ap"],
        },
    }
    return pd.DataFrame.from_dict(rows, orient="index")[list(metrics.NAMES)]
