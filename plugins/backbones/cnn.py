"""Multi-kernel 1-D convolutional backbone."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig


class _Block(nn.Module):
    """Parallel same-length convolutions (one per kernel size), concatenated, then LN + ReLU."""

    def __init__(self, in_dim: int, channels: int, kernel_sizes: list[int], dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, channels, k, padding=k // 2) for k in kernel_sizes)
        out_dim = channels * len(kernel_sizes)
        self.norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.residual = in_dim == out_dim

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: [N, W, D]; keep: [N, W, 1] float, 1 at real residues.
        xt = x.transpose(1, 2)
        h = torch.cat([conv(xt) for conv in self.convs], dim=1).transpose(1, 2)
        h = self.dropout(torch.relu(self.norm(h)))
        if self.residual:
            h = h + x
        # Re-zero padding so the next block's convolution sees exactly the zeros that its own
        # same-length padding would put beyond the end of an unpadded sequence.
        return h * keep


@register.backbone("cnn")
class MultiKernelCNN(GraphModule):
    """Stacked multi-kernel 1-D conv blocks; out = channels * len(kernel_sizes), zero at padding.

    Each block runs one same-length convolution per kernel size in parallel and concatenates
    them (so motifs of several widths are seen at once), then LayerNorm, ReLU and dropout, plus a
    residual connection when the block's input and output sizes match (every block after the
    first). LayerNorm, not BatchNorm: it normalises each position on its own, so the output
    does not depend on batch composition, on padding positions (batch statistics would include
    them) or on train/eval mode, and works with batch size 1. Padding is zeroed before the first
    block and after every block, so for padding at the window ends each real position's output
    equals the output for the unpadded sequence.
    """

    class Config(PluginConfig):
        channels: int = Field(64, gt=0, description="output channels per kernel size")
        kernel_sizes: list[OddInt] = Field(
            [3, 5, 7], min_length=1, description="odd kernel widths run in parallel per block"
        )
        layers: int = Field(2, gt=0, description="number of stacked conv blocks")
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each block")

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: MultiKernelCNN.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) != 1:
            raise ValueError(
                f"cnn takes exactly 1 input, got {len(self.in_dims)} (dims {self.in_dims}); "
                "fuse them first, e.g. with concat"
            )
        if self.in_dims[0] < 1:
            raise ValueError(f"cnn needs an input of size >= 1, got {self.in_dims}")
        out_dim = config.channels * len(config.kernel_sizes)
        dims = [self.in_dims[0]] + [out_dim] * config.layers
        self.blocks = nn.ModuleList(
            _Block(dims[i], config.channels, config.kernel_sizes, config.dropout)
            for i in range(config.layers)
        )
        self.output_dims = {"out": out_dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = x * keep
        for block in self.blocks:
            h = block(h, keep)
        return h
