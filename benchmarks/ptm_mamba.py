"""PTM-Mamba here (docs/ptm-mamba.md): pretrain the lite model, score zero-shot, train site models.

Three phases, run from the repository root in this order:

- ``python -m benchmarks.ptm_mamba pretrain --interrupt-after 300`` runs
  ``ptmkit pretrain experiments/ptm-mamba-lite.yaml`` as a user would, sends it SIGINT after the
  given seconds, resumes it with ``--resume`` to the recipe's budget, and records both commands,
  exit codes and the final validation metrics (``docs/benchmarks/ptm-mamba-pretrain.json``).
- ``python -m benchmarks.ptm_mamba zeroshot`` measures the package on the proteins its
  pretraining held out: masked-token loss, perplexity and accuracy per token group on the test
  proteins of each source (masks from a fixed seed), and zero-shot AUC / AP through
  ``ptmkit evaluate`` (K2's published test proteins; MusiteDeep's held-out test proteins), K2 also
  with ``--spacing`` to show what masking several sites per pass costs
  (``docs/benchmarks/ptm-mamba-zeroshot.json``).
- ``python -m benchmarks.ptm_mamba baseline``: the same test masks scored by the training
  corpus's token frequencies alone (``docs/benchmarks/ptm-mamba-baseline.json``).
- ``python -m benchmarks.ptm_mamba sites --seeds 0 1`` trains ``experiments/k2-ptm-mamba.yaml``
  on one-hot, on the PTM-Mamba features and on both (2 workers x 1 thread), K2 test metrics at
  the validation-chosen threshold (``docs/benchmarks/ptm-mamba-sites.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ptmkit import language_models, tracking
from ptmkit.outputs import write_text

RECIPE = "experiments/ptm-mamba-lite.yaml"
SITES = "experiments/k2-ptm-mamba.yaml"
PACKAGE = "pretrain/ptm-mamba-lite/language_model"
EXPERIMENT = "ptmkit-bench-ptm-mamba"
VARIANTS = {
    "one-hot": ["features.lm=null", "features.onehot={type: onehot}", "model.nodes.x.inputs=[onehot]"],
    "ptm-mamba": [],
    "one-hot + ptm-mamba": ["features.onehot={type: onehot}", "model.nodes.x.inputs=[onehot, lm]"],
}
CLI = [sys.executable, "-m", "ptmkit"]


def pretrain(args: argparse.Namespace) -> None:
    out = Path(args.out)
    base = [
        *CLI,
        "pretrain",
        RECIPE,
        "--out",
        str(out),
        "--quiet",
        *sum((["--set", s] for s in args.set), []),
    ]
    record: dict = {"recipe": RECIPE, "cpu": tracking.cpu_name(), "steps": []}
    first = [*base, "--restart"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        first,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        proc.wait(timeout=args.interrupt_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    record["steps"].append(
        {
            "command": " ".join(first[2:]),
            "signal_after_s": args.interrupt_after,
            "exit": proc.returncode,
            "wall_s": time.perf_counter() - started,
            "stderr_tail": err[-600:],
        }
    )
    again = [*base, "--resume"]
    t0 = time.perf_counter()
    done = subprocess.run(again, capture_output=True, text=True)
    record["steps"].append(
        {
            "command": " ".join(again[2:]),
            "exit": done.returncode,
            "wall_s": time.perf_counter() - t0,
            "stdout_tail": done.stdout[-1500:],
            "stderr_tail": done.stderr[-600:],
        }
    )
    if done.returncode == 0:
        meta = language_models.read_config(out / language_models.ARTIFACT)
        record["package"] = {
            k: meta[k] for k in ("steps", "tokens", "epochs", "run_id", "validation", "parameters")
        }
    write_text(Path(args.record), json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


def _test_sequences(table, corpus, ptms: dict[str, str]):  # noqa: ANN001, ANN202
    """``(task, token sequences)`` of the held-out test proteins, per source and for all."""
    origin = dict(zip(table.frame["protein_id"].astype(str), table.frame["task"].astype(str), strict=False))
    for task in [*ptms, "all"]:
        pairs = zip(corpus.ids["test"], corpus.tokens["test"], strict=True)
        yield task, [t for pid, t in pairs if task == "all" or origin.get(pid) == task]


def zeroshot(args: argparse.Namespace) -> None:
    import torch

    from ptmkit import pretrain as pretraining
    from ptmkit.datasets import prepare_data, resolve_data_root

    torch.set_num_threads(args.threads)
    record: dict = {"package": args.package, "cpu": tracking.cpu_name(), "threads": args.threads}
    recipe = pretraining.load(RECIPE)
    model = language_models.load(args.package)
    meta = model.package_info
    record["pretraining"] = {k: meta[k] for k in ("steps", "tokens", "epochs", "run_id", "validation")}
    table, info = prepare_data(recipe, resolve_data_root(None))
    ptms = {name: task.ptm for name, task in info.tasks.items()}
    corpus = pretraining.build_corpus(table, model, ptms)
    assert set(corpus.ids["test"]) == set(meta["held_out"]["test"]), (
        "the split differs from the pretraining's"
    )
    groups = pretraining.group_masks(model)
    perplexity = {}
    for task, seqs in _test_sequences(table, corpus, ptms):
        t0 = time.perf_counter()
        perplexity[task] = pretraining.evaluate(
            model, seqs, recipe, groups, torch.device("cpu"), prefix="test"
        )
        perplexity[task]["sequences"] = len(seqs)
        perplexity[task]["seconds"] = time.perf_counter() - t0
        print(task, perplexity[task], flush=True)
    record["test_perplexity"] = perplexity
    runs = [
        ("K2 exact", "uniptms:K2", 0),
        (f"K2 spacing {args.spacing}", "uniptms:K2", args.spacing),
        (f"ST spacing {args.spacing}", "musitedeep:ST", args.spacing),
    ]
    record["zero_shot"] = {}
    for name, source, spacing in runs:
        out = Path(f"/tmp/zs-{name.replace(' ', '-')}.json")
        command = [
            *CLI,
            "evaluate",
            args.package,
            source,
            "--split",
            "test",
            "--spacing",
            str(spacing),
            "--threads",
            str(args.threads),
            "--quiet",
            "--json",
            str(out),
        ]
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        result = json.loads(out.read_text())
        result["command"] = "ptmkit " + " ".join(command[3:-2])
        result["seconds"] = time.perf_counter() - t0
        record["zero_shot"][name] = result
        print(name, result["metrics"], f"{result['seconds']:.0f} s", flush=True)
    write_text(Path(args.record), json.dumps(record, indent=1) + "\n")


def baseline(args: argparse.Namespace) -> None:
    """The test perplexity of a model that knows only the training corpus's token frequencies,
    on exactly the masks the zeroshot phase used: what the language model must beat."""
    import torch

    from ptmkit import pretrain as pretraining
    from ptmkit.datasets import prepare_data, resolve_data_root

    recipe = pretraining.load(RECIPE)
    model = language_models.load(args.package)
    table, info = prepare_data(recipe, resolve_data_root(None))
    ptms = {name: task.ptm for name, task in info.tasks.items()}
    corpus = pretraining.build_corpus(table, model, ptms)
    groups = pretraining.group_masks(model)
    counts = torch.zeros(len(model.vocab))
    for t in corpus.tokens["train"]:
        counts += torch.bincount(t, minlength=len(model.vocab)).float()
    counts[groups["special"]] = 0
    log_freq = torch.log((counts + 1) / (counts + 1).sum())

    class Unigram(torch.nn.Module):
        pad_id, mask_id = model.pad_id, model.mask_id

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return ids, log_freq.expand(*ids.shape, -1)

    out = {}
    for task, seqs in _test_sequences(table, corpus, ptms):
        out[task] = pretraining.evaluate(Unigram(), seqs, recipe, groups, torch.device("cpu"), prefix="test")
        print(task, out[task], flush=True)
    write_text(Path(args.record), json.dumps({"unigram_test": out}, indent=1) + "\n")


def _site_job(variant: str, seed: int, data_root: str) -> dict:
    import mlflow
    import torch

    from ptmkit import recipe as recipes
    from ptmkit.run import run

    torch.set_num_threads(1)
    overrides = [
        f"train.seed={seed}",
        f"data.split.seed={seed}",
        f"tracking.experiment={EXPERIMENT}",
        f"tracking.run_name={variant} seed {seed}",
        *VARIANTS[variant],
    ]
    recipe = recipes.load(SITES, overrides)
    t0 = time.perf_counter()
    summary = run(recipe, data_root=Path(data_root), progress=False, inference_repeats=1)
    logged = mlflow.MlflowClient(summary.tracking_uri).get_run(summary.run_id).data.metrics
    return {
        "variant": variant,
        "seed": seed,
        "mcc": summary.test["tuned_mcc"],
        "ap": summary.test["ap"],
        "auc": summary.test["auc"],
        "epochs_run": summary.epochs_run,
        "best_epoch": summary.best_epoch,
        "train_s": float(logged.get("time/train_s", 0.0)),
        "seconds": time.perf_counter() - t0,
        "run_id": summary.run_id,
        "parameters": summary.parameters,
    }


def _render_sites(rows: list[dict], meta: dict) -> str:
    import statistics

    def ms(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    lines = [
        "# K2 site predictor: PTM-Mamba (lite) features vs one-hot",
        "",
        f"Command: `{meta['command']}` ({meta['minutes']:.1f} min; {meta['machine']}).",
        "Recipe experiments/k2-ptm-mamba.yaml (the k2-trunk-window trunk); test split: K2's published",
        "test proteins, which pretraining never saw. MCC at the validation-chosen max-MCC threshold;",
        "mean ± sd over seeds " + ", ".join(map(str, meta["seeds"])) + ".",
        "",
        "| features | MCC | AP | AUC | graph parameters | epochs (best) |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])
        if mine:
            lines.append(
                f"| {variant} | {ms([r['mcc'] for r in mine])} | {ms([r['ap'] for r in mine])} | "
                f"{ms([r['auc'] for r in mine])} | {mine[0]['parameters']:,} | "
                + ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in mine)
                + " |"
            )
    lines += ["", f"Runs (MLflow experiment `{EXPERIMENT}`):", ""]
    lines += [
        f"- {r['variant']} seed {r['seed']}: run {r['run_id']}, {r['train_s']:.0f} s training"
        for r in sorted(rows, key=lambda r: (r["variant"], r["seed"]))
    ]
    return "\n".join(lines) + "\n"


def sites(args: argparse.Namespace) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from ptmkit import recipe as recipes
    from ptmkit.assembly import assemble
    from ptmkit.datasets import resolve_data_root

    from .results import publish

    data_root = str(resolve_data_root(None))
    started = time.perf_counter()
    # fill the embedding cache once, before two workers would both compute it
    a = assemble(recipes.load(SITES))
    table, _ = a.read(Path(data_root))
    a.features["lm"].embed_sequences(list(table.proteins.values()))
    rows: list[dict] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=tracking.sigterm_unwinds) as pool:
        futures = [pool.submit(_site_job, v, seed, data_root) for seed in args.seeds for v in VARIANTS]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            print(
                f"  {row['variant']} seed {row['seed']}: MCC {row['mcc']:.3f} AP {row['ap']:.3f}", flush=True
            )
    command = "python -m benchmarks.ptm_mamba sites --seeds " + " ".join(map(str, args.seeds))
    publish(Path(args.out), command, args.workers, args.seeds, started, rows, _render_sites)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="phase", required=True)
    pt = sub.add_parser("pretrain")
    pt.add_argument("--out", default="pretrain/ptm-mamba-lite")
    pt.add_argument("--interrupt-after", type=float, default=300.0)
    pt.add_argument("--set", action="append", default=[])
    pt.add_argument("--record", default="docs/benchmarks/ptm-mamba-pretrain.json")
    zs = sub.add_parser("zeroshot")
    zs.add_argument("--package", default=PACKAGE)
    zs.add_argument("--spacing", type=int, default=32)
    zs.add_argument("--threads", type=int, default=2)
    zs.add_argument("--record", default="docs/benchmarks/ptm-mamba-zeroshot.json")
    bl = sub.add_parser("baseline")
    bl.add_argument("--package", default=PACKAGE)
    bl.add_argument("--record", default="docs/benchmarks/ptm-mamba-baseline.json")
    st = sub.add_parser("sites")
    st.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    st.add_argument("--workers", type=int, default=2)
    st.add_argument("--out", default="docs/benchmarks/ptm-mamba-sites")
    args = p.parse_args()
    {"pretrain": pretrain, "zeroshot": zeroshot, "baseline": baseline, "sites": sites}[args.phase](args)


if __name__ == "__main__":
    main()
