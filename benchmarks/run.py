"""The benchmark suite: ptmkit recipes x seeds, the scikit-learn floor and the paper, per dataset.

Run from the repository root (``../shared/data`` or ``PTMKIT_DATA`` must hold ``uniptms/``)::

    python -m benchmarks.run                                # benchmarks/lite.yaml, all datasets
    python -m benchmarks.run --datasets T1 --check docs/benchmarks/lite.json   # rerun one, compare

For each dataset the floor models and every recipe with every seed are trained as nested MLflow
runs under one parent run (``benchmarks.jobs``; K1/C2's 80/20 split is saved under
``benchmarks/splits/`` on first use and reused after), recording the test metrics, the wall
time of each phase and the peak memory. Results are appended to the JSON file as each model
finishes (``--resume`` skips what is there), and the Markdown report is rewritten after every
model, so an interrupted suite loses at most the models in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ptmkit import tracking
from ptmkit.cli import run_command
from ptmkit.datasets import resolve_data_root
from ptmkit.errors import PtmkitError
from ptmkit.outputs import write_text
from ptmkit.table import render

from . import report
from .jobs import execute, plan, print_rows
from .results import Results, header, machine
from .suite import LoadedSuite, load_suite

HERE = Path(__file__).resolve().parent
DEFAULT_SUITE = HERE / "lite.yaml"
DEFAULT_OUT = HERE.parent / "docs" / "benchmarks"


def table_order(s: object) -> dict[str, list[str]]:
    """Row order of the report: the suite file's datasets and models, full test before leak-free."""
    return {
        "dataset": list(s.datasets),
        "scope": [report.FULL, report.LEAK_FREE],
        "block": list(report.BLOCKS),
        "model": [*s.recipes, *s.floor],
    }


