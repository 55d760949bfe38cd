"""One recipe, one tracked run: data -> features -> composed model -> training -> test -> MLflow."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics, packaging, plots, tracking
from .datasets import prepare_data
from .featurize import build_features, encode_all, padding_mask
from .graph import ModelGraph, used_features
from .objective import build_losses
from .recipe import Recipe
from .sitetable import SiteTable
from .train import Split, TrainResult, fit, pick_device, predict, seed_everything

#: Test-set inference is timed this many times; the median is logged.
INFERENCE_REPEATS = 3


@dataclass
class RunSummary:
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


def _split(table: SiteTable, tensors: dict[str, torch.Tensor], mask: torch.Tensor, name: str) -> Split:
    index = torch.from_numpy(np.nonzero(table.frame["split"].to_numpy() == name)[0])
    labels = torch.from_numpy(table.labels[index.numpy()]).float()
    return Split({k: v[index] for k, v in tensors.items()}, mask[index], labels)


def plugin_versions(recipe: Recipe) -> dict[str, str]:
    """``plugin.<distribution>: version`` for every third-party package the recipe uses."""
    uses = [*recipe.features.values(), *recipe.nodes.values(), *recipe.losses]
    return {f"plugin.{u.spec.provider}": u.spec.version for u in uses if u.spec.provider != "ptmkit"}


def counts(table: SiteTable) -> dict[str, tuple[int, int]]:
    out = {}
    for name in ("train", "valid", "test"):
        labels = table.labels[table.frame["split"].to_numpy() == name]
        out[name] = (int(labels.sum()), int(len(labels) - labels.sum()))
    return out


def run(
    recipe: Recipe,
    *,
    data_root: Path,
    progress: bool = True,
    nested: bool = False,
    inference_repeats: int = INFERENCE_REPEATS,
    parent_run_id: str | None = None,
) -> RunSummary:
    """Train and evaluate ``recipe``, recording everything in one MLflow run.

    The graph is built (and so checked) before any data is read; a crash marks the run FAILED.
    ``inference_repeats`` test passes are timed and the median logged (a suite passes 1).
    ``parent_run_id`` nests the run under a run started by another process (suite workers).
    """
    import mlflow

    started = time.perf_counter()
    train_cfg = recipe.train
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    seed_everything(train_cfg.seed)
    names = used_features(recipe)
    features = build_features(recipe, names)
    model = ModelGraph(recipe, {n: f.dim for n, f in features.items()})
    losses = build_losses(recipe, model)

    table, info = prepare_data(recipe, data_root)
    store = tracking.resolve_store(recipe.tracking.uri)
    uri = store.uri
    experiment_id = tracking.setup(uri, recipe.tracking.experiment)
    tags = {
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
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=recipe.tracking.run_name or recipe.name,
        nested=nested,
        parent_run_id=parent_run_id,
    ) as active:
        phase = tracking.Phase()
        # a crash ends the run FAILED, SIGINT/SIGTERM KILLED; both with the reason in ptmkit.error
        with tracking.ending_on_error(phase), tracking.Heartbeat(active.info.run_id, uri) as beat:
            summary = _tracked(
                recipe, table, info, features, model, losses, tags, progress, inference_repeats, beat, phase
            )
            phase.now = "the end of the run"
            summary.run_id = active.info.run_id
            summary.experiment = recipe.tracking.experiment
            summary.experiment_id = experiment_id
            summary.tracking_uri = uri
            summary.store = store.describe()
            summary.seconds = time.perf_counter() - started
            mlflow.log_metric("time/total_s", summary.seconds)
    return summary


def _tracked(  # noqa: ANN001 - internal; the arguments are run()'s locals
    recipe, table, info, features, model, losses, tags, progress, repeats, beat, phase
) -> RunSummary:
    import mlflow

    mlflow.set_tags(tags)
    mlflow.log_params(tracking.clip_params(recipe.flat()))
    mlflow.log_text(recipe.to_yaml(), "recipe.yaml")
    split_counts = counts(table)
    for name, (pos, neg) in split_counts.items():
        mlflow.log_params({f"data.n_{name}_pos": pos, f"data.n_{name}_neg": neg})

    with tempfile.TemporaryDirectory(prefix="ptmkit-run-") as tmp:
        work = Path(tmp)
        splits_file = work / "splits.tsv.gz"
        table.frame.to_csv(splits_file, sep="\t", index=False, compression="gzip")
        mlflow.log_artifact(str(splits_file), "data")

        phase.now = "feature encoding"
        t0 = time.perf_counter()
        train_rows = table.split("train")
        for feature in features.values():
            feature.fit(train_rows)
        tensors = encode_all(features, table, progress=progress)
        mask = padding_mask(table)
        features_seconds = time.perf_counter() - t0
        mlflow.log_metric("time/features_s", features_seconds)
        train, valid, test = (_split(table, tensors, mask, s) for s in ("train", "valid", "test"))
        # with class-balanced epochs the losses see a 1:1 ratio (e.g. weighted_ce's auto weight = 1)
        seen_labels = np.array([0.0, 1.0]) if recipe.train.balance else train.labels.numpy()
        for _, loss in losses:
            loss.setup(seen_labels)
        n_parameters = sum(p.numel() for p in model.parameters())
        mlflow.log_param("model.parameters", n_parameters)

        epochs = recipe.train.epochs

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            mlflow.log_metrics(row, step=epoch)
            phase.now = f"epoch {epoch + 1} of {epochs}" if epoch < epochs else "testing"
            beat.beat(soon=True)

        phase.now = f"epoch 1 of {epochs}"
        t0 = time.perf_counter()
        result: TrainResult = fit(
            model,
            losses,
            train,
            valid,
            recipe.train,
            work / "best.pt",
            on_epoch=on_epoch,
            progress=progress,
        )
        phase.now = "testing"
        train_seconds = time.perf_counter() - t0
        mlflow.log_metrics(
            {
                "time/train_s": train_seconds,
                "train/best_epoch": result.best_epoch,
                "train/epochs_run": result.epochs_run,
                "time/epoch_s_median": float(np.median([h["time/epoch_s"] for h in result.history])),
            }
        )

        device = pick_device(recipe.train.device)
        val_scores = result.best_val_scores
        if val_scores is None:
            val_scores = predict(model, valid, device)
        val_labels = valid.labels.numpy().astype(int)
        # every rule is chosen on validation only and kept (threshold/<rule>, the package's thresholds)
        rules = {name: float(rule(val_labels, val_scores)) for name, rule in metrics.THRESHOLD_RULES.items()}
        threshold = rules["val_max_mcc"]
        timings = []
        for _ in range(max(repeats, 1)):  # median of repeats: one pass is too noisy to report
            t0 = time.perf_counter()
            test_scores = predict(model, test, device)
            timings.append(time.perf_counter() - t0)
        infer_seconds = float(np.median(timings))
        test_labels = test.labels.numpy().astype(int)
        report = metrics.evaluate(test_labels, test_scores, threshold)
        val_report = metrics.at_threshold(val_labels, val_scores, threshold)
        mlflow.log_metrics({f"test/{k}": v for k, v in report.items()})
        mlflow.log_metrics({f"val_best/{k}": v for k, v in val_report.items()})
        mlflow.log_metrics(
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
        mlflow.log_artifact(str(predictions), "predictions")

        title = f"{recipe.name} on {info.name}"
        plots.roc_pr(
            {"validation": (val_labels, val_scores), "test": (test_labels, test_scores)},
            work / "roc_pr.png",
            title,
        )
        plots.training_curves(result.history, result.best_epoch, work / "training.png", title)
        mlflow.log_artifact(str(work / "roc_pr.png"), "plots")
        mlflow.log_artifact(str(work / "training.png"), "plots")

        # the packaged model (ptmkit.packaging): plain `model/` artifacts + an mlflow.pyfunc model
        phase.now = "packaging the model"
        active = mlflow.active_run()
        package = packaging.write_package(
            work / "model",
            model=model,
            recipe=recipe,
            features=features,
            dataset=info.name,
            ptm=info.ptm,
            residues=info.residues,
            window=table.width,
            thresholds=rules,
            best_epoch=result.best_epoch,
            run_id=active.info.run_id if active else None,
        )
        packaging.log_package(package)

    return RunSummary(
        run_id="",
        experiment="",
        tracking_uri="",
        dataset=info.name,
        test=report,
        threshold=threshold,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        counts=split_counts,
        parameters=n_parameters,
        epoch_seconds=float(np.median([h["time/epoch_s"] for h in result.history])),
        windows_per_second=len(test) / max(infer_seconds, 1e-9),
        phases={"features_s": features_seconds, "train_s": train_seconds, "inference_s": infer_seconds},
        test_rows=frame,
        train_windows=frozenset(table.frame.loc[table.frame["split"] != "test", "window"]),
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
