"""Enhanced amino-acid composition: residue composition of a sliding sub-window."""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch.nn.functional import one_hot

from ptmkit.alphabet import N_SYMBOLS, PAD_INDEX, STANDARD
from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from ._common import codes


@register.feature("eaac")
class EAAC(Feature):
    """Composition of the k-residue sub-window centred on each position, D=20 (``STANDARD``).

    Local composition (e.g. how acidic or proline-rich the surroundings are) is what many
    kinase and PTM-enzyme motifs look like, and it smooths over exact positions. For position
    i, ``out[i, a] = count of residue a in [i - k//2, i + k//2] / count of standard residues
    there``; padding and non-standard letters count in neither (a sub-window without standard
    residues gives zeros), and the sub-window stops at the window edges. Padding positions are
    zeros; a non-standard position still gets its neighbourhood composition. Counts are exact
    integer sliding sums (cumsum), so the fractions are exact up to float32 rounding.
    """

    class Config(PluginConfig):
        k: int = Field(5, ge=1, description="Odd width of the sliding sub-window.")

        @field_validator("k")
        @classmethod
        def _odd(cls, value: int) -> int:
            if value % 2 == 0:
                raise ValueError(f"k must be odd so the sub-window is centred, got {value}")
            return value

    config: Config

    @property
    def dim(self) -> int:
        return len(STANDARD)

    def encode(self, table: SiteTable) -> torch.Tensor:
        idx = codes(table)
        n, width = idx.shape
        half = self.config.k // 2
        # one-hot of standard residues only, as int64 so the sliding sums are exact
        onehot = one_hot(idx, N_SYMBOLS)[..., : len(STANDARD)]
        # sliding sum over [i - half, i + half] = cum[i + half + 1] - cum[i - half] (zero-padded)
        cum = torch.zeros((n, width + 2 * half + 1, len(STANDARD)), dtype=torch.int64)
        cum[:, half + 1 : half + 1 + width] = onehot.cumsum(dim=1)
        cum[:, half + 1 + width :] = cum[:, half + width : half + 1 + width]
        counts = cum[:, 2 * half + 1 :] - cum[:, :width]
        totals = counts.sum(dim=-1, keepdim=True)
        fractions = counts.to(torch.float32) / totals.clamp(min=1).to(torch.float32)
        return fractions * (idx != PAD_INDEX).unsqueeze(-1)
