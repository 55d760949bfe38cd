"""One inference path: encoded rows in, sigmoid scores (and optionally the mean loss) out.

Training-time validation and test scoring, ``ptmkit evaluate``, ``ptmkit predict`` and the
MLflow pyfunc model all score through :func:`infer`, so one protein gets the same scores
whichever command scores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import PtmkitError
from .featurize import encode_all, padding_mask
from .graph import ModelGraph
from .plugin_api import Feature, Loss
from .sitetable import SiteTable
from .units import plan_units

if TYPE_CHECKING:
    from .recipe import ProteinSection

#: Rows per forward pass when the caller does not say (what training always used).
BATCH_SIZE = 512


class Batch(NamedTuple):
    """One batch of rows on a device: what a model's forward and the losses take."""

    features: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: torch.Tensor | None
    #: long [N], each row's task index (a multi-task model; None for one task)
    task: torch.Tensor | None = None
    #: long [N, 2], each row's (unit in the batch, column) in protein mode; None: row i is unit i
    #: and a per-residue output is read at its centre
    sites: torch.Tensor | None = None
    #: long [B], each unit's task in protein mode when units are cut per task (task-conditioned
    #: nodes); in window mode a unit is a row and its task is ``task``
    unit_task: torch.Tensor | None = None
    #: per-row values the losses read beside the model's outputs (``teacher``: a distilled run's
    #: teacher logits, [N]); in row order
    targets: dict[str, torch.Tensor] | None = None


class Rows(Protocol):
    """What training and scoring need of encoded rows: window rows (:class:`Encoded`) and rows on
    protein units (:class:`UnitEncoded`) both provide it."""

    labels: torch.Tensor | None
    task: torch.Tensor | None

    def __len__(self) -> int: ...

    def batch(self, index: torch.Tensor, device: torch.device) -> Batch: ...

    def rows(self, index: torch.Tensor) -> Rows: ...

    def batches(
        self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]: ...

    def parts(self, index: torch.Tensor, n: int) -> list[torch.Tensor]: ...


