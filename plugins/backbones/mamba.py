"""Mamba (S6 selective state space) backbone, bidirectional by default, blind to padding."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ptmkit.api import register
from ptmkit.plugin_api import GraphModule, PluginConfig

from .selective_scan import DEFAULT_CHUNK, cuda_scan_status, cuda_selective_scan, selective_scan

CUDA_HINT = (
    'the CUDA path needs an NVIDIA GPU and mamba-ssm (pip install "ptmkit[cuda]"); '
    "use impl: auto (or torch) to run the PyTorch scan instead"
)


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last axis (as in Mamba; own code, torch>=2.2 has none)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaMixer(nn.Module):
    """One direction of a Mamba block: ``[N, L, d_model] -> [N, L, d_model]`` (causal in L).

    in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> x_proj -> (dt, B, C);
    delta = softplus(dt_proj(dt)); selective scan with A = -exp(A_log) and skip D;
    y * SiLU(z) -> out_proj. Parameters and initialisation follow the reference
    implementation (mamba_ssm.modules.mamba_simple.Mamba).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int,
        expand: int,
        dt_rank: int | None,
        impl: str,
        chunk: int,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.impl = impl
        self.chunk = chunk
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # dt_proj: weight ~ U(+-dt_rank^-0.5); bias = softplus^-1(dt) with dt log-uniform in
        # [dt_min, dt_max], so delta starts in a useful range.
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation: A[:, k] = -(k + 1).
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _scan(self, u, delta, A, B, C) -> torch.Tensor:  # noqa: ANN001
        use_cuda = self.impl == "cuda" or (
            self.impl == "auto" and u.is_cuda and cuda_scan_status()[0] is not None
        )
        if use_cuda:
            if not u.is_cuda:
                raise RuntimeError(f"mamba impl='cuda' got inputs on {u.device}; {CUDA_HINT}")
            return cuda_selective_scan(u, delta, A, B, C, self.D)
        return selective_scan(u, delta, A, B, C, self.D, chunk=self.chunk)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: [N, L, d_model]; keep: [N, L, 1] float, 1 at real residues.
        length = x.shape[1]
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        # Zero padding before the causal conv: the first real residue then sees exactly the
        # zeros the conv's own left padding gives an unpadded sequence.
        xi = xi * keep
        u = F.silu(self.conv1d(xi.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # delta = 0 at padding: exp(0 * A) = 1 keeps the state, delta * B * u = 0 adds nothing,
        # so padding anywhere is skipped by the recurrence.
        delta = F.softplus(self.dt_proj(dt)) * keep
        A = -torch.exp(self.A_log)
        y = self._scan(u, delta, A, B, C)
        return self.out_proj(y * F.silu(z))


class _Layer(nn.Module):
    """Pre-norm residual block: ``x + dropout(mix(norm(x)))``, re-zeroed at padding."""

    def __init__(self, d_model: int, config: Mamba.Config) -> None:
        super().__init__()
        self.norm = _norm(config.norm, d_model)

        def mixer() -> MambaMixer:
            return MambaMixer(
                d_model,
                config.d_state,
                config.d_conv,
                config.expand,
                config.dt_rank,
                config.impl,
                config.chunk,
            )

        self.forward_mixer = mixer()
        self.backward_mixer = mixer() if config.bidirectional else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        mixed = self.forward_mixer(h, keep)
        if self.backward_mixer is not None:
            # Run on the reversed window and flip back: each position then also summarises the
            # residues after it. The two directions are averaged (not summed) so the residual
            # update keeps the scale of a one-directional block.
            back = self.backward_mixer(h.flip(1), keep.flip(1)).flip(1)
            mixed = 0.5 * (mixed + back)
        return (x + self.dropout(mixed)) * keep


def _norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == "rms" else nn.LayerNorm(dim)


@register.backbone("mamba")
class Mamba(GraphModule):
    """Stacked Mamba (S6) blocks, bidirectional by default; out = d_model, zero at padding.

    Each layer is a pre-norm residual block around a Mamba mixer: in-projection to
    ``2 * expand * d_model`` (x and gate z), causal depthwise conv1d (width ``d_conv``), SiLU,
    input-dependent ``delta, B, C`` (``x_proj``; ``dt_proj`` + softplus for delta), the
    selective scan with ``A = -exp(A_log)`` (S4D-real init) and skip ``D``, gating by
    ``SiLU(z)`` and out-projection. A final norm (RMSNorm or LayerNorm) follows the stack.
    With ``bidirectional`` (default) every layer has a second mixer with its own weights that
    runs on the reversed window; the two are averaged. UniPTMs windows are centred on the
    site, so residues on both sides matter.

    Scan: on CPU the PyTorch scan of ``selective_scan.py``, a step loop with a hand-written
    backward (~12 ms forward / ~40 ms forward+backward for N=64, W=41, d_inner=128,
    d_state=16 on one CPU thread; see docs/backbones.md), chunked so that whole proteins need
    ``O(N·chunk·d_inner·d_state)`` scan memory; on GPU mamba-ssm's CUDA kernel when it
    imports (``impl``).

    Padding is invisible: padding positions are zeroed before the conv and get ``delta = 0``,
    so the state passes through them unchanged and receives nothing; for padding at the window
    ends a real position's output equals the unpadded sequence's, in both directions.
    """

    class Config(PluginConfig):
        d_model: int | None = Field(
            None, gt=0, description="model width (default: the input size; else a linear projection)"
        )
        d_state: int = Field(16, gt=0, description="SSM state size per channel (N in the paper)")
        d_conv: int = Field(4, gt=0, description="width of the causal depthwise convolution")
        expand: int = Field(2, gt=0, description="inner width = expand * d_model")
        dt_rank: int | None = Field(
            None, gt=0, description="rank of the delta projection (default: ceil(d_model / 16))"
        )
        layers: int = Field(1, gt=0, description="number of stacked Mamba blocks")
        bidirectional: bool = Field(
            True, description="also scan the reversed window (own weights) and average both directions"
        )
        norm: Literal["rms", "layer"] = Field("rms", description="RMSNorm or LayerNorm before each block")
        dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on each block's update")
        impl: Literal["auto", "torch", "cuda"] = Field(
            "auto",
            description="selective scan: auto = mamba-ssm CUDA kernel for CUDA inputs when importable, "
            "else PyTorch; torch; cuda (error when unavailable)",
        )
        chunk: int = Field(
            DEFAULT_CHUNK,
            gt=0,
            description="positions per scan chunk (PyTorch scan); bounds backward memory for long inputs",
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: Mamba.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) != 1:
            raise ValueError(
                f"mamba takes exactly 1 input, got {len(self.in_dims)} (dims {self.in_dims}); "
                "fuse them first, e.g. with concat"
            )
        if self.in_dims[0] < 1:
            raise ValueError(f"mamba needs an input of size >= 1, got {self.in_dims}")
        if config.impl == "cuda":
            fn, reason = cuda_scan_status()
            if fn is None:
                raise ValueError(f"mamba impl='cuda' is unavailable here ({reason}): {CUDA_HINT}")
        d_model = config.d_model or self.in_dims[0]
        self.project = nn.Linear(self.in_dims[0], d_model) if d_model != self.in_dims[0] else None
        self.layers = nn.ModuleList(_Layer(d_model, config) for _ in range(config.layers))
        self.norm = _norm(config.norm, d_model)
        self.output_dims = {"out": d_model}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = x * keep
        if self.project is not None:
            h = self.project(h) * keep
        for layer in self.layers:
            h = layer(h, keep)
        return self.norm(h) * keep
