"""Example ptmkit plugins, found through the ``ptmkit`` entry point in pyproject.toml.

ptmkit imports this module, checks ``PTMKIT_API_VERSION`` against the plugin API versions it
supports, and registers the classes marked with ``@register.<kind>(name)`` here and in the
submodules imported below, under this distribution's name and version.
"""

from __future__ import annotations

from .cksaap import CKSAAP
from .gated_sum import GatedSum
from .label_smoothing import LabelSmoothingBCE

__all__ = ["CKSAAP", "GatedSum", "LabelSmoothingBCE", "PTMKIT_API_VERSION"]

#: The plugin API these plugins are written for; ptmkit refuses the package if it cannot load it.
PTMKIT_API_VERSION = 2
