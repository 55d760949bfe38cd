"""Bidirectional Gated Cross-Attention (``bgca``), UniPTMs section 2.3.1, eqs. 1-7.

Also holds the masked building blocks that ``ldfn`` shares: the input-count check, a
block-diagonal ("group-parameterized") linear layer, key-masked multi-head attention and the
padding-safe multi-scale convolution.
"""

from __future__ import annotations

import math
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig

# ------------------------------------------------------------------------------ shared helpers


def check_inputs(name: str, n_inputs: tuple[int, int | None], in_dims: list[int]) -> None:
    """Fail early on a wrong number of inputs or empty feature axes; the message names the dims."""
    lo, hi = n_inputs
    if len(in_dims) < lo or (hi is not None and len(in_dims) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo}-{hi}"
        raise ValueError(f"{name} takes {want} inputs, got {len(in_dims)} (dims {in_dims})")
    if any(d < 1 for d in in_dims):
        raise ValueError(f"{name} needs inputs of size >= 1, got {in_dims}")


class GroupedLinear(nn.Module):
    """Block-diagonal linear map: the feature axis is cut into ``groups`` equal slices and each
    slice has its own ``(in/groups) x (out/groups)`` weight. ``groups=1`` is ``nn.Linear``."""

    def __init__(self, in_dim: int, out_dim: int, groups: int, bias: bool = True) -> None:
        super().__init__()
        if in_dim % groups or out_dim % groups:
            raise ValueError(f"grouped projection {in_dim} -> {out_dim} needs sizes divisible by {groups}")
        self.groups = groups
        fan_in = in_dim // groups
        bound = 1.0 / math.sqrt(fan_in)  # the bound nn.Linear's default init gives
        self.weight = nn.Parameter(torch.empty(groups, fan_in, out_dim // groups).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_dim).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.unflatten(-1, (self.groups, -1))  # [..., g, in/g]
        out = torch.einsum("...gi,gio->...go", xs, self.weight).flatten(-2)
        return out if self.bias is None else out + self.bias


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, heads: int, dropout: float
) -> torch.Tensor:
    """Multi-head scaled dot-product attention over real keys only; [N, W, D] -> [N, W, D].

    ``mask`` [N, W] is True at real residues. Padding keys get weight exactly zero, so no value
    held at a padding position can reach any query. A row with no real residue at all attends
    everywhere instead (its output is meaningless but finite, and callers zero it).
    """
    n, w, d = q.shape
    keep = mask | ~mask.any(dim=1, keepdim=True)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n, t.shape[1], heads, d // heads).transpose(1, 2)  # [N, h, W, d/h]

    out = F.scaled_dot_product_attention(
        split(q), split(k), split(v), attn_mask=keep[:, None, None, :], dropout_p=dropout
    )
    return out.transpose(1, 2).reshape(n, w, d)  # Concat over heads


class MultiScaleConv(nn.Module):
    """Parallel same-length 1-D convolutions ``C_k = Conv1D(W_k, x)``, one per kernel size.

    Padding positions are zeroed before the convolutions (so each one sees exactly the zeros its
    own same-length padding adds beyond an unpadded sequence) and after them (so no bias or
    neighbour leaks into padding rows). Returns [N, W, K, D_out] for K kernel sizes.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_sizes: list[int], activation: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, out_dim, k, padding=k // 2) for k in kernel_sizes)
        self.activation = activation

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        xt = (x * keep).transpose(1, 2)
        c = torch.stack([conv(xt).transpose(1, 2) for conv in self.convs], dim=2)
        if self.activation:
            c = F.gelu(c)
        return c * keep.unsqueeze(-1)


# ---------------------------------------------------------------------------------------- BGCA


@register.fusion("bgca")
class BGCA(GraphModule):
    """Bidirectional gated cross-attention of two embeddings (UniPTMs BGCA); out = ``dim``.

    With ``P_i`` a linear map to ``dim`` (identity when the input already has that size) and
    ``X'_i = P_i(X_i)``::

        Q_i, K_i, V_i = Gq_i(X'_i), Gk_i(X'_i), Gv_i(X'_i)        block-diagonal, `groups` blocks
        Attn_1 = X'_1 + Concat_h[softmax(Q_1 K_2^T / sqrt(d_k)) V_2]       (eq. 1, d_k = dim/heads)
        Attn_2 = X'_2 + Concat_h[softmax(Q_2 K_1^T / sqrt(d_k)) V_1]       (eq. 2)
        C_k    = Conv1D_k(Attn_1),  k in kernel_sizes                      (eq. 3)
        alpha  = softmax_k(W_g [C_3; C_5; C_7] + b_g)   one weight per scale and position (eq. 4)
        ConvFusion = sum_k alpha_k * C_k                                   (eq. 5)
        beta   = softmax_{1,2}(W_f [ConvFusion; Attn_2] + b_f)  per position and channel (eq. 6)
        F      = beta_1 * ConvFusion + beta_2 * Attn_2                     (eq. 7)

    Reading of the paper where it is open:

    - "group-parameterized projections" (text before eq. 1): Q/K/V come from block-diagonal
      linear maps with ``groups`` blocks (``groups: 1`` gives dense maps); ``Concat_g`` of
      eqs. 1-2 is the concatenation over the ``heads`` attention heads. The inputs are first
      projected to ``dim`` (dense), because the two embeddings differ in size (1024 vs 1280) and
      a block-diagonal map needs both sizes divisible by ``groups``.
    - Eqs. 1-2 have no output projection and none is added. The "residual learning" the text
      names is the query-side residual ``X'_i +`` (``residual: false`` drops it, giving the
      equations literally): ``Attn_1`` then keeps ProtT5's own content next to what it read from
      ESM-2, and ``Attn_2`` the reverse, so ``F`` carries both embeddings.
    - Key projections have no bias: ``q . b_k`` is the same for every key of a query, so softmax
      cancels it and it would never receive a gradient.
    - Eq. 4: ``alpha`` is one scalar per scale and position (softmax over the scales), which is
      how the text describes it ("selects biologically significant scales"); eq. 6: ``beta`` is
      per channel ("fine-grained regulation of feature contributions"), softmax over the two
      branches, so beta_1 + beta_2 = 1 and both lie in (0, 1).
    - Eq. 3 has no activation and none is added: the data-dependent scale gate already makes
      the combination of scales non-linear.
    - ``dropout`` acts on the attention weights and on ``F``.

    Padding: attention ignores padding keys, the convolutions zero padding before and after,
    every other step is per position, and ``F`` is zero at padding positions.
    """

    class Config(PluginConfig):
        dim: int = Field(
            256, gt=0, description="common model width: size of Q/K/V, of every branch and of out"
        )
        heads: int = Field(8, gt=0, description="attention heads of each direction (Concat_g of eqs. 1-2)")
        groups: int = Field(
            8, gt=0, description="blocks of the block-diagonal Q/K/V projections; 1 = dense projections"
        )
        kernel_sizes: list[OddInt] = Field(
            [3, 5, 7], min_length=1, description="odd kernel widths of the multi-scale convolution (eq. 3)"
        )
        residual: bool = Field(
            True, description="add the projected query-side input to each attention output (Attn_i)"
        )
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on attention weights and on out")

        @model_validator(mode="after")
        def _divisible(self) -> Self:
            for key in ("heads", "groups"):
                if self.dim % getattr(self, key):
                    raise ValueError(f"bgca: dim {self.dim} must be divisible by {key} {getattr(self, key)}")
            return self

    n_inputs: ClassVar[tuple[int, int | None]] = (2, 2)

    def __init__(self, config: BGCA.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        check_inputs("bgca", self.n_inputs, self.in_dims)
        dim, g = config.dim, config.groups
        self.proj = nn.ModuleList(nn.Identity() if d == dim else nn.Linear(d, dim) for d in self.in_dims)
        self.q = nn.ModuleList(GroupedLinear(dim, dim, g) for _ in range(2))
        self.k = nn.ModuleList(GroupedLinear(dim, dim, g, bias=False) for _ in range(2))
        self.v = nn.ModuleList(GroupedLinear(dim, dim, g) for _ in range(2))
        self.convs = MultiScaleConv(dim, dim, config.kernel_sizes, activation=False)
        n_scales = len(config.kernel_sizes)
        self.scale_gate = nn.Linear(n_scales * dim, n_scales)  # W_g, eq. 4
        self.fusion_gate = nn.Linear(2 * dim, 2 * dim)  # W_f, eq. 6
        self.drop = nn.Dropout(config.dropout)
        self.output_dims = {"out": dim}

    def components(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """All intermediate terms: attn1, attn2, conv [N,W,K,D], alpha [N,W,K], conv_fusion,
        beta [N,W,2,D] and out [N,W,D]."""
        keep = mask.unsqueeze(-1).to(inputs[0].dtype)
        x1, x2 = (p(x) for p, x in zip(self.proj, inputs, strict=True))
        q1, q2 = (lin(x) for lin, x in zip(self.q, (x1, x2), strict=True))
        k1, k2 = (lin(x) for lin, x in zip(self.k, (x1, x2), strict=True))
        v1, v2 = (lin(x) for lin, x in zip(self.v, (x1, x2), strict=True))
        p = self.config.dropout if self.training else 0.0
        attn1 = masked_attention(q1, k2, v2, mask, self.config.heads, p)  # eq. 1
        attn2 = masked_attention(q2, k1, v1, mask, self.config.heads, p)  # eq. 2
        if self.config.residual:
            attn1, attn2 = attn1 + x1, attn2 + x2
        conv = self.convs(attn1, keep)  # eq. 3, [N, W, K, D]
        alpha = torch.softmax(self.scale_gate(conv.flatten(-2)), dim=-1)  # eq. 4
        conv_fusion = (alpha.unsqueeze(-1) * conv).sum(dim=2)  # eq. 5
        logits = self.fusion_gate(torch.cat([conv_fusion, attn2], dim=-1))
        beta = torch.softmax(logits.unflatten(-1, (2, -1)), dim=-2)  # eq. 6, [N, W, 2, D]
        out = beta[..., 0, :] * conv_fusion + beta[..., 1, :] * attn2  # eq. 7
        out = self.drop(out) * keep
        return {
            "attn1": attn1,
            "attn2": attn2,
            "conv": conv,
            "alpha": alpha,
            "conv_fusion": conv_fusion,
            "beta": beta,
            "out": out,
        }

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.components(inputs, mask)["out"]
