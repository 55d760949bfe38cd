"""One-hot encoding of the 20 standard residues."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ptmkit.alphabet import STANDARD, UNKNOWN_INDEX
from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from ._common import codes, empty_lut, lookup


@register.feature("onehot")
class OneHot(Feature):
    """One-hot residue identity, D=20 (columns in ``STANDARD`` order ``ACDEFGHIKLMNPQRSTVWY``).

    The baseline every other encoding is compared with: no prior knowledge, just identity.
    Non-standard letters (BZJUOX) are all zeros or, with ``unknown: uniform``, 1/20 in every
    column ("could be any residue"); padding is always zeros.
    """

    class Config(PluginConfig):
        unknown: Literal["zeros", "uniform"] = Field(
            "zeros",
            description="Encoding of non-standard letters: all zeros, or 1/20 in every column.",
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        lut = empty_lut(len(STANDARD))
        lut[: len(STANDARD)] = np.eye(len(STANDARD))
        if config.unknown == "uniform":
            lut[UNKNOWN_INDEX] = 1.0 / len(STANDARD)
        self._lut = lut

    @property
    def dim(self) -> int:
        return len(STANDARD)

    def encode(self, table: SiteTable) -> torch.Tensor:
        return lookup(self._lut, codes(table))
