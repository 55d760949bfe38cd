"""``bhgfn``: Bidirectional Hierarchical Gated Fusion Network (UniPTMs, section 2.3.3, eqs. 13-22).

Mid-phase fusion of a master-branch feature ``H1`` [N, W, Dm] with a slave-branch feature ``H2``
[N, W, Ds] (in UniPTMs: the MACP shallow or middle output). Inputs are ordered [master, slave].
With ``D = dim`` (default ``Dm``) and ``keep`` the padding mask:

* ``H1`` is used as is when ``Dm == D``, otherwise linearly projected to ``D``. The slave is never
  projected on its own: its query, key and value projections map ``Ds -> D`` directly.
* eq. 14 ``A1 = Attn(H1 Wq1, H2 Wk, H2 Wv)``: master queries, projected slave keys/values.
* eq. 15 ``A2 = Attn(H2 Wq2, H1, H1)``: slave queries; keys and values are the (unprojected)
  master features themselves, which is the asymmetry the paper describes. ``Wq1`` and ``Wq2`` are
  separate matrices (the paper writes ``W_q`` for both, but they act on different sizes).
  Both use ``heads`` heads of size ``D / heads`` (keys/values of A2 are split into heads by
  channel), scaled dot products (eq. 13) and no output projection (the equations have none).
  The key projection has no bias: ``q . b_k`` is the same for every key, so the softmax would
  cancel it and it would never learn.
* eq. 16-17 ``Ga = sigmoid(Wg [A1; A2])``, ``Fa = Ga * A1 + (1 - Ga) * A2``.
* eq. 18 ``Kc = phi(AvgPool(H1))``: ``phi`` is Linear(D, D/4) -> GELU -> Linear(D/4, D*k), giving a
  depthwise kernel (one ``k``-tap filter per channel) for every sample; AvgPool is the mean over
  the real positions.
* eq. 19 ``Fc = Conv1D(Fa, Kc)``: per-sample depthwise convolution with zero padding ``k // 2``,
  run as one grouped ``conv1d`` over the whole batch (groups = N * D), no loop over samples.
* eq. 20 ``Gc = sigmoid(fc(H1))`` (Linear D -> D per position), ``Fgc = Gc * Fc``.
* eq. 21 ``Gs = sigmoid(Conv1d(Fgc))`` (D -> 1 channel, kernel ``k``), ``Fgs = Gs * Fgc``.
* eq. 22 ``out = LN(dropout(Fgs) + H1)``, then zeroed at padding.

Padding: both inputs are zeroed at padding first; attention never attends to padding keys; the
kernel pool is a masked mean; convolution inputs are zero at padding, so a real position's output
is exactly what the trimmed (unpadded) window gives. Padding positions of the output are zero.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, OddInt, PluginConfig

from .basic import _check_count


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [N, W, C] over the real positions of ``mask`` [N, W] -> [N, C] (0 if none)."""
    keep = mask.unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, W, D] -> [N, heads, W, D / heads]."""
    n, w, d = x.shape
    return x.reshape(n, w, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[N, heads, W, d] -> [N, W, heads * d]."""
    n, h, w, d = x.shape
    return x.transpose(1, 2).reshape(n, w, h * d)


