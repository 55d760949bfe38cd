"""Entry point for the built-in plugins: the same hook third-party packages implement."""

from __future__ import annotations

from ptmkit.hooks import hookimpl
from ptmkit.registry import Registrar

from . import backbones, features, fusion, heads, losses, readers

PTMKIT_API_VERSION = 1


@hookimpl
def ptmkit_register(registry: Registrar) -> None:
    for kind in (readers, features, fusion, backbones, heads, losses):
        kind.register(registry)
