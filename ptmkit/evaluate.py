"""Evaluate a packaged model on a held-out labelled set, through the very path training used.

The source is read by a reader (any format: a file with ``--reader``, or a catalogue name),
windows are cut with the model's width, features encoded and scores computed with
``inference.infer`` (what training and ``ptmkit predict`` score with), so on the windows of a
run's own test split the metrics equal the run's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import catalog, metrics
from .datasets import read_source
from .errors import PtmkitError, first_line
from .inference import Inference, encode, infer
from .package import LoadedModel
from .sitetable import SiteTable
from .splits import apply_split_file
from .thresholds import DEFAULT_RULE, RUN_RULE
from .units import own_windows


@dataclass
class Evaluation:
    model: LoadedModel
    source: str
    reader: str
    split: str | None
    table: SiteTable
    scores: np.ndarray
    report: dict[str, float]
    dropped_residues: int = 0
    #: where ``split`` came from when the source has none of its own (the run's splits artifact)
    split_from: str | None = None
    #: the task of a multi-task model the source was scored as (None: a one-task model)
    task: str | None = None

    @property
    def thresholds(self) -> dict[str, float]:
        """The cut-offs in force: the model's, or its scored task's."""
        return self.model.task(self.task).thresholds if self.task else self.model.thresholds

    @property
    def counts(self) -> dict[str, int]:
        labels = self.table.labels
        return {
            "sites": len(labels),
            "positive": int(labels.sum()),
            "negative": int(len(labels) - labels.sum()),
            "proteins": int(self.table.frame["protein_id"].nunique()),
        }

    def frame(self) -> pd.DataFrame:
        """Rows: threshold rules; columns: metrics (like ``ptmkit run``'s test table)."""
        r = self.report
        t = self.thresholds
        rows = {
            "threshold 0.5": {k: r[k] for k in metrics.NAMES},
            f"{RUN_RULE} threshold {t[RUN_RULE]:.4f}": {
                **{k: r[f"tuned_{k}"] for k in ("acc", "sen", "spec", "mcc")},
                "auc": r["auc"],
                "ap": r["ap"],
            },
        }
        if DEFAULT_RULE in t:
            rows[f"{DEFAULT_RULE} threshold {t[DEFAULT_RULE]:.4f}"] = {
                **{k: r[f"spec95_{k}"] for k in ("acc", "sen", "spec", "mcc")},
                "auc": r["auc"],
                "ap": r["ap"],
            }
        for rule in (k for k in t if k not in ("default", RUN_RULE, DEFAULT_RULE)):
            # further validation rules in the package (val_mcc_smooth, val_mcc_bootstrap, ...)
            at = metrics.at_threshold(self.table.labels, self.scores, t[rule])
            rows[f"{rule} threshold {t[rule]:.4f}"] = {**at, "auc": r["auc"], "ap": r["ap"]}
        frame = pd.DataFrame.from_dict(rows, orient="index")[list(metrics.NAMES)]
        frame.index.name = "rule"
        return frame

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.ref,
            "run_id": self.model.meta.get("run_id"),
            "source": self.source,
            "reader": self.reader,
            "split": self.split,
            "counts": self.counts,
            "task": self.task,
            "thresholds": self.thresholds,
            "metrics": self.report,
            "dropped_off_target_rows": self.dropped_residues,
            "split_from": self.split_from,
        }


def guess_reader(path: Path) -> str:
    """The registered reader that claims ``path`` most specifically (``Reader.sniff``): for the
    built-in ones, ``protein_sites`` when the first header carries '#pos' tokens (K2), else
    ``musite_fasta`` for any FASTA."""
    from .hooks import get_registry

    registry = get_registry()
    scored = []
    for name in registry.names("reader"):
        try:
            scored.append((int(registry.get("reader", name).obj.sniff(path)), name))
        except Exception:  # noqa: BLE001 - one plugin's broken sniff must not stop evaluate
            continue
    best, name = max(scored, key=lambda s: s[0], default=(0, ""))
    if best <= 0:
        raise PtmkitError(
            f"{path}: no reader recognises this file; name one with --reader "
            f"({', '.join(registry.names('reader'))})"
        )
    return name


