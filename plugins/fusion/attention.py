"""Attention fusion nodes: ``cross_attention``, ``channel_attention`` and ``self_attention``.

These are the fusion baselines of the UniPTMs ablation (section 3.1.2, Table 7: two branches
joined by cross-, channel- or self-attention instead of the master-slave design). All three
honour the padding mask: padding keys get no attention weight, channel statistics are means
over real residues only, and every output is zero at padding positions. None of them adds a
positional encoding, so for padding at the window ends a real position's output equals the
output for the unpadded (trimmed) window.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, PluginConfig

from .basic import _check_count

# ------------------------------------------------------------------------- masked primitives


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set padding positions of [N, W, D] to exactly 0 (``where``, so even inf/nan are removed)."""
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of [N, W, D] over real positions -> [N, D]; all-padding rows give zeros."""
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
    return zero_padding(x, mask).sum(dim=1) / count


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of [N, W, D] over real positions -> [N, D]; all-padding rows give zeros."""
    pooled = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))


def check_heads(name: str, dim: int, heads: int) -> None:
    if dim % heads:
        raise ValueError(
            f"{name}: dim {dim} is not divisible by heads {heads}; choose `dim` and `heads` so "
            "that every head gets dim / heads channels"
        )


class MaskedMultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention in which padding keys get zero weight.

    softmax(Q K^T / sqrt(d_h) + M) V per head, M = -inf at padding keys, then an output
    projection. The key projection has no bias: a key bias adds ``q . b_k`` to every score of a
    query alike, which the softmax cancels, so it would be a parameter without gradient.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, w, d = query.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [N, W, D] -> [N, H, W, D/H]
            return t.reshape(n, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        # A row with no real residue would give softmax(all -inf) = nan: let it attend to every
        # position instead (its outputs are zeroed by the caller anyway).
        allowed = mask | ~mask.any(dim=1, keepdim=True)  # [N, W_keys]
        attn = F.scaled_dot_product_attention(
            split(self.q(query)),
            split(self.k(context)),
            split(self.v(context)),
            attn_mask=allowed[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attn.transpose(1, 2).reshape(n, w, d))


def _aligned(in_dim: int, dim: int) -> nn.Module:
    return nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)


# ---------------------------------------------------------------------------- cross_attention


@register.fusion("cross_attention")
class CrossAttention(GraphModule):
    """Bidirectional multi-head cross-attention of two inputs (a->b and b->a), residual + LN.

    Each input is projected to ``dim`` (inputs already of that size pass through), then
    A' = LN(A + MHA(A, B, B)) and B' = LN(B + MHA(B, A, A)): each side queries the other.
    The result is [A'; B'] (``combine: concat``, size 2 * dim) or (A' + B') / 2 (``mean``).
    """

    class Config(PluginConfig):
        dim: int | None = Field(
            None, gt=0, description="common size both inputs are projected to (default: the larger input)"
        )
        heads: int = Field(4, gt=0, description="attention heads; must divide `dim`")
        combine: Literal["concat", "mean"] = Field(
            "concat", description="join the two attended sides by concatenation (2 * dim) or their mean"
        )
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on attention weights and outputs")

    n_inputs: ClassVar[tuple[int, int | None]] = (2, 2)

    def __init__(self, config: CrossAttention.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("cross_attention", self.n_inputs, self.in_dims)
        dim = config.dim if config.dim is not None else max(self.in_dims)
        check_heads("cross_attention", dim, config.heads)
        self.proj = nn.ModuleList(_aligned(d, dim) for d in self.in_dims)
        self.attend = nn.ModuleList(MaskedMultiheadAttention(dim, config.heads, config.dropout) for _ in "ab")
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in "ab")
        self.dropout = nn.Dropout(config.dropout)
        self.output_dims = {"out": 2 * dim if config.combine == "concat" else dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        a, b = (p(zero_padding(x, mask)) for p, x in zip(self.proj, inputs, strict=True))
        a2 = self.norms[0](a + self.dropout(self.attend[0](a, b, mask)))
        b2 = self.norms[1](b + self.dropout(self.attend[1](b, a, mask)))
        out = torch.cat([a2, b2], dim=-1) if self.config.combine == "concat" else (a2 + b2) / 2
        return zero_padding(out, mask)


# -------------------------------------------------------------------------- channel_attention


@register.fusion("channel_attention")
class ChannelAttention(GraphModule):
    """Concatenated inputs reweighted per channel by squeeze-and-excitation, optional projection.

    X = [X_1; ...; X_k] (size C); s = masked mean of X over real positions; weights
    w = sigmoid(W_2 GELU(W_1 s)) in (0, 1)^C per window; out = X * w, then Linear(C, dim) when
    ``dim`` is set.
    """

    class Config(PluginConfig):
        reduction: int = Field(
            8, gt=0, description="bottleneck of the excitation MLP: hidden = max(1, C // reduction)"
        )
        dim: int | None = Field(
            None, gt=0, description="project the reweighted channels to this size (default: no projection)"
        )
        dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the output")

    n_inputs: ClassVar[tuple[int, int | None]] = (1, None)

    def __init__(self, config: ChannelAttention.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("channel_attention", self.n_inputs, self.in_dims)
        channels = sum(self.in_dims)
        hidden = max(1, channels // config.reduction)
        # GELU rather than SE's ReLU: pooled statistics of freshly initialised layers are small,
        # so the bias alone decides which bottleneck units are active, and with a narrow
        # bottleneck every ReLU unit can start dead (W_1 would then never learn). GELU has no
        # flat region, so the gate always trains.
        self.excite = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.proj = nn.Linear(channels, config.dim) if config.dim is not None else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.output_dims = {"out": config.dim if config.dim is not None else channels}

    def weights(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The channel weights [N, C] in (0, 1) for the concatenated inputs."""
        return torch.sigmoid(self.excite(masked_mean(torch.cat(inputs, dim=-1), mask)))

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        x = zero_padding(torch.cat(inputs, dim=-1), mask)
        w = self.weights([x], mask)
        return zero_padding(self.dropout(self.proj(x * w.unsqueeze(1))), mask)


# ----------------------------------------------------------------------------- self_attention


@register.fusion("self_attention")
class SelfAttention(GraphModule):
    """Concatenated inputs projected to ``dim``, then masked multi-head self-attention, residual + LN.

    H = Linear([X_1; ...; X_k]); out = LN(H + MHA(H, H, H)), padding keys masked.
    """

    class Config(PluginConfig):
        dim: int | None = Field(
            None, gt=0, description="size after the input projection (default: the concatenated size)"
        )
        heads: int = Field(4, gt=0, description="attention heads; must divide `dim`")
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on attention weights and outputs")

    n_inputs: ClassVar[tuple[int, int | None]] = (1, None)

    def __init__(self, config: SelfAttention.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("self_attention", self.n_inputs, self.in_dims)
        dim = config.dim if config.dim is not None else sum(self.in_dims)
        check_heads("self_attention", dim, config.heads)
        self.proj = nn.Linear(sum(self.in_dims), dim)
        self.attend = MaskedMultiheadAttention(dim, config.heads, config.dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.output_dims = {"out": dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(zero_padding(torch.cat(inputs, dim=-1), mask))
        out = self.norm(h + self.dropout(self.attend(h, h, mask)))
        return zero_padding(out, mask)
