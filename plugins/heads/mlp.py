"""MLP classification head with masked pooling over the window."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import Head, PluginConfig


@register.head("mlp_head")
class MLPHead(Head):
    """Pool the window to one vector, then an MLP -> logits [N, tasks] and an embedding.

    Pooling: ``center`` takes position W // 2 (the modified site); ``mean`` and ``max`` use
    real residues only; ``attention`` is a softmax over real residues of a learned query's
    scaled dot product with each position; ``center+attention`` concatenates the two (the site's
    own vector keeps where things are relative to it, which attention alone averages away).
    Padding never contributes to any of them, so the prediction does not depend on how far the
    site is from a terminus beyond the real context. ``none`` keeps every residue: the MLP runs
    per residue and the outputs are [N, W, tasks] (``data.unit: protein`` scores every residue of
    a protein this way; a window model with it is read at the centre, as ``center`` would be).
    ``embedding`` is the last hidden activation (after ReLU, before dropout), exposed so that
    auxiliary (e.g. contrastive) losses can use it.
    """

    class Config(PluginConfig):
        pool: Literal["center", "mean", "max", "attention", "center+attention", "none"] = Field(
            "center", description="how the window is reduced to one vector ('none': score every residue)"
        )
        hidden: list[int] = Field(
            [64], description="hidden layer sizes (ReLU); empty = linear classifier on the pool"
        )
        dropout: float = Field(
            0.3, ge=0.0, lt=1.0, description="dropout before every linear layer but the first"
        )
        tasks: int = Field(1, gt=0, description="number of logits per example")

        @field_validator("hidden")
        @classmethod
        def _positive(cls, v: list[int]) -> list[int]:
            if any(h < 1 for h in v):
                raise ValueError(f"hidden sizes must be >= 1, got {v}")
            return v

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: MLPHead.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        sizes = [self._pooled_size("mlp_head"), *config.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(sizes[-1], config.tasks)
        self.output_dims = {"out": config.tasks, "embedding": sizes[-1]}

    def _pooled_size(self, name: str) -> int:
        """Check the one input, create the attention query the pool needs; the pooled size."""
        if len(self.in_dims) != 1:
            raise ValueError(
                f"{name} takes exactly 1 input, got {len(self.in_dims)} "
                f"(dims {self.in_dims}); fuse them first, e.g. with concat"
            )
        d = self.in_dims[0]
        if d < 1:
            raise ValueError(f"{name} needs an input of size >= 1, got {self.in_dims}")
        if self.config.pool in ("attention", "center+attention"):
            self.query = nn.Parameter(torch.randn(d) / math.sqrt(d))
        return 2 * d if self.config.pool == "center+attention" else d

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reduce [N, W, D] to [N, D]; rows with no real residue pool to zeros (``none``: [N, W, D]
        as it is)."""
        mask = mask.bool()
        pool = self.config.pool
        if pool == "none":
            return x
        if pool == "center+attention":
            return torch.cat([x[:, x.shape[1] // 2], self._attention(x, mask)], dim=-1)
        if pool == "center":
            return x[:, x.shape[1] // 2]
        keep = mask.unsqueeze(-1)
        if pool == "mean":
            count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
            return (x * keep.to(x.dtype)).sum(dim=1) / count
        if pool == "max":
            pooled = x.masked_fill(~keep, float("-inf")).max(dim=1).values
            return torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))
        return self._attention(x, mask)

    def _attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (x @ self.query) / math.sqrt(x.shape[-1])  # [N, W]
        scores = scores.masked_fill(~mask, float("-inf"))
        # An all-padding row would give softmax(all -inf) = nan (also in the gradient): give it
        # finite scores instead and let the mask zero its weights.
        scores = torch.where(mask.any(dim=1, keepdim=True), scores, torch.zeros_like(scores))
        weights = torch.softmax(scores, dim=1) * mask.to(x.dtype)
        return (weights.unsqueeze(-1) * x).sum(dim=1)

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        (x,) = inputs
        z = self.pool(x, mask)
        for i, layer in enumerate(self.layers):
            z = torch.relu(layer(self.dropout(z) if i else z))
        return {"out": self.classifier(self.dropout(z)), "embedding": z}
