"""The package as ptmkit sees it: its registrations, its API version, and its recipe (no data needed)."""

from pathlib import Path

import ptmkit
import torch
from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.inference import encode
from ptmkit.registry import Registry
from ptmkit.testing import registry_with

import ptmkit_plugin_example

RECIPE = Path(__file__).parents[1] / "recipes" / "h1-cksaap.yaml"


def registry_with_this_package() -> Registry:
    """ptmkit's built-ins plus this package's entry point, whether or not it is pip-installed."""
    return registry_with("ptmkit_plugin_example", "ptmkit-plugin-example")


def test_decorated_plugins_register_under_this_distribution():
    registry = registry_with_this_package()
    found = {(s.kind, s.name): s for s in registry if s.provider == "ptmkit-plugin-example"}
    assert set(found) == {("feature", "cksaap"), ("fusion", "gated_sum"), ("loss", "label_smoothing_bce")}


def test_built_for_this_ptmkit_plugin_api():
    assert ptmkit_plugin_example.PTMKIT_API_VERSION == ptmkit.API_VERSION
    registry = registry_with_this_package()
    assert not registry.broken
    assert registry.get("feature", "cksaap").obj is ptmkit_plugin_example.CKSAAP


def test_example_recipe_validates_and_trains_one_step(table_of):
    recipe = recipes.load(RECIPE, registry=registry_with_this_package())
    built = assemble(recipe)  # features, graph and losses, as `ptmkit run` builds them
    model = built.graph
    assert model.dims["pairs"] == 75 and model.dims["fused.gates"] == 2
    ((weight, loss),) = built.losses
    table = table_of(["--AKHDEFG", "MKLAHRRST", "PQRSHTV--", "ACDEHGHIK"])
    rows = encode(built.features, table)
    loss.start_epoch(1, recipe.train.epochs)
    outputs = model(rows.features, rows.mask)
    value = weight * loss(outputs, rows.labels)
    value.backward()
    assert torch.isfinite(value)
