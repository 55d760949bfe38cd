"""Turn a SiteTable into the named tensors the model graph reads, each feature computed once."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .alphabet import PAD
from .errors import PtmkitError
from .plugin_api import Feature
from .recipe import Recipe
from .sitetable import SiteTable


def build_features(recipe: Recipe, names: list[str]) -> dict[str, Feature]:
    return {name: recipe.features[name].build() for name in names}


def padding_mask(table: SiteTable) -> torch.Tensor:
    """Bool [N, W]: True at real residues, False at ``-`` padding."""
    if not len(table):
        return torch.zeros((0, 0), dtype=torch.bool)
    joined = "".join(table.windows).encode("ascii")
    flat = torch.frombuffer(bytearray(joined), dtype=torch.uint8)
    return (flat != ord(PAD)).reshape(len(table), table.width)


def encode_all(
    features: dict[str, Feature], table: SiteTable, *, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Encode every row of ``table`` with every feature; checks each declared dim."""
    out: dict[str, torch.Tensor] = {}
    bar = tqdm(features.items(), desc="features", unit="feature", disable=not progress, leave=False)
    for name, feature in bar:
        bar.set_postfix_str(name)
        tensor = feature.encode(table)
        expected = (len(table), table.width, feature.dim)
        if tuple(tensor.shape) != expected:
            raise PtmkitError(
                f"feature {name!r} returned shape {tuple(tensor.shape)}, expected {expected} "
                "(rows, window, declared dim)"
            )
        out[name] = tensor.float()
    return out
