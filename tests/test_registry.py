import csv
import importlib.metadata as md
import io
import warnings

import pytest
import torch
from pydantic import BaseModel

import ptmkit
from ptmkit.errors import RegistryError
from ptmkit.hooks import build_registry
from ptmkit.plugin_api import Feature, GraphModule, Head
from ptmkit.registry import Mark, Registrar, Registry, own_mark, register


def _eps(*values: str) -> list[md.EntryPoint]:
    builtin = [ep for ep in md.entry_points(group="ptmkit") if ep.name == "builtin"]
    return builtin + [md.EntryPoint(v.split(":")[1], v, "ptmkit") for v in values]


def _ep(module: str, name: str | None = None) -> md.EntryPoint:
    """An entry point naming a whole module (registered as distribution ``name or module``)."""
    return md.EntryPoint(name or module, module, "ptmkit")


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


# ---------------------------------------------------------------------------- decorators
def test_decorated_package_registers_its_marked_classes_in_submodules():
    registry = build_registry([*_eps(), _ep("_fixture_decorated")])
    assert not registry.broken
    mine = {(s.kind, s.name): s for s in registry if s.provider == "_fixture_decorated"}
    assert set(mine) == {("feature", "deco_feature"), ("head", "deco_head"), ("loss", "deco_loss")}
    assert mine[("feature", "deco_feature")].aliases == ("deco_old",)
    assert mine[("head", "deco_head")].obj.default_loss == "deco_loss"
    # the imported built-in stays ptmkit's, the unmarked subclass is not registered
    assert registry.get("feature", "onehot").provider == "ptmkit"
    assert all(s.obj.__name__ != "Unmarked" for s in registry)


def test_builtins_are_registered_by_decorator_only():
    import ptmkit_plugins.builtin as builtin
    import ptmkit_plugins.features as features

    assert not hasattr(builtin, "ptmkit_register") and not hasattr(features, "register")
    assert builtin.PTMKIT_API_VERSION == ptmkit.API_VERSION
    assert own_mark(features.OneHot) == Mark("feature", "onehot")
    registry = build_registry()
    assert registry.get("dataset", "uniptms").provider == "ptmkit"
    assert issubclass(registry.get("head", "mlp_head").obj, Head)


def test_a_refused_class_rolls_back_its_whole_package():
    registry = build_registry([*_eps(), _ep("_fixture_bad_decorated")])
    problem = registry.broken["_fixture_bad_decorated"]
    assert problem.startswith(
        "registration failed: _fixture_bad_decorated ?: feature plugin 'deco_wrong_kind'"
    )
    assert "_fixture_bad_decorated.NotAFeature, which does not subclass ptmkit.api.Feature" in problem
    with pytest.raises(RegistryError):
        registry.get("feature", "deco_good_before_the_bad_one")
    assert registry.get("feature", "onehot")


def test_marking_twice_and_bad_names_are_refused_at_decoration():
    @register.feature("twice")
    class Twice(_Ones):
        pass

    with pytest.raises(TypeError, match="already marked as feature plugin 'twice'"):
        register.feature("again")(Twice)
    with pytest.raises(ValueError, match="unknown plugin kind 'model'"):
        register("model", "x")
    with pytest.raises(TypeError, match="must be a tuple, not the string 'old'"):
        register.feature("x", aliases="old")
    with pytest.raises(ValueError, match="repeat a name"):
        register.feature("x", aliases=("x",))


# ---------------------------------------------------------------------------- kind checks
class _Ones(Feature):
    """A constant feature."""

    dim = 1

    def encode(self, table):  # noqa: ANN001, ANN201
        return torch.ones(len(table), table.width, 1)


class _LegacyHead(GraphModule):
    """A head written for plugin API 1 (before Head existed)."""


class _LooseConfig(_Ones):
    class Config(BaseModel):  # not a PluginConfig: unknown recipe keys would pass silently
        x: int = 1


class _HalfStateful(_Ones):
    def export_state(self) -> dict:
        return {}


def test_registrar_checks_the_kinds_base_class():
    registrar = Registrar(Registry(), "ptmkit-mine", "0.2.0")
    with pytest.raises(RegistryError) as err:
        registrar.fusion("ones", _Ones)
    assert str(err.value) == (
        "ptmkit-mine 0.2.0: fusion plugin 'ones' is test_registry._Ones, which does not subclass "
        "ptmkit.api.GraphModule; every fusion plugin must"
    )
    with pytest.raises(RegistryError, match="loss plugin 'l' is test_registry._Ones, .* ptmkit.api.Loss"):
        registrar.loss("l", _Ones)
    with pytest.raises(RegistryError, match="reader plugin 'r' is <function"):
        registrar.reader("r", lambda: None)
    with pytest.raises(RegistryError, match="does not subclass ptmkit.api.Collection"):
        registrar.dataset("d", _Ones)
    with pytest.raises(RegistryError, match="Config .* does not derive from ptmkit.api.PluginConfig"):
        registrar.feature("loose", _LooseConfig)
    with pytest.raises(RegistryError, match="is stateful but does not implement import_state"):
        registrar.feature("half", _HalfStateful)
    assert not registrar.added


