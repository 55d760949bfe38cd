"""``gated_sum``: a fusion node that learns, per residue, how much of each input to use."""

from __future__ import annotations

from typing import ClassVar

import torch
from ptmkit.api import GraphModule, PluginConfig, register
from pydantic import Field
from torch import nn


@register.fusion("gated_sum")
class GatedSum(GraphModule):
    """Softmax-gated sum of 2+ inputs per position: out = sum_i g_i * P_i(x_i); outputs out, gates.

    Each input ``x_i`` [N, W, D_i] is brought to the common size ``dim`` by a linear map
    ``P_i`` (the identity when ``D_i == dim``). The gates ``g`` [N, W, n] are a softmax over the
    inputs of a linear score of all inputs concatenated, divided by ``temperature``, so every
    residue picks its own mixture. Outputs: ``out`` [N, W, dim] and ``gates`` [N, W, n] (how
    much each input was used, e.g. to inspect or to regularise in a loss). Works position by
    position, so padding cannot leak into real positions; both outputs are zero at padding.
    """

    class Config(PluginConfig):
        dim: int | None = Field(
            None, gt=0, description="common output size (default: the largest input size)"
        )
        temperature: float = Field(
            1.0, gt=0, description="softmax temperature of the gates: lower = closer to picking one input"
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (2, None)

    def __init__(self, config: Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) < 2:
            raise ValueError(f"gated_sum takes at least 2 inputs, got {len(self.in_dims)}")
        if any(d < 1 for d in self.in_dims):
            raise ValueError(f"gated_sum needs inputs of size >= 1, got {self.in_dims}")
        dim = config.dim if config.dim is not None else max(self.in_dims)
        self.proj = nn.ModuleList(nn.Identity() if d == dim else nn.Linear(d, dim) for d in self.in_dims)
        self.gate = nn.Linear(sum(self.in_dims), len(self.in_dims))
        self.output_dims = {"out": dim, "gates": len(self.in_dims)}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.gate(torch.cat(inputs, dim=-1)) / self.config.temperature
        gates = torch.softmax(scores, dim=-1)  # [N, W, n]
        values = torch.stack([p(x) for p, x in zip(self.proj, inputs, strict=True)], dim=-1)  # [N, W, D, n]
        real = mask.unsqueeze(-1).to(values.dtype)
        out = (values * gates.unsqueeze(-2)).sum(dim=-1)
        return {"out": out * real, "gates": gates * real}
