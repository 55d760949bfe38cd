"""Binary classification losses on logits: ``bce``, ``weighted_ce`` and ``focal``.

All work on logits (never on probabilities) through ``binary_cross_entropy_with_logits``, which
uses the log-sum-exp form and so stays finite for arbitrarily large logits.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ptmkit.api import register
from ptmkit.plugin_api import Loss, PluginConfig


class _InputConfig(PluginConfig):
    input: str = Field(
        "logits",
        description="entry of the model outputs to score: 'logits' or a node reference "
        "such as 'head' / 'head.out'",
    )


class _BinaryLoss(Loss):
    """Reads the configured output as logits [N] (a trailing task axis of size 1 is dropped)."""

    Config = _InputConfig

    def logits(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        name = self.config.input
        if name not in outputs:
            raise KeyError(
                f"loss input {name!r} is not among the model outputs: {', '.join(sorted(outputs))}"
            )
        x = outputs[name]
        if x.dim() == 2 and x.shape[1] == 1:
            x = x.squeeze(1)
        if x.shape != labels.shape:
            raise ValueError(
                f"loss input {name!r} has shape {list(x.shape)} but labels have shape "
                f"{list(labels.shape)}; binary losses need one logit per example"
            )
        return x

    @staticmethod
    def reduce(per_row: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over rows, each weighted by its task's weight when the core passes ``row_weight``
        (a multi-task recipe with ``train.task_weights``; weights have mean 1 over tasks)."""
        weight = outputs.get("row_weight")
        return per_row.mean() if weight is None else (per_row * weight.to(per_row.dtype)).mean()


@register.loss("bce")
class BCELoss(_BinaryLoss):
    """Binary cross-entropy with logits (mean over examples)."""

    class Config(_InputConfig):
        pass

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        x = self.logits(outputs, labels)
        if "row_weight" not in outputs:  # torch's own mean: one-task runs as before task weights
            return F.binary_cross_entropy_with_logits(x, labels.to(x.dtype))
        per_row = F.binary_cross_entropy_with_logits(x, labels.to(x.dtype), reduction="none")
        return self.reduce(per_row, outputs)


@register.loss("weighted_ce")
class WeightedCELoss(_BinaryLoss):
    """BCE with positives up-weighted by ``pos_weight`` (``auto`` = n_negative / n_positive).

    ``auto`` balances the total weight of the two classes on the training labels given to
    ``setup``; the derived weight is a buffer, so it is saved with the model and a reloaded
    model scores the same without seeing the training labels again.
    """

    class Config(_InputConfig):
        pos_weight: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
            "auto",
            description="weight of positive examples; 'auto' = n_negative / n_positive "
            "of the training labels",
        )

    def __init__(self, config: WeightedCELoss.Config) -> None:
        super().__init__(config)
        # NaN marks "auto, not derived yet" and keeps the key in the state dict either way.
        value = float("nan") if config.pos_weight == "auto" else float(config.pos_weight)
        self.register_buffer("pos_weight", torch.tensor(value))

    def setup(self, train_labels: np.ndarray) -> None:
        """Derive the ``auto`` weight from the training labels (no-op for a fixed weight)."""
        if self.config.pos_weight != "auto":
            return
        labels = np.asarray(train_labels)
        n_pos = int((labels > 0.5).sum())
        n_neg = int(labels.size - n_pos)
        if n_pos == 0 or n_neg == 0:
            raise ValueError(
                f"weighted_ce pos_weight 'auto' needs both classes in the training labels, "
                f"got {n_pos} positive and {n_neg} negative; set pos_weight to a number"
            )
        self.pos_weight.fill_(n_neg / n_pos)

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.pos_weight):
            raise RuntimeError(
                "weighted_ce with pos_weight 'auto' was used before setup(train_labels) derived the weight"
            )
        x = self.logits(outputs, labels)
        pos_weight = self.pos_weight.to(x.dtype)
        if "row_weight" not in outputs:  # torch's own mean: one-task runs as before task weights
            return F.binary_cross_entropy_with_logits(x, labels.to(x.dtype), pos_weight=pos_weight)
        per_row = F.binary_cross_entropy_with_logits(
            x, labels.to(x.dtype), pos_weight=pos_weight, reduction="none"
        )
        return self.reduce(per_row, outputs)


@register.loss("focal")
class FocalLoss(_BinaryLoss):
    """Sigmoid focal loss (Lin et al. 2017): down-weights easy examples; mean over examples.

    loss = alpha_t * (1 - p_t) ** gamma * BCE, with p_t = exp(-BCE) the probability of the
    true class. Computing p_t from the stable BCE (rather than from sigmoid) keeps it finite
    for large logits; gamma = 0 and alpha = 0.5 give 0.5 * BCE.
    """

    class Config(_InputConfig):
        alpha: float = Field(
            0.25, ge=0.0, le=1.0, description="weight of positives (negatives get 1 - alpha)"
        )
        gamma: float = Field(2.0, ge=0.0, description="focusing exponent; 0 = weighted BCE")

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        x = self.logits(outputs, labels)
        y = labels.to(x.dtype)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        # 1 - p_t = -expm1(-ce), accurate when p_t is close to 1. The clamp keeps the gradient
        # of (1 - p_t) ** gamma finite for gamma < 1 when 1 - p_t underflows to 0.
        one_minus_pt = (-torch.expm1(-ce)).clamp(min=torch.finfo(x.dtype).tiny)
        alpha_t = self.config.alpha * y + (1.0 - self.config.alpha) * (1.0 - y)
        return self.reduce(alpha_t * one_minus_pt**self.config.gamma * ce, outputs)
