"""Residue identities as integer ids, for graph nodes that embed residues themselves."""

from __future__ import annotations

import torch

from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from ._common import codes


@register.feature("residue_ids")
class ResidueIds(Feature):
    """Each position's alphabet index as one value, D=1: 0-19 the standard residues in
    ``ACDEFGHIKLMNPQRSTVWY`` order, 20 any other letter, 21 padding (``ptmkit.alphabet``).

    Not an encoding to learn from directly: the input of nodes that own an embedding, such as a
    language model fine-tuned inside the graph (``ptm_mamba_encoder``). The ids are exact in the
    float tensor every feature returns.
    """

    class Config(PluginConfig):
        pass

    @property
    def dim(self) -> int:
        return 1

    def encode(self, table: SiteTable) -> torch.Tensor:
        return codes(table).to(torch.float32).unsqueeze(-1)
