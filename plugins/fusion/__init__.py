"""Built-in fusion plugins: combine several per-residue inputs into one."""

from __future__ import annotations

from ptmkit.registry import Registrar

from .basic import Add, Concat


def register(registry: Registrar) -> None:
    """Register every built-in fusion plugin."""
    registry.fusion("concat", Concat)
    registry.fusion("add", Add)
