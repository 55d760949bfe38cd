"""Standardised AAindex1 physicochemical indices."""

from __future__ import annotations

import functools

import numpy as np
import torch
from aaindex import aaindex1
from pydantic import Field, field_validator

from ptmkit.alphabet import STANDARD
from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from ._common import codes, empty_lut, lookup, standardise

#: Default AAindex1 accessions: widely used, mostly weakly correlated properties.
DEFAULT_INDICES: dict[str, str] = {
    "KYTJ820101": "hydropathy (Kyte-Doolittle, 1982)",
    "HOPT810101": "hydrophilicity (Hopp-Woods, 1981)",
    "FASG760101": "molecular weight (Fasman, 1976)",
    "BIGC670101": "residue volume (Bigelow, 1967)",
    "ZIMJ680102": "bulkiness (Zimmerman et al., 1968)",
    "GRAR740102": "polarity (Grantham, 1974)",
    "ZIMJ680104": "isoelectric point (Zimmerman et al., 1968)",
    "KLEP840101": "net charge (Klein et al., 1984)",
    "BHAR880101": "average flexibility (Bhaskaran-Ponnuswamy, 1988)",
    "JANJ780101": "average accessible surface area (Janin et al., 1978)",
    "CHOP780201": "alpha-helix propensity (Chou-Fasman, 1978)",
    "CHOP780202": "beta-sheet propensity (Chou-Fasman, 1978)",
    "CHOP780101": "beta-turn propensity (Chou-Fasman, 1978)",
}

_HOW_TO_FIND = (
    "AAindex1 accession codes look like 'KYTJ820101'; search them with "
    "`python -c \"from aaindex import aaindex1; print(list(aaindex1.search('charge')))\"` "
    "or browse https://www.genome.jp/aaindex/"
)


def _record_values(code: str) -> dict[str, float | None]:
    """Raw values of one AAindex1 record by residue letter (None where the source says NA)."""
    try:
        record = aaindex1[code]
    except ValueError as exc:  # the package raises ValueError with close matches
        raise ValueError(f"unknown AAindex1 index {code!r} ({exc}) {_HOW_TO_FIND}") from None
    # record["values"] rather than the attribute form, which shadows dict.values(); it also
    # holds a synthetic '-' gap entry (0.0) that is not AAindex data and is never read here.
    return record["values"]


@functools.cache
def aaindex_table(indices: tuple[str, ...]) -> np.ndarray:
    """[22, D] lookup table: standardised indices for the 20 residues, zeros elsewhere.

    Built once per index set; read-only so a caller cannot corrupt the cached copy.
    """
    raw = np.array(
        [[np.nan if (v := _record_values(code)[aa]) is None else v for code in indices] for aa in STANDARD],
        dtype=np.float64,
    ).reshape(len(STANDARD), len(indices))
    lut = empty_lut(len(indices))
    lut[: len(STANDARD)] = standardise(raw)
    lut.flags.writeable = False
    return lut


@register.feature("aaindex")
class AAindex(Feature):
    """AAindex1 physicochemical indices of each residue, D = number of indices (13 by default).

    Chosen properties (hydrophobicity, size, charge, flexibility, secondary-structure
    propensity, ...) let a model generalise across residues that one-hot treats as unrelated.
    Values come from the ``aaindex`` package's copy of the AAindex1 database. Each index is
    standardised to mean 0, unit (population) variance over the 20 standard residues, so no
    index dominates by its units. Values missing in an index (NA) become 0 after
    standardisation (the average residue); non-standard letters and padding are zero vectors.
    The defaults are ``DEFAULT_INDICES`` (accession -> meaning); see docs/features.md.
    """

    class Config(PluginConfig):
        indices: list[str] = Field(
            default_factory=lambda: list(DEFAULT_INDICES),
            description="AAindex1 accession codes, one feature column each, in this order.",
        )

        @field_validator("indices")
        @classmethod
        def _known(cls, value: list[str]) -> list[str]:
            codes_ = [code.strip().upper() for code in value]
            if not codes_:
                raise ValueError(f"indices must name at least one index. {_HOW_TO_FIND}")
            duplicates = sorted({c for c in codes_ if codes_.count(c) > 1})
            if duplicates:
                raise ValueError(f"indices lists {', '.join(duplicates)} more than once")
            for code in codes_:
                _record_values(code)
            return codes_

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._lut = aaindex_table(tuple(config.indices))

    @property
    def dim(self) -> int:
        return len(self.config.indices)

    def encode(self, table: SiteTable) -> torch.Tensor:
        return lookup(self._lut, codes(table))
