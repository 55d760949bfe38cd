"""Built-in features plugins."""

from __future__ import annotations

from ptmkit.registry import Registrar


def register(registry: Registrar) -> None:
    """Register every built-in features plugin."""
