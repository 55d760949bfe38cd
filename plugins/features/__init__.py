"""Built-in features plugins: handcrafted per-residue encodings (docs/features.md)."""

from __future__ import annotations

from .blosum import Blosum62
from .eaac import EAAC
from .onehot import OneHot
from .physchem import AAindex
from .plm import Ember2, Esm2, HFEncoder, ProtT5
from .pseaac import PseAAC
from .residue_ids import ResidueIds

__all__ = [
    "AAindex",
    "Blosum62",
    "EAAC",
    "Ember2",
    "Esm2",
    "HFEncoder",
    "OneHot",
    "ProtT5",
    "PseAAC",
    "ResidueIds",
]
