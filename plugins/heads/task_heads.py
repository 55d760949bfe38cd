"""Multi-task head: a shared layer, then one classifier per task (MTPrompt-PTM's heads)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ptmkit.api import register
from ptmkit.distributed import world

from ..backbones.resnet1d import MaskedBatchNorm
from .mlp import MLPHead


class _BatchNorm(MaskedBatchNorm):
    """BatchNorm of pooled rows [N, D], or of every real residue of [N, W, D] (``pool: none``;
    padding kept out of the statistics). A training batch of one pooled row is normalised with
    the running statistics (its batch statistics are undefined; nn.BatchNorm1d raises there)."""

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 3:
            assert keep is not None
            return super().forward(x, keep)
        if self.training and world().active:  # global-batch statistics, as the masked form gives
            return super().forward(x[:, None], x.new_ones(x.shape[0], 1, 1))[:, 0]
        if self.training and x.shape[0] < 2:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return nn.BatchNorm1d.forward(self, x)


@register.head("task_heads")
class TaskHeads(MLPHead):
    """Pool the window, shared ``Linear + BatchNorm + ReLU`` layers, then one logit per task.

    MTPrompt-PTM (Han et al., 2025) feeds each residue's trunk vector through a shared
    Linear(600, 600) + BatchNorm + ReLU and then one Linear(600, 2) per task, computing every
    head and reading the row's own task. Here each task's classifier is one column of a single
    ``Linear(hidden, tasks)`` (the same parameters as ``tasks`` separate heads, one matmul), and
    a task's two-class softmax is its single logit (the difference of the two), so ``bce`` /
    ``weighted_ce`` / ``focal`` on the row's task logit is the paper's cross-entropy. Give
    ``tasks`` as the number of ``data.tasks``; the core reads each row's own logit. ``pool:
    none`` scores every residue ([N, W, tasks], BatchNorm over real residues): what a
    ``data.unit: protein`` model needs, as MTPrompt-PTM scores whole proteins; ``pool: center``
    (the default) reads the site's own vector of a window. ``embedding`` is the shared layer's
    output.
    """

    class Config(MLPHead.Config):
        hidden: list[int] | None = Field(  # type: ignore[assignment]
            None,
            description="shared layer sizes (Linear + BatchNorm + ReLU each); null: one layer as wide "
            "as the input (MTPrompt-PTM's 600 -> 600); empty: the task classifiers on the pool",
        )
        batchnorm: bool = Field(True, description="BatchNorm after each shared linear layer")
        tasks: int = Field(2, gt=0, description="number of tasks: one logit each (as many as data.tasks)")

        @field_validator("hidden")
        @classmethod
        def _positive(cls, v: list[int] | None) -> list[int] | None:
            if v is not None and any(h < 1 for h in v):
                raise ValueError(f"hidden sizes must be >= 1, got {v}")
            return v

    def __init__(self, config: TaskHeads.Config, in_dims: list[int]) -> None:
        super(MLPHead, self).__init__(config, in_dims)  # the Head's init, not MLPHead's layers
        pooled = self._pooled_size("task_heads")
        hidden = [pooled] if config.hidden is None else config.hidden
        sizes = [pooled, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.norms = nn.ModuleList(_BatchNorm(b) if config.batchnorm else nn.Identity() for b in sizes[1:])
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(sizes[-1], config.tasks)
        self.output_dims = {"out": config.tasks, "embedding": sizes[-1]}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        (x,) = inputs
        z = self.pool(x, mask)
        keep = mask.unsqueeze(-1).to(z.dtype) if z.dim() == 3 else None
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            h = layer(self.dropout(z) if i else z)
            z = torch.relu(norm(h, keep) if isinstance(norm, _BatchNorm) else norm(h))
        return {"out": self.classifier(self.dropout(z)), "embedding": z}
