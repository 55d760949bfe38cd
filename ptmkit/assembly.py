"""One assembly step: a validated recipe becomes its built parts, the same way everywhere.

``assemble(recipe)`` builds the used features, the model graph (checked, dims inferred) and
the losses bound to the graph's outputs, in that order (the order fixes the random initial
weights for a seed). ``ptmkit run``, package loading, ``validate``, sweeps, benchmarks and
tests all call it instead of wiring the parts themselves.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .featurize import build_features
from .graph import ModelGraph, used_features
from .objective import build_losses
from .plugin_api import Feature, Loss
from .recipe import Recipe, TrainSection
from .registry import Registry
from .sitetable import SiteTable

if TYPE_CHECKING:
    from .datasets import DatasetInfo


@dataclass
class Assembly:
    """A recipe's built parts: features (only those the output uses), graph, losses."""

    recipe: Recipe
    features: dict[str, Feature]
    graph: ModelGraph
    losses: list[tuple[float, Loss]]

    @property
    def train(self) -> TrainSection:
        return self.recipe.train

    @property
    def feature_dims(self) -> dict[str, int]:
        return {name: feature.dim for name, feature in self.features.items()}

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.graph.parameters())

    def read(self, data_root: Path) -> tuple[SiteTable, DatasetInfo]:
        """The recipe's data: read by its reader, residues filtered, split (``prepare_data``)."""
        from .datasets import prepare_data  # pandas/sklearn: not needed to score a package

        return prepare_data(self.recipe, data_root)


def assemble(
    recipe: Recipe, registry: Registry | None = None, *, losses: bool = True, warn_unused: bool = True
) -> Assembly:
    """Build ``recipe``'s features, graph and (unless ``losses=False``) losses.

    Raises GraphError/RecipeError located at the recipe line before any data is read.
    ``registry`` is the one the recipe was parsed with (default: the process registry).
    """
    del registry  # the recipe's plugin uses already hold their resolved specs
    features = build_features(recipe, used_features(recipe))
    with warnings.catch_warnings():
        if not warn_unused:
            warnings.filterwarnings("ignore", message="features .* are declared but unused")
        graph = ModelGraph(recipe, {n: f.dim for n, f in features.items()})
    bound = build_losses(recipe, graph) if losses else []
    return Assembly(recipe, features, graph, bound)
