"""Whole-proteome scanning speed and peak memory of ``ptmkit predict`` on CPU.

A synthetic proteome is written (seeded): protein lengths drawn from a log-normal with median
400 aa (sigma 0.6, clipped to 30..5,000 aa), residues drawn from the UniProtKB/Swiss-Prot
background composition, every protein starting with M. A lite model is scanned over it with
the real CLI in a child process, so that the child's peak RSS (``os.wait4`` -> ``ru_maxrss``)
is the whole command's, imports and model load included. Each size runs ``--runs`` times and
the median is reported: sites/second and proteins/second inside the scan (from the sidecar
JSON), wall time of the whole command, peak RSS.

Without ``--model`` the quickstart recipe (H1, histidine) is trained briefly into a temporary
MLflow store first (``--epochs``, one thread). Run from the repository root::

    PTMKIT_DATA=../shared/data python benchmarks/predict_proteome.py --proteins 5000 20000 --runs 3

With several ``--model`` refs the runs are interleaved (A, B, A, B, ...) on the same proteome and
each model's median sites/s is also given as a ratio to the first model's (a window-mode and a
protein-mode model of one trunk: ``--model WINDOW_RUN PROTEIN_RUN``); ``--fasta`` scans a given
file instead of a synthetic proteome.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ptmkit.outputs import write_text
from ptmkit.tracking import cpu_name

ROOT = Path(__file__).resolve().parents[1]

#: UniProtKB/Swiss-Prot amino-acid composition (%), release statistics.
BACKGROUND = {
    "A": 8.25, "R": 5.53, "N": 4.06, "D": 5.45, "C": 1.37, "Q": 3.93, "E": 6.75, "G": 7.07,
    "H": 2.27, "I": 5.96, "L": 9.66, "K": 5.84, "M": 2.42, "F": 3.86, "P": 4.70, "S": 6.56,
    "T": 5.34, "W": 1.08, "Y": 2.92, "V": 6.87,
}  # fmt: skip


def write_proteome(path: Path, n: int, seed: int = 0, median: int = 400, sigma: float = 0.6) -> dict:
    """A FASTA of ``n`` random proteins of realistic lengths; returns length statistics."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(BACKGROUND))
    p = np.array(list(BACKGROUND.values()))
    p = p / p.sum()
    lengths = np.clip(np.round(rng.lognormal(np.log(median), sigma, n)).astype(int), 30, 5000)
    with open(path, "w") as fh:
        for i, length in enumerate(lengths, 1):
            seq = "M" + "".join(rng.choice(letters, size=length - 1, p=p))
            fh.write(f">sp|SYN{i:06d}|SYN{i}_SYNTH synthetic protein {i}\n")
            for start in range(0, len(seq), 60):
                fh.write(seq[start : start + 60] + "\n")
    return {
        "proteins": n,
        "residues": int(lengths.sum()),
        "median_length": float(np.median(lengths)),
        "max_length": int(lengths.max()),
    }


def fasta_stats(path: Path) -> dict:
    """Proteins, residues, median and longest length of a FASTA file."""
    lengths, current = [], None
    with open(path) as fh:
        for line in fh:
            if line.startswith(">"):
                if current is not None:
                    lengths.append(current)
                current = 0
            elif current is not None:
                current += len(line.strip().replace("#", ""))  # marks of known sites are no residues
    if current is not None:
        lengths.append(current)
    return {
        "proteins": len(lengths),
        "residues": int(sum(lengths)),
        "median_length": float(np.median(lengths)) if lengths else 0.0,
        "max_length": max(lengths, default=0),
    }


def train_model(work: Path, epochs: int) -> str:
    """Train the quickstart briefly into ``work/mlflow.db``; return the run id."""
    cmd = [
        sys.executable, "-m", "ptmkit.cli", "run", str(ROOT / "experiments/quickstart.yaml"), "--quiet",
        "--set", f"train.epochs={epochs}", "--set", "train.threads=1",
        "--set", "tracking.experiment=predict-benchmark",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("MLflow run "))
    return line.split()[2]


