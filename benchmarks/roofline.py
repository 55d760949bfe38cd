"""This CPU's limit and how close each recipe's training step comes to it (issue 13, part 1).

Measures, with the threads one training worker uses:

- the matmul peak: ``torch.mm`` of square matrices in fp32 and bf16 (GFLOP/s, median of repeats);
- per recipe, one optimisation step on a real batch (fwd + bwd + AdamW, median of ``--steps``
  after ``--warmup``): windows/s, the FLOPs of fwd + bwd counted by torch's ``FlopCounterMode``
  (matmuls, convolutions, attention; recurrent cells such as the LSTM are *not* counted, so
  their GFLOP/s reads low), achieved GFLOP/s, and the same step under bf16 autocast (speed only:
  whether bf16 keeps the metrics is a training question, not measured here).

Run alone on the machine, from the repository root::

    python -m benchmarks.roofline --threads 1 --out docs/benchmarks/roofline
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.datasets import resolve_data_root
from ptmkit.inference import combined_loss, encode
from ptmkit.outputs import write_text
from ptmkit.run import split_rows
from ptmkit.train import native_bf16

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "uniptms-lite": ROOT / "experiments/uniptms-lite.yaml",
    "uniptms-mini-lite": ROOT / "experiments/uniptms-mini-lite.yaml",
    "bilstm": ROOT / "experiments/base-bilstm.yaml",
    "musitedeep-cnn": ROOT / "experiments/musitedeep-cnn.yaml",
}


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 7) -> float:
    """GFLOP/s of ``size``-square matmuls (2 n^3 FLOPs each), median of ``repeats`` timed batches."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        n = 8
        t0 = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b)
        rates.append(n * 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def bf16_supported() -> bool:
    """Native bf16 matmul instructions here (``ptmkit.train.native_bf16``: what training checks)."""
    return native_bf16()


def step_benchmark(
    path: Path, dataset: str, batch: int, steps: int, warmup: int, data_root: Path, *, compile: bool = False
) -> dict:
    """Windows/s, counted FLOPs and GFLOP/s of ``path``'s training step, fp32 and bf16 autocast,
    and with ``compile`` the fp32 step through ``torch.compile`` (compiled during the warm-up)."""
    torch.manual_seed(0)
    recipe = recipes.load(path, [f"data.source=uniptms:{dataset}"])
    assembly = assemble(recipe)
    model, losses = assembly.graph, assembly.losses
    table, _ = assembly.read(data_root)
    for feature in assembly.features.values():
        feature.fit(table.split("train"))
    train = split_rows(table, encode(assembly.features, table), "train")
    assert train.labels is not None
    for _, loss in losses:
        loss.setup(train.labels.numpy())
    params = list(model.parameters()) + [q for _, loss in losses for q in loss.parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-4)
    cpu = torch.device("cpu")
    model.train()
    index = torch.arange(batch)
    feats, mask, labels, *_ = train.batch(index, cpu)

    forward = model

    def step(autocast: bool) -> None:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
        with context:
            loss = combined_loss(losses, forward(feats, mask), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.float().backward()
        optimiser.step()

    with FlopCounterMode(display=False) as counter:
        loss = combined_loss(losses, model(feats, mask), labels)
        loss.backward()
    optimiser.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()

    def median_seconds(autocast: bool) -> float:
        for _ in range(warmup):
            step(autocast)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step(autocast)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    fp32 = median_seconds(False)
    try:
        bf16: float | None = median_seconds(True)
        bf16_error = None
    except RuntimeError as exc:  # an op without a bf16 path (the CPU selective scan mixes dtypes)
        bf16, bf16_error = None, str(exc).splitlines()[0]
    compiled_s: float | None = None
    compile_error = None
    if compile:
        try:
            forward = torch.compile(model)
            compiled_s = median_seconds(False)
        except Exception as exc:  # no C++ compiler, an op inductor cannot lower
            compile_error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        forward = model
    return {
        "compiled_s": compiled_s,
        "compile_speedup": fp32 / compiled_s if compiled_s else None,
        "compile_error": compile_error,
        "parameters": assembly.parameters,
        "mflop_per_window": flops / batch / 1e6,
        "step_s_fp32": fp32,
        "windows_per_s_fp32": batch / fp32,
        "gflops_fp32": flops / fp32 / 1e9,
        "step_s_bf16": bf16,
        "windows_per_s_bf16": batch / bf16 if bf16 else None,
        "bf16_speedup": fp32 / bf16 if bf16 else None,
        "bf16_error": bf16_error,
    }


def render(result: dict) -> str:
    meta = result["meta"]
    peak32, peak16 = result["peak"]["fp32"], result["peak"]["bf16"]
    lines = [
        "# Roofline: this CPU's matmul peak and each recipe's training step",
        "",
        f"Command: `{meta['command']}` ({meta['machine']}, torch {meta['torch']}, "
        f"dataset {meta['dataset']}, batch {meta['batch']}, median of {meta['steps']} steps after "
        f"{meta['warmup']} warm-up steps; native bf16 instructions: {meta['bf16_native']}).",
        "",
        f"Matmul peak (1024x1024, median of 7): fp32 **{peak32:.0f} GFLOP/s**, "
        f"bf16 **{peak16:.0f} GFLOP/s**.",
        "",
        "| recipe | parameters | MFLOP / window (fwd+bwd, counted) | windows/s fp32 | GFLOP/s fp32 | "
        "% of fp32 peak | windows/s bf16 autocast | bf16 speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    compiled = any(r.get("compiled_s") or r.get("compile_error") for r in result["recipes"].values())
    if compiled:
        lines[-2] += " torch.compile speed-up (fp32) |"
        lines[-1] += "---|"
    for name, r in result["recipes"].items():
        if r["bf16_speedup"] is None:
            bf16 = f"fails: {r['bf16_error']} | n/a"
        else:
            bf16 = f"{r['windows_per_s_bf16']:.0f} | {r['bf16_speedup']:.2f}x"
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['mflop_per_window']:.1f} | {r['windows_per_s_fp32']:.0f} | "
            f"{r['gflops_fp32']:.1f} | {100 * r['gflops_fp32'] / peak32:.0f}% | {bf16} |"
        )
        if compiled:
            speed = r.get("compile_speedup")
            lines[-1] += f" {speed:.2f}x |" if speed else f" fails: {r.get('compile_error')} |"
    lines += [
        "",
        "FLOPs are what `torch.utils.flop_counter.FlopCounterMode` counts (matmuls, convolutions, "
        "attention) for one forward and backward pass; it does not count recurrent cells (the "
        "BiLSTM's GFLOP/s reads low) nor elementwise work. One step also includes the AdamW update. "
        "The bf16 column is speed only: whether bf16 training keeps the metrics is measured by "
        "training, not here.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--dataset", default="T1")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    p.add_argument("--compile", action="store_true", help="also time the fp32 step through torch.compile")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_root = resolve_data_root(args.data_root)
    result = {
        "meta": {
            "command": " ".join(["python -m benchmarks.roofline", *(sys.argv[1:] if argv is None else argv)]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "threads": args.threads,
            "dataset": args.dataset,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "bf16_native": bf16_supported(),
        },
        "peak": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)},
        "recipes": {},
    }
    peak = result["peak"]
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    for name in args.recipes:
        r = step_benchmark(
            RECIPES[name], args.dataset, args.batch, args.steps, args.warmup, data_root, compile=args.compile
        )
        result["recipes"][name] = r
        bf16 = f"{r['bf16_speedup']:.2f}x" if r["bf16_speedup"] else f"fails ({r['bf16_error']})"
        print(
            f"{name}: {r['mflop_per_window']:.1f} MFLOP/window, {r['windows_per_s_fp32']:.0f} windows/s "
            f"({r['gflops_fp32']:.1f} GFLOP/s), bf16 autocast {bf16}"
        )
    text = render(result)
    if args.out:
        write_text(args.out.with_suffix(".json"), json.dumps(result, indent=2))
        write_text(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
