"""``ptmkit cache fill``: embed a FASTA's proteins into the on-disk embedding cache before
training or predicting, so neither waits on a language model; under torchrun the ranks share
the proteins (length-balanced) and write into one shared cache (atomic per entry)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import distributed
from .errors import PtmkitError
from .plugin_api import Feature
from .predict import Protein, read_fasta


@dataclass
class FillReport:
    """What a fill did, over all ranks."""

    proteins: int
    sequences: int
    #: per feature: (embedded now, already in the cache)
    filled: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: features that keep no cache (nothing to fill)
    uncached: list[str] = field(default_factory=list)
    seconds: float = 0.0
    world_size: int = 1

    def render(self) -> str:
        ranks = f" by {self.world_size} processes" if self.world_size > 1 else ""
        lines = [
            f"{self.proteins} proteins ({self.sequences} distinct sequences){ranks}, {self.seconds:.1f} s"
        ]
        for name, (computed, cached) in self.filled.items():
            lines.append(f"  {name}: {computed} embedded now, {cached} already cached")
        if self.uncached:
            lines.append(f"  keep no cache (nothing to fill): {', '.join(self.uncached)}")
        return "\n".join(lines)


def features_of(source: str, *, tracking_uri: str | None = None, device: str = "cpu") -> dict[str, Feature]:
    """The features of a recipe file (every declared one) or of a packaged model."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        from . import recipe as recipes
        from .featurize import build_features

        recipe = recipes.load(path)
        return build_features(recipe, list(recipe.features))
    from .model_store import load_model

    return load_model(source, tracking_uri=tracking_uri, device=device).features


def fill(features: dict[str, Feature], fasta: Path, *, progress: bool = True) -> FillReport:
    """Embed every distinct sequence of ``fasta`` with every caching feature (this rank's
    length-balanced share of them under torchrun); counts summed over ranks."""
    started = time.perf_counter()
    world = distributed.world()
    proteins = []
    for item in read_fasta(fasta):
        if isinstance(item, Protein):
            proteins.append(item)
        elif world.main:
            warnings.warn(item.message(), UserWarning, stacklevel=2)
    if not proteins:
        raise PtmkitError(f"{fasta}: no protein to embed")
    distinct = list(dict.fromkeys(p.sequence for p in proteins))
    mine = [distinct[i] for i in distributed.my_share([len(s) for s in distinct], world)]
    report = FillReport(len(proteins), len(distinct), world_size=world.size)
    for name, feature in features.items():
        if not progress or not world.main:
            _quiet(feature)
        got = feature.fill_cache(mine)
        if got is None:
            report.uncached.append(name)
            continue
        computed, cached = world.sum(got)
        report.filled[name] = (int(computed), int(cached))
    world.barrier()  # every rank's entries are written before rank 0 reports
    report.seconds = time.perf_counter() - started
    return report


def _quiet(feature: Feature) -> None:
    """No progress bar from a feature that draws one (language models: ``progress``)."""
    if hasattr(feature.config, "progress"):
        feature.config = feature.config.model_copy(update={"progress": False})
