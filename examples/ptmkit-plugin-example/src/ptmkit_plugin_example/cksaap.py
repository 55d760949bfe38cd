"""``cksaap``: per-residue composition of k-spaced residue pairs (CKSAAP) in a local sub-window."""

from __future__ import annotations

from typing import Self

import numpy as np
import torch
from ptmkit.api import (
    N_SYMBOLS,
    PAD_INDEX,
    STANDARD,
    Feature,
    PluginConfig,
    SiteTable,
    encode_windows,
    register,
)
from pydantic import Field, field_validator, model_validator

#: Five physicochemical classes (aliphatic, aromatic, positive, negative, uncharged), the
#: grouping of iFeature's CKSAAGP descriptor. Pairs of classes keep D small per residue.
DEFAULT_GROUPS: tuple[str, ...] = ("GAVLMI", "FYW", "KRH", "DE", "STCPNQ")


@register.feature("cksaap")
class CKSAAP(Feature):
    """Composition of k-spaced residue pairs around each position, D = G*G*(gaps+1).

    CKSAAP (Chen et al. 2007) counts the pairs ``(x_j, x_{j+k+1})`` of residues separated by
    ``k`` others. Here it is computed per residue: for position ``i`` of a window, the pairs
    counted are those whose *both* residues lie in the sub-window ``[i - h, i + h]``
    (``h = window // 2``, clipped at the window edges), for every gap ``k = 0..gaps``.
    Residues are first mapped to ``G`` groups (``groups``; ``null`` = the 20 amino acids, so
    G = 20 and this is classic CKSAAP); a pair with a padding or non-standard residue is not
    counted.

    Column ``k*G*G + a*G + b`` is the fraction of the counted gap-``k`` pairs in the sub-window
    whose first residue is in group ``a`` and second in group ``b`` (groups in config order):
    each gap block sums to 1, or is all zeros when it holds no countable pair. Padding
    positions are zeros; a non-standard position still gets its neighbourhood's pairs. Counts
    are exact small integers, so fractions are exact up to float32 rounding.
    """

    class Config(PluginConfig):
        gaps: int = Field(1, ge=0, description="largest gap K: pairs (x_j, x_j+k+1) are counted for k = 0..K")
        window: int = Field(
            7,
            ge=3,
            description="odd width of the sub-window, centred on each position, in which pairs are counted",
        )
        groups: tuple[str, ...] | None = Field(
            DEFAULT_GROUPS,
            description="residue groups, a partition of the 20 standard letters; null = each amino "
            "acid is its own group (classic CKSAAP, G = 20)",
        )

        @field_validator("window")
        @classmethod
        def _odd(cls, value: int) -> int:
            if value % 2 == 0:
                raise ValueError(f"window must be odd so the sub-window is centred, got {value}")
            return value

        @field_validator("groups")
        @classmethod
        def _partition(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
            if value is None:
                return None
            letters = "".join(value)
            bad = sorted({c for c in letters if c not in STANDARD})
            if bad or any(not g for g in value):
                raise ValueError(f"groups must be non-empty strings of {STANDARD}; bad letters: {bad}")
            twice = sorted({c for c in letters if letters.count(c) > 1})
            missing = sorted(set(STANDARD) - set(letters))
            if twice or missing:
                raise ValueError(
                    f"groups must hold each standard letter exactly once; "
                    f"repeated: {''.join(twice) or 'none'}, missing: {''.join(missing) or 'none'}"
                )
            return value

        @model_validator(mode="after")
        def _gap_fits(self) -> Self:
            if self.gaps > self.window - 2:
                raise ValueError(
                    f"gaps {self.gaps} cannot fit in a sub-window of {self.window} residues "
                    f"(largest possible gap: {self.window - 2})"
                )
            return self

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        groups = config.groups if config.groups is not None else tuple(STANDARD)
        self.n_groups = len(groups)
        # residue code (0-19 standard, 20 unknown, 21 padding) -> group index, -1 = not counted
        lut = torch.full((N_SYMBOLS,), -1, dtype=torch.int64)
        for g, letters in enumerate(groups):
            for letter in letters:
                lut[STANDARD.index(letter)] = g
        self._lut = lut

    @property
    def dim(self) -> int:
        return self.n_groups * self.n_groups * (self.config.gaps + 1)

    def encode(self, table: SiteTable) -> torch.Tensor:
        idx = torch.from_numpy(encode_windows(table.windows).astype(np.int64))  # [N, W]
        n, width = idx.shape
        group = self._lut[idx]  # [N, W], -1 at padding and non-standard letters
        n_pairs = self.n_groups * self.n_groups
        half = self.config.window // 2
        blocks = []
        for k in range(self.config.gaps + 1):
            span = k + 1
            # pair code of the pair starting at j: group[j] * G + group[j + span], -1 if not counted;
            # stored at padded[:, half + j] so that every shifted slice below stays in range
            padded = torch.full((n, width + 2 * half), -1, dtype=torch.int64)
            if width > span:
                first, second = group[:, :-span], group[:, span:]
                code = torch.where((first >= 0) & (second >= 0), first * self.n_groups + second, -1)
                padded[:, half : half + width - span] = code
            counts = torch.zeros((n, width, n_pairs), dtype=torch.float32)
            # the pair starting at j = i + o lies in [i - h, i + h] iff -h <= o <= h - span:
            # one vectorised scatter per offset (a handful), never a loop over windows
            for offset in range(-half, half - span + 1):
                shifted = padded[:, half + offset : half + offset + width]  # code of pair at i + offset
                counted = (shifted >= 0).unsqueeze(-1).to(torch.float32)
                counts.scatter_add_(-1, shifted.clamp(min=0).unsqueeze(-1), counted)
            blocks.append(counts / counts.sum(dim=-1, keepdim=True).clamp(min=1.0))
        out = torch.cat(blocks, dim=-1)
        return out * (idx != PAD_INDEX).unsqueeze(-1)
