"""Plugin modules used by test_registry through real entry points (not a pip-installed package)."""

from ptmkit.hooks import hookimpl
from ptmkit.plugin_api import Feature, GraphModule
from ptmkit.registry import Registrar


class Constant(Feature):
    """A feature that is one constant per residue."""

    dim = 1

    def encode(self, table):  # noqa: ANN001, ANN201
        import torch

        return torch.ones(len(table), table.width, 1)


class DuplicateOneHot:
    @staticmethod
    @hookimpl
    def ptmkit_register(registry: Registrar) -> None:
        registry.feature("constant", Constant)
        registry.feature("onehot", Constant)  # clashes with the built-in


class Raising:
    @staticmethod
    @hookimpl
    def ptmkit_register(registry: Registrar) -> None:
        registry.feature("constant2", Constant)
        raise RuntimeError("boom while registering")


class Good:
    @staticmethod
    @hookimpl
    def ptmkit_register(registry: Registrar) -> None:
        registry.feature("constant3", Constant)


class OldApi:
    PTMKIT_API_VERSION = 0

    @staticmethod
    @hookimpl
    def ptmkit_register(registry: Registrar) -> None:
        registry.feature("constant4", Constant)


class NoHookimpl:
    @staticmethod
    def ptmkit_register(registry: Registrar) -> None:  # forgot @hookimpl
        registry.feature("constant5", Constant)


class LegacyHead(GraphModule):
    """A head written for plugin API 1, before ``Head`` existed."""


class Api1:
    """A package built for plugin API 1: still loads; its GraphModule head is deprecated, not refused."""

    PTMKIT_API_VERSION = 1

    @staticmethod
    @hookimpl
    def ptmkit_register(registry: Registrar) -> None:
        registry.feature("constant_api1", Constant)
        registry.head("legacy_head_api1", LegacyHead)
