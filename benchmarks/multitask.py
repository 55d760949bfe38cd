"""MTPrompt-PTM's claim on the seven UniPTMs sets: one multi-task model vs one model per task.

For each seed, on the same splits, the same trunk, the same epochs and early-stopping rule:

- ``multi``: ``experiments/mtprompt-trunk-lite.yaml`` as it is, all seven sets as seven tasks;
- ``single``: the same recipe with ``data.tasks`` cut to one task (``task_heads`` with one
  logit), once per task.

Each task is split as its source defines (a published test set stays; K1 and C2 use the suite's
saved 80/20 splits, ``benchmarks/splits``; the others' validation is carved from training rows
with the recipe's fractions and seed), so a task's test rows are the same in both arms and the
seven single-task models together see the windows the multi-task model sees (same epochs over
the same training rows; early stopping may end either sooner, and the windows each saw are
reported). Every model is an MLflow run (experiment ``ptmkit-bench-multitask``, the default store); every
number is a test-split metric at the validation-chosen (max-MCC) threshold,
mean and sd over seeds. The gradient-boosting / logistic floor and the UniPTMs paper rows are
read from ``docs/benchmarks/converge.json`` and the catalogue for reference (the floor saw each
dataset's own window width, not the common 41).

Run from the repository root (the two workers each use one torch thread)::

    python -m benchmarks.multitask --seeds 0 1 2 --out docs/benchmarks/multitask
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
import yaml
from tqdm.auto import tqdm

from ptmkit import catalog, tracking
from ptmkit import recipe as recipes
from ptmkit.datasets import resolve_data_root
from ptmkit.outputs import write_text
from ptmkit.run import run

from .results import publish

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "experiments/mtprompt-trunk-lite.yaml"
SPLITS = ROOT / "benchmarks/splits"
CONVERGE = ROOT / "docs/benchmarks/converge.json"
#: single-task jobs largest first, so the two workers finish together
COST_ORDER = ("K2", "K1", "C2", "T2", "T1", "C1", "H1")


@dataclass(frozen=True)
class Job:
    seed: int
    mode: str  # "multi" or "single"
    task: str | None  # the single task, or None for the multi-task model
    overrides: tuple[str, ...]
    data_root: str


def task_block(names: list[str], raw_tasks: dict) -> str:
    """``data.tasks`` for ``--set``: the recipe's entries of ``names``, saved splits for K1/C2."""
    out = {}
    for name in names:
        entry = dict(raw_tasks[name])
        saved = SPLITS / f"{name}.tsv.gz"
        if saved.is_file():
            entry["split_file"] = str(saved)
        out[name] = entry
    return "data.tasks=" + yaml.safe_dump(out, default_flow_style=True, width=10_000, sort_keys=False).strip()


def plan(
    seeds: list[int],
    extra: list[str],
    data_root: Path,
    *,
    single_set: list[str] = (),  # type: ignore[assignment]
    only: list[str] | None = None,
    multi: bool = True,
    single: bool = True,
) -> list[Job]:
    """The jobs: per seed the multi-task model (unless ``multi`` is False) and one single-task
    model per task (``only``: of these tasks; none unless ``single``), ``single_set`` overriding
    the single-task ones."""
    raw = yaml.safe_load(RECIPE.read_text())
    names = list(raw["data"]["tasks"])
    jobs = []
    for seed in seeds:
        common = (f"train.seed={seed}", "tracking.experiment=ptmkit-bench-multitask", *extra)
        if multi:
            block = task_block(names, raw["data"]["tasks"])
            jobs.append(Job(seed, "multi", None, (block, *common), str(data_root)))
        for name in sorted(names, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else -1):
            if not single or (only is not None and name not in only):
                continue
            block = task_block([name], raw["data"]["tasks"])
            one = (block, "model.nodes.heads.tasks=1", *common, *single_set)
            jobs.append(Job(seed, "single", name, one, str(data_root)))
    return jobs


