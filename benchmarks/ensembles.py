"""Seed ensembles of a finished suite: does averaging the three seeds of a recipe beat each seed?

For every (dataset, recipe) of a suite's results file with all its seeds FINISHED, the seeds'
packaged models are averaged into one ensemble (``ptmkit.ensemble``: mean probability,
thresholds chosen on the shared validation split) and scored on the test split exactly as the
suite scores a model (MCC at the max-MCC validation threshold, AUC, AP). Nothing is trained.
Run from the repository root after the suite::

    python -m benchmarks.ensembles docs/benchmarks/converge.json --recipes musitedeep-cnn

writes ``<results>-ensembles.{md,json}`` beside the results file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ptmkit.datasets import resolve_data_root
from ptmkit.ensemble import build
from ptmkit.evaluate import evaluate_model
from ptmkit.model_store import fetched
from ptmkit.outputs import write_text
from ptmkit.table import render

METRICS = ("mcc", "auc", "ap")


def seed_groups(rows: list[dict], recipes: list[str] | None, datasets: list[str] | None) -> dict:
    """(dataset, recipe) -> run ids of its finished seeds (full-test rows of ptmkit recipes)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("block") != "ptmkit" or r.get("scope") != "test" or r.get("status") != "FINISHED":
            continue
        if (recipes and r["model"] not in recipes) or (datasets and r["dataset"] not in datasets):
            continue
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a suite's results JSON (docs/benchmarks/<suite>.json)")
    p.add_argument("--recipes", nargs="+", help="only these recipe labels")
    p.add_argument("--datasets", nargs="+", help="only these dataset ids")
    p.add_argument("--data-root", type=Path)
    args = p.parse_args(argv)
    saved = json.loads(args.results.read_text())
    uri = saved["meta"]["tracking_uri"]
    data_root = resolve_data_root(args.data_root)
    out_rows = []
    for (dataset, recipe), seeds in seed_groups(saved["rows"], args.recipes, args.datasets).items():
        ids = [r["run_id"] for r in sorted(seeds, key=lambda r: r["seed"])]
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            members = [stack.enter_context(fetched(i, tracking_uri=uri)) for i in ids]
            built = build(members, Path(tmp) / "ensemble", name=f"{recipe}-seeds", data_root=data_root)
            result = evaluate_model(
                built.model, f"uniptms:{dataset}", split="test", data_root=data_root, tracking_uri=uri
            )
        row = {"dataset": dataset, "recipe": recipe, "seeds": len(ids), "run_ids": ids}
        for m in METRICS:
            each = [float(r[m]) for r in seeds]
            row[f"seeds_{m}"] = statistics.mean(each)
            row[f"best_seed_{m}"] = max(each)
            row[f"ensemble_{m}"] = float(result.report[m])
        row["valid_ap_ensemble"] = built.validation["ensemble"]["ap"]
        out_rows.append(row)
        print(
            f"{dataset} {recipe}: ensemble MCC {row['ensemble_mcc']:.3f} AP {row['ensemble_ap']:.3f} "
            f"(seeds' mean {row['seeds_mcc']:.3f} / {row['seeds_ap']:.3f})",
            file=sys.stderr,
        )
    frame = pd.DataFrame(out_rows)
    stem = args.results.with_suffix("")
    command = " ".join(["python -m benchmarks.ensembles", *(sys.argv[1:] if argv is None else argv)])
    table = frame[
        [
            "dataset",
            "recipe",
            "seeds",
            *(f"{k}_{m}" for m in METRICS for k in ("seeds", "best_seed", "ensemble")),
        ]
    ]
    text = "\n".join(
        [
            f"# Seed ensembles of `{args.results.name}`",
            "",
            f"Command: `{command}`. Each row: the recipe's seeds averaged (mean probability, "
            "thresholds on the shared validation split) and scored on the test split as the suite "
            "scores a model; `seeds_*` is the mean of the seeds' own test metrics, `best_seed_*` the "
            "best seed (chosen on test, so not a model one could pick), `ensemble_*` the ensemble.",
            "",
            render(table.round(3), "markdown", index=False),
        ]
    )
    write_text(f"{stem}-ensembles.md", text)
    write_text(f"{stem}-ensembles.json", json.dumps({"command": command, "rows": out_rows}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