def run_split(
    model: LoadedModel,
    table: SiteTable,
    source: str,
    split: str,
    tracking_uri: str | None,
    task: str | None = None,
) -> tuple[SiteTable, str]:
    """``table`` split as the model's run split it: the run's own ``data/splits.tsv.gz``.

    For a source without a published ``split`` (K1, C2), the run drew one; evaluating on
    anything else would mix its training rows into the metrics.
    """
    import mlflow

    from .model_store import quiet_mlflow
    from .tracking import StoreNotFound, open_store
    from .tracking import tracking_uri as default_uri

    run_id = model.meta.get("run_id")
    present = ", ".join(sorted(set(table.frame["split"])))
    if not run_id:
        raise PtmkitError(
            f"{source} has no {split!r} split (it has {present}) and model {model.ref} names no run whose "
            "drawn split could be rebuilt"
        )
    uri = tracking_uri or default_uri()
    artifact = f"runs:/{run_id}/data/splits.tsv.gz"
    try:
        open_store(uri, create=False)  # reading must never create a store
    except StoreNotFound as exc:
        raise PtmkitError(
            f"{source} has no {split!r} split (it has {present}); the split of model {model.ref}'s run "
            f"({artifact}) lives in its store, and there is no store at {exc.path} "
            "(pass --uri for the run's store)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="ptmkit-splits-") as tmp:
        try:
            with quiet_mlflow():
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=artifact, dst_path=tmp, tracking_uri=uri
                )
        except Exception as exc:  # MlflowException: no such run or artifact, unreachable store
            first = first_line(exc)
            raise PtmkitError(
                f"{source} has no {split!r} split (it has {present}); the split of model {model.ref}'s run "
                f"could not be read from {artifact} in {uri}: {first} (pass --uri for the run's store)"
            ) from None
        data = model.recipe.data
        residues = data.residues
        own = (data.tasks or {}).get(task) if task is not None else None
        if own is not None and own.residues is not None:
            residues = own.residues
        if residues:  # the run filtered residues before it split
            table = table.subset(table.frame["residue"].isin(list(residues)).to_numpy())
        # a multi-task run's splits hold every task's rows: this task's are applied
        table = apply_split_file(table, Path(local), dedupe=data.split.dedupe, task=task)
    return table, artifact


def model_task(model: LoadedModel, source: str, task: str | None) -> str | None:
    """The task of a multi-task ``model`` that ``source`` is scored as: ``task``, or the one task
    trained on this preset; None for a one-task model."""
    if not model.multitask:
        if task is not None:
            raise PtmkitError(
                f"--task {task}: model {model.ref} has one task ({model.ptm}); leave --task out"
            )
        return None
    names = [t.name for t in model.tasks]
    if task is None and len(names) == 1:
        return names[0]
    if task is not None:
        if task not in names:
            raise PtmkitError(
                f"--task {task}: model {model.ref} has no such task; its tasks: {', '.join(names)}"
            )
        return task
    trained = [n for n, t in (model.recipe.data.tasks or {}).items() if t.source == source]
    if len(trained) == 1:
        return trained[0]
    raise PtmkitError(
        f"model {model.ref} has {len(names)} tasks ({', '.join(names)}); say which one {source} is "
        "scored as with --task NAME"
    )


def check_reader_options(reader: str, options: dict[str, object], flag: str = "--option") -> None:
    """Refuse a ``--option KEY=VALUE`` the reader has no setting for, listing its valid keys: a
    typo otherwise surfaces as pydantic's "Extra inputs are not permitted" under ``data.source``."""
    import difflib

    from .hooks import get_registry
    from .recipe import SOURCE_KEYS

    fields = get_registry().get("reader", reader).obj.Config.model_fields
    # files: the evaluated file itself; reader: --reader
    valid = sorted((set(fields) | set(SOURCE_KEYS)) - {"files", "reader"})
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PtmkitError(
                f"{flag} {key}=...: reader {reader!r} has no option {key!r}.{hint} valid: {', '.join(valid)}"
            )