def scan_once(
    model: str, fasta: Path, output: Path, work: Path, threads: int, batch: int, uri: str | None = None
) -> dict:
    """One ``ptmkit predict`` in a child process: scan figures + wall time + peak RSS (MB)."""
    cmd = [
        sys.executable, "-m", "ptmkit.cli", "predict", model, str(fasta), "-o", str(output),
        "--quiet", "--threads", str(threads), "--batch-size", str(batch), *(["--uri", uri] if uri else []),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"predict failed ({proc.returncode}):\n{stderr.decode()}\n{stdout.decode()}")
    meta = json.loads(output.with_name(output.name + ".json").read_text())
    sites = sum(meta["sites"].values())
    return {
        "sites": sites,
        "proteins_scanned": meta["proteins"]["scanned"],
        "proteins_skipped": sum(meta["proteins"]["skipped"].values()),
        "scan_seconds": meta["seconds"],
        "sites_per_s": sites / meta["seconds"],
        "proteins_per_s": meta["proteins"]["scanned"] / meta["seconds"],
        "wall_seconds": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "output_mb": output.stat().st_size / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", nargs="+", help="model(s) to scan with (default: train the quickstart briefly)"
    )
    ap.add_argument("--fasta", type=Path, help="scan this FASTA instead of synthetic proteomes")
    ap.add_argument("--uri", help="store of the --model run ids (as ptmkit predict --uri)")
    ap.add_argument("--proteins", type=int, nargs="+", default=[5000], help="proteome sizes")
    ap.add_argument("--runs", type=int, default=3, help="runs per size (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs when no --model is given")
    ap.add_argument("--json", help="write all figures to this file")
    args = ap.parse_args(argv)
    if args.uri and Path(args.uri).exists():  # a path to an mlflow.db: the children run elsewhere
        args.uri = str(Path(args.uri).resolve())

    with tempfile.TemporaryDirectory(prefix="ptmkit-bench-") as tmp:
        work = Path(tmp)
        models = args.model or [train_model(work, args.epochs)]
        results = []
        inputs = [("given", args.fasta.resolve())] if args.fasta else []
        for n in [] if args.fasta else args.proteins:
            inputs.append((n, work / f"proteome-{n}.fasta"))
            write_proteome(inputs[-1][1], n)
        for _, fasta in inputs:
            stats = fasta_stats(fasta)
            runs: dict[str, list[dict]] = {m: [] for m in models}
            for _ in range(args.runs):  # interleaved, so drift hits every model alike
                for m in models:
                    out = work / f"sites-{len(results)}.tsv"
                    runs[m].append(scan_once(m, fasta, out, work, args.threads, args.batch_size, args.uri))
            first = None
            for m in models:
                median = {k: statistics.median(r[k] for r in runs[m]) for k in runs[m][0]}
                first = first or median
                ratio = median["sites_per_s"] / first["sites_per_s"]
                results.append(
                    {**stats, "model": m, "runs": runs[m], "median": median, "ratio_to_first": ratio}
                )
                print(
                    f"{fasta.name} ({stats['proteins']:,} proteins, {stats['residues']:,} residues, median "
                    f"length {stats['median_length']:.0f}), model {m}: {median['sites']:,.0f} sites, "
                    f"{median['sites_per_s']:,.0f} sites/s ({ratio:.2f}x the first model), "
                    f"{median['proteins_per_s']:,.0f} proteins/s, wall {median['wall_seconds']:.1f} s, "
                    f"peak RSS {median['peak_rss_mb']:.0f} MB (median of {len(runs[m])})",
                    flush=True,
                )
    command = "python " + " ".join(
        shlex.quote(a) for a in [str(Path(__file__).relative_to(ROOT)), *sys.argv[1:]]
    )
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"Python {platform.python_version()}"
    )
    model_name = ", ".join(args.model) if args.model else f"quickstart, {args.epochs} epochs"
    print(f"\ncommand: {command}\nmachine: {machine}\nmodel: {model_name}")
    if args.json:
        write_text(
            args.json, json.dumps({"command": command, "machine": machine, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
