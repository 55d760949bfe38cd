"""Multi-scale Adaptive Convolution Pyramid (MACP), UniPTMs section 2.3.5, eqs. 32-36.

Three sequential stages, as in the paper (X -> F1 -> F2 -> F3: "F1 is ... propagated to the
middle branch", "F2 is subsequently fed into the deep branch"). Each stage's output is a named
output so that the shallow and middle features can feed mid-phase fusion and all three can feed
a hierarchical contrastive loss; ``out`` is the deep output.

Padding: the input is zeroed at padding, every convolution's output is re-zeroed there before
the next convolution sees it, every pool over the window is a mean (or max) over real residues
only, and all normalisation is per position (LayerNorm). For padding at the window ends, a real
position's outputs therefore equal those for the unpadded window, and padding outputs are 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, PluginConfig

from .attention import masked_max, masked_mean, zero_padding
from .basic import _check_count


def _conv(x: torch.Tensor, conv: nn.Conv1d, mask: torch.Tensor) -> torch.Tensor:
    """Same-length conv of [N, W, C] (zero at padding) -> [N, W, C'], re-zeroed at padding."""
    return zero_padding(conv(x.transpose(1, 2)).transpose(1, 2), mask)


def _same(c_in: int, c_out: int, k: int, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation)


def _mlp(dim: int, reduction: int) -> nn.Sequential:
    """Bottleneck W_2 delta(W_1 s) of the attention gates; delta = GELU (see ``channel_attention``)."""
    hidden = max(1, dim // reduction)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class _Shallow(nn.Module):
    """Eqs. 32-33: kernel selection between widths 3 and 5, then CBAM-style channel attention.

    alpha = sigmoid(W_s GAP(X)) in (0, 1)^dim per window (one mixing weight per channel);
    F = alpha * Conv3(X) + (1 - alpha) * Conv5(X);
    F1 = F * sigmoid(MLP(avgpool F) + MLP(maxpool F)).
    """

    def __init__(self, in_dim: int, dim: int, reduction: int) -> None:
        super().__init__()
        self.select = nn.Linear(in_dim, dim)
        self.conv3 = _same(in_dim, dim, 3)
        self.conv5 = _same(in_dim, dim, 5)
        self.channel = _mlp(dim, reduction)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.select(masked_mean(x, mask))).unsqueeze(1)  # [N, 1, dim]
        f = alpha * _conv(x, self.conv3, mask) + (1 - alpha) * _conv(x, self.conv5, mask)
        att = torch.sigmoid(self.channel(masked_mean(f, mask)) + self.channel(masked_max(f, mask)))
        return f * att.unsqueeze(1)


class _Middle(nn.Module):
    """Eqs. 34-35: dilated conv, GELU, norm, squeeze-and-excitation, plus a 1x1-conv residual.

    F_main = LN(GELU(Conv_dil(F1))); F2 = F_main * sigmoid(MLP(GAP F_main)) + Conv1x1(F1).
    """

    def __init__(self, dim: int, reduction: int, dilation: int) -> None:
        super().__init__()
        self.dilated = _same(dim, dim, 3, dilation)
        self.norm = nn.LayerNorm(dim)
        self.se = _mlp(dim, reduction)
        self.residual = _same(dim, dim, 1)

    def forward(self, f1: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        main = zero_padding(self.norm(F.gelu(_conv(f1, self.dilated, mask))), mask)
        se = torch.sigmoid(self.se(masked_mean(main, mask))).unsqueeze(1)
        return main * se + _conv(f1, self.residual, mask)


class _Deep(nn.Module):
    """Eq. 36: multi-scale convs (3/5/7) give F_c; coordinate attention on F_c reweights F2.

    F_c = Conv1x1([GELU(Conv3 F2); GELU(Conv5 F2); GELU(Conv7 F2)]);
    A_c = sigmoid(W_2 GELU(W_1 GAP_seq(F_c))) [N, 1, dim] (pooled along the sequence);
    A_s = sigmoid(Conv3([mean_ch(F_c), max_ch(F_c)])) [N, W, 1] (pooled along the channels);
    F3 = F2 * (A_c outer A_s).
    """

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        self.scales = nn.ModuleList(_same(dim, dim, k) for k in (3, 5, 7))
        self.fuse = _same(3 * dim, dim, 1)
        self.channel = _mlp(dim, reduction)
        self.spatial = _same(2, 1, 3)

    def forward(self, f2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        fc = torch.cat([F.gelu(_conv(f2, conv, mask)) for conv in self.scales], dim=-1)
        fc = _conv(fc, self.fuse, mask)
        a_c = torch.sigmoid(self.channel(masked_mean(fc, mask))).unsqueeze(1)  # [N, 1, dim]
        pooled = torch.stack([fc.mean(dim=-1), fc.amax(dim=-1)], dim=-1)  # [N, W, 2], 0 at padding
        a_s = torch.sigmoid(_conv(pooled, self.spatial, mask))  # [N, W, 1]
        return f2 * (a_c * a_s)


@register.fusion("macp")
class MACP(GraphModule):
    """Multi-scale adaptive convolution pyramid: shallow -> middle -> deep; out = deep, all size dim.

    Shallow: sample-adaptive mix of width-3 and width-5 convolutions + channel attention.
    Middle: dilated residual convolution + squeeze-and-excitation. Deep: parallel 3/5/7
    convolutions + coordinate attention adapted to 1-D (pooling along the sequence gives the
    channel weights, pooling along the channels gives the position weights). Outputs
    ``shallow``, ``middle``, ``deep`` and ``out`` (= ``deep``), each [N, W, dim], 0 at padding.
    """

    class Config(PluginConfig):
        dim: int | None = Field(None, gt=0, description="size of all three outputs (default: the input size)")
        reduction: int = Field(
            8, gt=0, description="bottleneck of the attention MLPs: hidden = max(1, dim // reduction)"
        )
        dilation: int = Field(2, gt=0, description="dilation of the middle stage's width-3 convolution")

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: MACP.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("macp", self.n_inputs, self.in_dims)
        dim = config.dim if config.dim is not None else self.in_dims[0]
        self.shallow = _Shallow(self.in_dims[0], dim, config.reduction)
        self.middle = _Middle(dim, config.reduction, config.dilation)
        self.deep = _Deep(dim, config.reduction)
        self.output_dims = {"out": dim, "shallow": dim, "middle": dim, "deep": dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        (x,) = inputs
        x = zero_padding(x, mask)
        f1 = self.shallow(x, mask)
        f2 = self.middle(f1, mask)
        f3 = self.deep(f2, mask)
        return {"out": f3, "shallow": f1, "middle": f2, "deep": f3}
