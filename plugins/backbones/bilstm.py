"""Bidirectional LSTM backbone that is exactly blind to padding at the window ends."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, PluginConfig


@register.backbone("bilstm")
class BiLSTM(GraphModule):
    """Bidirectional LSTM over the window; out = 2 * hidden, zero at padding positions.

    Padding in a site window sits at the ends (the protein's N- or C-terminus). Zeroing it is
    not enough for a recurrent model: the state would still step through the padding and the
    real residues' outputs would depend on how much padding precedes them. Instead each row's
    real span (first to last real residue) is shifted to the start and run as a packed
    sequence of that length, then shifted back, so a real position's output equals the output
    for the unpadded sequence. Padding *inside* the span (not produced by windowing) is fed as
    zeros. Outputs at all padding positions are zero.
    """

    class Config(PluginConfig):
        hidden: int = Field(64, gt=0, description="LSTM hidden size per direction")
        layers: int = Field(1, gt=0, description="number of stacked LSTM layers")
        dropout: float = Field(
            0.0, ge=0.0, lt=1.0, description="dropout between LSTM layers and on the output"
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: BiLSTM.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) != 1:
            raise ValueError(
                f"bilstm takes exactly 1 input, got {len(self.in_dims)} (dims {self.in_dims}); "
                "fuse them first, e.g. with concat"
            )
        if self.in_dims[0] < 1:
            raise ValueError(f"bilstm needs an input of size >= 1, got {self.in_dims}")
        self.lstm = nn.LSTM(
            input_size=self.in_dims[0],
            hidden_size=config.hidden,
            num_layers=config.layers,
            # nn.LSTM only applies dropout between layers (and warns if there is just one).
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=True,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output_dims = {"out": 2 * config.hidden}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        n, w, d = x.shape
        mask = mask.bool()
        x = x * mask.unsqueeze(-1).to(x.dtype)
        pos = torch.arange(w, device=x.device)
        first = torch.where(mask, pos, w).min(dim=1).values
        last = torch.where(mask, pos, -1).max(dim=1).values
        any_real = mask.any(dim=1)
        # Rows without any real residue get a dummy span of 1 (pack needs length >= 1) and
        # are zeroed by the final mask multiplication.
        start = torch.where(any_real, first, torch.zeros_like(first))
        span = torch.where(any_real, last - first + 1, torch.ones_like(first))

        # Shift each row's span to the start: shifted[n, t] = x[n, start[n] + t].
        src = (start.unsqueeze(1) + pos).clamp(max=w - 1)
        shifted = x.gather(1, src.unsqueeze(-1).expand(n, w, d))
        packed = pack_padded_sequence(shifted, span.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=w)

        # Shift back: result[n, p] = out[n, p - start[n]] inside the span, zero elsewhere.
        back = pos - start.unsqueeze(1)
        inside = (back >= 0) & (back < span.unsqueeze(1)) & mask
        back = back.clamp(0, w - 1)
        result = out.gather(1, back.unsqueeze(-1).expand(n, w, out.shape[-1]))
        return self.dropout(result) * inside.unsqueeze(-1).to(result.dtype)
