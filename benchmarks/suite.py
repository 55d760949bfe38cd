"""A benchmark suite file: which recipes, datasets, seeds and training budget, checked up front.

The suite is data (YAML, safe-loaded, validated by pydantic), so what a committed table was
produced with is one file in the repository, and every recipe x dataset combination is
validated before the first minute of training is spent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ptmkit import recipe as recipes
from ptmkit import safeyaml
from ptmkit.catalog import get as catalog_entry
from ptmkit.errors import PtmkitError, RecipeError

from .floor import MODELS as FLOOR_MODELS

DATASETS = ("T1", "T2", "H1", "K1", "K2", "C1", "C2")


class Suite(BaseModel):
    """The suite schema (see benchmarks/lite.yaml for a documented example)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="suite name: MLflow parent run and results file name")
    experiment: str = Field("ptmkit-bench", description="MLflow experiment of the parent and its runs")
    datasets: list[Literal[DATASETS]] = Field(list(DATASETS), min_length=1)  # type: ignore[valid-type]
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="train.seed of each repeat")
    recipes: dict[str, str] = Field(min_length=1, description="table label -> recipe file (relative)")
    set: list[str] = Field(default_factory=list, description="overrides for every recipe (budget)")
    dataset_set: dict[str, list[str]] = Field(
        default_factory=dict, description="extra overrides per dataset id"
    )
    recipe_set: dict[str, list[str]] = Field(
        default_factory=dict, description="extra overrides per recipe label (its budget), after dataset_set"
    )
    recipe_dataset_set: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict, description="extra overrides per recipe label and dataset id, applied last"
    )
    workers: int = Field(
        1, ge=1, description="parallel worker processes; each gets cores // workers torch threads"
    )
    floor: list[str] = Field(default_factory=lambda: list(FLOOR_MODELS), description="sklearn floor")
    saved_splits: list[str] = Field(
        default_factory=list, description="datasets whose drawn splits are saved under splits/ and reused"
    )
    leak_free: list[str] = Field(
        default_factory=list,
        description="datasets also scored without test windows that occur in train/valid",
    )

    @field_validator("floor")
    @classmethod
    def _known_floor(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in FLOOR_MODELS]
        if unknown:
            raise ValueError(f"unknown floor model(s) {unknown}; available: {', '.join(FLOOR_MODELS)}")
        return value

    @model_validator(mode="after")
    def _known_labels(self) -> Suite:
        for key in ("recipe_set", "recipe_dataset_set"):
            unknown = [label for label in getattr(self, key) if label not in self.recipes]
            if unknown:
                raise ValueError(
                    f"{key}: unknown recipe label(s) {unknown}; the suite's: {', '.join(self.recipes)}"
                )
        for label, per in self.recipe_dataset_set.items():
            unknown = [d for d in per if d not in DATASETS]
            if unknown:
                raise ValueError(
                    f"recipe_dataset_set.{label}: unknown dataset id(s) {unknown}; "
                    f"available: {', '.join(DATASETS)}"
                )
        return self

    @field_validator("dataset_set", "saved_splits", "leak_free")
    @classmethod
    def _known_ids(cls, value: dict | list) -> dict | list:
        unknown = [d for d in value if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset id(s) {unknown}; available: {', '.join(DATASETS)}")
        return value


class LoadedSuite:
    """A validated suite plus where it lives (recipe paths and split files are relative to it)."""

    def __init__(self, suite: Suite, path: Path, text: str) -> None:
        self.suite = suite
        self.path = path
        self.text = text
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def splits_dir(self) -> Path:
        return self.path.parent / "splits"

    def split_file(self, dataset: str) -> Path | None:
        return self.splits_dir / f"{dataset}.tsv.gz" if dataset in self.suite.saved_splits else None

    def overrides(self, label: str, dataset: str, seed: int) -> list[str]:
        """Everything the suite sets on one run: data source, budget, seed, tracking."""
        s = self.suite
        out = [f"data.source=uniptms:{dataset}", *s.set, *s.dataset_set.get(dataset, [])]
        out += [*s.recipe_set.get(label, []), *s.recipe_dataset_set.get(label, {}).get(dataset, [])]
        split = self.split_file(dataset)
        if split is not None and split.exists():
            out.append(f"data.split.file={split.resolve()}")
        return out + [
            f"train.seed={seed}",
            f"tracking.experiment={s.experiment}",
            f"tracking.run_name={dataset}/{label}/seed{seed}",
            # JSON strings are YAML strings: a seed or label stays text, as tags must be
            f"tracking.tags.bench_suite={json.dumps(s.name)}",
            f"tracking.tags.bench_model={json.dumps(label)}",
            f"tracking.tags.bench_seed={json.dumps(str(seed))}",
        ]

    def budget_text(self) -> str:
        """Every override a suite applies besides data, seed and tracking, in words (reports, params)."""
        s = self.suite
        parts = [f"every recipe: `{' '.join(s.set) or '(recipe defaults)'}`"]
        parts += [f"{d}: `{' '.join(o)}`" for d, o in s.dataset_set.items()]
        parts += [f"{r}: `{' '.join(o)}`" for r, o in s.recipe_set.items()]
        parts += [
            f"{r} on {d}: `{' '.join(o)}`" for r, per in s.recipe_dataset_set.items() for d, o in per.items()
        ]
        return "; ".join(parts)

    def recipe(
        self, label: str, dataset: str, seed: int, uri: str | None = None, extra: list[str] | None = None
    ) -> recipes.Recipe:
        more = ([f"tracking.uri={uri}"] if uri else []) + list(extra or [])
        path = (self.path.parent / self.suite.recipes[label]).resolve()
        return recipes.load(path, self.overrides(label, dataset, seed) + more)

    def validate_all(self) -> None:
        """Load every recipe for every dataset (seed 0): any error surfaces before training."""
        for dataset in self.suite.datasets:
            catalog_entry(dataset)
            for label in self.suite.recipes:
                try:
                    self.recipe(label, dataset, self.suite.seeds[0])
                except RecipeError as exc:
                    raise PtmkitError(f"{self.path}: recipe {label!r} on {dataset}: {exc}") from None


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and validate a suite file; errors name the file and the offending key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PtmkitError(f"cannot read suite file {path}: {exc.strerror}") from None
    data = safeyaml.load(text, str(path))
    if not isinstance(data, dict):
        raise PtmkitError(f"{path}: a suite file is a mapping (name, recipes, datasets, ...)")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise PtmkitError(f"{path}: {problems}") from None
    for label, rel in suite.recipes.items():
        if not (path.parent / rel).is_file():
            raise PtmkitError(f"{path}: recipes.{label}: file {rel} not found next to the suite")
    return LoadedSuite(suite, path, text)
