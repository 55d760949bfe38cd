"""Built-in dataset plugins: named collections of benchmark presets (``uniptms:H1``)."""

from __future__ import annotations

from .musitedeep import MusiteDeep
from .uniptms import UniPTMs

__all__ = ["MusiteDeep", "UniPTMs"]
