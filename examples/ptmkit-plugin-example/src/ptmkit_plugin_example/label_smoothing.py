"""``label_smoothing_bce``: binary cross-entropy against smoothed targets, optionally annealed."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from ptmkit.api import Loss, PluginConfig, register
from pydantic import Field


@register.loss("label_smoothing_bce")
class LabelSmoothingBCE(Loss):
    """BCE on logits with targets y * (1 - eps) + eps / 2, so no target is exactly 0 or 1.

    Smoothing keeps a model from chasing ever larger logits on noisy labels (site datasets have
    many unlabelled true sites among the negatives). ``schedule: linear`` anneals ``eps`` from
    ``smoothing`` in the first epoch to 0 in the last one (through the ``start_epoch`` hook);
    ``constant`` keeps it. ``smoothing: 0`` is plain BCE. Mean over examples.
    """

    class Config(PluginConfig):
        smoothing: float = Field(0.1, ge=0.0, lt=0.5, description="eps: targets become eps/2 and 1 - eps/2")
        schedule: Literal["constant", "linear"] = Field(
            "constant", description="'linear' anneals eps to 0 by the last epoch"
        )
        input: str = Field(
            "logits", description="model output to score: 'logits' or a node reference such as 'head'"
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        #: eps in use this epoch (changed by ``start_epoch`` under the linear schedule)
        self.eps = config.smoothing

    def start_epoch(self, epoch: int, total: int) -> None:
        if self.config.schedule == "linear" and total > 1:
            self.eps = self.config.smoothing * (total - epoch) / (total - 1)

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        x = outputs[self.config.input]
        if x.dim() == 2 and x.shape[1] == 1:
            x = x.squeeze(1)
        if x.shape != labels.shape:
            raise ValueError(
                f"label_smoothing_bce: {self.config.input!r} has shape {list(x.shape)} but labels "
                f"{list(labels.shape)}; it needs one logit per example"
            )
        target = labels.to(x.dtype) * (1.0 - self.eps) + self.eps / 2.0
        return F.binary_cross_entropy_with_logits(x, target)
