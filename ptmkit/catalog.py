"""Dataset presets: named benchmark sets (``uniptms:H1``) that dataset plugins provide.

The core knows no dataset. A dataset plugin registers a :class:`Collection` (kind ``dataset``)
whose name is the prefix of its catalogue names; each :class:`Dataset` is a reader preset (the
reader, its config, the target residues and window) plus what is known about the published
files (sha256, counts, defects) and the numbers papers report on them. ``fetch``, recipes
(``data.source: uniptms:H1``), ``evaluate`` and the data check all look presets up here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .errors import PtmkitError
from .plugin_api import PluginConfig


@dataclass(frozen=True)
class Metrics:
    """An independent-test result a paper reports."""

    mcc: float
    auc: float
    ap: float


@dataclass(frozen=True)
class Dataset:
    """One preset; file paths are relative to ``<data_root>/<collection>/``."""

    collection: str
    id: str
    ptm: str
    residues: str
    window: int
    reader: str
    #: the reader's own config (files relative to the collection folder)
    config: dict[str, object]
    #: relative path -> sha256 of the published file
    files: dict[str, str]
    #: split -> (positives, negatives) as read from the files with ``config``
    counts: dict[str, tuple[int, int]]
    #: split -> (positives, negatives) as the paper reports them
    paper_counts: dict[str, tuple[int, int]]
    #: model name -> the paper's independent-test result
    reference: dict[str, Metrics] = field(default_factory=dict)
    #: the best other published tool and its MCC, as the paper reports
    best_tool: tuple[str, float] | None = None
    defects: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.collection}:{self.id}"

    def paper(self) -> dict[str, object]:
        """The paper's numbers as plain data (for DatasetInfo and reports)."""
        out: dict[str, object] = {
            "counts": {s: {"pos": p, "neg": n} for s, (p, n) in self.paper_counts.items()},
            "reference": {k: vars(m) for k, m in self.reference.items()},
        }
        if self.best_tool:
            out["best_tool"] = {"name": self.best_tool[0], "mcc": self.best_tool[1]}
        return out


class Collection:
    """What a dataset plugin registers: a named collection of presets.

    ``name`` is the catalogue prefix and the folder under the data root; ``base_url`` where the
    published files can be downloaded (``<base_url><relative path>``, None: nowhere);
    ``unavailable`` names sets of the paper that cannot be fetched, with the reason.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    name: ClassVar[str] = ""
    base_url: ClassVar[str | None] = None
    datasets: ClassVar[tuple[Dataset, ...]] = ()
    unavailable: ClassVar[dict[str, str]] = {}


def collections() -> dict[str, type[Collection]]:
    """Registered collections by name (the ``dataset`` plugins)."""
    from .hooks import get_registry

    registry = get_registry()
    return {name: registry.get("dataset", name).obj for name in registry.names("dataset")}


def is_catalog_name(source: object) -> bool:
    """True for ``<collection>`` / ``<collection>:<id>`` strings of a registered collection
    (case-insensitive)."""
    if not isinstance(source, str) or not source.strip():
        return False
    head = source.split(":", 1)[0].strip().lower()
    return head in collections()


def _collection(name: str) -> type[Collection]:
    found = collections()
    key = name.strip().lower()
    if key not in found:
        have = ", ".join(repr(k) for k in sorted(found)) or "none (no dataset plugin installed)"
        raise PtmkitError(f"unknown dataset collection {name.strip()!r}; registered collections: {have}")
    return found[key]


def get(name: str) -> Dataset:
    """Dataset by ``<collection>:<id>`` (case-insensitive); a clear error otherwise."""
    text = name.strip()
    if ":" not in text and text.lower() in collections():
        coll = _collection(text)
        listed = ", ".join(d.name for d in coll.datasets)
        raise PtmkitError(f"{text!r} is a dataset collection; name one of its datasets: {listed}")
    if ":" not in text:
        # a bare id is unambiguous while exactly one installed collection holds it
        holders = [c for c in collections().values() if text.upper() in {d.id.upper() for d in c.datasets}]
        if len(holders) == 1:
            text = f"{holders[0].name}:{text}"
        else:
            which = f"; {', '.join(c.name for c in holders)} all hold it" if holders else ""
            raise PtmkitError(f"dataset {name!r}: give <collection>:<id>, e.g. uniptms:H1{which}")
    prefix, key = (part.strip() for part in text.split(":", 1))
    coll = _collection(prefix)
    entries = {d.id.upper(): d for d in coll.datasets}
    if key.upper() in entries:
        return entries[key.upper()]
    unavailable = {k.upper(): v for k, v in coll.unavailable.items()}
    if key.upper() in unavailable:
        raise PtmkitError(f"{coll.name}:{key.upper()} is not available: {unavailable[key.upper()]}")
    raise PtmkitError(f"unknown dataset {name!r}; available: " + ", ".join(d.name for d in coll.datasets))


def select(name: str) -> list[Dataset]:
    """``<collection>`` -> every dataset of it; ``<collection>:<id>`` -> that one."""
    if ":" not in name and name.strip().lower() in collections():
        return list(_collection(name).datasets)
    return [get(name)]


def collection_of(entry: Dataset) -> type[Collection]:
    """The collection a preset belongs to (for its base URL and its sibling datasets)."""
    return _collection(entry.collection)
