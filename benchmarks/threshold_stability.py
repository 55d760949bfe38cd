"""How much does each threshold rule move with the seed on small validation sets, and what does
it cost on test data? (issue 11: H1's validation split holds 103 windows.)

Run from the repository root (``PTMKIT_DATA`` or ``../shared/data`` must hold ``uniptms/``)::

    python -m benchmarks.threshold_stability            # H1 and T1 (+ T2) x 8 seeds, a few minutes on 2 cores

How the models are trained and what the table shows: ``METHOD`` below (also in the report).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptmkit import metrics, thresholds
from ptmkit import recipe as recipes
from ptmkit import run as runs
from ptmkit.datasets import prepare_data, resolve_data_root
from ptmkit.inference import encode, infer
from ptmkit.outputs import write_text
from ptmkit.table import render
from ptmkit.trackers import NullTracker
from ptmkit.train import pick_device

METHOD = """
For every dataset and seed the quickstart recipe (``experiments/quickstart.yaml``) is trained
for a few epochs with that seed for the split *and* the weights (so the validation set, the
model and its scores all change), exactly as ``ptmkit run`` trains it but without MLflow. Each
rule chooses its threshold on the validation scores only; test data only scores the result.
T2's training file is byte-identical to T1's and the split is seeded, so the model trained for
T1 with a seed *is* the model T2 would train: it is trained once and scored on both test sets.

Per dataset and rule the table shows the threshold's mean and standard deviation across seeds,
the test MCC at it (mean +- sd) and the regret: the test-optimal MCC minus the test MCC reached.
The test-optimal MCC is an oracle that no rule can use; it only measures what each rule loses.
"""

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "experiments" / "quickstart.yaml"
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "threshold-stability.md"
#: rules compared: the fixed cut-off and every validation rule of ptmkit.metrics
RULES = {"0.5": lambda y, s: 0.5, **metrics.THRESHOLD_RULES}
#: datasets scored with another dataset's model (identical training file, same seeded split)
SHARED_TRAINING = {"T2": "T1"}


def scores_for(dataset: str, seed: int, epochs: int, data_root: Path) -> dict[str, tuple]:
    """Train quickstart on ``dataset`` with ``seed``; (labels, scores) for valid and each test set."""
    overrides = [
        f"data.source=uniptms:{dataset}",
        f"data.split.seed={seed}",
        f"train.seed={seed}",
        f"train.epochs={epochs}",
        "train.threads=1",
    ]
    recipe = recipes.load(RECIPE, overrides)
    setup = runs.setup(recipe, data_root)  # seeded, assembled, data read: as `ptmkit run`
    table = setup.table
    with tempfile.TemporaryDirectory(prefix="ptmkit-threshold-") as tmp:
        trained = runs.fit(setup, NullTracker(), Path(tmp), progress=False)
    model, result, valid, test = setup.assembly.graph, trained.result, trained.valid, trained.test
    assert valid.labels is not None and test.labels is not None
    device = pick_device("cpu")
    val = result.best_val_scores
    if val is None:
        val = infer(model, valid, device=device).scores
    out = {
        "valid": (valid.labels.numpy().astype(int), np.asarray(val)),
        dataset: (test.labels.numpy().astype(int), infer(model, test, device=device).scores),
    }
    for other, source in SHARED_TRAINING.items():
        if source != dataset:
            continue
        swapped = [o.replace(f"uniptms:{dataset}", f"uniptms:{other}") for o in overrides]
        shared = recipes.load(RECIPE, swapped)
        other_table, _ = prepare_data(shared, data_root)
        fitted = table.frame[table.frame["split"] != "test"][["window", "label", "split"]]
        again = other_table.frame[other_table.frame["split"] != "test"][["window", "label", "split"]]
        if not fitted.reset_index(drop=True).equals(again.reset_index(drop=True)):
            raise SystemExit(f"{other}'s training rows or split differ from {dataset}'s: train it separately")
        other_test = runs.split_rows(other_table, encode(setup.assembly.features, other_table), "test")
        assert other_test.labels is not None
        out[other] = (other_test.labels.numpy().astype(int), infer(model, other_test, device=device).scores)
    out["epochs"] = (result.best_epoch, result.epochs_run)
    return out


def oracle_mcc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best MCC over all thresholds on these labels (reporting only; no rule sees it)."""
    return metrics.at_threshold(labels, scores, metrics.threshold_max_mcc(labels, scores))["mcc"]


