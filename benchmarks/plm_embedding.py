"""Embedding throughput (residues/s) and cache-hit speed-up of the ``esm2`` feature on CPU.

A tiny random ESM-2 (transformers ``EsmConfig``, ESM's 33-token vocabulary) is saved in a temporary
folder and loaded through the plugin's real loader; no weights are downloaded. Three timings, each
the median of ``--runs`` runs on the same random proteins:

* model:  embedding without the cache (forward passes, batching, stitching, float16 rounding);
* miss:   empty cache - the same plus writing every entry (atomic .npy + checksum sidecar);
* hit:    warm cache - reading and verifying every entry, the model is not run.

Run from the repository root::

    python benchmarks/plm_embedding.py
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ptmkit import embcache
from ptmkit.testing import save_tiny_esm2

AA = "ACDEFGHIKLMNPQRSTVWY"


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proteins", type=int, default=48, help="number of random proteins")
    parser.add_argument("--min-len", type=int, default=100)
    parser.add_argument("--max-len", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    from ptmkit_plugins.features.plm import Esm2

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    seqs = [
        "".join(rng.choice(AA) for _ in range(rng.randint(args.min_len, args.max_len)))
        for _ in range(args.proteins)
    ]
    residues = sum(map(len, seqs))
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_esm2(
            Path(tmp) / "esm2_tiny", hidden=args.hidden, layers=args.layers, heads=args.heads
        )
        common = {"model": str(model), "device": "cpu", "progress": False, "batch_tokens": args.batch_tokens}
        plain = Esm2(Esm2.Config(cache=False, **common))
        plain.runner()  # load once, outside the timings
        t_model = timed(lambda: plain.embed_sequences(seqs), args.runs)

        root = Path(tmp) / "cache"
        cached = Esm2(Esm2.Config(cache_dir=str(root), **common))
        cached.runner()

        def miss() -> None:
            embcache.cache_clear(root)
            cached.embed_sequences(seqs)

        t_miss = timed(miss, args.runs)
        t_hit = timed(lambda: cached.embed_sequences(seqs), args.runs)
        info = embcache.cache_info(root).splitlines()[0]

    command = "python benchmarks/plm_embedding.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    print(f"command: {command}")
    print(
        f"model: random ESM-2, hidden {args.hidden}, {args.layers} layers, {args.heads} heads; "
        f"{args.proteins} proteins, {residues} residues; torch {torch.__version__}, "
        f"{args.threads} thread(s); median of {args.runs} runs"
    )
    print(f"no cache (model only): {t_model * 1e3:8.1f} ms  {residues / t_model:10.0f} residues/s")
    print(f"cache miss (+ write):  {t_miss * 1e3:8.1f} ms  {residues / t_miss:10.0f} residues/s")
    print(f"cache hit (read):      {t_hit * 1e3:8.1f} ms  {residues / t_hit:10.0f} residues/s")
    print(f"cache-hit speed-up: {t_model / t_hit:.1f}x vs the model, {t_miss / t_hit:.1f}x vs a miss")
    print(info)


if __name__ == "__main__":
    main()
