"""Built-in head plugins: pooling + classifier -> logits [N, tasks]."""

from __future__ import annotations

from .mlp import MLPHead
from .task_heads import TaskHeads

__all__ = ["MLPHead", "TaskHeads"]
