"""1-D residual convolutional backbone (ResNet-style blocks with a dilation schedule)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ptmkit.api import register
from ptmkit.distributed import global_sum, world
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over channels-last ``[N, W, C]`` whose batch statistics use real residues only.

    Plain BatchNorm would average padding positions into the statistics, so a real residue's
    output would depend on how much padding its batch holds. Running statistics and eval mode
    are as in ``nn.BatchNorm1d``. Under torchrun the statistics are those of the global batch
    (sums over ranks, differentiable), so every rank normalises as one process would.
    """

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.training:
            if world().active:
                count, mean, var = self._global_statistics(x, keep)
            else:
                count = keep.sum()
                mean = (x * keep).sum((0, 1)) / count.clamp(min=1)
                var = ((x - mean).pow(2) * keep).sum((0, 1)) / count.clamp(min=1)
            with torch.no_grad():
                self.num_batches_tracked += 1
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    @staticmethod
    def _global_statistics(
        x: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Count, mean and variance of the real residues of every rank's batch, from one
        differentiable sum over ranks of (count, sum, sum of squares) in float64 (one collective
        per layer each way: on a slow link the count of collectives is the cost)."""
        k = keep.to(torch.float64)
        x64 = x.to(torch.float64)
        sums = global_sum(torch.cat([k.sum().view(1), (x64 * k).sum((0, 1)), (x64 * x64 * k).sum((0, 1))]))
        channels = x.shape[-1]
        count = sums[0].clamp(min=1)
        mean = sums[1 : 1 + channels] / count
        var = (sums[1 + channels :] / count - mean * mean).clamp(min=0)
        return sums[0].to(x.dtype), mean.to(x.dtype), var.to(x.dtype)


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class _Block(nn.Module):
    """``relu(x + norm(conv(dropout(relu(norm(conv(x)))))))``, padding zeroed around each conv."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, norm: str, dropout: float) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2  # same length for odd kernels

        def conv() -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation)

        def norm_layer() -> nn.Module:
            return MaskedBatchNorm(channels) if norm == "batch" else _LayerNorm(channels)

        self.conv1, self.norm1 = conv(), norm_layer()
        self.conv2, self.norm2 = conv(), norm_layer()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: [N, W, C], zero at padding; keep: [N, W, 1] float, 1 at real residues.
        h = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        h = self.dropout(torch.relu(self.norm1(h, keep))) * keep
        h = self.conv2(h.transpose(1, 2)).transpose(1, 2)
        # Re-zero so the next convolution sees exactly the zeros its own padding would add
        # beyond the ends of an unpadded sequence.
        return torch.relu(x + self.norm2(h, keep)) * keep


@register.backbone("resnet1d")
class ResNet1d(GraphModule):
    """Stacked 1-D residual conv blocks with dilations; out = channels, zero at padding.

    The input is mapped to ``channels`` by a 1x1 convolution (a per-position linear layer)
    when its size differs. Each block is conv -> norm -> ReLU -> dropout -> conv -> norm, added
    to the block input, then ReLU. Block ``i`` uses dilation ``dilations[i % len(dilations)]``
    for both of its convolutions, so the receptive field grows quickly (the default
    ``kernel_size: 3, dilations: [1, 2, 4, 8]`` with 4 blocks sees 61 residues). Padding is
    zeroed before and after every convolution (as in ``cnn``): for padding at the window ends
    each real position's output equals the unpadded sequence's. ``norm: batch`` computes its
    batch statistics over real residues only.
    """

    class Config(PluginConfig):
        channels: int = Field(64, gt=0, description="channels of every block (the output size)")
        blocks: int = Field(4, gt=0, description="number of residual blocks")
        kernel_size: OddInt = Field(3, description="odd convolution width")
        dilations: list[int] = Field(
            [1, 2, 4, 8],
            min_length=1,
            description="dilation per block, cycled: block i uses dilations[i % len]",
        )
        norm: Literal["layer", "batch"] = Field(
            "layer", description="LayerNorm per position, or BatchNorm with statistics over real residues"
        )
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout between the two convs of a block")

        @field_validator("dilations")
        @classmethod
        def _positive(cls, v: list[int]) -> list[int]:
            if any(d < 1 for d in v):
                raise ValueError(f"dilations must be >= 1, got {v}")
            return v

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: ResNet1d.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) != 1:
            raise ValueError(
                f"resnet1d takes exactly 1 input, got {len(self.in_dims)} (dims {self.in_dims}); "
                "fuse them first, e.g. with concat"
            )
        if self.in_dims[0] < 1:
            raise ValueError(f"resnet1d needs an input of size >= 1, got {self.in_dims}")
        c = config.channels
        self.stem = nn.Linear(self.in_dims[0], c) if self.in_dims[0] != c else None
        self.blocks = nn.ModuleList(
            _Block(
                c,
                config.kernel_size,
                config.dilations[i % len(config.dilations)],
                config.norm,
                config.dropout,
            )
            for i in range(config.blocks)
        )
        self.output_dims = {"out": c}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = x * keep
        if self.stem is not None:
            h = self.stem(h) * keep
        for block in self.blocks:
            h = block(h, keep)
        return h