def render_only(loaded: LoadedSuite, out: Path) -> int:
    """Rewrite the Markdown report from the JSON results (after a change to the report code)."""
    path = out / f"{loaded.suite.name}.json"
    if not path.exists():
        raise PtmkitError(f"--render: no results file {path}; run the suite first")
    saved = json.loads(path.read_text())
    if saved["meta"].get("suite_digest") != loaded.digest:
        raise PtmkitError(
            f"--render: {path} was written by another version of {loaded.path} "
            f"(digest {saved['meta'].get('suite_digest')} vs {loaded.digest})"
        )
    results = Results(path, saved["meta"], resume=False)
    results.rows = saved["rows"]
    s = loaded.suite
    order = table_order(s)
    frame = results.frame(order)
    text = report.markdown(
        frame,
        [d for d in s.datasets if d in set(frame["dataset"])],
        header(loaded, saved["meta"]),
        saved["meta"].get("seconds", 0.0),
    )
    write_text(out / f"{s.name}.md", text)
    print(text)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--suite", type=Path, default=DEFAULT_SUITE, help="suite file (default: benchmarks/lite.yaml)"
    )
    p.add_argument("--datasets", nargs="+", help="subset of the suite's datasets")
    p.add_argument("--seeds", nargs="+", type=int, help="subset/override of the suite's seeds")
    p.add_argument("--recipes", nargs="+", help="subset of the suite's recipe labels")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where <suite>.json/.md go")
    p.add_argument("--data-root", type=Path, default=None, help="folder holding uniptms/ (or PTMKIT_DATA)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite)"
    )
    p.add_argument("--resume", action="store_true", help="skip models already in <out>/<suite>.json")
    p.add_argument(
        "--render",
        action="store_true",
        help="only rewrite <out>/<suite>.md from <out>/<suite>.json (no training)",
    )
    p.add_argument(
        "--check", type=Path, help="compare with committed results (JSON); exit 1 if outside spread"
    )
    p.add_argument("--workers", type=int, help="parallel worker processes (default: the suite's workers)")
    p.add_argument("--progress", action="store_true", help="show each run's own progress bars (1 worker)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # as `ptmkit run`: SIGTERM ends the suite's runs KILLED; unexpected errors keep their traceback
    return run_command(lambda: _main(args, argv), one_line_crashes=False)


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    import mlflow

    loaded = load_suite(args.suite)
    s = loaded.suite
    for name, chosen, pool in (
        ("datasets", args.datasets, s.datasets),
        ("recipes", args.recipes, list(s.recipes)),
    ):
        unknown = [c for c in chosen or [] if c not in pool]
        if unknown:
            raise PtmkitError(f"--{name} {unknown} not in the suite ({', '.join(pool)})")
    if args.datasets:
        s.datasets = [d for d in s.datasets if d in args.datasets]
    if args.recipes:
        s.recipes = {k: v for k, v in s.recipes.items() if k in args.recipes}
    if args.seeds:
        s.seeds = args.seeds
    args.data_root = resolve_data_root(args.data_root)
    if args.render:
        return render_only(loaded, args.out)
    loaded.validate_all()

    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {
        "suite": s.name,
        "suite_digest": loaded.digest,
        "command": command.strip(),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "datasets": s.datasets,
        "seeds": s.seeds,
    }
    stem = s.name if not args.check else f"{s.name}-rerun"
    results = Results(args.out / f"{stem}.json", meta, args.resume)
    uri = tracking.tracking_uri(args.tracking_uri)
    experiment_id = args.experiment_id = tracking.setup(uri, s.experiment)
    started = time.perf_counter()
    phase = tracking.Phase("the suite")  # SIGTERM/SIGINT end the parent KILLED, a crash FAILED
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=f"suite {s.name}") as parent,
        tracking.ending_on_error(phase),
        tracking.Heartbeat(parent.info.run_id, uri),
    ):
        meta["parent_run_id"] = parent.info.run_id
        meta["tracking_uri"] = uri
        mlflow.set_tags(
            {
                "bench_suite": s.name,
                "ptmkit.recipe": "suite",
                "bench_command": command[:5000],
                **{k: str(v) for k, v in meta["machine"].items()},
            }
        )
        mlflow.log_params(
            {
                "datasets": " ".join(s.datasets),
                "seeds": " ".join(map(str, s.seeds)),
                "recipes": " ".join(s.recipes),
                "floor": " ".join(s.floor),
                "budget": loaded.budget_text()[:5000],
            }
        )
        mlflow.log_text(loaded.text, "suite.yaml")
        md_path = args.out / f"{stem}.md"
        workers = args.workers or s.workers
        common = {
            "suite": str(loaded.path.resolve()),
            "datasets": tuple(s.datasets),
            "uri": uri,
            "experiment_id": experiment_id,
            "parent_run_id": parent.info.run_id,
            "data_root": str(args.data_root),
            "threads": max(1, (os.cpu_count() or 1) // workers),
            "progress": args.progress and workers == 1,
        }
        meta["workers"], meta["threads_per_worker"] = workers, common["threads"]
        meta["data_root"] = str(args.data_root)
        jobs = plan(loaded, results, common)
        order = table_order(s)

        def on_rows(rows: list[dict]) -> None:
            print_rows(rows)
            meta["seconds"] = meta.get("resumed_seconds", 0.0) + time.perf_counter() - started
            results.add(*rows)
            frame = results.frame(order)
            write_text(
                md_path,
                report.markdown(
                    frame,
                    [d for d in s.datasets if d in set(frame["dataset"])],
                    header(loaded, meta),
                    meta["seconds"],
                ),
            )

        execute(jobs, workers, on_rows)
        frame = results.frame(order)
        for (dataset, model), group in frame[
            (frame["scope"] == report.FULL) & (frame["status"] == "FINISHED")
        ].groupby(["dataset", "model"]):
            mlflow.log_metrics(
                {f"{dataset}.{model}.{m}": float(group[m].mean()) for m in ("mcc", "auc", "ap")}
            )
        mlflow.log_metric("time/suite_s", meta["seconds"])
        with tempfile.TemporaryDirectory() as tmp:
            for d in s.datasets:
                (Path(tmp) / f"table_{d}.csv").write_text(
                    render(report.dataset_table(frame, d), "csv", index=False)
                )
                mlflow.log_artifact(str(Path(tmp) / f"table_{d}.csv"), "tables")
        mlflow.log_artifact(str(md_path))
        mlflow.log_artifact(str(results.path))
    print(md_path.read_text())
    print(
        f"suite {s.name}: {meta['seconds'] / 60:.1f} min; results in {results.path} and {md_path}",
        file=sys.stderr,
    )
    if args.check:
        committed = pd.DataFrame(json.loads(args.check.read_text())["rows"])
        verdict = report.check(frame, committed)
        print(render(verdict, "text", index=False))
        write_text(args.out / f"{s.name}-check.md", render(verdict, "markdown", index=False))
        return 0 if (verdict["within"] == "yes").all() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
