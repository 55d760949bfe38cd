"""Entry point of the built-in plugins: the same one third-party packages declare.

Importing the kind packages imports every plugin module; ptmkit registers the classes they mark
with ``@register.<kind>(name)``, exactly as for a third-party package.
"""

from __future__ import annotations

from . import backbones, datasets, features, fusion, heads, losses, ptm_mamba, readers

__all__ = [
    "PTMKIT_API_VERSION",
    "backbones",
    "datasets",
    "features",
    "fusion",
    "heads",
    "losses",
    "ptm_mamba",
    "readers",
]

#: The plugin API these plugins are written for.
PTMKIT_API_VERSION = 2