def per_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """``threshold / MCC`` per seed, one row per test set and rule."""
    pairs = zip(rows["threshold"], rows["mcc"], strict=True)
    cells = rows.assign(cell=[f"{t:.3f} / {m:.3f}" for t, m in pairs])
    table = cells.pivot(index=["test set", "rule"], columns="seed", values="cell")
    table = table.reindex(pd.MultiIndex.from_frame(rows[["test set", "rule"]].drop_duplicates()))
    table.index = [f"{a} {b}" for a, b in table.index]
    table.columns = [f"seed {c}" for c in table.columns]
    return table


def paired(rows: pd.DataFrame, baseline: str = thresholds.RUN_RULE) -> pd.DataFrame:
    """Test MCC of each rule minus ``baseline``'s, seed by seed (same model, same validation set):
    mean +- standard error and how many seeds it was better; the fair way to compare rules."""
    wide = rows.pivot_table(index=["test set", "seed"], columns="rule", values="mcc", sort=False)
    out = []
    for test_set, block in wide.groupby(level="test set", sort=False):
        for rule in block.columns:
            if rule == baseline:
                continue
            diff = block[rule] - block[baseline]
            out.append(
                {
                    "test set": test_set,
                    "rule": rule,
                    f"MCC − {baseline} (mean ± se)": f"{diff.mean():+.3f} ± {diff.sem():.3f}",
                    "better / seeds": f"{int((diff > 0).sum())} / {len(diff)}",
                }
            )
    return pd.DataFrame(out)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    def pm(values: pd.Series) -> str:
        return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"

    groups = rows.groupby(["test set", "rule"], sort=False)
    table = pd.DataFrame(
        {
            "validation windows (pos/neg)": groups["valid"].first(),
            "threshold mean": groups["threshold"].mean().round(3),
            "threshold sd": groups["threshold"].std(ddof=1).round(3),
            "test MCC": groups["mcc"].apply(pm),
            "regret (oracle − MCC)": groups["regret"].apply(pm),
        }
    )
    return table.reset_index()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["H1", "T1"], help="datasets to train (T2 rides on T1)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(8)), help="split + training seeds")
    p.add_argument("--epochs", type=int, default=10, help="maximum epochs per model (early stopping applies)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report to write")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data_root = resolve_data_root(None)
    started = time.perf_counter()
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            t0 = time.perf_counter()
            got = scores_for(dataset, seed, args.epochs, data_root)
            best, ran = got.pop("epochs")
            vy, vs = got.pop("valid")
            valid = f"{len(vy)} ({vy.sum()}/{len(vy) - vy.sum()})"
            for test_set, (ty, ts) in got.items():
                best_possible = oracle_mcc(ty, ts)
                for rule, choose in RULES.items():
                    cut = float(choose(vy, vs))
                    mcc = metrics.at_threshold(ty, ts, cut)["mcc"]
                    rows.append(
                        {
                            "test set": test_set,
                            "seed": seed,
                            "rule": rule,
                            "valid": valid,
                            "threshold": cut,
                            "mcc": mcc,
                            "regret": best_possible - mcc,
                        }
                    )
            print(
                f"{dataset} seed {seed}: best epoch {best}/{ran}, validation {valid}, "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    frame = pd.DataFrame(rows)
    table = summarise(frame)
    seconds = time.perf_counter() - started
    command = "python -m benchmarks.threshold_stability " + " ".join(
        ["--datasets", *args.datasets, "--seeds", *map(str, args.seeds), "--epochs", str(args.epochs)]
    )
    text = "\n".join(
        [
            "# Threshold rules on small validation sets",
            "",
            f"Generated by `{command}` ({seconds:.0f} s on {os.cpu_count()} CPU cores shared with other "
            "jobs).",
            "",
            METHOD.strip(),
            "",
            render(table, "markdown", index=False),
            "",
            "Paired by seed (each rule against val_max_mcc on the same model and validation set):",
            "",
            render(paired(frame), "markdown", index=False),
            "",
            "Per seed (threshold / test MCC):",
            "",
            render(per_seed(frame), "markdown"),
            "",
        ]
    )
    write_text(args.out, text)
    print(render(table, index=False))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
