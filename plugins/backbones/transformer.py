"""Pre-norm Transformer encoder backbone with padding-masked attention."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, PluginConfig


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al. encoding of integer ``positions [...]`` -> ``[..., dim]`` (any dim, any length)."""
    half = (dim + 1) // 2
    freq = torch.exp(
        torch.arange(half, device=positions.device, dtype=torch.float32) * (-2.0 * math.log(10000.0) / dim)
    )
    angle = positions.unsqueeze(-1).float() * freq
    # Interleave sin (even features) and cos (odd features); drop the last cos for odd dim.
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)[..., :dim]


@register.backbone("transformer")
class Transformer(GraphModule):
    """Pre-norm Transformer encoder over the window; out = d_model, zero at padding positions.

    The input is projected to ``d_model`` when its size differs, a positional encoding is
    added, and ``layers`` pre-norm encoder layers (self-attention with ``heads`` heads, GELU
    feed-forward of ``ff_mult * d_model``) follow, then a final LayerNorm. Padding keys are
    masked out of attention (``src_key_padding_mask``), so no real position attends to
    padding. Positions are counted from each row's first real residue, so for padding at the
    window ends a real position's output equals the unpadded sequence's, as for the other
    backbones; relative offsets (what attention between residues uses) are unchanged, and the
    site itself is picked out by the head (``pool: center``).
    """

    class Config(PluginConfig):
        d_model: int | None = Field(
            None,
            gt=0,
            description="model width, divisible by heads (default: the input size; else a linear projection)",
        )
        heads: int = Field(4, gt=0, description="attention heads")
        layers: int = Field(2, gt=0, description="number of encoder layers")
        ff_mult: int = Field(4, gt=0, description="feed-forward width = ff_mult * d_model")
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in attention and feed-forward")
        positional: Literal["sinusoidal", "learned", "none"] = Field(
            "sinusoidal",
            description="positional encoding added to the input: fixed sinusoidal, a learned table, or none",
        )
        max_len: int = Field(
            1024, gt=0, description="longest input a learned positional table covers (learned only)"
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: Transformer.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) != 1:
            raise ValueError(
                f"transformer takes exactly 1 input, got {len(self.in_dims)} (dims {self.in_dims}); "
                "fuse them first, e.g. with concat"
            )
        if self.in_dims[0] < 1:
            raise ValueError(f"transformer needs an input of size >= 1, got {self.in_dims}")
        d_model = config.d_model or self.in_dims[0]
        if d_model % config.heads:
            raise ValueError(
                f"transformer d_model {d_model} is not divisible by heads {config.heads}; "
                "set d_model (the input is projected to it) or heads"
            )
        self.d_model = d_model
        self.project = nn.Linear(self.in_dims[0], d_model) if d_model != self.in_dims[0] else None
        self.position = nn.Embedding(config.max_len, d_model) if config.positional == "learned" else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            config.heads,
            dim_feedforward=config.ff_mult * d_model,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.output_dims = {"out": d_model}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        n, w, _ = x.shape
        mask = mask.bool()
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = x * keep
        if self.project is not None:
            h = self.project(h)
        if self.config.positional != "none":
            idx = torch.arange(w, device=x.device)
            first = torch.where(mask, idx, w).min(dim=1).values.clamp(max=w - 1)
            positions = (idx - first.unsqueeze(1)).clamp(min=0)  # [N, W], 0 at the first real residue
            if self.position is not None:
                if w > self.config.max_len:
                    raise ValueError(
                        f"transformer: input length {w} exceeds the learned positional table "
                        f"(max_len {self.config.max_len}); raise max_len or use positional: sinusoidal"
                    )
                h = h + self.position(positions)
            else:
                h = h + sinusoidal(positions, self.d_model).to(h.dtype)
        h = h * keep
        # A row without any real residue would mask every key (softmax of all -inf = NaN): let it
        # attend freely; its output is zeroed below anyway.
        ignore = ~mask & mask.any(dim=1, keepdim=True)
        out = self.encoder(h, src_key_padding_mask=ignore)
        return out * keep
