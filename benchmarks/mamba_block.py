"""A bidirectional Mamba block: both directions as one batch vs one after the other (issue 13).

Times forward and forward + backward of the two mixers of one bidirectional block, in one
process, interleaved (A, B, A, B, ...) so that both formulations see the same machine state:

- ``two passes``: each direction's mixer on its own (``mix([forward])``, then ``mix([backward])``
  on the reversed window), which is what a bidirectional block did before;
- ``one batch``: ``mix([forward, backward])``, both directions stacked as one batch (batched
  matmuls, one grouped depthwise conv, one grouped scan loop): what a block does now.

Sizes default to uniptms-lite's ``enc2`` (d_model 128 after its BiLSTM, d_inner 256, d_state
16) on a batch of 64 windows of 33. Run alone on the machine, from the repository root::

    python -m benchmarks.mamba_block --threads 1 --out docs/benchmarks/mamba-block
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from ptmkit_plugins.backbones.mamba import mix

from ptmkit.outputs import write_text
from ptmkit.testing import build
from ptmkit.tracking import cpu_name


def _timer(fn: Callable[[], torch.Tensor], grad: bool) -> Callable[[], float]:
    def once() -> float:
        t0 = time.perf_counter()
        with torch.set_grad_enabled(grad):
            out = fn()
            if grad:
                out.sum().backward()
        return time.perf_counter() - t0

    return once


def measure(batch: int, length: int, d_model: int, repeats: int) -> list[dict[str, object]]:
    torch.manual_seed(0)
    layer = build("mamba", [d_model]).layers[0]
    fwd, bwd = layer.forward_mixer, layer.backward_mixer
    x = torch.randn(batch, length, d_model)
    keep = torch.ones(batch, length, 1)

    def two_passes() -> torch.Tensor:
        a = mix([fwd], x.unsqueeze(0), keep.unsqueeze(0))[0]
        b = mix([bwd], x.flip(1).unsqueeze(0), keep.unsqueeze(0))[0].flip(1)
        return a + b

    def one_batch() -> torch.Tensor:
        both = mix([fwd, bwd], torch.stack([x, x.flip(1)]), torch.stack([keep, keep]))
        return both[0] + both[1].flip(1)

    with torch.no_grad():
        gap = (two_passes() - one_batch()).abs().max().item()
    rows = []
    for grad in (False, True):
        timers = {"two passes": _timer(two_passes, grad), "one batch": _timer(one_batch, grad)}
        for t in timers.values():  # warm-up
            for _ in range(3):
                t()
        times: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(repeats):
            for name, t in timers.items():
                times[name].append(t() * 1e3)
        before, after = (statistics.median(times[k]) for k in ("two passes", "one batch"))
        rows.append(
            {
                "pass": "forward+backward" if grad else "forward",
                "two_passes_ms": round(before, 2),
                "one_batch_ms": round(after, 2),
                "speedup": round(before / after, 2),
                "max_abs_difference": gap,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=33)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30, help="timed runs per formulation (median)")
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.batch, args.length, args.d_model, args.repeats)
    machine = f"{cpu_name()}, torch {torch.__version__}, {args.threads} torch thread(s)"
    command = (
        f"python -m benchmarks.mamba_block --threads {args.threads} --batch {args.batch} "
        f"--length {args.length} --d-model {args.d_model} --repeats {args.repeats}"
    )
    lines = [
        "# A bidirectional Mamba block: both directions as one batch vs one after the other",
        "",
        f"`{command}` ({machine}; N={args.batch}, L={args.length}, d_model={args.d_model}, "
        f"d_inner={2 * args.d_model}, d_state=16; median of {args.repeats} interleaved runs each).",
        "",
        "| pass | two passes (ms) | one batch (ms) | speed-up | max abs difference |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pass']} | {r['two_passes_ms']} | {r['one_batch_ms']} | {r['speedup']}x | "
            f"{r['max_abs_difference']:.1e} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out.with_suffix(".md"), text)
        payload = {"command": command, "machine": machine, "rows": rows}
        write_text(args.out.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
