"""Position-wise fusion nodes: ``concat`` and ``add``.

Both act on each residue position independently, so a padding position can never leak into a
real one; ``add`` with projection re-zeroes padding, because the projection bias would otherwise
turn the all-zero padding encoding into a non-zero vector.
"""

from __future__ import annotations

from typing import ClassVar, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, PluginConfig


def _check_count(name: str, n_inputs: tuple[int, int | None], in_dims: list[int]) -> None:
    """Fail early on a wrong number of inputs or empty feature axes (direct construction too)."""
    lo, hi = n_inputs
    if len(in_dims) < lo or (hi is not None and len(in_dims) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo}-{hi}"
        raise ValueError(f"{name} takes {want} input(s), got {len(in_dims)} (dims {in_dims})")
    if any(d < 1 for d in in_dims):
        raise ValueError(f"{name} needs inputs of size >= 1, got {in_dims}")


@register.fusion("concat")
class Concat(GraphModule):
    """Concatenate inputs along the feature axis: out = sum of input dims."""

    class Config(PluginConfig):
        pass

    n_inputs: ClassVar[tuple[int, int | None]] = (1, None)

    def __init__(self, config: PluginConfig, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("concat", self.n_inputs, self.in_dims)
        self.output_dims = {"out": sum(self.in_dims)}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=-1)


@register.fusion("add")
class Add(GraphModule):
    """Element-wise sum of inputs; optionally project mismatched sizes to a common ``dim`` first."""

    class Config(PluginConfig):
        project: bool = Field(
            False,
            description="linearly project inputs whose size differs from `dim` before adding; "
            "without it all inputs must have the same size",
        )
        dim: int | None = Field(
            None,
            gt=0,
            description="common size for projection (default: the largest input size); "
            "only with project: true",
        )

        @model_validator(mode="after")
        def _dim_needs_project(self) -> Self:
            if self.dim is not None and not self.project:
                raise ValueError("add: `dim` is only used with `project: true`")
            return self

    n_inputs: ClassVar[tuple[int, int | None]] = (2, None)

    def __init__(self, config: Add.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("add", self.n_inputs, self.in_dims)
        if not config.project:
            if len(set(self.in_dims)) != 1:
                raise ValueError(
                    f"add needs inputs of equal size, got {self.in_dims}; "
                    "set `project: true` to project them to a common size"
                )
            dim = self.in_dims[0]
        else:
            dim = config.dim if config.dim is not None else max(self.in_dims)
        # Inputs already of size `dim` pass through untouched: a projection there adds
        # parameters without adding expressiveness (the sum is followed by learned layers).
        self.proj = nn.ModuleList(nn.Identity() if d == dim else nn.Linear(d, dim) for d in self.in_dims)
        self._projects = any(d != dim for d in self.in_dims)
        self.output_dims = {"out": dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        out = torch.stack([p(x) for p, x in zip(self.proj, inputs, strict=True)]).sum(0)
        if self._projects:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out
