"""BLOSUM62 substitution-score encoding."""

from __future__ import annotations

import numpy as np
import torch
from Bio.Align import substitution_matrices
from pydantic import Field, field_validator

from ptmkit.alphabet import STANDARD, UNKNOWN_INDEX
from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from ._common import codes, empty_lut, lookup


def blosum62_table() -> np.ndarray:
    """[22, 20] raw BLOSUM62 scores: 20 standard rows, the X row for unknowns, zero padding."""
    matrix = substitution_matrices.load("BLOSUM62")
    lut = empty_lut(len(STANDARD))
    for i, row in enumerate(STANDARD):
        lut[i] = [matrix[row, col] for col in STANDARD]
    lut[UNKNOWN_INDEX] = [matrix["X", col] for col in STANDARD]
    return lut


@register.feature("blosum62")
class Blosum62(Feature):
    """BLOSUM62 row of each residue, D=20 (columns in ``STANDARD`` order).

    Residues that substitute for each other in evolution get similar vectors, which one-hot
    cannot express. Values are Biopython's ``substitution_matrices.load("BLOSUM62")``
    (integers, -4..11). Non-standard letters get the matrix's X row (restricted to the 20
    columns: 0 or -1, -2); padding is zeros. ``scale`` divides every score by a constant.
    """

    class Config(PluginConfig):
        scale: float | None = Field(
            None,
            description="Divide every score by this positive constant (e.g. 11, the largest "
            "score, for values in [-0.36, 1]); null keeps the raw integer scores.",
        )

        @field_validator("scale")
        @classmethod
        def _positive(cls, value: float | None) -> float | None:
            if value is not None and not value > 0:
                raise ValueError(f"scale must be a positive number or null, got {value}")
            return value

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        lut = blosum62_table()
        if config.scale is not None:
            lut = lut / config.scale
        self._lut = lut

    @property
    def dim(self) -> int:
        return len(STANDARD)

    def encode(self, table: SiteTable) -> torch.Tensor:
        return lookup(self._lut, codes(table))
