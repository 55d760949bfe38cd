"""Suite results: rows on disk and in memory, the machine they were measured on, the header."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from ptmkit import tracking
from ptmkit.errors import PtmkitError
from ptmkit.outputs import write_text

from . import report
from .suite import LoadedSuite


def _key(row: dict) -> tuple:
    return (row["dataset"], row["scope"], row["model"], row["seed"])


class Results:
    """Rows on disk (JSON, rewritten atomically after each model) and in memory."""

    def __init__(self, path: Path, meta: dict, resume: bool) -> None:
        self.path = path
        self.meta = meta
        self.rows: list[dict] = []
        if resume and path.exists():
            saved = json.loads(path.read_text())
            if saved.get("meta", {}).get("suite_digest") != meta["suite_digest"]:
                raise PtmkitError(
                    f"--resume: {path} was written by a different suite file (digest "
                    f"{saved.get('meta', {}).get('suite_digest')} vs {meta['suite_digest']}); "
                    "rerun without --resume or with another --out"
                )
            self.rows = [r for r in saved["rows"] if r.get("status") == "FINISHED"]  # retry failures
            self.meta["resumed_seconds"] = saved["meta"].get("seconds", 0.0)

    def done(self, dataset: str, model: str, seed: int) -> bool:
        return (dataset, report.FULL, model, seed) in {
            _key(r) for r in self.rows if r["status"] == "FINISHED"
        }

    def add(self, *rows: dict) -> None:
        self.rows.extend(rows)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps({"meta": self.meta, "rows": self.rows}, indent=1, default=float))

    def frame(self, order: dict[str, list[str]] | None = None) -> pd.DataFrame:
        """All rows; with ``order`` (column -> values) sorted so tables follow the suite file."""
        frame = pd.DataFrame(self.rows)
        if order and len(frame):
            rank = {c: frame[c].map({v: i for i, v in enumerate(vals)}) for c, vals in order.items()}
            keys = pd.DataFrame(rank).assign(seed=frame["seed"])
            frame = frame.loc[keys.sort_values(list(keys), kind="stable").index].reset_index(drop=True)
        return frame


def machine() -> dict[str, object]:
    return {
        "cpu": tracking.cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        **{f"version.{k}": v for k, v in tracking.package_versions().items()},
    }


def header(loaded: LoadedSuite, meta: dict) -> str:
    s = loaded.suite
    versions = ", ".join(
        f"{k.split('.', 1)[1]} {v}" for k, v in meta["machine"].items() if k.startswith("version.")
    )
    return "\n".join(
        [
            f"## Suite `{s.name}` ({loaded.path.name}, digest {loaded.digest})",
            "",
            f"- Command: `{meta['command']}`",
            f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
            f"{meta['machine']['platform']}",
            f"- Versions: {versions}",
            f"- Workers: {meta.get('workers', 1)} processes x {meta.get('threads_per_worker', '?')} torch "
            f"thread(s); data root `{meta.get('data_root', '')}`",
            f"- Seeds: {', '.join(map(str, s.seeds))}; budget for {loaded.budget_text()}",
            f"- Started {meta['started']}; MLflow parent run `{meta.get('parent_run_id', '')}` in "
            f"experiment `{s.experiment}`",
            "- ACC, SEN, SPEC and MCC at the threshold that maximised MCC on the validation split; "
            "mean ± sd over seeds.",
        ]
    )


def publish(
    out: Path | None,
    command: str,
    workers: int,
    seeds: list[int],
    started: float,
    rows: list[dict],
    render: Callable[[list[dict], dict], str],
) -> None:
    """A comparison's ending: its meta (command, machine, seeds, minutes since ``started``), the
    Markdown ``render(rows, meta)`` printed, and with ``out`` written as OUT.json and OUT.md."""
    meta = {
        "command": command,
        "machine": f"{tracking.cpu_name()}, {workers} workers x 1 torch thread",
        "seeds": seeds,
        "minutes": (time.perf_counter() - started) / 60,
    }
    text = render(rows, meta)
    print(text)
    if out:
        write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        write_text(out.with_suffix(".md"), text)
