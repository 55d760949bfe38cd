"""MTPrompt-PTM's distillation on the UniPTMs sets: seven single-task teachers -> one multi-task student.

For each seed, on the same splits, trunk, epochs and early-stopping rule
(``experiments/mtprompt-trunk-lite.yaml``):

- ``plain``: the multi-task student as the recipe is: class-weighted cross-entropy (1:3);
- ``distilled``: the same student learning from the seven single-task models of
  ``benchmarks.multitask`` (one teacher per task, the same seed's). The loss is ``distill``
  with T = 1, w = 1, MTPrompt-PTM's shipped setting: the soft cross-entropy to the teacher's
  probabilities, times the task weight.

The teachers are the ``single`` runs listed in ``docs/benchmarks/multitask.json``. They are read
from their MLflow store (``--teacher-store``, default the repository's ``mlflow.db``), and must
have been trained on the same splits, which that benchmark guarantees. Every number is a test
metric at each task's validation-max-MCC threshold, mean ± sd over seeds. The teachers' own
test metrics are shown beside the students'.

    python -m benchmarks.distill --seeds 0 1 --out docs/benchmarks/distill
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import yaml

from ptmkit.datasets import resolve_data_root

from .multitask import RECIPE, Job, _mean_sd, execute, references, task_block
from .results import publish

ROOT = Path(__file__).resolve().parents[1]
SINGLES = ROOT / "docs/benchmarks/multitask.json"


def teachers(seed: int, rows: list[dict]) -> dict[str, str]:
    """task -> the run id of the seed's single-task model."""
    out = {r["task"]: r["run_id"] for r in rows if r["mode"] == "single" and r["seed"] == seed}
    if not out:
        raise SystemExit(f"{SINGLES}: no single-task runs of seed {seed}; run benchmarks.multitask first")
    return out


def plan(seeds: list[int], extra: list[str], data_root: Path, store: str, singles: list[dict]) -> list[Job]:
    raw = yaml.safe_load(RECIPE.read_text())
    names = list(raw["data"]["tasks"])
    block = task_block(names, raw["data"]["tasks"])
    jobs = []
    for seed in seeds:
        common = (block, f"train.seed={seed}", "tracking.experiment=ptmkit-bench-distill", *extra)
        jobs.append(Job(seed, "plain", None, common, str(data_root)))
        spec = {"teachers": teachers(seed, singles), "tracking_uri": store}
        distilled = (
            *common,
            "losses=" + json.dumps([{"type": "distill", "temperature": 1.0, "weight": 1.0}]),
            "distill=" + json.dumps(spec),
        )
        jobs.append(Job(seed, "distilled", None, distilled, str(data_root)))
    return jobs


def render(rows: list[dict], singles: list[dict], meta: dict) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    seeds = meta["seeds"]
    refs = references()
    lines = [
        "# Distillation: seven single-task teachers -> one multi-task student (UniPTMs sets)",
        "",
        f"`{meta['command']}` on {meta['machine']}; seeds {seeds}; {meta['minutes']:.1f} min.",
        "Test split, each task at its own validation-max-MCC threshold; mean ± sd over seeds.",
        "Teachers: the same seed's single-task models of `benchmarks.multitask` (own test metrics shown).",
        "",
        "| task | teacher MCC | student MCC | distilled MCC | teacher AP | student AP | distilled AP "
        "| floor MCC / AP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    teacher_rows = [r for r in singles if r["mode"] == "single" and r["seed"] in seeds]

    def values(source: list[dict], mode: str, key: str, task: str) -> list[float]:
        return [r[key] for r in source if r["task"] == task and r["mode"] == mode]

    wins = {"mcc": 0, "ap": 0}
    for task in tasks:
        for key in wins:
            plain, dist = values(rows, "plain", key, task), values(rows, "distilled", key, task)
            if plain and dist:
                wins[key] += statistics.mean(dist) > statistics.mean(plain)
        ref = refs.get(task, {})
        floor = f"{ref['floor_mcc']:.3f} / {ref['floor_ap']:.3f}" if "floor_mcc" in ref else "-"
        cells = [
            _mean_sd(values(source, mode, key, task))
            for key in ("mcc", "ap")
            for source, mode in ((teacher_rows, "single"), (rows, "plain"), (rows, "distilled"))
        ]
        lines.append(f"| {task} | {' | '.join(cells)} | {floor} |")
    macro = []
    for key in ("mcc", "ap"):
        for source, mode in ((teacher_rows, "single"), (rows, "plain"), (rows, "distilled")):
            per_seed = [
                statistics.mean(r[key] for r in source if r["mode"] == mode and r["seed"] == s) for s in seeds
            ]
            macro.append(_mean_sd(per_seed))
    lines.append(f"| **mean over tasks** | {' | '.join(macro)} | |")
    lines += [
        "",
        f"The distilled student is ahead of the plain one on {wins['mcc']} of {len(tasks)} tasks by MCC and "
        f"{wins['ap']} of {len(tasks)} by AP (means over seeds).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra recipe override for every student")
    p.add_argument(
        "--teacher-store", default=f"sqlite:///{ROOT / 'mlflow.db'}", help="MLflow store of the teachers"
    )
    p.add_argument("--data-root", type=Path)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = p.parse_args()
    data_root = resolve_data_root(args.data_root)
    singles = json.loads(SINGLES.read_text())["rows"]
    started = time.perf_counter()
    partial = args.out.with_suffix(".partial.json") if args.out else None
    rows = execute(plan(args.seeds, args.set, data_root, args.teacher_store, singles), args.workers, partial)
    command = "python -m benchmarks.distill --seeds " + " ".join(map(str, args.seeds))
    command += "".join(f" --set {s}" for s in args.set)
    publish(args.out, command, args.workers, args.seeds, started, rows, lambda r, m: render(r, singles, m))
    if partial is not None and partial.exists():
        partial.unlink()


if __name__ == "__main__":
    main()
