"""Issue 14's protein-vs-window comparison on K2: the same trunk on windows and on whole proteins.

For each seed, ``experiments/k2-trunk-window.yaml`` (one 33-residue window per site) and
``experiments/k2-trunk-protein.yaml`` (``data.unit: protein``: whole proteins, every residue scored,
loss on K2's labelled lysines) are trained on the same rows in the same splits with the same
features, trunk, head, loss, optimiser and stopping rule. Every model is an MLflow run
(experiment ``ptmkit-bench-protein-mode``, the default store); every number is a test-split metric
(K2's published test proteins) at the validation-chosen (max-MCC) threshold, with training time,
epochs and the labelled sites seen. Scanning speed is measured separately with
``benchmarks/predict_proteome.py --model WINDOW_RUN PROTEIN_RUN``.

Run from the repository root (two workers, one torch thread each)::

    python -m benchmarks.protein_mode --seeds 0 1 --out docs/benchmarks/protein-mode
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import mlflow
import torch

from ptmkit import recipe as recipes
from ptmkit import tracking
from ptmkit.datasets import resolve_data_root
from ptmkit.outputs import write_text
from ptmkit.run import run

from .results import publish

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "window": ROOT / "experiments/k2-trunk-window.yaml",
    "protein": ROOT / "experiments/k2-trunk-protein.yaml",
}
EXPERIMENT = "ptmkit-bench-protein-mode"


def run_job(mode: str, seed: int, data_root: str, extra: tuple[str, ...]) -> dict:
    torch.set_num_threads(1)
    overrides = [f"train.seed={seed}", f"data.split.seed={seed}", f"tracking.experiment={EXPERIMENT}", *extra]
    recipe = recipes.load(RECIPES[mode], overrides)
    t0 = time.perf_counter()
    summary = run(recipe, data_root=Path(data_root), progress=False, inference_repeats=3)
    seconds = time.perf_counter() - t0
    logged = mlflow.MlflowClient(summary.tracking_uri).get_run(summary.run_id).data.metrics
    return {
        "mode": mode,
        "seed": seed,
        "mcc": summary.test["tuned_mcc"],
        "ap": summary.test["ap"],
        "auc": summary.test["auc"],
        "epochs_run": summary.epochs_run,
        "best_epoch": summary.best_epoch,
        "sites_seen": int(logged.get("train/windows_seen", 0)),
        "epoch_s": float(logged.get("time/epoch_s_median", 0.0)),
        "train_s": float(logged.get("time/train_s", 0.0)),
        "test_sites_per_s": float(logged.get("speed/test_windows_per_s", 0.0)),
        "seconds": seconds,
        "run_id": summary.run_id,
    }


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        "# K2: the same trunk on windows and on whole proteins",
        "",
        f"Command: `{meta['command']}` ({meta['minutes']:.1f} min; {meta['machine']}).",
        "Test split: K2's published test proteins (254 positive / 2,977 negative lysines); MCC at the",
        "validation-chosen max-MCC threshold; mean ± sd over seeds "
        + ", ".join(map(str, meta["seeds"]))
        + ".",
        "",
        "| mode | MCC | AP | AUC | epochs (best) | epoch s (median) | test sites/s in training's scorer |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("window", "protein"):
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        epochs = ", ".join(
            f"{r['epochs_run']} ({r['best_epoch']})" for r in sorted(mine, key=lambda r: r["seed"])
        )
        lines.append(
            f"| {mode} | {_mean_sd([r['mcc'] for r in mine])} | {_mean_sd([r['ap'] for r in mine])} | "
            f"{_mean_sd([r['auc'] for r in mine])} | {epochs} | "
            f"{statistics.median(r['epoch_s'] for r in mine):.1f} | "
            f"{statistics.median(r['test_sites_per_s'] for r in mine):,.0f} |"
        )
    lines += ["", "Runs (MLflow experiment `" + EXPERIMENT + "`):", ""]
    for r in sorted(rows, key=lambda r: (r["mode"], r["seed"])):
        lines.append(
            f"- {r['mode']} seed {r['seed']}: run {r['run_id']}, MCC {r['mcc']:.3f}, AP {r['ap']:.3f}, "
            f"{r['sites_seen']:,} labelled sites seen, {r['train_s']:.0f} s training"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra recipe override for both modes")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = p.parse_args()
    data_root = str(resolve_data_root(args.data_root))
    started = time.perf_counter()
    rows: list[dict] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=tracking.sigterm_unwinds) as pool:
        futures = [
            pool.submit(run_job, mode, seed, data_root, tuple(args.set))
            for seed in args.seeds
            for mode in ("protein", "window")
        ]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            print(
                f"  {row['mode']} seed {row['seed']}: MCC {row['mcc']:.3f} AP {row['ap']:.3f} "
                f"[{row['epochs_run']} epochs, {row['seconds']:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
            if args.out:
                write_text(args.out.with_suffix(".partial.json"), json.dumps(rows, indent=2) + "\n")
    command = "python -m benchmarks.protein_mode --seeds " + " ".join(map(str, args.seeds))
    command += "".join(f" --set {s}" for s in args.set)
    publish(args.out, command, args.workers, args.seeds, started, rows, render)


if __name__ == "__main__":
    main()
