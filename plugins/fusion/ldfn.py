"""Low-Dimensional Fusion Network (``ldfn``), UniPTMs section 2.3.2, eqs. 8-12."""

from __future__ import annotations

from typing import ClassVar, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig

from .bgca import MultiScaleConv, check_inputs, masked_attention


@register.fusion("ldfn")
class LDFN(GraphModule):
    """Low-dimensional fusion of M >= 2 features (UniPTMs LDFN); out = ``dim``.

    For inputs ``X_1 .. X_M`` (the paper: EMBER2, PseAAC, BLOSUM62, AAindex)::

        H_i    = LayerNorm(W_i X_i + b_i)                       adaptive projection to `dim`
        K, V   = W_k [H_1; ..; H_M],  W_v [H_1; ..; H_M] + b_v  shared keys and values
        Attn_i = softmax(Q_i K^T / sqrt(d)) V,  Q_i = W_qi H_i + b_qi                  (eq. 8)
        z      = W_g [Attn_1; ..; Attn_M] + b_g                 (M - 1) x dim logits    (eq. 9)
        g      = softmax over i of [z_1, .., z_{M-1}, 0]        per position and channel
        D      = sum_i g_i * Attn_i                                                     (eq. 10)
        C_k    = GELU(Conv1D_k(D)),  k in kernel_sizes                                  (eq. 11)
        F_c    = W_c [C_3; C_5; C_7] + b_c                                              (eq. 12)
        out    = W_o [D; F_c; H_1 + .. + H_M] + b_o             adaptive fusion layer

    Reading of the paper where it is open:

    - The paper writes eqs. 8-10 for two inputs but fuses four. Each input gets its own query
      and all inputs share one key/value set computed from their concatenation ("the shared
      key-value pairs ... promote feature coupling"). With two inputs the distillation gate is
      exactly eqs. 9-10, ``g = sigmoid(z)`` and ``D = g * Attn_1 + (1 - g) * Attn_2``
      (``softmax([z, 0])_1 = sigmoid(z)``); with more inputs it is the multinomial form of the
      same gate, with the last input as the reference, so it adds no redundant parameters.
      The gate is per channel, as eq. 9's ``W_g [.] + b_g`` feeding the element-wise eq. 10 reads.
    - The "adaptive projection layer" is a linear map followed by LayerNorm, so features on very
      different scales (BLOSUM62 scores, AAindex values, embeddings) enter the attention alike.
      Every input is projected, even one already of size ``dim``: this is the alignment step.
    - Eq. 11 gets a GELU: without a non-linearity eqs. 11-12 collapse into a single linear
      convolution of the largest width, and the multi-scale split would do nothing.
    - The final "adaptive fusion layer" (text after eq. 12: "linear combination of the distilled
      features, multi-scale features, and the additively fused result of the original projected
      features") is a learned linear map of their concatenation.
    - ``heads: 1`` is eq. 8 as written (``d = dim``); more heads split ``d`` as usual.
    - Key projections have no bias (softmax cancels it; it would never receive a gradient).
    - ``dropout`` acts on the attention weights and on ``out``.

    Padding: attention ignores padding keys, the convolutions zero padding before and after,
    every other step is per position, and ``out`` is zero at padding positions.
    """

    class Config(PluginConfig):
        dim: int = Field(256, gt=0, description="common width every input is projected to; size of out")
        heads: int = Field(1, gt=0, description="attention heads of the cross-dense attention (eq. 8 has 1)")
        kernel_sizes: list[OddInt] = Field(
            [3, 5, 7], min_length=1, description="odd kernel widths of the multi-scale convolution (eq. 11)"
        )
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on attention weights and on out")

        @model_validator(mode="after")
        def _divisible(self) -> Self:
            if self.dim % self.heads:
                raise ValueError(f"ldfn: dim {self.dim} must be divisible by heads {self.heads}")
            return self

    n_inputs: ClassVar[tuple[int, int | None]] = (2, None)

    def __init__(self, config: LDFN.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        check_inputs("ldfn", self.n_inputs, self.in_dims)
        dim, m = config.dim, len(self.in_dims)
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(d, dim), nn.LayerNorm(dim)) for d in self.in_dims)
        self.q = nn.ModuleList(nn.Linear(dim, dim) for _ in range(m))
        self.k = nn.Linear(m * dim, dim, bias=False)
        self.v = nn.Linear(m * dim, dim)
        self.gate = nn.Linear(m * dim, (m - 1) * dim)  # W_g, eq. 9
        self.convs = MultiScaleConv(dim, dim, config.kernel_sizes, activation=True)
        self.conv_out = nn.Linear(len(config.kernel_sizes) * dim, dim)  # W_c, eq. 12
        self.fuse = nn.Linear(3 * dim, dim)  # adaptive fusion layer
        self.drop = nn.Dropout(config.dropout)
        self.output_dims = {"out": dim}

    def components(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate terms: projected [N,W,M,D], attn [N,W,M,D], gate [N,W,M,D] (weights
        over the inputs; gate[..., 0, :] is eq. 9's g for two inputs), distilled, conv
        [N,W,K,D], conv_fused and out [N,W,D]."""
        keep = mask.unsqueeze(-1).to(inputs[0].dtype)
        h = [p(x) * keep for p, x in zip(self.proj, inputs, strict=True)]
        joint = torch.cat(h, dim=-1)
        k, v = self.k(joint), self.v(joint)
        p = self.config.dropout if self.training else 0.0
        attn = torch.stack(
            [
                masked_attention(q(hi), k, v, mask, self.config.heads, p)
                for q, hi in zip(self.q, h, strict=True)
            ],
            dim=2,
        )  # eq. 8, [N, W, M, D]
        z = self.gate(attn.flatten(-2)).unflatten(-1, (len(h) - 1, -1))  # eq. 9
        gate = torch.softmax(torch.cat([z, torch.zeros_like(z[..., :1, :])], dim=-2), dim=-2)
        distilled = (gate * attn).sum(dim=2)  # eq. 10
        conv = self.convs(distilled, keep)  # eq. 11, [N, W, K, D]
        conv_fused = self.conv_out(conv.flatten(-2))  # eq. 12
        out = self.fuse(torch.cat([distilled, conv_fused, torch.stack(h).sum(0)], dim=-1))
        out = self.drop(out) * keep
        return {
            "projected": torch.stack(h, dim=2),
            "attn": attn,
            "gate": gate,
            "distilled": distilled,
            "conv": conv,
            "conv_fused": conv_fused,
            "out": out,
        }

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.components(inputs, mask)["out"]
