"""The public plugin API: everything a plugin package imports from ptmkit, in one module.

::

    from ptmkit.api import Feature, PluginConfig, SiteTable, encode_windows, register

    PTMKIT_API_VERSION = 2


    @register.feature("hydrophobic", aliases=("hydro",))
    class Hydrophobic(Feature):
        class Config(PluginConfig): ...

Names here are the stable surface covered by ``API_VERSION`` (see docs/plugins.md): a change
that breaks a plugin written against them bumps it. Other ptmkit modules may change between
releases. ``ptmkit.testing`` holds the shared checks for a plugin's own tests.
"""

from __future__ import annotations

from . import API_VERSION, SUPPORTED_API_VERSIONS
from .alphabet import (
    ALLOWED,
    N_SYMBOLS,
    NONSTANDARD,
    PAD,
    PAD_INDEX,
    PROTEIN_LETTERS,
    STANDARD,
    UNKNOWN_INDEX,
    encode_windows,
)
from .catalog import Collection, Dataset, Metrics
from .embcache import CacheWarning, EmbeddingCache, cache_root, sequence_key
from .errors import DataError, PtmkitError, RegistryError
from .fasta import MisplacedMark, Record, iter_records, parse_marks
from .hooks import hookimpl
from .plugin_api import (
    Feature,
    GraphModule,
    Head,
    Loss,
    OddInt,
    PluginConfig,
    ReadContext,
    Reader,
    structure_only,
)
from .registry import KINDS, Registrar, register
from .sitetable import COLUMNS, SPLITS, SiteTable, window_at, windows_at

__all__ = [
    # versions
    "API_VERSION",
    "SUPPORTED_API_VERSIONS",
    # base classes, one per kind, and what they use
    "Reader",
    "ReadContext",
    "Feature",
    "GraphModule",
    "Head",
    "Loss",
    "Collection",
    "Dataset",
    "Metrics",
    "PluginConfig",
    "OddInt",
    "structure_only",
    # data
    "SiteTable",
    "window_at",
    "windows_at",
    "iter_records",
    "Record",
    "parse_marks",
    "MisplacedMark",
    "SPLITS",
    "COLUMNS",
    "STANDARD",
    "NONSTANDARD",
    "PROTEIN_LETTERS",
    "PAD",
    "ALLOWED",
    "UNKNOWN_INDEX",
    "PAD_INDEX",
    "N_SYMBOLS",
    "encode_windows",
    # errors
    "PtmkitError",
    "DataError",
    "RegistryError",
    # registration
    "KINDS",
    "register",
    "hookimpl",
    "Registrar",
    # services
    "EmbeddingCache",
    "CacheWarning",
    "cache_root",
    "sequence_key",
]
