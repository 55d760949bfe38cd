"""Built-in fusion plugins."""

from __future__ import annotations

from ptmkit.registry import Registrar


def register(registry: Registrar) -> None:
    """Register every built-in fusion plugin."""