@dataclass
class Encoded:
    """Rows ready for the model: feature tensors [N, W, D], padding mask [N, W], labels [N].

    A split of a table encoded once is a *view*: ``features`` stay the whole table's tensors and
    ``index`` names this view's rows in them (mask and labels, small, are its own). A batch then
    gathers only its rows, so the splits of a large set do not hold a second copy of its features.
    """

    features: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: torch.Tensor | None = None
    #: rows of ``features`` this view holds, in order (None: all of them)
    index: torch.Tensor | None = None
    #: long [N], each row's task index in the model's task order (None: a one-task model)
    task: torch.Tensor | None = None
    #: per-row loss targets (:attr:`Batch.targets`), in this view's row order
    targets: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.mask)

    def _rows_of(self, index: torch.Tensor) -> torch.Tensor:
        return index if self.index is None else self.index[index]

    def batch(self, index: torch.Tensor, device: torch.device) -> Batch:
        rows = self._rows_of(index)
        feats = {k: v[rows].to(device) for k, v in self.features.items()}
        labels = None if self.labels is None else self.labels[index].to(device)
        task = None if self.task is None else self.task[index].to(device)
        return Batch(
            feats, self.mask[index].to(device), labels, task, None, None, pick(self.targets, index, device)
        )

    def rows(self, index: torch.Tensor) -> Encoded:
        """The subset ``index`` (a split of a table encoded once), sharing the feature tensors."""
        labels = None if self.labels is None else self.labels[index]
        task = None if self.task is None else self.task[index]
        return Encoded(
            self.features, self.mask[index], labels, self._rows_of(index), task, pick(self.targets, index)
        )

    def batches(
        self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """``order`` in slices of ``batch_size`` rows. With ``generator`` (training; the order is
        already drawn) a last slice of one row is dropped when there are others: a batch of one
        breaks batch statistics."""
        out = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        training = generator is not None
        return out[:-1] if training and len(out) > 1 and len(out[-1]) < 2 else out

    def parts(self, index: torch.Tensor, n: int) -> list[torch.Tensor]:
        """A batch in ``n`` contiguous shares of rows (the ranks' shares of a global batch)."""
        return list(torch.tensor_split(index, n))

    @classmethod
    def of(
        cls, table: SiteTable, tensors: dict[str, torch.Tensor], tasks: list[str] | None = None
    ) -> Encoded:
        """Wrap a table's encodings with its padding mask, labels and (``tasks``: the model's
        task order) each row's task index."""
        labels = torch.tensor(table.labels, dtype=torch.float32)
        return cls(tensors, padding_mask(table), labels, task=task_index(table, tasks))


def pick(
    targets: dict[str, torch.Tensor] | None, index: torch.Tensor, device: torch.device | None = None
) -> dict[str, torch.Tensor] | None:
    """Rows ``index`` of every per-row target (on ``device`` when given)."""
    if targets is None:
        return None
    return {k: (v[index] if device is None else v[index].to(device)) for k, v in targets.items()}


def task_index(table: SiteTable, tasks: list[str] | None) -> torch.Tensor | None:
    """Each row's position in ``tasks`` (long [N]); None without tasks. A row of a task the
    model does not know is an error naming it."""
    if not tasks:
        return None
    order = {name: i for i, name in enumerate(tasks)}
    names = table.frame["task"]
    unknown = sorted(set(names.unique()) - set(order))
    if unknown:
        raise PtmkitError(
            f"rows of task(s) {', '.join(map(str, unknown))}, which the model does not have "
            f"(its tasks: {', '.join(tasks)})"
        )
    return torch.tensor(names.map(order).to_numpy(dtype="int64"))


@dataclass
class UnitEncoded:
    """Rows scored on protein units (``ptmkit.units``): per length bucket, feature tensors
    [U, W, D] and a padding mask [U, W]; per row, its bucket, unit and column, label and task.
    Like :class:`Encoded`, a split is a view sharing the buckets' tensors; a batch holds whole
    units and reads each of its rows at its column."""

    features: list[dict[str, torch.Tensor]]
    masks: list[torch.Tensor]
    bucket: torch.Tensor
    unit: torch.Tensor
    column: torch.Tensor
    labels: torch.Tensor | None = None
    task: torch.Tensor | None = None
    #: padded residues per batch
    batch_residues: int = 4096
    #: per bucket, each unit's task index (units cut per task); None: units hold every task
    unit_tasks: list[torch.Tensor] | None = None
    #: per-row loss targets (:attr:`Batch.targets`), in row order
    targets: dict[str, torch.Tensor] | None = None
    _widths: list[int] = field(init=False, default_factory=list)
    _stride: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        self._widths = [int(m.shape[1]) for m in self.masks]
        self._stride = max((len(m) for m in self.masks), default=0) + 1  # (bucket, unit) -> one key

    def __len__(self) -> int:
        return len(self.bucket)

    def _keys(self, index: torch.Tensor) -> torch.Tensor:
        return self.bucket[index] * self._stride + self.unit[index]

    def rows(self, index: torch.Tensor) -> UnitEncoded:
        labels = None if self.labels is None else self.labels[index]
        task = None if self.task is None else self.task[index]
        return UnitEncoded(
            self.features,
            self.masks,
            self.bucket[index],
            self.unit[index],
            self.column[index],
            labels,
            task,
            self.batch_residues,
            self.unit_tasks,
            pick(self.targets, index),
        )

    def batch(self, index: torch.Tensor, device: torch.device) -> Batch:
        """The units holding rows ``index`` (padded to the widest of them), and each row's (unit
        in the batch, column) as ``sites``; labels and tasks in the order of ``index``."""
        keys, inverse = torch.unique(self._keys(index), return_inverse=True)  # sorted: buckets contiguous
        buckets, units = keys // self._stride, keys % self._stride
        present = buckets.unique().tolist()
        width = max(self._widths[b] for b in present)
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.features[present[0]]}
        masks = []
        unit_task = []
        for b in present:
            mine = units[buckets == b]
            if self.unit_tasks is not None:
                unit_task.append(self.unit_tasks[b][mine])
            pad = width - self._widths[b]
            for name, tensor in self.features[b].items():
                parts[name].append(F.pad(tensor[mine], (0, 0, 0, pad)) if pad else tensor[mine])
            mask = self.masks[b][mine]
            masks.append(F.pad(mask, (0, pad), value=False) if pad else mask)
        features = {name: torch.cat(p).to(device) for name, p in parts.items()}
        sites = torch.stack([inverse, self.column[index]], dim=1).to(device)
        labels = None if self.labels is None else self.labels[index].to(device)
        task = None if self.task is None else self.task[index].to(device)
        per_unit = torch.cat(unit_task).to(device) if unit_task else None
        targets = pick(self.targets, index, device)
        return Batch(features, torch.cat(masks).to(device), labels, task, sites, per_unit, targets)

    def batches(
        self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """The rows of ``order`` grouped by unit, the units of one bucket batched up to
        ``batch_residues`` padded residues (``batch_size`` counts windows: it does not apply).
        With ``generator`` the batches come in random order (training), else bucket by bucket."""
        del batch_size
        if not len(order):
            return []
        keys = self._keys(order).numpy()
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))  # units by first appearance
        bucket = uniq // self._stride
        by = np.lexsort((rank, bucket))  # units by bucket, then by first appearance
        within = np.arange(len(by)) - np.searchsorted(bucket[by], bucket[by], side="left")
        per_batch = np.array([max(1, self.batch_residues // w) for w in self._widths])
        group = np.empty(len(uniq), dtype=np.int64)
        group[by] = bucket[by] * (len(uniq) + 1) + within // per_batch[bucket[by]]
        of_row = group[inverse]
        sort = np.argsort(of_row, kind="stable")  # rows keep their order within a batch
        cuts = np.nonzero(np.diff(of_row[sort]))[0] + 1
        out = [order[torch.from_numpy(part)] for part in np.split(sort, cuts)]
        if generator is not None:
            out = [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]
        return out

    def parts(self, index: torch.Tensor, n: int) -> list[torch.Tensor]:
        """A batch in ``n`` shares of whole units, balanced by rows: a unit computed by two ranks
        would count its residues twice in synchronised batch statistics. With fewer units than
        shares the rows are shared instead: every unit is then computed by the ranks holding its
        rows, each once per rank, and each row is scored by one rank."""
        keys = self._keys(index).numpy()
        uniq, first, inverse, rows = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        if len(uniq) < n:
            return list(torch.tensor_split(index, n))
        by_first = np.argsort(first, kind="stable")  # units in order of appearance
        share = np.empty(len(uniq), dtype=np.int64)
        seen, previous = 0, -1
        for k, u in enumerate(by_first):  # contiguous runs of units, none empty, near-equal rows
            wanted = seen * n // len(index)
            previous = max(n - (len(uniq) - k), min(wanted, previous + 1))
            share[u] = previous
            seen += int(rows[u])
        of_row = share[inverse]
        return [index[torch.from_numpy(np.nonzero(of_row == r)[0])] for r in range(n)]


def encode(
    features: dict[str, Feature],
    table: SiteTable,
    *,
    tasks: list[str] | None = None,
    progress: bool = False,
    protein: ProteinSection | None = None,
    windowed: np.ndarray | None = None,
    per_task: bool = False,
) -> Encoded | UnitEncoded:
    """Encode every row of ``table`` with every feature (shapes checked); ``tasks``: the model's
    task order, for a multi-task model. ``protein`` (``data.protein`` of a protein-mode recipe):
    on protein units instead of windows (``windowed``: rows that stay their own window, e.g. the
    rows of tasks trained on fragments), each bucket of units encoded as windows are;
    ``per_task``: one unit per protein piece and task (a task-conditioned model)."""
    if protein is None:
        return Encoded.of(table, encode_all(features, table, progress=progress), tasks)
    per_task = per_task and bool(tasks)
    plan = plan_units(table, protein.chunk, protein.overlap, windowed, per_task=per_task)
    bar = tqdm(plan.tables, desc="features (protein units)", unit="bucket", disable=not progress, leave=False)
    feats = [encode_all(features, units, progress=False) for units in bar]
    masks = [padding_mask(units) for units in plan.tables]
    return UnitEncoded(
        feats,
        masks,
        torch.from_numpy(plan.bucket),
        torch.from_numpy(plan.unit),
        torch.from_numpy(plan.column),
        torch.tensor(table.labels, dtype=torch.float32),
        task_index(table, tasks),
        protein.batch_residues,
        [task_index(units, tasks) for units in plan.tables] if per_task else None,
    )


@dataclass
class Inference:
    scores: np.ndarray  # float32 [N], sigmoid of the logits, in row order
    loss: float | None = None  # mean combined loss over the rows, when losses were given
    logits: np.ndarray | None = None  # float32 [N], the logits themselves (distillation reads them)


def combined_loss(losses: list[tuple[float, Loss]], outputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """The recipe's objective: the weighted sum of its losses."""
    return sum(w * loss(outputs, labels) for w, loss in losses)  # type: ignore[return-value]


@torch.no_grad()
def infer(
    model: ModelGraph,
    rows: Rows,
    *,
    device: torch.device | str | None = None,
    batch_size: int = BATCH_SIZE,
    losses: list[tuple[float, Loss]] | None = None,
) -> Inference:
    """Scores for every row in order, in eval mode; with ``losses`` also their mean (one pass,
    so validation is paid once per epoch). ``device`` defaults to where the model lives."""
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)
    model.eval()
    total = 0.0
    out: torch.Tensor | None = None
    raw: torch.Tensor | None = None
    everything = torch.arange(len(rows))
    for index in rows.batches(everything, batch_size):
        batch = rows.batch(index, device)
        outputs = model(batch.features, batch.mask, batch.task, batch.sites, batch.unit_task)
        if batch.targets:
            outputs.update(batch.targets)
        logits = outputs["logits"].float().cpu()
        if out is None:
            out = torch.empty((len(rows), *logits.shape[1:]), dtype=torch.float32)
            raw = torch.empty_like(out)
        out[index] = torch.sigmoid(logits)
        raw[index] = logits  # type: ignore[index]
        if losses and batch.labels is not None:
            total += float(combined_loss(losses, outputs, batch.labels)) * len(index)
    scored = out.numpy() if out is not None else np.zeros(0, dtype=np.float32)
    logits_ = raw.numpy() if raw is not None else np.zeros(0, dtype=np.float32)
    return Inference(scored, total / max(len(rows), 1) if losses else None, logits_)
