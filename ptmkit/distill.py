"""Knowledge distillation ("born-again multi-task", MTPrompt-PTM): teachers' logits on the student's rows.

A recipe's ``distill.teachers`` names packaged models per task, or one multi-task teacher for
every task it has (``all``). Before training, each teacher scores the student's rows of its
task once, through the path ``ptmkit evaluate`` uses (``evaluate.score_rows``). The rows are
re-cut at the teacher's window from their proteins, and read with the teacher's own features
and its protein units. The logits become each row's ``teacher`` target, which the ``distill``
loss reads. A row of a task without a teacher gets NaN, and the loss uses its label alone.

The run logs the logits (``distill/teacher_logits.csv``: every row with its split) and each
teacher's identity: the reference (a param of the filled recipe, ``distill.teachers.<task>``),
its run id and package name as tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import PtmkitError
from .evaluate import score_rows
from .model_store import load_model
from .recipe import Recipe
from .sitetable import SiteTable
from .units import own_windows


@dataclass
class Teachers:
    """The teachers' logits of a table's rows (NaN where none teaches) and who they are."""

    logits: np.ndarray  # float32 [N]
    identities: dict[str, dict[str, str]]  # student task -> ref, run_id, name, teacher_task

    def tags(self) -> dict[str, str]:
        out = {}
        for task, who in self.identities.items():
            out[f"ptmkit.teacher.{task}.run_id"] = who["run_id"]
            out[f"ptmkit.teacher.{task}.name"] = who["name"]
        return out

    def frame(self, table: SiteTable) -> pd.DataFrame:
        """Every row with its teacher logit, as logged with the run."""
        cols = table.frame[["protein_id", "position", "residue", "task", "split", "label"]].copy()
        cols["teacher_logit"] = self.logits
        return cols


def teacher_logits(
    recipe: Recipe, table: SiteTable, *, tracking_uri: str | None = None, progress: bool = False
) -> Teachers:
    """Score ``table``'s rows with the recipe's teachers (each on the rows of the task(s) it teaches)."""
    distill = recipe.distill
    if distill is None:
        raise PtmkitError("the recipe names no teachers (distill.teachers)")
    uri = distill.tracking_uri or tracking_uri
    tasks = table.frame["task"].to_numpy().astype(str)
    out = np.full(len(table), np.nan, dtype=np.float32)
    identities: dict[str, dict[str, str]] = {}
    for key, ref in distill.teachers.items():
        where = recipe.locations.get(("distill", "teachers", key), "distill.teachers")
        try:
            model = load_model(ref, tracking_uri=uri)
        except PtmkitError as exc:
            raise PtmkitError(f"{where}: teacher {ref!r}: {exc}") from None
        names = [t.name for t in model.tasks]
        taught = [t for t in dict.fromkeys(tasks) if t in names] if key == "all" else [key]
        if key == "all" and not taught:
            raise PtmkitError(
                f"{where}: teacher {ref!r} has tasks {', '.join(names)}, none of this recipe's "
                f"({', '.join(dict.fromkeys(tasks))})"
            )
        for task in taught:
            if task in identities:
                raise PtmkitError(f"{where}: task {task!r} has two teachers")
            if model.multitask and task not in names:
                raise PtmkitError(
                    f"{where}: teacher {ref!r} is multi-task without a task {task!r} "
                    f"(its tasks: {', '.join(names)})"
                )
            mine = tasks == task
            rows = table.subset(mine)
            own = model.task(task) if model.multitask else model.tasks[0]
            wrong = sorted(set(rows.frame["residue"]) - set(own.residues))
            if wrong:
                raise PtmkitError(
                    f"{where}: teacher {ref!r} scores residues {own.residues}, but task {task!r} has rows on "
                    f"{', '.join(wrong)}"
                )
            at = own_windows(rows, model.trained_width(own), model.window)
            scored = score_rows(model, at, task if model.multitask else None, progress=progress)
            assert scored.logits is not None
            out[mine] = scored.logits.reshape(len(at), -1)[:, 0]
            identities[task] = {
                "ref": str(ref),
                "run_id": str(model.meta.get("run_id") or ""),
                "name": model.name,
                "teacher_task": own.name,
            }
    return Teachers(out, identities)


def write_logits(teachers: Teachers, table: SiteTable, path: Path) -> Path:
    """The logits as a CSV (atomically: a crash leaves no half file)."""
    from .outputs import atomic_open

    with atomic_open(path, "w") as handle:
        teachers.frame(table).to_csv(handle, index=False)
    return path
