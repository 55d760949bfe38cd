"""``distill``: learning from teachers' soft targets (MTPrompt-PTM's born-again multi-task).

Each row's target mixes its label with the teacher's softened probability,
``y = (1 - w) * label + w * sigmoid(z_teacher / T)``, and the loss is the soft cross-entropy
``-(y log p + (1 - y) log(1 - p))`` of the student's ``p = sigmoid(z)``. For one logit per row
this is MTPrompt-PTM's ``-sum y * log_softmax(z_student)`` over two classes exactly: a 2-way
softmax of ``[0, z]`` is the sigmoid of ``z``. The shipped setting is T = 1, w = 1 (the teacher's
targets alone). With ``anneal_epochs`` the teacher's share falls linearly from w to 0 over that
many epochs (teacher annealing; MTPrompt-PTM: 63), set once per epoch here, where MTPrompt-PTM
sets it per step. Rows without a teacher (NaN) learn from their label. The row's task weight
applies as in the other losses. The teachers' logits come from the recipe's ``distill:``
section (``ptmkit.distill``) as the ``teacher`` output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ptmkit.api import register

from .binary import _BinaryLoss, _InputConfig


@register.loss("distill")
class DistillLoss(_BinaryLoss):
    """Soft cross-entropy to targets mixed from the labels and the teachers' tempered probabilities."""

    class Config(_InputConfig):
        temperature: float = Field(
            1.0, gt=0, description="T: teacher logits are divided by it (MTPrompt-PTM: 1)"
        )
        weight: float = Field(
            1.0, ge=0, le=1, description="w: the teacher's share of each target (MTPrompt-PTM: 1)"
        )
        anneal_epochs: int | None = Field(
            None,
            gt=0,
            description="teacher annealing: w falls linearly to 0 over this many epochs (MTPrompt-PTM: 63)",
        )

    def __init__(self, config: DistillLoss.Config) -> None:
        super().__init__(config)
        self.share = config.weight

    def required_outputs(self) -> list[str]:
        return [self.config.input, "teacher"]

    def start_epoch(self, epoch: int, total: int) -> None:
        c = self.config
        if c.anneal_epochs is not None:
            self.share = c.weight * max(0.0, 1.0 - (epoch - 1) / c.anneal_epochs)

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        x = self.logits(outputs, labels)
        teacher = outputs["teacher"].to(x.dtype)
        if teacher.shape != x.shape:
            raise ValueError(f"teacher logits of shape {list(teacher.shape)}, the student's {list(x.shape)}")
        known = ~torch.isnan(teacher)
        soft = torch.sigmoid(torch.nan_to_num(teacher) / self.config.temperature)
        hard = labels.to(x.dtype)
        target = torch.where(known, (1 - self.share) * hard + self.share * soft, hard)
        per_row = F.binary_cross_entropy_with_logits(x, target, reduction="none")
        return self.reduce(per_row, outputs)
