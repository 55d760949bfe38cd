"""A decorator-style plugin package used by test_registry through a real entry point.

It registers what it marks here and in the submodules it imports (``nodes`` and, through it,
``nodes.deep``), under its own distribution; a subclass of a marked class carries no mark of its
own, and a built-in class imported here stays ptmkit's.
"""

import torch
from ptmkit_plugins.features import OneHot  # noqa: F401 - marked by ptmkit, not ours to register

from ptmkit.api import Feature, register

from . import nodes  # noqa: F401 - imported for its plugins

PTMKIT_API_VERSION = 2


@register.feature("deco_feature", aliases=("deco_old",))
class DecoFeature(Feature):
    """A constant feature registered by decorator."""

    dim = 1

    def encode(self, table):  # noqa: ANN001, ANN201
        return torch.ones(len(table), table.width, 1)


class Unmarked(DecoFeature):
    """Inherits DecoFeature's mark but carries none of its own: never registered."""
