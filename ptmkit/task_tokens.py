"""Task tokens: per task, cluster centres of a feature's vectors at the positive training sites.

MTPrompt-PTM starts each task's soft prompt from such centres: k-means (``length`` clusters)
over the language model's embeddings of the task's positive sites. ``ptmkit task-tokens RECIPE
--feature NAME`` computes them from the recipe's own data and training split. The feature is
any per-residue feature the recipe declares (ESM-2 for MTPrompt-PTM), read at each site's centre
residue. The result is a safetensors file holding ``task_tokens`` ``[tasks, length, dim]`` in the
recipe's task order, which ``esm2_encoder``'s ``prompts: {init: file}`` reads. Only training rows
are used, so neither validation nor test sites shape the prompts. A task with fewer positives
than ``length`` repeats its positives' vectors, with a warning.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import prepare_data
from .errors import PtmkitError
from .recipe import Recipe


@dataclass
class TaskTokens:
    tokens: np.ndarray  # float32 [tasks, length, dim]
    tasks: list[str]
    positives: dict[str, int]  # training positives each task's centres were computed from


def compute(
    recipe: Recipe, feature_name: str, length: int, *, data_root: Path, seed: int = 0, progress: bool = False
) -> TaskTokens:
    """Centres of ``feature_name``'s vectors at each task's positive training sites."""
    from sklearn.cluster import KMeans

    if feature_name not in recipe.features:
        have = ", ".join(recipe.features)
        raise PtmkitError(f"--feature {feature_name!r}: the recipe declares no such feature (it has {have})")
    feature = recipe.features[feature_name].build()
    table, _ = prepare_data(recipe, data_root)
    train = table.split("train")
    feature.fit(train)
    if not len(train):
        raise PtmkitError("the recipe's data has no training rows to compute task tokens from")
    names = list(recipe.tasks) or [str(train.frame["task"].iat[0])]
    out = []
    positives: dict[str, int] = {}
    for name in names:
        rows = train.subset((train.frame["task"].to_numpy() == name) & (train.labels == 1))
        if not len(rows):
            raise PtmkitError(f"task {name}: no positive training sites to compute task tokens from")
        encoded = feature.encode(rows)
        vectors = encoded[:, encoded.shape[1] // 2].numpy().astype(np.float64)
        positives[name] = len(vectors)
        if len(vectors) < length:
            warnings.warn(
                f"task {name}: {len(vectors)} positive training sites for {length} task tokens; "
                "their vectors are repeated",
                stacklevel=2,
            )
            centres = vectors[np.arange(length) % len(vectors)]
        else:
            km = KMeans(n_clusters=length, n_init=1, random_state=seed).fit(vectors)
            centres = km.cluster_centers_
        out.append(centres.astype(np.float32))
    return TaskTokens(np.stack(out), names, positives)


def save(tokens: TaskTokens, path: Path, *, recipe: Recipe, feature: str) -> Path:
    """``tokens`` as safetensors (``task_tokens``; metadata: tasks, feature, recipe digest)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "tasks": json.dumps(tokens.tasks),
        "positives": json.dumps(tokens.positives),
        "feature": feature,
        "recipe_digest": recipe.digest(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"task_tokens": torch.from_numpy(tokens.tokens)}, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash leaves the old file or none
    return path
