"""A torchrun worker for test_distributed: masked BatchNorm (resnet1d / multiscale_cnn) and the
task heads' BatchNorm give every rank the global batch's statistics: each rank's outputs, input
gradients and running statistics equal one process's on the whole batch. Exits 1 on a mismatch."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from ptmkit_plugins.backbones.resnet1d import MaskedBatchNorm
from ptmkit_plugins.heads.task_heads import _BatchNorm

from ptmkit import distributed

#: max |difference| / (1 + max |value|): float32 sums in another order, nothing more
TOLERANCE = 1e-5
STEPS = 2


def steps(
    norm: torch.nn.Module, x: torch.Tensor, extra: list[torch.Tensor], rows: torch.Tensor
) -> list[dict]:
    """Two training steps; per step the output and input gradient at ``rows`` and the running
    statistics. The objective weights each output element differently (so gradients through
    the shared statistics matter); each rank backpropagates its share of it."""
    out = []
    for step in range(STEPS):
        xs = (x[rows] + step).requires_grad_()
        y = norm(xs, *(e[rows] for e in extra))
        weight = torch.arange(x.numel(), dtype=x.dtype).view_as(x)[rows]
        (y * weight).sum().backward()
        out.append(
            {
                "output": y.detach(),
                "input gradient": xs.grad,
                "running_mean": norm.running_mean.clone(),
                "running_var": norm.running_var.clone(),
            }
        )
    return out


def compare(name: str, whole: list[dict], mine: list[dict], rows: torch.Tensor) -> list[str]:
    bad = []
    for step, (a, b) in enumerate(zip(whole, mine, strict=True)):
        for key in a:
            ref = a[key][rows] if key in ("output", "input gradient") else a[key]
            err = ((ref - b[key]).abs().max() / (1 + ref.abs().max())).item()
            if err > TOLERANCE:
                bad.append(f"{name} step {step} {key}: max |diff| / (1 + max |value|) {err:.2e}")
    return bad


if __name__ == "__main__":
    torch.manual_seed(0)
    x3 = torch.randn(9, 6, 4)
    keep = (torch.rand(9, 6, 1) > 0.3).float()
    x2 = torch.randn(9, 4)
    cases: dict[str, tuple[Callable[[], torch.nn.Module], torch.Tensor, list[torch.Tensor]]] = {
        "MaskedBatchNorm": (lambda: MaskedBatchNorm(4), x3, [keep]),
        "task_heads BatchNorm": (lambda: _BatchNorm(4), x2, []),
    }
    # one process on the whole batch first (before joining), then each rank on its share
    whole = {name: steps(make(), x, extra, torch.arange(len(x))) for name, (make, x, extra) in cases.items()}
    bad = []
    with distributed.joined("cpu") as world:
        assert world.size == 2, world
        for name, (make, x, extra) in cases.items():
            rows = world.part(torch.arange(len(x)))
            bad += compare(name, whole[name], steps(make(), x, extra, rows), rows)
    print("\n".join(bad) or "statistics match")
    sys.exit(1 if bad else 0)
