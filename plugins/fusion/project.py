"""Dimension alignment block ``project`` (UniPTMs section 2.2).

The paper aligns its four auxiliary features "using linear layers and convolutional blocks"
(EMBER2 and PseAAC to 256-d, BLOSUM62 and AAindex to 512-d). ``project`` is that block; on a
one-hot input it is also a learned residue embedding, a stand-in where a protein language
model's embedding would otherwise be.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig

from .basic import _check_count

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


@register.fusion("project")
class Project(GraphModule):
    """Linear to ``dim``, optional residual conv block, LayerNorm, dropout; zero at padding.

    H = Linear(X); with a conv: H = H + act(Conv_k(H)); out = Dropout(LN(H)).
    """

    class Config(PluginConfig):
        dim: int = Field(
            gt=0, description="output size (e.g. 256 for PseAAC or EMBER2, 512 for BLOSUM62 or AAindex)"
        )
        conv_kernel: OddInt | None = Field(
            3, description="odd width of the residual conv after the linear layer; null for none"
        )
        activation: Literal["gelu", "relu", "silu"] = Field(
            "gelu", description="activation after the conv (only with a conv)"
        )
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the output")

        @model_validator(mode="after")
        def _activation_needs_conv(self) -> Self:
            if self.conv_kernel is None and "activation" in self.model_fields_set:
                raise ValueError("project: `activation` is only used with a conv (`conv_kernel` is null)")
            return self

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: Project.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("project", self.n_inputs, self.in_dims)
        dim, k = config.dim, config.conv_kernel
        self.linear = nn.Linear(self.in_dims[0], dim)
        self.conv = nn.Conv1d(dim, dim, k, padding=k // 2) if k is not None else None
        self.act = _ACTIVATIONS[config.activation]()
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.output_dims = {"out": dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        keep = mask.unsqueeze(-1)
        # Zero after the linear layer: its bias would otherwise make padding non-zero, and the
        # conv must see at padding the same zeros its own padding puts past the window's end.
        h = self.linear(x.masked_fill(~keep, 0.0)).masked_fill(~keep, 0.0)
        if self.conv is not None:
            h = h + self.act(self.conv(h.transpose(1, 2)).transpose(1, 2))
        return self.dropout(self.norm(h)).masked_fill(~keep, 0.0)
