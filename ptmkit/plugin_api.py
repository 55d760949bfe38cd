"""Base classes a plugin implements, one per kind. This is the public plugin API (version 1).

Every plugin class has a ``Config``: a pydantic model (types, defaults, one-line field docs)
that the recipe section of that plugin is validated against, so a wrong key or type fails
before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict
from torch import nn

from .sitetable import SiteTable


def _positive_odd(value: int) -> int:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"must be a positive odd number (for a same-length, centred output), got {value}")
    return value


#: A positive odd integer (kernel widths, sub-windows) for plugin configs: ``k: OddInt = 3``.
OddInt = Annotated[int, AfterValidator(_positive_odd)]


class PluginConfig(BaseModel):
    """Base of every plugin config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Reader(ABC):
    """Turns source files into a SiteTable. Strict: malformed input raises DataError(file, line)."""

    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    @abstractmethod
    def read(self, base: Path) -> SiteTable:
        """Read the configured files; relative paths are resolved against ``base``."""


class Feature(ABC):
    """Per-residue encoding of windows: ``encode(table)`` -> float32 tensor [N, W, dim].

    Padding positions (``-``) must encode to zeros so that they carry no signal.
    Bump ``version`` whenever the output for the same config changes: it is part of the cache key.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    version: ClassVar[str] = "1"

    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    @property
    @abstractmethod
    def dim(self) -> int:
        """Size D of the last axis."""

    def fit(self, train: SiteTable) -> None:  # noqa: B027 - optional hook
        """Learn state from training rows only (most features have none)."""

    @abstractmethod
    def encode(self, table: SiteTable) -> torch.Tensor:
        """Encode every row of ``table`` to [N, W, dim] float32."""

    def cache_key(self) -> str:
        """name + params + version: equal keys promise equal outputs."""
        payload = json.dumps(
            {
                "cls": f"{type(self).__module__}.{type(self).__qualname__}",
                "version": self.version,
                "config": self.config.model_dump(mode="json"),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class GraphModule(nn.Module):
    """A node of the model graph (fusion, backbone or head).

    Constructed with its config and the dims of its inputs (in the order the recipe lists them);
    raises ``ValueError`` when those dims cannot work (the core reports it with the node's
    location). ``output_dims`` maps each output name to its size; ``"out"`` is the default output
    that a bare node reference picks. ``forward(inputs, mask)`` gets the input tensors [N, W, D_i]
    and a bool mask [N, W] (True at real residues, False at padding) and returns a tensor for a
    single output or a dict of named tensors.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    #: (minimum, maximum) number of inputs; ``None`` for no maximum.
    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: PluginConfig, in_dims: list[int]) -> None:
        super().__init__()
        self.config = config
        self.in_dims = list(in_dims)
        self.output_dims: dict[str, int] = {}

    @abstractmethod
    def forward(
        self, inputs: list[torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor | dict[str, torch.Tensor]: ...


class Loss(nn.Module):
    """A training objective: ``forward(outputs, labels)`` -> scalar tensor.

    ``outputs`` holds ``"logits"`` ([N] for one task), ``"mask"`` (bool [N, W], True at real
    residues, for pooling per-residue outputs) and every graph node output under its reference
    (``"node"`` or ``"node.output"``). ``labels`` is float [N] of 0/1.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig) -> None:
        super().__init__()
        self.config = config

    def required_outputs(self) -> list[str]:
        """Entries of ``outputs`` this loss reads; the core checks them against the graph."""
        name = getattr(self.config, "input", "logits")
        return [name] if isinstance(name, str) else list(name)

    def bind(self, dims: dict[str, int]) -> None:  # noqa: B027 - optional hook
        """Called once with the size of every graph output (``"node.output" -> D``) before the
        optimiser is made, so a loss can create parameters (projections) of the right size."""

    def setup(self, train_labels: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Called once with the training labels (e.g. to derive class weights)."""

    def start_epoch(self, epoch: int, total: int) -> None:  # noqa: B027 - optional hook
        """Called before each epoch (1-based) of ``total``: for schedules such as HCL's lambda(t)."""

    @abstractmethod
    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor: ...
