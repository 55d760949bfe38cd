"""Per-residue pseudo-amino-acid composition (Chou's PseAAC adapted to positions)."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ptmkit.alphabet import STANDARD
from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from ._common import codes, empty_lut, lookup, standardise

#: Chou (2001) Proteins 43:246, Table I, in ``STANDARD`` order: H1 hydrophobicity (Tanford),
#: H2 hydrophilicity (Hopp-Woods, = AAindex HOPT810101), M side-chain mass.
CHOU_PROPERTIES: dict[str, tuple[float, ...]] = {
    "hydrophobicity": (0.62, 0.29, -0.90, -0.74, 1.19, 0.48, -0.40, 1.38, -1.50, 1.06,
                       0.64, -0.78, 0.12, -0.85, -2.53, -0.18, -0.05, 1.08, 0.81, 0.26),
    "hydrophilicity": (-0.5, -1.0, 3.0, 3.0, -2.5, 0.0, -0.5, -1.8, 3.0, -1.8,
                       -1.3, 0.2, 0.0, 0.2, 3.0, 0.3, -0.4, -1.5, -3.4, -2.3),
    "side_chain_mass": (15, 47, 59, 73, 91, 1, 82, 57, 73, 57,
                        75, 58, 42, 72, 101, 31, 45, 43, 130, 107),
}  # fmt: skip


def chou_table() -> np.ndarray:
    """[22, 3] Chou properties standardised over the 20 residues; zero for unknown and padding."""
    raw = np.array(list(CHOU_PROPERTIES.values()), dtype=np.float64).T  # [20, 3]
    lut = empty_lut(raw.shape[1])
    lut[: len(STANDARD)] = standardise(raw)
    return lut


@register.feature("pseaac")
class PseAAC(Feature):
    """Chou's three properties plus sequence-order correlations per residue, D = 3 + lags.

    PseAAC adds sequence order to composition through correlations of physicochemical
    properties between residues k apart; here they are kept per position so a model sees where
    the context changes. Properties (Chou 2001, Table I): H1 hydrophobicity (Tanford), H2
    hydrophilicity (Hopp-Woods), M side-chain mass, each standardised over the 20 residues,
    ``P_j(a) = (P0_j(a) - mean_j) / std_j`` (population std, as Chou). For position i::

        out[i, j]       = P_j(s_i)                                  j = 0, 1, 2
        out[i, 2 + k]   = weight * theta_k(i)                       k = 1 .. lags
        Theta(a, b)     = (1/3) * sum_j (P_j(a) - P_j(b))**2
        theta_k(i)      = (m(i-k) Theta(s_i, s_{i-k}) + m(i+k) Theta(s_i, s_{i+k}))
                          / (m(i-k) + m(i+k)),   0 when m(i-k) + m(i+k) = 0 or m(i) = 0

    where m(p) = 1 when position p is inside the window and a standard residue, else 0. So a
    residue with both neighbours averages the two terms, with one uses it alone, and the
    correlation only looks inside the window. Padding and non-standard positions are zeros.
    """

    class Config(PluginConfig):
        lags: int = Field(3, ge=1, description="Number of correlation terms, distances 1..lags.")
        weight: float = Field(
            0.05,
            ge=0,
            description="Factor on the correlation terms (Chou's w; 0.05 as in his paper).",
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._lut = chou_table()

    @property
    def dim(self) -> int:
        return 3 + self.config.lags

    def encode(self, table: SiteTable) -> torch.Tensor:
        idx = codes(table)
        props = lookup(self._lut, idx)  # [N, W, 3]
        real = (idx < len(STANDARD)).to(torch.float32)  # m(p), [N, W]
        n, width = idx.shape
        thetas = torch.zeros((n, width, self.config.lags), dtype=torch.float32)
        for k in range(1, min(self.config.lags, width - 1) + 1):  # loop over lags, not rows
            # Theta between i and i+k for every i, with both ends real: [N, W - k]
            pair = ((props[:, :-k] - props[:, k:]) ** 2).mean(dim=-1)
            both = real[:, :-k] * real[:, k:]
            total = torch.zeros((n, width), dtype=torch.float32)
            count = torch.zeros((n, width), dtype=torch.float32)
            total[:, :-k] += pair * both  # right neighbour of i is i + k
            count[:, :-k] += both
            total[:, k:] += pair * both  # left neighbour of i is i - k
            count[:, k:] += both
            thetas[..., k - 1] = total / count.clamp(min=1.0)
        return torch.cat([props, self.config.weight * thetas], dim=-1)
