"""Decorator-style plugin modules that must be refused, each used by test_registry as one entry point."""

import torch

from ptmkit.api import Feature, GraphModule, register

PTMKIT_API_VERSION = 2


@register.feature("deco_good_before_the_bad_one")
class Fine(Feature):
    """Registered first, then rolled back when the next class is refused."""

    dim = 1

    def encode(self, table):  # noqa: ANN001, ANN201
        return torch.ones(len(table), table.width, 1)


@register.feature("deco_wrong_kind")
class NotAFeature(GraphModule):
    """A graph module registered as a feature."""
