import importlib.metadata as md

import pytest

from ptmkit.errors import RegistryError
from ptmkit.hooks import build_registry


def _eps(*values: str) -> list[md.EntryPoint]:
    builtin = [ep for ep in md.entry_points(group="ptmkit") if ep.name == "builtin"]
    return builtin + [md.EntryPoint(v.split(":")[1], v, "ptmkit") for v in values]


def test_builtins_come_through_the_entry_point():
    registry = build_registry()
    specs = {(s.kind, s.name): s for s in registry}
    for key in [
        ("feature", "onehot"),
        ("feature", "blosum62"),
        ("fusion", "concat"),
        ("backbone", "bilstm"),
        ("head", "mlp_head"),
        ("loss", "focal"),
        ("reader", "csv_sites"),
    ]:
        assert key in specs, key
        assert specs[key].provider == "ptmkit"
    assert not registry.broken


def test_unknown_name_suggests_close_matches_and_lists_available():
    registry = build_registry()
    with pytest.raises(RegistryError) as err:
        registry.get("feature", "blosum26")
    text = str(err.value)
    assert "'blosum62'" in text and "Did you mean" in text
    assert "Available:" in text and "onehot" in text
    assert "installed" in text


def test_module_kinds_share_one_namespace():
    registry = build_registry()
    assert registry.get("module", "bilstm").kind == "backbone"
    assert registry.get("module", "concat").kind == "fusion"
    assert registry.get("module", "mlp_head").kind == "head"


def test_duplicate_name_is_refused_naming_both_providers_and_others_survive():
    registry = build_registry(_eps("_fixture_plugins:DuplicateOneHot", "_fixture_plugins:Good"))
    (problem,) = [p for d, p in registry.broken.items() if "DuplicateOneHot" in d]
    assert "duplicate feature plugin 'onehot'" in problem
    assert "ptmkit" in problem and "DuplicateOneHot" in problem
    # the failing package's other registrations are rolled back, the good one is there
    with pytest.raises(RegistryError):
        registry.get("feature", "constant")
    assert registry.get("feature", "constant3").provider == "Good"
    assert registry.get("feature", "onehot").provider == "ptmkit"


def test_raising_plugin_is_reported_and_does_not_break_others():
    registry = build_registry(_eps("_fixture_plugins:Raising", "_fixture_plugins:Good"))
    assert "boom while registering" in registry.broken["Raising"]
    assert registry.get("feature", "constant3")
    with pytest.raises(RegistryError, match="failed to load"):
        registry.get("feature", "constant2")


def test_unimportable_entry_point_is_reported():
    registry = build_registry(_eps("_no_such_module_xyz:Thing"))
    assert "failed to load entry point" in registry.broken["Thing"]
    assert registry.get("feature", "onehot")


def test_incompatible_api_version_is_refused():
    registry = build_registry(_eps("_fixture_plugins:OldApi"))
    assert "plugin API 0" in registry.broken["OldApi"]
    with pytest.raises(RegistryError):
        registry.get("feature", "constant4")


def test_register_function_without_hookimpl_is_reported():
    registry = build_registry(_eps("_fixture_plugins:NoHookimpl"))
    assert "@ptmkit.hooks.hookimpl" in registry.broken["NoHookimpl"]
