"""Data-parallel training on one machine: ``ptmkit run --nproc 2`` (2 gloo processes, 1 torch
thread each) against one process with the machine's threads, on the same recipe and data.

Throughput is training windows per second: ``train/windows_seen / time/train_s`` as each run
logs them (the training loop including each epoch's validation, which the processes share;
start-up, feature encoding and testing are not in it). Each configuration runs ``--repeats``
times, interleaved; the median is reported with every single value. Epoch size, epochs and
patience are fixed so every run does the same work (no early stopping).

    python -m benchmarks.ddp --repeats 3 --out docs/benchmarks/ddp
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from ptmkit import tracking
from ptmkit.outputs import write_text

ROOT = Path(__file__).resolve().parents[1]

#: recipe, the overrides that make its runs comparable, and what it stands for
MODELS = {
    "bilstm (quickstart)": (
        "experiments/quickstart.yaml",
        ["data.source=uniptms:K1", "train.epoch_windows=8192", "train.epochs=3", "train.patience=10"],
    ),
    "resnet1d, 4 blocks x 64": (
        "experiments/quickstart.yaml",
        [
            "data.source=uniptms:K1",
            'model.nodes.encoder={"type": "resnet1d", "inputs": ["fused"], "channels": 64}',
            "train.epoch_windows=8192",
            "train.epochs=3",
            "train.patience=10",
        ],
    ),
}
#: (label, processes, torch threads per process)
CONFIGS = [("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1), ("1 process x 1 thread", 1, 1)]


def one_run(recipe: str, overrides: list[str], nproc: int, threads: int, store: str) -> dict:
    sets = [
        a
        for o in [*overrides, f"tracking.uri={store}", "tracking.experiment=ddp-bench"]
        for a in ("--set", o)
    ]
    command = [sys.executable, "-m", "ptmkit", "run", str(ROOT / recipe), *sets, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    else:
        command += ["--set", f"train.threads={threads}"]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(store)
    run = client.search_runs(
        [client.get_experiment_by_name("ddp-bench").experiment_id],
        order_by=["start_time DESC"],
        max_results=1,
    )[0]
    m = run.data.metrics
    return {
        "run_id": run.info.run_id,
        "windows_per_s": m["train/windows_seen"] / m["time/train_s"],
        "train_s": m["time/train_s"],
        "wall_s": wall,
        "val_ap_last": m["val/ap"],
    }


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Data-parallel training on this machine: 2 processes vs 1",
        "",
        f"Command: `{meta['command']}` ({meta['minutes']:.1f} min). Machine: {meta['machine']}.",
        "",
        "Training windows per second (`train/windows_seen / time/train_s`, the loop with each epoch's "
        "validation), median of the runs (each run's value in brackets); ratio to 1 process x 2 threads.",
        "",
        "| model | configuration | windows/s | ratio | runs | train s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        base = next(r for r in rows if r["model"] == model and r["config"] == CONFIGS[0][0])["median"]
        for r in (r for r in rows if r["model"] == model):
            runs = ", ".join(f"{v:.0f}" for v in r["values"])
            lines.append(
                f"| {model} | {r['config']} | {r['median']:.0f} | {r['median'] / base:.2f} | {runs} | "
                f"{r['train_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptmkit-ddp-bench-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        results: dict[tuple[str, str], list[dict]] = {}
        for repeat in range(args.repeats):
            for model, (recipe, overrides) in MODELS.items():
                for label, nproc, threads in CONFIGS:
                    got = one_run(recipe, overrides, nproc, threads, store)
                    results.setdefault((model, label), []).append(got)
                    rate = got["windows_per_s"]
                    print(f"[{repeat + 1}/{args.repeats}] {model}, {label}: {rate:.0f} windows/s")
    rows = []
    for (model, label), runs in results.items():
        values = [r["windows_per_s"] for r in runs]
        rows.append(
            {
                "model": model,
                "config": label,
                "median": statistics.median(values),
                "values": values,
                "train_s": statistics.median(r["train_s"] for r in runs),
                "wall_s": [r["wall_s"] for r in runs],
                "val_ap_last": [r["val_ap_last"] for r in runs],
            }
        )
    meta = {
        "command": "python -m benchmarks.ddp " + " ".join(sys.argv[1:]),
        "machine": f"{tracking.cpu_name()}, {os.cpu_count()} cores",
        "minutes": (time.perf_counter() - started) / 60,
    }
    text = render(rows, meta)
    print(text)
    if args.out:
        write_text(args.out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        write_text(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
