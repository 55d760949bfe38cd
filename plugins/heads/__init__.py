"""Built-in head plugins: pooling + classifier -> logits [N, tasks]."""

from __future__ import annotations

from ptmkit.registry import Registrar

from .mlp import MLPHead


def register(registry: Registrar) -> None:
    """Register every built-in head plugin."""
    registry.head("mlp_head", MLPHead)
