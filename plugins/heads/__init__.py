"""Built-in head plugins: pooling + classifier -> logits [N, tasks]."""

from __future__ import annotations

from .mlp import MLPHead

__all__ = ["MLPHead"]
