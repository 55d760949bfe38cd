"""The package as ptmkit sees it: its hook, its API version, and its recipe (no data needed)."""

import importlib.metadata as md
from pathlib import Path

import ptmkit
import torch
from ptmkit import recipe as recipes
from ptmkit.featurize import build_features, encode_all, padding_mask
from ptmkit.graph import ModelGraph
from ptmkit.hooks import build_registry
from ptmkit.objective import build_losses
from ptmkit.registry import Registrar, Registry

import ptmkit_plugin_example

RECIPE = Path(__file__).parents[1] / "recipes" / "h1-cksaap.yaml"


def registry_with_this_package() -> Registry:
    """ptmkit's built-ins plus this package's entry point, whether or not it is pip-installed."""
    builtin = [ep for ep in md.entry_points(group="ptmkit") if ep.name == "builtin"]
    mine = md.EntryPoint("example", "ptmkit_plugin_example", "ptmkit")
    return build_registry([*builtin, mine])


def test_hook_registers_every_plugin_under_this_distribution():
    registry = Registry()
    ptmkit_plugin_example.ptmkit_register(registry=Registrar(registry, "ptmkit-plugin-example", "0.1.0"))
    found = {(s.kind, s.name): s for s in registry}
    assert set(found) == {("feature", "cksaap"), ("fusion", "gated_sum"), ("loss", "label_smoothing_bce")}
    assert {s.provider for s in found.values()} == {"ptmkit-plugin-example"}


def test_built_for_this_ptmkit_plugin_api():
    assert ptmkit_plugin_example.PTMKIT_API_VERSION == ptmkit.API_VERSION
    registry = registry_with_this_package()
    assert not registry.broken
    assert registry.get("feature", "cksaap").obj is ptmkit_plugin_example.CKSAAP


def test_example_recipe_validates_and_trains_one_step(table_of):
    recipe = recipes.load(RECIPE, registry=registry_with_this_package())
    features = build_features(recipe, list(recipe.features))
    model = ModelGraph(recipe, {n: f.dim for n, f in features.items()})
    assert model.dims["pairs"] == 75 and model.dims["fused.gates"] == 2
    ((weight, loss),) = build_losses(recipe, model)
    table = table_of(["--AKHDEFG", "MKLAHRRST", "PQRSHTV--", "ACDEHGHIK"])
    tensors = encode_all(features, table, progress=False)
    loss.start_epoch(1, recipe.train.epochs)
    outputs = model(tensors, padding_mask(table))
    value = weight * loss(outputs, torch.tensor(table.labels, dtype=torch.float32))
    value.backward()
    assert torch.isfinite(value)