def test_a_graph_module_head_is_refused_for_api_2_and_deprecated_for_api_1():
    with pytest.raises(
        RegistryError, match=r"ptmkit.api.Head; every head plugin must \(packages built for plugin API 1 may"
    ):
        Registrar(Registry(), "new-dist", "1.0").head("legacy", _LegacyHead)
    registry = Registry()
    with pytest.warns(DeprecationWarning, match="subclasses GraphModule but not ptmkit.api.Head; accepted"):
        Registrar(registry, "old-dist", "1.0", api=1).head("legacy", _LegacyHead)
    assert registry.get("module", "legacy").obj is _LegacyHead


def test_api_1_packages_still_load_and_unknown_ones_are_refused():
    with pytest.warns(DeprecationWarning, match="head plugin 'legacy_head_api1'"):
        registry = build_registry(_eps("_fixture_plugins:Api1"))
    assert registry.get("feature", "constant_api1").provider == "Api1"
    assert registry.get("head", "legacy_head_api1").provider == "Api1"
    assert (
        "plugin API 0, but this ptmkit provides API 2 (and still loads API 1)"
        in build_registry(_eps("_fixture_plugins:OldApi")).broken["OldApi"]
    )


# ---------------------------------------------------------------------------- aliases and patterns
def test_alias_returns_the_renamed_plugin_and_warns_once():
    registry = Registry()
    Registrar(registry, "ptmkit-mine", "0.2.0").feature("ones", _Ones, aliases=("constant_ones", "one"))
    with pytest.warns(FutureWarning) as caught:
        assert registry.get("feature", "constant_ones").name == "ones"
    assert str(caught[0].message) == (
        "feature plugin 'constant_ones' is deprecated, renamed to 'ones' (ptmkit-mine 0.2.0); "
        "write 'ones' in recipes"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.get("feature", "constant_ones").obj is _Ones  # once per registry
        assert registry.get("feature", "ones").obj is _Ones
    assert registry.names("feature") == ["ones"]  # listings show current names only
    with pytest.raises(RegistryError, match="Did you mean 'ones'"):
        registry.get("feature", "constant_onez")


def test_alias_shares_the_duplicate_check_naming_both_providers():
    registry = build_registry()
    with pytest.raises(RegistryError) as err:
        Registrar(registry, "ptmkit-mine", "0.2.0").feature("fresh", _Ones, aliases=("onehot",))
    assert str(err.value) == (
        "duplicate feature plugin 'onehot': registered by ptmkit 0.1.0 (as feature) and by "
        "ptmkit-mine 0.2.0 (alias of 'fresh')"
    )
    Registrar(registry, "ptmkit-a", "1.0").feature("a_new", _Ones, aliases=("a_old",))
    with pytest.raises(
        RegistryError, match="'a_old': registered by ptmkit-a 1.0 .as feature, alias of 'a_new'"
    ):
        Registrar(registry, "ptmkit-b", "2.0").feature("a_old", _Ones)
    # graph node kinds share one namespace for aliases too
    with pytest.raises(RegistryError, match="duplicate backbone plugin 'concat'"):
        Registrar(registry, "ptmkit-b", "2.0").backbone("mine", _LegacyHead, aliases=("concat",))


def test_rollback_removes_aliases():
    registry = Registry()
    registrar = Registrar(registry, "d", "1")
    registrar.feature("ones", _Ones, aliases=("uno",))
    registry.remove(registrar.added[0])
    with pytest.raises(RegistryError):
        registry.get("feature", "uno")


def test_names_filter_by_pattern():
    registry = build_registry()
    assert registry.names("feature", "esm*") == ["esm2"]
    assert registry.names("feature", "*T5") == ["prott5"]  # case-insensitive
    assert registry.names("fusion", "*_attention") == [
        "channel_attention",
        "cross_attention",
        "self_attention",
    ]
    assert registry.names("module", "mlp*") == ["mlp_head"]
    assert registry.names("loss", "nothing*") == []


def test_plugins_list_shows_aliases_and_filters(capsys):
    from ptmkit.cli import main

    assert main(["plugins", "list", "--kind", "feature", "esm*", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["kind"], r["name"], r["aliases"], r["distribution"]) for r in rows] == [
        ("feature", "esm2", "", "ptmkit")
    ]
    assert main(["plugins", "list", "--kind", "dataset", "--format", "csv"]) == 0
    assert "uniptms" in capsys.readouterr().out
