"""One inference path: encoded rows in, sigmoid scores (and optionally the mean loss) out.

Training-time validation and test scoring, ``ptmkit evaluate``, ``ptmkit predict`` and the
MLflow pyfunc model all score through :func:`infer`, so one protein gets the same scores
whichever command scores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .errors import PtmkitError
from .featurize import encode_all, padding_mask
from .graph import ModelGraph
from .plugin_api import Feature, Loss
from .sitetable import SiteTable

#: Rows per forward pass when the caller does not say (what training always used).
BATCH_SIZE = 512


class Batch(NamedTuple):
    """One batch of rows on a device: what a model's forward and the losses take."""

    features: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: torch.Tensor | None
    #: long [N], each row's task index (a multi-task model; None for one task)
    task: torch.Tensor | None = None


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

    def __len__(self) -> int:
        return len(self.mask)

    def _rows_of(self, index: torch.Tensor) -> torch.Tensor:
        return index if self.index is None else self.index[index]

    def batch(self, index: torch.Tensor, device: torch.device) -> Batch:
        rows = self._rows_of(index)
        feats = {k: v[rows].to(device) for k, v in self.features.items()}
        labels = None if self.labels is None else self.labels[index].to(device)
        task = None if self.task is None else self.task[index].to(device)
        return Batch(feats, self.mask[index].to(device), labels, task)

    def rows(self, index: torch.Tensor) -> Encoded:
        """The subset ``index`` (a split of a table encoded once), sharing the feature tensors."""
        labels = None if self.labels is None else self.labels[index]
        task = None if self.task is None else self.task[index]
        return Encoded(self.features, self.mask[index], labels, self._rows_of(index), task)

    @classmethod
    def of(
        cls, table: SiteTable, tensors: dict[str, torch.Tensor], tasks: list[str] | None = None
    ) -> Encoded:
        """Wrap a table's encodings with its padding mask, labels and (``tasks``: the model's
        task order) each row's task index."""
        labels = torch.tensor(table.labels, dtype=torch.float32)
        return cls(tensors, padding_mask(table), labels, task=task_index(table, tasks))


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


def encode(
    features: dict[str, Feature], table: SiteTable, *, tasks: list[str] | None = None, progress: bool = False
) -> Encoded:
    """Encode every row of ``table`` with every feature (shapes checked) into :class:`Encoded`;
    ``tasks``: the model's task order, for a multi-task model."""
    return Encoded.of(table, encode_all(features, table, progress=progress), tasks)


@dataclass
class Inference:
    scores: np.ndarray  # float32 [N], sigmoid of the logits, in row order
    loss: float | None = None  # mean combined loss over the rows, when losses were given


def combined_loss(losses: list[tuple[float, Loss]], outputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """The recipe's objective: the weighted sum of its losses."""
    return sum(w * loss(outputs, labels) for w, loss in losses)  # type: ignore[return-value]


@torch.no_grad()
def infer(
    model: ModelGraph,
    rows: Encoded,
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
    scores, total = [], 0.0
    for start in range(0, len(rows), batch_size):
        index = torch.arange(start, min(start + batch_size, len(rows)))
        batch = rows.batch(index, device)
        outputs = model(batch.features, batch.mask, batch.task)
        scores.append(torch.sigmoid(outputs["logits"]).float().cpu())
        if losses and batch.labels is not None:
            total += float(combined_loss(losses, outputs, batch.labels)) * len(index)
    out = torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)
    return Inference(out, total / max(len(rows), 1) if losses else None)
