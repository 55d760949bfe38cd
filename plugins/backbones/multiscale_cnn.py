"""MTPrompt-PTM's shared trunk: two multi-scale convolution stages with BatchNorm."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig

from .resnet1d import MaskedBatchNorm


class _Stage(nn.Module):
    """Parallel same-length convolutions, concatenated, then masked BatchNorm and ReLU."""

    def __init__(self, in_dim: int, channels: int, kernel_sizes: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, channels, k, padding=k // 2) for k in kernel_sizes)
        self.norm = MaskedBatchNorm(channels * len(kernel_sizes))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        xt = (x * keep).transpose(1, 2)  # zeros at padding, as an unpadded sequence's conv sees
        h = torch.cat([conv(xt) for conv in self.convs], dim=1).transpose(1, 2)
        return torch.relu(self.norm(h, keep)) * keep


@register.backbone("multiscale_cnn")
class MultiScaleCNN(GraphModule):
    """MTPrompt-PTM's shared layers (Han et al., 2025): per residue, ``stages`` multi-scale stages.

    Each stage runs one same-length Conv1d per kernel width (``channels`` each, concatenated),
    then BatchNorm and ReLU; dropout (0.75 in the paper) sits between stages. The published
    trunk is two stages of widths 1, 9, 11 with 200 channels (600 wide), which are the defaults;
    the shared Linear + BatchNorm + ReLU that follows it is ``task_heads``' ``hidden`` layer.

    BatchNorm statistics use real residues only (``MaskedBatchNorm``) and padding is zeroed
    before every convolution, so a real residue's output does not depend on how much padding
    its batch holds. out = ``channels * len(kernel_sizes)``, zero at padding.
    """

    class Config(PluginConfig):
        channels: int = Field(200, gt=0, description="output channels per kernel width")
        kernel_sizes: list[OddInt] = Field(
            [1, 9, 11], min_length=1, description="odd kernel widths run in parallel in every stage"
        )
        stages: int = Field(2, gt=0, description="number of multi-scale stages")
        dropout: float = Field(0.75, ge=0.0, lt=1.0, description="dropout between stages")

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: MultiScaleCNN.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) != 1:
            raise ValueError(
                f"multiscale_cnn takes exactly 1 input, got {len(self.in_dims)} (dims {self.in_dims}); "
                "fuse them first, e.g. with concat"
            )
        if self.in_dims[0] < 1:
            raise ValueError(f"multiscale_cnn needs an input of size >= 1, got {self.in_dims}")
        width = config.channels * len(config.kernel_sizes)
        dims = [self.in_dims[0]] + [width] * config.stages
        self.stages = nn.ModuleList(
            _Stage(dims[i], config.channels, config.kernel_sizes) for i in range(config.stages)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output_dims = {"out": width}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = x
        for i, stage in enumerate(self.stages):
            h = stage(self.dropout(h) if i else h, keep)
        return h
