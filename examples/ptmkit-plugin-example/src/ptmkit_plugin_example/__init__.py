"""Example ptmkit plugins, found through the ``ptmkit`` entry point in pyproject.toml.

ptmkit loads this module, checks ``PTMKIT_API_VERSION`` against its own plugin API version and
calls the ``ptmkit_register`` hook with a registrar bound to this distribution.
"""

from __future__ import annotations

from ptmkit.hooks import hookimpl
from ptmkit.registry import Registrar

from .cksaap import CKSAAP
from .gated_sum import GatedSum
from .label_smoothing import LabelSmoothingBCE

__all__ = ["CKSAAP", "GatedSum", "LabelSmoothingBCE", "PTMKIT_API_VERSION", "ptmkit_register"]

#: The plugin API these plugins are written for; ptmkit refuses the package if it differs.
PTMKIT_API_VERSION = 1


@hookimpl
def ptmkit_register(registry: Registrar) -> None:
    """Register every plugin of this package under the names recipes use as ``type``."""
    registry.feature("cksaap", CKSAAP)
    registry.fusion("gated_sum", GatedSum)
    registry.loss("label_smoothing_bce", LabelSmoothingBCE)