def attention_weights(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``logits`` [N, H, Wq, Wk] over real keys only (``mask`` [N, Wk]).

    Padding keys get exactly zero weight. A row without any real residue attends uniformly (its
    outputs are zeroed by the caller) instead of producing NaN.
    """
    keys = mask | ~mask.any(dim=1, keepdim=True)
    logits = logits.masked_fill(~keys[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1)


def dynamic_conv(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample depthwise 1-D convolution (cross-correlation, zero padding ``k // 2``).

    ``x`` [N, W, D], ``kernels`` [N, D, k] (k odd) -> [N, W, D], where
    ``out[n, i, c] = sum_t kernels[n, c, t] * x[n, i + t - k // 2, c]``. The batch is folded into
    the channel axis so one grouped convolution (groups = N * D) applies every sample's kernels.
    """
    n, w, d = x.shape
    k = kernels.shape[-1]
    y = F.conv1d(
        x.transpose(1, 2).reshape(1, n * d, w),
        kernels.reshape(n * d, 1, k),
        padding=k // 2,
        groups=n * d,
    )
    return y.reshape(n, d, w).transpose(1, 2)


@register.fusion("bhgfn")
class BHGFN(GraphModule):
    """Master-slave mid fusion (UniPTMs BHGFN): asymmetric cross-attention, gates, dynamic conv."""

    class Config(PluginConfig):
        dim: int | None = Field(
            None,
            gt=0,
            description="output size D (default: the master size); the master is linearly "
            "projected to D when it differs, the slave enters through its D-sized projections",
        )
        heads: int = Field(8, gt=0, description="attention heads; must divide D")
        kernel_size: OddInt = Field(
            3, description="odd length of the dynamic (per-sample) kernels and the spatial gate"
        )
        dropout: float = Field(
            0.1, ge=0.0, lt=1.0, description="dropout on attention weights and on the gated branch"
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (2, 2)

    def __init__(self, config: BHGFN.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("bhgfn", self.n_inputs, self.in_dims)
        dm, ds = self.in_dims
        d = config.dim if config.dim is not None else dm
        if d % config.heads:
            raise ValueError(
                f"bhgfn: size {d} must be divisible by heads={config.heads} "
                f"(master {dm}, slave {ds}, dim {config.dim})"
            )
        k = config.kernel_size
        self.heads = config.heads
        self.kernel_size = k
        self.master_proj = nn.Identity() if dm == d else nn.Linear(dm, d)
        self.q1 = nn.Linear(d, d)  # eq. 14: master queries
        self.k1 = nn.Linear(ds, d, bias=False)  # eq. 14: projected slave keys (a key bias cancels)
        self.v1 = nn.Linear(ds, d)  # eq. 14: projected slave values
        self.q2 = nn.Linear(ds, d)  # eq. 15: slave queries (keys/values: H1 itself)
        self.attn_gate = nn.Linear(2 * d, d)  # eq. 16
        hidden = max(d // 4, 1)
        self.kernel_gen = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d * k))  # eq. 18
        self.channel_gate = nn.Linear(d, d)  # eq. 20
        self.spatial_gate = nn.Conv1d(d, 1, k, padding=k // 2)  # eq. 21
        self.norm = nn.LayerNorm(d)  # eq. 22
        self.drop = nn.Dropout(config.dropout)
        self.output_dims = {"out": d}

    def kernels(self, h1: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 18: per-sample depthwise kernels [N, D, k] from the masked mean of ``h1`` [N, W, D]."""
        n, _, d = h1.shape
        return self.kernel_gen(masked_mean(h1, mask)).reshape(n, d, self.kernel_size)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-head attention without output projection -> (output [N, W, D], weights)."""
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        probs = attention_weights(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), mask)
        return merge_heads(self.drop(probs) @ v), probs

    def components(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate of eqs. 13-22 by name (for inspection and tests); ``out`` is the result."""
        mask = mask.bool()
        keep = mask.unsqueeze(-1).to(inputs[0].dtype)
        h1 = self.master_proj(inputs[0] * keep) * keep
        h2 = inputs[1] * keep
        a1, attn1 = self._attend(self.q1(h1), self.k1(h2), self.v1(h2), mask)
        a2, attn2 = self._attend(self.q2(h2), h1, h1, mask)
        g_attn = torch.sigmoid(self.attn_gate(torch.cat([a1, a2], dim=-1)))
        f_attn = (g_attn * a1 + (1 - g_attn) * a2) * keep
        kernels = self.kernels(h1, mask)
        f_conv = dynamic_conv(f_attn, kernels) * keep
        g_channel = torch.sigmoid(self.channel_gate(h1))
        f_gc = g_channel * f_conv
        g_spatial = torch.sigmoid(self.spatial_gate(f_gc.transpose(1, 2))).transpose(1, 2)
        f_gs = g_spatial * f_gc
        out = self.norm(self.drop(f_gs) + h1) * keep
        return {
            "h1": h1,
            "attn1": attn1,
            "attn2": attn2,
            "g_attn": g_attn,
            "f_attn": f_attn,
            "kernels": kernels,
            "f_conv": f_conv,
            "g_channel": g_channel,
            "g_spatial": g_spatial,
            "out": out,
        }

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.components(inputs, mask)["out"]
