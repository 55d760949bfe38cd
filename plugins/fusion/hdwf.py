"""``hdwf``: Hierarchical Dynamic Weighting Fusion (UniPTMs, section 2.3.4, eqs. 23-31).

Late fusion of the master branch ``M`` [N, W, Dm] (in UniPTMs: after BiLSTM -> Mamba) with the
slave branch ``S`` [N, W, Ds] (MACP's deep output). Inputs are ordered [master, slave]. With
``D = dim`` (default ``Dm``), ``H = heads``, ``d = D / H`` and means taken over real positions:

* eq. 23 ``gc = sigmoid(W2 GELU(W1 AvgPool(M)))``: one channel weight per sample and master
  channel (W1: Dm -> Dm/4, W2: Dm/4 -> Dm; AvgPool = masked mean over positions).
* eq. 24 ``M~ = Wp (M * gc)``: Wp (Dm -> D) is also where the master reaches size D.
* (unnumbered) ``S~ = S * sigmoid(Wc Conv1D(S))``: a depthwise convolution (kernel ``k``) along the
  window, then Wc (Ds -> 1): one weight per position. Two linear maps in a row equal one
  Ds -> 1 convolution; the depthwise + Wc factorisation spans exactly those kernels with Ds*(k+1)
  weights instead of Ds*Ds*k. The slave keeps its size Ds; its key projection maps it to D.
* eq. 25 ``Q = Wq M~``, ``K = Wk S~``; eq. 28 ``V = Wv M~`` (values come from the master, as the
  paper writes: the slave decides where to look, the master supplies what is gathered). Wk has
  no bias (the softmax cancels a key bias), nor has the depthwise convolution (Wc's bias
  already covers it).
* eq. 26-27, typos and the reading chosen. The printed coefficient "7" is the gamma that eq. 27
  multiplies by (an inverse temperature; called ``tau`` here, because eq. 31 reuses gamma for a
  different parameter). The numerator and denominator of eq. 27 both print ``Q_i K_i^T``; the
  reading that makes it an attention distribution is the softmax over keys j of
  ``Q_i K_j^T / sqrt(d) * tau``. Eq. 26 as printed adds the mean feature of the master, which
  can be negative or zero (e.g. after a normalisation) and would then flip or flatten the
  attention; the text says the coefficient is "modulated by the feature standard deviation of
  the master branch", so: ``tau = softplus(a) + mean_i std_c(M_i)`` (one value per sample: the
  std over channels at each real position, averaged over the real positions as in eq. 26's
  ``1/L sum_i``), with ``a`` learnable and softplus(a) starting at 0.5. ``tau > 0`` always.
  The scale uses the head size d (eq. 27's ``sqrt(D)`` with one head).
* eq. 28-29 ``G = A V`` per head; ``G~`` uses per-position head weights
  ``w = softmax_h(Wh GELU(Wm M))`` (Wm: Dm -> D/4, Wh: D/4 -> H). Eq. 29's sum over heads of
  d-sized head outputs would shrink the output to D/H, so each head keeps its own channel slice:
  ``G~ = concat_h(H * w_h * G^(h))`` (the sum of the heads placed in their own slices; the factor
  H makes equal weights give plain concatenation).
* eq. 30-31 ``out = LN(lambda * M + (1 + gamma) * dropout(G~) + beta * M)``, zeroed at padding:
  ``lambda`` is a per-channel layer scale initialised to ``layer_scale_init`` (paper: 1e-6);
  ``gamma`` and ``beta`` are learnable scalars (the paper writes them with a plain product, and
  lambda with the element-wise one) initialised to 0 and 1, so the block starts as the ordinary
  post-norm residual ``LN(M + G~)`` and the master dominates from the first step. When Dm != D,
  ``M`` here is a linear projection of the master to D.

Padding: both inputs are zeroed at padding first; attention never attends to padding keys; the
channel pool and the temperature statistic are masked means; the convolution input is zero at
padding. A real position's output is what the trimmed window gives; padding outputs are zero.
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
from .bhgfn import attention_weights, masked_mean, merge_heads, split_heads


@register.fusion("hdwf")
class HDWF(GraphModule):
    """Master-slave late fusion (UniPTMs HDWF): channel/spatial weighting, dynamic-temperature attention."""

    class Config(PluginConfig):
        dim: int | None = Field(
            None,
            gt=0,
            description="output size D (default: the master size); Wp maps the master to D, "
            "the key projection maps the slave to D",
        )
        heads: int = Field(8, gt=0, description="attention heads = weighted groups of eq. 29; must divide D")
        kernel_size: OddInt = Field(3, description="odd kernel length of the slave's spatial weighting")
        layer_scale_init: float = Field(
            1e-6, ge=0.0, description="initial per-channel layer scale lambda on the master (paper: 1e-6)"
        )
        dropout: float = Field(
            0.1, ge=0.0, lt=1.0, description="dropout on attention weights and on the fused features"
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (2, 2)

    def __init__(self, config: HDWF.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        _check_count("hdwf", self.n_inputs, self.in_dims)
        dm, ds = self.in_dims
        d = config.dim if config.dim is not None else dm
        if d % config.heads:
            raise ValueError(
                f"hdwf: size {d} must be divisible by heads={config.heads} "
                f"(master {dm}, slave {ds}, dim {config.dim})"
            )
        k = config.kernel_size
        self.heads = config.heads
        self.channel_mlp = nn.Sequential(  # eq. 23
            nn.Linear(dm, max(dm // 4, 1)), nn.GELU(), nn.Linear(max(dm // 4, 1), dm)
        )
        self.w_p = nn.Linear(dm, d)  # eq. 24
        self.spatial_conv = nn.Conv1d(ds, ds, k, padding=k // 2, groups=ds, bias=False)  # S~
        self.w_c = nn.Linear(ds, 1)
        self.w_q = nn.Linear(d, d)  # eq. 25
        self.w_k = nn.Linear(ds, d, bias=False)  # a key bias cancels in the softmax
        self.w_v = nn.Linear(d, d)  # eq. 28
        self.alpha = nn.Parameter(torch.tensor(math.log(math.expm1(0.5))))  # eq. 26: softplus -> 0.5
        self.head_mlp = nn.Sequential(  # eq. 29: Wm, Wh
            nn.Linear(dm, max(d // 4, 1)), nn.GELU(), nn.Linear(max(d // 4, 1), config.heads)
        )
        self.residual = nn.Identity() if dm == d else nn.Linear(dm, d)
        self.layer_scale = nn.Parameter(torch.full((d,), float(config.layer_scale_init)))  # eq. 30
        self.gamma = nn.Parameter(torch.zeros(()))  # eq. 31
        self.beta = nn.Parameter(torch.ones(()))
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        self.output_dims = {"out": d}

    def temperature(self, m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 26 as read here: softplus(a) + masked mean over positions of the channel std -> [N]."""
        std = torch.sqrt(m.var(dim=-1, unbiased=False, keepdim=True) + 1e-5)  # eps: finite grads at 0
        return F.softplus(self.alpha) + masked_mean(std, mask).squeeze(-1)

    def components(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate of eqs. 23-31 by name (for inspection and tests); ``out`` is the result."""
        mask = mask.bool()
        keep = mask.unsqueeze(-1).to(inputs[0].dtype)
        m, s = inputs[0] * keep, inputs[1] * keep
        g_channel = torch.sigmoid(self.channel_mlp(masked_mean(m, mask))).unsqueeze(1)  # [N, 1, Dm]
        m_t = self.w_p(m * g_channel)
        g_spatial = torch.sigmoid(self.w_c(self.spatial_conv(s.transpose(1, 2)).transpose(1, 2)))
        s_t = s * g_spatial
        q, k, v = (split_heads(t, self.heads) for t in (self.w_q(m_t), self.w_k(s_t), self.w_v(m_t)))
        tau = self.temperature(m, mask)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) * tau[:, None, None, None]
        attn = attention_weights(logits, mask)
        g = self.drop(attn) @ v  # [N, H, W, d]
        head_w = torch.softmax(self.head_mlp(m), dim=-1)  # [N, W, H]
        g_fused = merge_heads(g * (self.heads * head_w.transpose(1, 2).unsqueeze(-1)))
        m_res = self.residual(m)
        pre = self.layer_scale * m_res + (1 + self.gamma) * self.drop(g_fused) + self.beta * m_res
        out = self.norm(pre) * keep
        return {
            "g_channel": g_channel,
            "g_spatial": g_spatial,
            "tau": tau,
            "attn": attn,
            "head_weights": head_w,
            "fused": g_fused,
            "out": out,
        }

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.components(inputs, mask)["out"]
