"""PTM-Mamba's language model: bidirectional gated Mamba over PTM-aware tokens, on ptmkit's Mamba.

The layout follows the published model (Peng et al. 2025; github.com/programmablebio/ptm-mamba),
parameter names included, so a released checkpoint's weights load by name (``checkpoints.py``):

- ``h = backbone.embedding(x)``; with a context branch (ESM-2 in the paper, any per-residue
  feature here) ``e = esm_head(c)`` (Linear, no bias), a per-token scalar gate
  ``g = sigmoid(backbone.gate([h; e]))`` and ``h = g * h + (1 - g) * e``.
- Each layer: a forward block on ``(h, r)`` and a backward block on the flipped ``(h, r)``; a
  block is "add, RMSNorm, Mamba mixer" (``r <- h + r``; ``h <- mixer(norm(r))``) with the
  residual stream kept in float32. Then ``h <- hidden_fc([h_f; flip(h_b)])`` (Linear 2d -> d)
  and ``r <- (r_f + flip(r_b)) / 2``.
- A final add-norm (``norm_f(h + r)``) gives the hidden states; the LM head is tied to the
  embedding.

The mixer is ptmkit's (``plugins/backbones/mamba.py``): the PyTorch selective scan on CPU,
mamba-ssm's CUDA kernel on GPU. Unlike the published code it never reads padding: padding gets
``delta = 0`` and zero conv input, and the backward block sees the flipped padding mask, so a
padded protein scores as it does alone (the published model lets right-padding enter the
backward scan first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import torch
from ptmkit_plugins.backbones.mamba import CUDA_HINT, MambaMixer, RMSNorm
from ptmkit_plugins.backbones.selective_scan import DEFAULT_CHUNK, cuda_scan_status
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import LanguageModel, PluginConfig
from ptmkit.sitetable import SiteTable

from . import tokens

#: token id -> the letter a context feature reads there (a hidden position's letter is never read)
_CONTEXT_LETTER = {tokens.IDS[r]: r for r in tokens.RESIDUES} | {
    tokens.IDS[t]: "X" for t in (*tokens.PTMS, "<mask>")
}
_HIDDEN = frozenset(tokens.IDS[t] for t in (*tokens.PTMS, "<mask>"))


class Block(nn.Module):
    """Add -> RMSNorm -> Mamba mixer (mamba-ssm's ``Block`` with ``fused_add_norm`` semantics)."""

    def __init__(self, d_model: int, config: PtmMamba.Config) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = MambaMixer(
            d_model, config.d_state, config.d_conv, config.expand, config.dt_rank, config.impl, config.chunk
        )

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden.float() if residual is None else residual + hidden.float()
        return self.mixer(self.norm(residual.to(hidden.dtype)), keep), residual


class Backbone(nn.Module):
    """Embedding (+ gated context), bidirectional layers, final add-norm -> hidden states."""

    def __init__(self, config: PtmMamba.Config) -> None:
        super().__init__()
        d = config.d_model
        self.embedding = nn.Embedding(len(tokens.VOCAB), d)
        self.gate = nn.Linear(2 * d, 1) if config.context_dim else None
        if config.bidirectional:
            self.forward_layers = nn.ModuleList(Block(d, config) for _ in range(config.n_layer))
            self.backward_layers = nn.ModuleList(Block(d, config) for _ in range(config.n_layer))
            self.hidden_fc = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(config.n_layer))
        else:
            self.layers = nn.ModuleList(Block(d, config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(d)
        self.bidirectional = config.bidirectional

    def forward(self, ids: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        keep = (ids != tokens.IDS["<pad>"]).unsqueeze(-1).float()
        h = self.embedding(ids)
        if self.gate is not None:
            # no context given to a gated model: zeros, as the published model does without ESM-2
            e = torch.zeros_like(h) if context is None else context
            g = torch.sigmoid(self.gate(torch.cat([h, e], dim=-1)))
            h = g * h + (1 - g) * e
        residual: torch.Tensor | None = None
        if not self.bidirectional:
            for block in self.layers:
                h, residual = block(h, residual, keep)
        else:
            back = keep.flip(1)
            for fwd, bwd, fc in zip(self.forward_layers, self.backward_layers, self.hidden_fc, strict=True):
                h_f, r_f = fwd(h, residual, keep)
                h_b, r_b = bwd(h.flip(1), None if residual is None else residual.flip(1), back)
                h = fc(torch.cat([h_f, h_b.flip(1)], dim=-1))
                residual = 0.5 * (r_f + r_b.flip(1))
        residual = h.float() if residual is None else residual + h.float()
        return self.norm_f(residual.to(h.dtype))


@register.language_model("ptm_mamba")
class PtmMamba(LanguageModel):
    """PTM-Mamba (Peng et al. 2025): a bidirectional gated Mamba masked LM over PTM-aware tokens.

    The vocabulary is PTM-Mamba's 59 tokens in its id order (``tokens.py``), so released weights
    line up. Sequences are written ``<cls> ... <eos>`` as in its pretraining. ``context_dim`` adds
    the gated context branch (1280 for ESM-2 650M as published; null: no branch, no gate).
    Released size: ``d_model`` 768, ``n_layer`` 24.
    """

    class Config(PluginConfig):
        d_model: int = Field(768, gt=0, description="model width (768 released)")
        n_layer: int = Field(24, gt=0, description="bidirectional layers (24 released)")
        d_state: int = Field(16, gt=0, description="SSM state size per channel")
        d_conv: int = Field(4, gt=0, description="width of each mixer's causal depthwise convolution")
        expand: int = Field(2, gt=0, description="mixer inner width = expand * d_model")
        dt_rank: int | None = Field(
            None, gt=0, description="rank of the delta projection (ceil(d_model / 16))"
        )
        context_dim: int | None = Field(
            None,
            gt=0,
            description="features per residue of the gated context branch (ESM-2 650M: 1280); null: none",
        )
        bidirectional: bool = Field(
            True, description="forward and backward blocks per layer (published: yes)"
        )
        impl: Literal["auto", "torch", "cuda"] = Field(
            "auto", description="selective scan: auto = mamba-ssm's CUDA kernel on CUDA when importable"
        )
        chunk: int = Field(
            DEFAULT_CHUNK, gt=0, description="positions per scan chunk (bounds backward memory)"
        )

    vocab: ClassVar[tuple[str, ...]] = tokens.VOCAB
    pad_id: ClassVar[int] = tokens.IDS["<pad>"]
    mask_id: ClassVar[int] = tokens.IDS["<mask>"]

    def __init__(self, config: PtmMamba.Config) -> None:
        super().__init__(config)
        if config.impl == "cuda" and cuda_scan_status()[0] is None:
            raise ValueError(
                f"ptm_mamba impl='cuda' is unavailable here ({cuda_scan_status()[1]}): {CUDA_HINT}"
            )
        self.backbone = Backbone(config)
        self.esm_head = (
            nn.Linear(config.context_dim, config.d_model, bias=False) if config.context_dim else None
        )
        self.lm_head = nn.Linear(config.d_model, len(tokens.VOCAB), bias=False)
        self._init_weights(config.n_layer)
        self.lm_head.weight = self.backbone.embedding.weight  # tied, as published

    def _init_weights(self, n_layer: int) -> None:
        """mamba-ssm's initialisation: N(0, 0.02) embedding, zero biases (the mixers' dt bias
        keeps its own), output projections scaled by 1/sqrt(layers) so the residual stream keeps
        its scale."""
        nn.init.normal_(self.backbone.embedding.weight, std=0.02)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and module.bias is not None and not name.endswith("dt_proj"):
                nn.init.zeros_(module.bias)
            if name.endswith("mixer.out_proj"):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                with torch.no_grad():
                    module.weight /= math.sqrt(n_layer)

    @property
    def hidden_dim(self) -> int:
        return self.config.d_model

    @property
    def context_dim(self) -> int | None:
        return self.config.context_dim

    def sequences(self, table: SiteTable, ptms: dict[str, str] | None = None) -> list[tuple[str, list[int]]]:
        out = []
        for pid, text, origin in tokens.table_sequences(table, ptms):
            ids = tokens.encode(text, where=f"{origin}: {pid}")
            out.append((pid, [tokens.IDS["<cls>"], *ids, tokens.IDS["<eos>"]]))
        return out

    def context_view(self, ids: Sequence[int]) -> tuple[str, list[int], list[bool]]:
        """Residue tokens as their letters; a PTM token or ``<mask>`` as a hidden residue (the
        published ESM-2 input replaces both with ESM's mask); specials and padding are no residues."""
        letters, where, hidden = [], [], []
        for i, t in enumerate(ids):
            letter = _CONTEXT_LETTER.get(t)
            if letter is None:
                continue
            letters.append(letter)
            where.append(i)
            hidden.append(t in _HIDDEN)
        return "".join(letters), where, hidden

    def residue_ids(self, sequence: str) -> tuple[list[int], int]:
        x = tokens.IDS["X"]
        return [tokens.IDS["<cls>"], *(tokens.IDS.get(c, x) for c in sequence), tokens.IDS["<eos>"]], 1

    @classmethod
    def ptm_tokens(cls) -> dict[str, str]:
        return dict(tokens.TOKEN_RESIDUE)

    @classmethod
    def ptm_token(cls, ptm: str, residue: str) -> str:
        return tokens.ptm_token(ptm, residue)

    @classmethod
    def load_file(cls, path: Path) -> PtmMamba:
        from .checkpoints import load_released

        return load_released(path)

    @classmethod
    def token_groups(cls) -> dict[str, list[int]]:
        return {
            "special": [tokens.IDS[t] for t in tokens.SPECIALS],
            "residue": [tokens.IDS[t] for t in tokens.RESIDUES],
            "ptm": [tokens.IDS[t] for t in tokens.PTMS],
        }

    def forward(
        self, ids: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if context is not None:
            if self.esm_head is None:
                raise ValueError(
                    "this ptm_mamba has no context branch (context_dim is null); give no context"
                )
            context = self.esm_head(context.to(self.esm_head.weight.dtype))
        hidden = self.backbone(ids, context)
        return hidden, self.lm_head(hidden)