def run_job(job: Job) -> list[dict]:
    torch.set_num_threads(1)
    recipe = recipes.load(RECIPE, list(job.overrides))
    t0 = time.perf_counter()
    summary = run(recipe, data_root=Path(job.data_root), progress=False, inference_repeats=1)
    seconds = time.perf_counter() - t0
    last = mlflow.MlflowClient(summary.tracking_uri).get_run(summary.run_id).data.metrics
    rows = []
    for task in summary.tasks:
        rows.append(
            {
                "seed": job.seed,
                "mode": job.mode,
                "task": task,
                "mcc": summary.test[f"{task}/tuned_mcc"],
                "ap": summary.test[f"{task}/ap"],
                "auc": summary.test[f"{task}/auc"],
                "epochs_run": summary.epochs_run,
                "best_epoch": summary.best_epoch,
                "windows_seen": int(last.get("train/windows_seen", 0)),
                "seconds": seconds,
                "run_id": summary.run_id,
            }
        )
    return rows


def execute(jobs: list[Job], workers: int, partial: Path | None = None) -> list[dict]:
    """Run the jobs in spawned workers; ``partial``: rows so far, rewritten after every model."""
    rows: list[dict] = []
    bar = tqdm(total=len(jobs), desc="multitask", unit="model")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=tracking.sigterm_unwinds) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            got = future.result()
            rows += got
            what = job.task or "all tasks"
            print(
                f"  seed {job.seed} {job.mode} ({what}): "
                + ", ".join(f"{r['task']} MCC {r['mcc']:.3f} AP {r['ap']:.3f}" for r in got)
                + f" [{got[0]['epochs_run']} epochs, {got[0]['seconds']:.0f} s]",
                file=sys.stderr,
            )
            bar.update()
            if partial is not None:
                write_text(partial, json.dumps(rows, indent=2) + "\n")
    return rows


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def references() -> dict[str, dict[str, float]]:
    """Per dataset: the best floor model's mean test MCC/AP (converge suite) and the UniPTMs
    paper's MCC/AP (catalogue)."""
    out: dict[str, dict[str, float]] = {}
    if CONVERGE.is_file():
        rows = json.loads(CONVERGE.read_text())["rows"]
        floor: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            if r["block"] == "scikit-learn floor" and r["scope"] == "test" and r["status"] == "FINISHED":
                floor.setdefault((r["dataset"], r["model"]), []).append(r)
        for (dataset, _), rs in floor.items():
            mcc = statistics.mean(r["mcc"] for r in rs)
            ap = statistics.mean(r["ap"] for r in rs)
            best = out.setdefault(dataset, {})
            if mcc > best.get("floor_mcc", -1):
                best.update(floor_mcc=mcc, floor_ap=ap)
    for dataset in ("T1", "T2", "H1", "K1", "K2", "C1", "C2"):
        paper = catalog.get(f"uniptms:{dataset}").paper() or {}
        results = paper.get("reference", {})
        for model, key in (("UniPTMs", "uniptms"), ("UniPTMs-mini", "mini")):
            if model in results:
                out.setdefault(dataset, {})[f"{key}_mcc"] = results[model]["mcc"]
                out[dataset][f"{key}_ap"] = results[model].get("ap", float("nan"))
    return out


