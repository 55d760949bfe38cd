"""Cost and accuracy of uniptms-lite and uniptms-mini-lite on the UniPTMs datasets, on this CPU.

For every (recipe, dataset) pair it trains the recipe (tracked in MLflow like any run) and
records: parameter count, median seconds per training epoch, test inference windows/second
(median of the run's repeated test passes) and the test metrics. Results are appended to a JSON
file as each pair finishes, so an interrupted benchmark resumes where it stopped; the Markdown
table is rewritten from all results at the end, with the command and the machine.

Run from the repository root (PTMKIT_DATA must hold uniptms/)::

    python benchmarks/uniptms_cost.py --datasets T1 T2 H1 C1 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ptmkit import recipe as recipes
from ptmkit.datasets import resolve_data_root
from ptmkit.outputs import write_text
from ptmkit.run import run
from ptmkit.table import render
from ptmkit.tracking import cpu_name, package_versions

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["T1", "T2", "H1", "K1", "K2", "C1", "C2"]
RECIPES = ["uniptms-lite", "uniptms-mini-lite"]


def measure(recipe_name: str, dataset: str, args: argparse.Namespace) -> dict:
    overrides = [
        f"data.source=uniptms:{dataset}",
        f"train.epochs={args.epochs}",
        f"train.patience={args.patience}",
        f"train.threads={args.threads}",
        f"tracking.experiment={args.experiment}",
        f"tracking.run_name={recipe_name}-{dataset}",
    ]
    if dataset == "K2":
        overrides.append("data.window=33")
    recipe = recipes.load(ROOT / "experiments" / f"{recipe_name}.yaml", overrides)
    summary = run(recipe, data_root=resolve_data_root(args.data_root), progress=not args.quiet)
    return {
        "recipe": recipe_name,
        "dataset": dataset,
        "parameters": summary.parameters,
        "epoch_s": summary.epoch_seconds,
        "max_epochs": args.epochs,
        "epochs_run": summary.epochs_run,
        "windows_per_s": summary.windows_per_second,
        **{k: summary.test[k] for k in ("acc", "sen", "spec", "mcc", "auc", "ap", "tuned_mcc")},
        "run_id": summary.run_id,
    }


def table(results: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(results)
    if "max_epochs" not in frame:
        frame["max_epochs"] = None
    frame["max_epochs"] = frame["max_epochs"].fillna(10).astype(int)  # rows before the column: 10
    frame["dataset"] = pd.Categorical(frame["dataset"], DATASETS, ordered=True)
    frame = frame.sort_values(["dataset", "recipe"]).set_index(["dataset", "recipe"])
    frame["parameters"] = frame["parameters"].map(lambda n: f"{n:,}")
    frame["epoch_s"] = frame["epoch_s"].map(lambda s: f"{s:.1f}")
    frame["windows_per_s"] = frame["windows_per_s"].map(lambda s: f"{s:,.0f}")
    frame["wall_s"] = frame["wall_s"].map(lambda s: f"{s:.0f}")
    frame = frame.drop(columns=["run_id", "command"])
    frame.index = [f"{d} {r}" for d, r in frame.index]
    frame.index.name = "dataset / recipe"
    return frame


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    p.add_argument("--recipes", nargs="+", default=RECIPES)
    p.add_argument("--epochs", type=int, default=10, help="maximum epochs per training")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--experiment", default="benchmark-uniptms-cost")
    p.add_argument("--results", default=str(ROOT / "docs/benchmarks/uniptms-cost.json"))
    p.add_argument("--out", default=str(ROOT / "docs/benchmarks/uniptms-cost.md"))
    p.add_argument("--data-root")
    p.add_argument("--force", action="store_true", help="re-run pairs that already have results")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    results_path = Path(args.results)
    results: list[dict] = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["recipe"], r["dataset"]) for r in results}
    command = "python benchmarks/uniptms_cost.py " + shlex.join(sys.argv[1:])
    for dataset in args.datasets:
        for recipe_name in args.recipes:
            if (recipe_name, dataset) in done and not args.force:
                continue
            started = time.perf_counter()
            row = measure(recipe_name, dataset, args)
            row["wall_s"] = time.perf_counter() - started
            row["command"] = command
            results = [r for r in results if (r["recipe"], r["dataset"]) != (recipe_name, dataset)]
            results.append(row)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            write_text(results_path, json.dumps(results, indent=1))
            print(
                f"{recipe_name} on {dataset}: MCC {row['mcc']:.3f}, {row['epoch_s']:.1f} s/epoch",
                file=sys.stderr,
            )

    versions = package_versions()
    commands = sorted({r["command"] for r in results})
    lines = [
        "# UniPTMs-lite and UniPTMs-mini-lite: cost and accuracy on this CPU",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{args.threads} threads; ptmkit {versions['ptmkit']}; Python {versions['python']}.",
        "Each row is one training (seed 0) on the dataset's training split, early-stopped on validation AP,",
        "and its test metrics at threshold 0.5 (`tuned_mcc`: MCC at the threshold that maximised MCC on",
        "validation data, which matters on the imbalanced sets). `max_epochs` caps training (the",
        "large K1, K2 and C2 sets were run with a lower cap: their metrics are those of a briefly",
        "trained model, their costs are not affected); `epoch_s` is the median seconds per epoch;",
        "`windows_per_s` the median test-set inference speed over 3 passes. Produced by:",
        "",
        *[f"    PTMKIT_DATA=../shared/data {c}" for c in commands],
        "",
        render(table(results), "markdown"),
    ]
    write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
