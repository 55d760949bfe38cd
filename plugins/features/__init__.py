"""Built-in features plugins: handcrafted per-residue encodings (docs/features.md)."""

from __future__ import annotations

from ptmkit.registry import Registrar

from .blosum import Blosum62
from .eaac import EAAC
from .onehot import OneHot
from .physchem import AAindex
from .plm import Ember2, Esm2, HFEncoder, ProtT5
from .pseaac import PseAAC

__all__ = ["AAindex", "Blosum62", "EAAC", "OneHot", "PseAAC", "register"]


def register(registry: Registrar) -> None:
    """Register every built-in features plugin."""
    registry.feature("onehot", OneHot)
    registry.feature("blosum62", Blosum62)
    registry.feature("aaindex", AAindex)
    registry.feature("pseaac", PseAAC)
    registry.feature("eaac", EAAC)
    registry.feature("esm2", Esm2)
    registry.feature("prott5", ProtT5)
    registry.feature("hf_encoder", HFEncoder)
    registry.feature("ember2", Ember2)