def load_labelled(
    model: LoadedModel,
    source: str,
    *,
    reader: str | None,
    split: str | None,
    options: dict[str, Any] | None,
    data_root: Path,
    tracking_uri: str | None = None,
    task: str | None = None,
) -> tuple[SiteTable, str, int, str | None, str | None]:
    """Read ``source`` with the model's window; keep ``split`` and the model's (task's) residues.

    Returns the rows, the reader, how many off-target rows were left out, where ``split``
    came from when the run drew it (a preset without that split, see :func:`run_split`), and
    the task of a multi-task model the rows are scored as (:func:`model_task`).
    """
    from .hooks import get_registry
    from .recipe import parse_source

    split_from = None
    registry = get_registry()
    task_name = model_task(model, source, task)
    residues = model.task(task_name).residues if task_name else model.residues
    if catalog.is_catalog_name(source):
        if reader or options:
            raise PtmkitError("--reader/--option apply to files; a dataset preset brings its own reader")
        use = parse_source(source, registry, prefix=("SOURCE",))
        reader_name = use.reader.spec.name
        files = getattr(use.reader.config, "files", None)
        if split and isinstance(files, dict) and split in files:
            # read only the requested split's file (K2's test proteins, not its 55k training rows)
            config = use.reader.config.model_copy(update={"files": {split: files[split]}})
            use = replace(use, reader=replace(use.reader, config=config))
        table = _read_at_width(use, model, data_root, fit=task_name is not None)
        if split in ("train", "valid", "test") and split not in set(table.frame["split"]):
            table, split_from = run_split(model, table, source, split, tracking_uri, task_name)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            raise PtmkitError(f"{source}: is a directory; give an annotated file or a dataset preset name")
        if not path.is_file():
            raise PtmkitError(f"{source}: no such file and not a dataset preset (like uniptms:K2)")
        reader_name = reader or guess_reader(path)
        check_reader_options(reader_name, options or {})
        if "files" not in registry.get("reader", reader_name).obj.Config.model_fields:
            raise PtmkitError(
                f"reader {reader_name!r} takes no 'files' option; evaluate reads one file with readers "
                "that do (protein_sites, musite_fasta, fasta_fragments, csv_sites) or a dataset preset"
            )
        settings: dict[str, Any] = {
            "reader": reader_name,
            "files": {split or "test": str(path.resolve())},
            "residues": residues,
            "ptm": model.ptm,
            **(options or {}),
        }
        use = parse_source(settings, registry, prefix=("SOURCE",))
        table = _read_at_width(use, model, data_root, fit=task_name is not None)
    if split:
        present = sorted(set(table.frame["split"]))
        if split not in present:
            raise PtmkitError(f"{source} has no {split!r} split; it has {', '.join(present)}")
        table = table.split(split)
    keep = table.frame["residue"].isin(list(residues)).to_numpy()
    dropped = int((~keep).sum())
    table = table.subset(keep)
    if not len(table):
        raise PtmkitError(f"{source}: no site with a {residues} centre residue to evaluate")
    if table.width != model.window:
        raise PtmkitError(f"{source}: windows of width {table.width}, but the model reads {model.window}")
    if task_name is not None:
        table.frame["task"] = task_name
    return table, reader_name, dropped, split_from, task_name


def _read_at_width(use: Any, model: LoadedModel, data_root: Path, *, fit: bool) -> SiteTable:
    """The source's rows at the model's window: cut or cropped to it, and for a multi-task model
    (trained on a common width) narrower fragments centred and padded, as training fitted them."""
    cuts = use.reader.spec.obj.cuts_windows
    window = model.window if (cuts or not fit) else None
    table, _ = read_source(use, base_dir=Path.cwd(), data_root=data_root, window=window)
    return table.fit_width(model.window) if fit else table


def score_rows(
    model: LoadedModel, table: SiteTable, task_name: str | None, *, progress: bool = False
) -> Inference:
    """``model``'s scores (and logits) of ``table``'s rows, read as its training read them:
    the rows must be at the model's window and, for a multi-task model, carry ``task_name``
    (its task column). A protein-mode model reads rows from protein units (cut per task for a
    task-conditioned one), except a task trained on fragments, from its own windows."""
    names = [t.name for t in model.tasks] if task_name else None
    units = model.recipe.data.units
    windowed = None
    if units is not None and task_name and model.task(task_name).windowed:
        table = own_windows(table, model.trained_width(model.task(task_name)), model.window)
        windowed = np.ones(len(table), dtype=bool)
    encoded = encode(
        model.features,
        table,
        tasks=names,
        progress=progress,
        protein=units,
        windowed=windowed,
        per_task=model.model.reads_task,
    )
    return infer(model.model, encoded)


def evaluate_model(
    model: LoadedModel,
    source: str,
    *,
    reader: str | None = None,
    split: str | None = None,
    options: dict[str, Any] | None = None,
    data_root: Path,
    progress: bool = False,
    tracking_uri: str | None = None,
    task: str | None = None,
) -> Evaluation:
    """Metrics of ``model`` on a labelled source (``metrics.evaluate`` at the run's tuned threshold,
    plus the metrics at predict's default threshold, ``spec95_*``).

    ``tracking_uri`` is the store of the model's run, read when the split must be rebuilt.
    """
    table, reader_name, dropped, split_from, task_name = load_labelled(
        model,
        source,
        reader=reader,
        split=split,
        options=options,
        data_root=data_root,
        tracking_uri=tracking_uri,
        task=task,
    )
    labels = table.labels
    scores = score_rows(model, table, task_name, progress=progress).scores
    thresholds = model.task(task_name).thresholds if task_name else model.thresholds
    report = metrics.evaluate(labels, scores, thresholds[RUN_RULE])
    if DEFAULT_RULE in thresholds:
        at95 = metrics.at_threshold(labels, scores, thresholds[DEFAULT_RULE])
        report.update({f"spec95_{k}": at95[k] for k in ("acc", "sen", "spec", "mcc")})
    return Evaluation(
        model, source, reader_name, split, table, scores, report, dropped, split_from, task_name
    )
