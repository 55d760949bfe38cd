"""Shared checks every graph module must pass: shapes, gradients, padding, determinism.

A test file lists its cases and gets the standard tests with::

    test_shapes, test_gradients, test_padding, test_deterministic = standard_tests(CASES)

A case is ``(id, node type, input dims, config, expected "out" size)``. Heads (output [N, D])
are told apart from sequence modules (output [N, W, D]) by the plugin kind.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from ptmkit.hooks import build_registry
from ptmkit.plugin_api import GraphModule

WIDTHS = (31, 33, 37, 41)
BATCHES = (1, 8)
Case = tuple[str, str, list[int], dict[str, Any], int]


@functools.cache
def registry():  # noqa: ANN201
    return build_registry()


def is_head(name: str) -> bool:
    return registry().get("module", name).kind == "head"


def build(name: str, in_dims: list[int], **config: Any) -> GraphModule:
    """Construct a node the way the core does: registry lookup, config validation, dims."""
    cls = registry().get("module", name).obj
    return cls(cls.Config.model_validate(config), in_dims)


def make_batch(n: int, w: int, dims: list[int], seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random inputs with padding at the window ends (zero there, as features encode it).

    Row 0 is unpadded; the others get random left and/or right padding that keeps the centre.
    """
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, w, dtype=torch.bool)
    for row in range(1, n):
        left = int(torch.randint(0, w // 2, (1,), generator=g))
        right = int(torch.randint(0, w // 2, (1,), generator=g))
        if row % 3 == 1:
            right = 0
        elif row % 3 == 2:
            left = 0
        mask[row, :left] = False
        mask[row, w - right :] = False
    inputs = [torch.randn(n, w, d, generator=g) * mask.unsqueeze(-1) for d in dims]
    return inputs, mask


def outputs_of(result: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return result if isinstance(result, dict) else {"out": result}


def out_of(result: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return outputs_of(result)["out"]


def check_shapes(name: str, dims: list[int], cfg: dict[str, Any], out_dim: int, w: int, n: int) -> None:
    torch.manual_seed(0)
    module = build(name, dims, **cfg)
    assert module.output_dims["out"] == out_dim
    inputs, mask = make_batch(n, w, dims)
    result = outputs_of(module(inputs, mask))
    assert set(result) == set(module.output_dims)
    for key, tensor in result.items():
        if is_head(name):
            assert tensor.shape == (n, module.output_dims[key]), key
        else:
            assert tensor.shape == (n, w, module.output_dims[key]), key
        assert torch.isfinite(tensor).all(), key


def check_gradients(name: str, dims: list[int], cfg: dict[str, Any], out_dim: int) -> None:
    """Every parameter and every input gets a non-zero gradient through all outputs."""
    torch.manual_seed(0)
    module = build(name, dims, **cfg).train()
    heads = {}
    if not is_head(name):  # a head on each output turns [N, W, D] into logits
        heads = {k: build("mlp_head", [d], pool="mean", hidden=[]) for k, d in module.output_dims.items()}
    inputs, mask = make_batch(8, 31, dims, seed=1)
    inputs = [x.requires_grad_() for x in inputs]
    result = outputs_of(module(inputs, mask))
    logits = [out_of(heads[k]([result[k]], mask)) for k in result] if heads else [result["out"]]
    loss = sum(
        F.binary_cross_entropy_with_logits(x, (torch.arange(x.numel()) % 2).float().reshape(x.shape))
        for x in logits
    )
    loss.backward()
    for m in [module, *heads.values()]:
        for pname, p in m.named_parameters():
            assert p.grad is not None, f"{name}: {pname} got no gradient"
            assert p.grad.abs().sum() > 0, f"{name}: {pname} got an all-zero gradient"
    for i, x in enumerate(inputs):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: input {i} got no gradient"


def check_padding(name: str, dims: list[int], cfg: dict[str, Any]) -> None:
    """Garbage at padding positions (even though features encode zeros) must not leak."""
    torch.manual_seed(0)
    module = build(name, dims, **cfg).eval()
    inputs, mask = make_batch(8, 33, dims, seed=2)
    assert (~mask).any()
    noisy = [x + 100.0 * torch.randn_like(x) * (~mask).unsqueeze(-1) for x in inputs]
    with torch.no_grad():
        clean, dirty = outputs_of(module(inputs, mask)), outputs_of(module(noisy, mask))
    for key in clean:
        if is_head(name):
            torch.testing.assert_close(dirty[key], clean[key])
        else:
            torch.testing.assert_close(dirty[key][mask], clean[key][mask])


def check_deterministic(name: str, dims: list[int], cfg: dict[str, Any]) -> None:
    inputs, mask = make_batch(8, 37, dims, seed=10)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        module = build(name, dims, **cfg)
        torch.manual_seed(7)  # training-mode dropout draws from the global generator as well
        outs.append(outputs_of(module.train()(inputs, mask)))
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key].detach(), outs[1][key].detach(), rtol=0, atol=0)


def standard_tests(cases: list[Case]):  # noqa: ANN201
    """The four parametrised tests for ``cases``, to assign at module level in a test file."""
    ids = [c[0] for c in cases]
    params = pytest.mark.parametrize(("case", "name", "dims", "cfg", "out_dim"), cases, ids=ids)

    @pytest.mark.parametrize("n", BATCHES)
    @pytest.mark.parametrize("w", WIDTHS)
    @params
    def test_output_shapes(case, name, dims, cfg, out_dim, w, n) -> None:  # noqa: ANN001
        check_shapes(name, dims, cfg, out_dim, w, n)

    @params
    def test_gradients_reach_every_parameter(case, name, dims, cfg, out_dim) -> None:  # noqa: ANN001
        check_gradients(name, dims, cfg, out_dim)

    @params
    def test_padding_values_do_not_change_real_outputs(case, name, dims, cfg, out_dim) -> None:  # noqa: ANN001
        check_padding(name, dims, cfg)

    @params
    def test_deterministic_under_manual_seed(case, name, dims, cfg, out_dim) -> None:  # noqa: ANN001
        check_deterministic(name, dims, cfg)

    return (
        test_output_shapes,
        test_gradients_reach_every_parameter,
        test_padding_values_do_not_change_real_outputs,
        test_deterministic_under_manual_seed,
    )


def end_padded_batch(
    dims: list[int], *, zero_padding: bool = True
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Four windows of width 31: unpadded, N-terminal, C-terminal and both-end padding."""
    w = 31
    mask = torch.ones(4, w, dtype=torch.bool)
    mask[1, :9] = False  # N-terminal padding
    mask[2, w - 6 :] = False  # C-terminal padding
    mask[3, :4] = False  # both ends
    mask[3, w - 12 :] = False
    inputs, _ = make_batch(4, w, dims, seed=4)
    if zero_padding:
        inputs = [x * mask.unsqueeze(-1) for x in inputs]
    return inputs, mask


def assert_matches_trimmed(module: GraphModule, inputs: list[torch.Tensor], mask: torch.Tensor) -> None:
    """Each row's real positions get exactly the outputs of its trimmed (unpadded) window."""
    with torch.no_grad():
        full = outputs_of(module(inputs, mask))
        for row in range(len(mask)):
            idx = mask[row].nonzero().squeeze(1)
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            trimmed = [x[row : row + 1, lo:hi] for x in inputs]
            alone = outputs_of(module(trimmed, torch.ones(1, hi - lo, dtype=torch.bool)))
            for key in full:
                torch.testing.assert_close(full[key][row, lo:hi], alone[key][0], atol=1e-5, rtol=1e-5)