def render(rows: list[dict], meta: dict) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    refs = references()
    lines = [
        "# One multi-task model vs one model per task (MTPrompt-PTM's claim, UniPTMs sets)",
        "",
        f"`{meta['command']}` on {meta['machine']}; seeds {meta['seeds']}; {meta['minutes']:.1f} min.",
        "Test split, each task at its own validation-max-MCC threshold; mean ± sd over seeds.",
        "",
        "| task | single MCC | multi MCC | single AP | multi AP | floor MCC / AP | UniPTMs-mini MCC / AP |",
        "|---|---|---|---|---|---|---|",
    ]
    wins = {"mcc": 0, "ap": 0}
    for task in tasks:

        def values(mode: str, key: str, task: str = task) -> list[float]:
            return [r[key] for r in rows if r["task"] == task and r["mode"] == mode]

        for key in wins:
            if values("multi", key) and values("single", key):
                wins[key] += statistics.mean(values("multi", key)) > statistics.mean(values("single", key))
        ref = refs.get(task, {})
        floor = f"{ref['floor_mcc']:.3f} / {ref['floor_ap']:.3f}" if "floor_mcc" in ref else "-"
        mini = f"{ref['mini_mcc']:.3f} / {ref['mini_ap']:.3f}" if "mini_mcc" in ref else "-"
        lines.append(
            f"| {task} | {_mean_sd(values('single', 'mcc'))} | {_mean_sd(values('multi', 'mcc'))} | "
            f"{_mean_sd(values('single', 'ap'))} | {_mean_sd(values('multi', 'ap'))} | {floor} | {mini} |"
        )
    macro = {
        (mode, key): [
            statistics.mean(r[key] for r in rows if r["mode"] == mode and r["seed"] == s)
            for s in meta["seeds"]
            if any(r["mode"] == mode and r["seed"] == s for r in rows)
        ]
        for mode in ("single", "multi")
        for key in ("mcc", "ap")
    }
    cells = [_mean_sd(macro[(mode, key)]) for key in ("mcc", "ap") for mode in ("single", "multi")]
    lines.append(f"| **mean over tasks** | {' | '.join(cells)} | | |")
    seen = {
        mode: statistics.mean(
            sum({r["task"]: r["windows_seen"] for r in rows if r["mode"] == mode and r["seed"] == s}.values())
            if mode == "single"
            else max(r["windows_seen"] for r in rows if r["mode"] == mode and r["seed"] == s)
            for s in meta["seeds"]
        )
        for mode in ("single", "multi")
    }
    lines += [
        "",
        f"The multi-task model is ahead on {wins['mcc']} of {len(tasks)} tasks by MCC and {wins['ap']} of "
        f"{len(tasks)} by AP (means over seeds). Training windows seen per seed: the {len(tasks)} "
        f"single-task models together {seen['single']:,.0f}, the multi-task model (all its tasks) "
        f"{seen['multi']:,.0f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra recipe override for every model")
    p.add_argument("--single-set", action="append", default=[], help="extra override for single-task models")
    p.add_argument("--tasks", nargs="+", help="single-task models of these tasks only")
    p.add_argument(
        "--multi-from",
        type=Path,
        help="take the multi-task rows from this earlier output (same seeds and splits) instead of training",
    )
    p.add_argument(
        "--singles-from",
        type=Path,
        help="take the single-task rows from this earlier output (same seeds and splits) instead of "
        "training (e.g. a protein-mode multi-task model against the window-mode singles)",
    )
    p.add_argument("--data-root", type=Path)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = p.parse_args()
    data_root = resolve_data_root(args.data_root)
    started = time.perf_counter()
    partial = args.out.with_suffix(".partial.json") if args.out else None
    jobs = plan(
        args.seeds,
        args.set,
        data_root,
        single_set=args.single_set,
        only=args.tasks,
        multi=args.multi_from is None,
        single=args.singles_from is None,
    )
    rows = execute(jobs, args.workers, partial)
    if args.singles_from is not None:
        earlier = json.loads(args.singles_from.read_text())["rows"]
        rows += [r for r in earlier if r["mode"] == "single" and r["seed"] in args.seeds]
    if args.multi_from is not None:
        earlier = json.loads(args.multi_from.read_text())["rows"]
        wanted = set(args.tasks or [r["task"] for r in earlier])
        rows += [
            r for r in earlier if r["mode"] == "multi" and r["seed"] in args.seeds and r["task"] in wanted
        ]
    command = "python -m benchmarks.multitask --seeds " + " ".join(map(str, args.seeds))
    command += "".join(f" --set {s}" for s in args.set) + "".join(
        f" --single-set {s}" for s in args.single_set
    )
    if args.tasks:
        command += " --tasks " + " ".join(args.tasks)
    if args.multi_from is not None:
        command += f" --multi-from {args.multi_from}"
    if args.singles_from is not None:
        command += f" --singles-from {args.singles_from}"
    publish(args.out, command, args.workers, args.seeds, started, rows, render)


if __name__ == "__main__":
    main()
