"""Suite jobs: one model each (a floor model or a recipe with one seed), run here or in workers.

A job is plain data (picklable), so a spawned worker process can run it; it trains, tests and
logs one model as an MLflow run nested under the suite's parent run, and returns result rows.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ptmkit import tracking
from ptmkit.datasets import prepare_data
from ptmkit.run import run
from ptmkit.splits import save_split_file

from . import floor, report
from .memory import current_mb, peak_mb, reset_peak
from .results import Results
from .suite import LoadedSuite, load_suite

#: datasets by training cost, largest first (jobs are scheduled in this order)
COST_ORDER = ("K2", "K1", "C2", "T2", "T1", "C1", "H1")


def _row(dataset: str, block: str, model: str, seed: int, **values: object) -> dict:
    return {
        "dataset": dataset,
        "scope": report.FULL,
        "block": block,
        "model": model,
        "seed": seed,
        "status": "FINISHED",
        **values,
    }


@dataclass(frozen=True)
class Job:
    """One model to train: picklable, so a worker process can run it (no live objects)."""

    suite: str  # suite file path
    datasets: tuple[str, ...]  # the suite's datasets after --datasets (for the validation)
    dataset: str
    kind: str  # "floor" or "recipe"
    model: str  # floor model name or recipe label
    seed: int
    uri: str
    experiment_id: str
    parent_run_id: str
    data_root: str
    threads: int
    leak_free: bool
    progress: bool = False


def run_job(job: Job) -> list[dict]:
    """Train, test and log one model; returns its result rows (a failure is a FAILED row)."""
    torch.set_num_threads(job.threads)
    reset_peak()
    start_mb = current_mb()
    t0 = time.perf_counter()
    try:
        rows = _floor(job) if job.kind == "floor" else _recipe(job)
    except Exception as exc:  # one failure must not cost the rest of the suite
        block = "scikit-learn floor" if job.kind == "floor" else "ptmkit"
        return [
            {
                **_row(job.dataset, block, job.model, job.seed),
                "status": "FAILED",
                "error": f"{type(exc).__name__}: {exc}",
            }
        ]
    for row in rows:
        row.update(peak_mb=peak_mb(), start_mb=start_mb, wall_s=time.perf_counter() - t0, threads=job.threads)
    return rows


def _loaded(job: Job) -> LoadedSuite:
    loaded = load_suite(job.suite)
    loaded.suite.datasets = list(job.datasets)
    return loaded


def _counts(table: object) -> dict[str, int]:
    return {n: int((table.frame["split"] == n).sum()) for n in ("train", "valid", "test")}


def _leak_free_row(row: dict, test_rows: object, scores: object, threshold: float, train: frozenset) -> dict:
    """``row`` scored again on the test rows whose window does not occur in train/valid."""
    metrics, dropped = report.leak_free(test_rows, scores, threshold, train)
    return {**row, **metrics, "scope": report.LEAK_FREE, "dropped": dropped}


def _floor(job: Job) -> list[dict]:
    import mlflow

    loaded = _loaded(job)
    base = loaded.recipe(next(iter(loaded.suite.recipes)), job.dataset, job.seed, job.uri)
    table, _ = prepare_data(base, Path(job.data_root))
    with (
        mlflow.start_run(
            experiment_id=job.experiment_id,
            run_name=f"{job.dataset}/{job.model}",
            nested=True,  # in-process (1 worker) the parent is active here
            parent_run_id=job.parent_run_id,
        ) as active,
        tracking.ending_on_error(tracking.Phase(f"floor {job.model}")),
        tracking.Heartbeat(active.info.run_id, job.uri),
    ):
        mlflow.set_tags(
            {
                "bench_suite": loaded.suite.name,
                "bench_model": job.model,
                "bench_seed": str(job.seed),
                "ptmkit.dataset": f"uniptms:{job.dataset}",
                "ptmkit.recipe": f"floor:{job.model}",
            }
        )
        res = floor.run_floor(table, job.model, seed=job.seed)
        mlflow.log_metrics({f"test/{k}": v for k, v in res.test.items()})
        mlflow.log_metrics({f"time/{k}": v for k, v in res.phases.items()})
        mlflow.log_metric("threshold/val_max_mcc", res.threshold)
    values = {**report.metric_row(res.test), **res.phases, "threshold": res.threshold, **_counts(table)}
    rows = [_row(job.dataset, "scikit-learn floor", job.model, job.seed, **values)]
    if job.leak_free:
        test_rows = table.frame[table.frame["split"] == "test"]
        train_windows = frozenset(table.frame.loc[table.frame["split"] != "test", "window"])
        rows.append(_leak_free_row(rows[0], test_rows, res.test_scores, res.threshold, train_windows))
    return rows


def _recipe(job: Job) -> list[dict]:
    loaded = _loaded(job)
    recipe = loaded.recipe(job.model, job.dataset, job.seed, job.uri, [f"train.threads={job.threads}"])
    summary = run(
        recipe,
        data_root=Path(job.data_root),
        progress=job.progress,
        inference_repeats=1,
        nested=True,  # in-process (1 worker) the parent is active here
        parent_run_id=job.parent_run_id,
    )
    values = {
        **report.metric_row(summary.test),
        **summary.phases,
        "threshold": summary.threshold,
        "epochs_run": summary.epochs_run,
        "best_epoch": summary.best_epoch,
        "parameters": summary.parameters,
        "run_id": summary.run_id,
        **{n: sum(summary.counts[n]) for n in ("train", "valid", "test")},
    }
    rows = [_row(job.dataset, "ptmkit", job.model, job.seed, **values)]
    if job.leak_free and summary.test_rows is not None:
        scores = summary.test_rows["score"].to_numpy()
        rows.append(
            _leak_free_row(rows[0], summary.test_rows, scores, summary.threshold, summary.train_windows)
        )
    return rows


def plan(loaded: LoadedSuite, results: Results, common: dict) -> list[Job]:
    """Every job not yet in ``results``, most expensive first (so the tail of the suite is short).

    Also draws and saves the splits of ``saved_splits`` datasets that have none yet, before any
    job starts, so every model of a dataset reads one split file.
    """
    s = loaded.suite
    for dataset in s.datasets:
        split_file = loaded.split_file(dataset)
        if split_file is not None and not split_file.exists():
            base = loaded.recipe(next(iter(s.recipes)), dataset, s.seeds[0], common["uri"])
            table, _ = prepare_data(base, Path(common["data_root"]))
            save_split_file(table, split_file)
            print(f"saved the {dataset} split to {split_file} (reused from now on)", file=sys.stderr)
    work = [
        (dataset, kind, model, seed)
        for dataset in s.datasets
        for kind, model, seed in [
            *(("floor", m, 0) for m in s.floor),
            *(("recipe", label, seed) for label in s.recipes for seed in s.seeds),
        ]
    ]
    jobs = [
        Job(dataset=d, kind=k, model=m, seed=seed, leak_free=d in s.leak_free, **common)
        for d, k, m, seed in work
    ]
    jobs = [j for j in jobs if not results.done(j.dataset, j.model, j.seed)]
    size = {d: i for i, d in enumerate(COST_ORDER)}
    rank = {label: i for i, label in enumerate(s.recipes)}
    return sorted(jobs, key=lambda j: (size.get(j.dataset, 99), j.kind == "floor", rank.get(j.model, 0)))


def execute(jobs: list[Job], workers: int, on_rows: Callable[[list[dict]], None]) -> None:
    """Run ``jobs`` here (one worker) or in a pool of spawned processes; rows as they finish."""
    bar = tqdm(total=len(jobs), desc="suite", unit="model")
    if workers <= 1:
        for job in jobs:
            bar.set_postfix_str(f"{job.dataset} {job.model} {job.seed}")
            on_rows(run_job(job))
            bar.update()
        return
    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state in workers
    # workers turn SIGTERM into Terminated too, so their runs end KILLED, not left RUNNING
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=tracking.sigterm_unwinds
    ) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        try:
            for future in as_completed(futures):
                on_rows(future.result())
                bar.update()
        except BaseException:
            # a signal or an error here: stop the workers' runs (KILLED) instead of waiting for
            # them, or the pool's shutdown would block until every queued model had trained
            for future in futures:
                future.cancel()
            for process in list((pool._processes or {}).values()):  # noqa: SLF001 - no public handle
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
            raise


def print_rows(rows: list[dict]) -> None:
    r = rows[0]
    if r["status"] != "FINISHED":
        print(f"  {r['dataset']} {r['model']} seed {r['seed']} FAILED: {r.get('error')}", file=sys.stderr)
        return
    epochs = "" if r["block"] != "ptmkit" else f" epochs {r['epochs_run']}"
    print(
        f"  {r['dataset']} {r['model']} seed {r['seed']}: MCC {r['mcc']:.3f} AP {r['ap']:.3f}{epochs} "
        f"({r['wall_s']:.0f} s)",
        file=sys.stderr,
    )
