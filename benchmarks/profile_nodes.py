"""Where a recipe's training time goes: windows/s and forward milliseconds per graph node.

Trains ``--steps`` real optimisation steps of the recipe on a dataset's training rows (after
``--warmup`` untimed ones) and reports the median step, the forward/backward split and each
node's forward time (forward hooks), plus optionally the top aten operators (torch.profiler).
Run from the repository root, alone on the machine::

    python -m benchmarks.profile_nodes experiments/uniptms-lite.yaml --threads 1 --ops
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.datasets import resolve_data_root
from ptmkit.inference import combined_loss, encode
from ptmkit.run import split_rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", type=Path)
    p.add_argument("--dataset", default="T1")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ops", action="store_true", help="also print the top aten operators")
    p.add_argument("--data-root", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = recipes.load(args.recipe, [f"data.source=uniptms:{args.dataset}"])
    assembly = assemble(recipe)
    model, losses = assembly.graph, assembly.losses
    table, _ = assembly.read(resolve_data_root(args.data_root))
    for f in assembly.features.values():
        f.fit(table.split("train"))
    train = split_rows(table, encode(assembly.features, table), "train")
    for _, loss in losses:
        loss.setup(train.labels.numpy())
    params = list(model.parameters()) + [q for _, loss in losses for q in loss.parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-4)
    node_ms: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, float] = {}
    for name, block in model.blocks.items():
        block.register_forward_pre_hook(lambda m, i, n=name: starts.__setitem__(n, time.perf_counter()))
        block.register_forward_hook(
            lambda m, i, o, n=name: node_ms[n].append(1000 * (time.perf_counter() - starts[n]))
        )
    order = torch.randperm(len(train))
    cpu = torch.device("cpu")

    def step(i: int) -> tuple[float, float]:
        index = order[(i * args.batch) % len(train) :][: args.batch]
        feats, mask, labels, *_ = train.batch(index, cpu)
        t0 = time.perf_counter()
        loss = combined_loss(losses, model(feats, mask), labels)
        t1 = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return 1000 * (t1 - t0), 1000 * (time.perf_counter() - t1)

    model.train()
    for i in range(args.warmup):
        step(i)
    node_ms.clear()
    fwd, bwd = zip(*(step(args.warmup + i) for i in range(args.steps)), strict=True)
    total = [f + b for f, b in zip(fwd, bwd, strict=True)]
    med = statistics.median(total)
    print(
        f"{recipe.name} on {args.dataset}: batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.steps} steps"
    )
    print(
        f"  step {med:.0f} ms (forward {statistics.median(fwd):.0f}, "
        f"backward+update {statistics.median(bwd):.0f})"
        f" = {1000 * args.batch / med:.0f} training windows/s"
    )
    for name, ms in sorted(node_ms.items(), key=lambda kv: -statistics.median(kv[1])):
        share = statistics.median(ms) / statistics.median(fwd)
        print(
            f"  {name:12s} {type(model.blocks[name]).__name__:18s} "
            f"{statistics.median(ms):7.1f} ms forward ({share:5.1%})"
        )
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(5):
                step(i)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
