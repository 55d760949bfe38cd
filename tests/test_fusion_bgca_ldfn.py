"""UniPTMs fusion modules ``bgca`` (eqs. 1-7) and ``ldfn`` (eqs. 8-12)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from ptmkit.plugin_api import GraphModule
from ptmkit.testing import (
    assert_matches_trimmed,
    build,
    end_padded_batch,
    make_batch,
    registry,
    standard_tests,
)

# (id, node type, input dims, config, expected "out" size); tiny dims keep the file fast.
CASES: list[tuple[str, str, list[int], dict[str, Any], int]] = [
    ("bgca", "bgca", [6, 10], {"dim": 8, "heads": 2, "groups": 2, "dropout": 0.0}, 8),
    (
        "bgca_variant",
        "bgca",
        [6, 10],
        {"dim": 8, "heads": 4, "groups": 2, "residual": False, "dropout": 0.2},
        8,
    ),
    ("bgca_same_dim_dense", "bgca", [8, 8], {"dim": 8, "heads": 2, "groups": 1, "kernel_sizes": [1, 3]}, 8),
    ("ldfn2", "ldfn", [6, 10], {"dim": 8, "dropout": 0.0}, 8),
    ("ldfn4", "ldfn", [6, 6, 10, 10], {"dim": 8, "heads": 2, "kernel_sizes": [3, 9], "dropout": 0.2}, 8),
]

(
    test_output_shapes,
    test_gradients_reach_every_parameter,
    test_padding_values_do_not_change_real_outputs,
    test_deterministic_under_manual_seed,
) = standard_tests(CASES)

TINY = {"bgca": {"dim": 8, "heads": 2, "groups": 2}, "ldfn": {"dim": 8}}


def _case(case_id: str) -> tuple[str, list[int], dict[str, Any]]:
    case = next(c for c in CASES if c[0] == case_id)
    return case[1], case[2], case[3]


# ---------------------------------------------------------------------------------- registry


def test_registered_as_documented_fusion_plugins() -> None:
    assert {"bgca", "ldfn"} <= set(registry().names("fusion"))
    for name in ("bgca", "ldfn"):
        spec = registry().get("module", name)
        assert spec.kind == "fusion"
        assert issubclass(spec.obj, GraphModule)
        assert spec.doc, f"{name} needs a one-line docstring for listings"
        for field, info in spec.obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


def test_input_counts() -> None:
    assert registry().get("module", "bgca").obj.n_inputs == (2, 2)
    assert registry().get("module", "ldfn").obj.n_inputs == (2, None)


def test_defaults_match_the_paper() -> None:
    for name in ("bgca", "ldfn"):
        cfg = registry().get("module", name).obj.Config.model_validate({})
        assert cfg.dim == 256
        assert cfg.kernel_sizes == [3, 5, 7]


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "dims", "fragment"),
    [
        ("bgca", [6], "bgca takes exactly 2 inputs, got 1 (dims [6])"),
        ("bgca", [6, 10, 4], "bgca takes exactly 2 inputs, got 3 (dims [6, 10, 4])"),
        ("bgca", [6, 0], "[6, 0]"),
        ("ldfn", [6], "ldfn takes at least 2 inputs, got 1 (dims [6])"),
        ("ldfn", [], "got 0 (dims [])"),
        ("ldfn", [6, 0, 3], "[6, 0, 3]"),
    ],
)
def test_dimension_errors_name_the_dims(name: str, dims: list[int], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        build(name, dims, **TINY[name])
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("name", "cfg", "fragment"),
    [
        ("bgca", {"dim": 10, "heads": 4}, "dim 10 must be divisible by heads 4"),
        ("bgca", {"dim": 8, "heads": 2, "groups": 3}, "dim 8 must be divisible by groups 3"),
        ("bgca", {"kernel_sizes": [3, 4]}, "odd"),
        ("bgca", {"kernel_sizes": []}, "kernel_sizes"),
        ("bgca", {"dim": 0}, "dim"),
        ("bgca", {"dropout": 1.0}, "dropout"),
        ("ldfn", {"dim": 9, "heads": 2}, "dim 9 must be divisible by heads 2"),
        ("ldfn", {"kernel_sizes": [5, 0]}, "odd"),
        ("ldfn", {"dims": 8}, "dims"),
    ],
)
def test_config_is_validated(name: str, cfg: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        registry().get("module", name).obj.Config.model_validate(cfg)


# ------------------------------------------------------------------------------------ padding


@pytest.mark.parametrize("case_id", ["bgca", "bgca_same_dim_dense", "ldfn2", "ldfn4"])
def test_padding_positions_are_zero(case_id: str) -> None:
    name, dims, cfg = _case(case_id)
    module = build(name, dims, **cfg).eval()
    inputs, mask = make_batch(8, 31, dims, seed=3)
    with torch.no_grad():
        out = module(inputs, mask)
    assert (out[~mask] == 0).all()
    assert (out[mask] != 0).any()


@pytest.mark.parametrize("case_id", ["bgca", "ldfn4"])
def test_end_padding_is_invisible(case_id: str) -> None:
    """Each row's real positions get exactly the output of its trimmed (unpadded) window:
    padding keys are masked out and the convolutions see zeros where their own padding would be."""
    name, dims, cfg = _case(case_id)
    torch.manual_seed(0)
    module = build(name, dims, **cfg).eval()
    inputs, mask = end_padded_batch(dims)
    assert_matches_trimmed(module, inputs, mask)


@pytest.mark.parametrize("name", ["bgca", "ldfn"])
def test_rows_without_real_residues_stay_finite(name: str) -> None:
    module = build(name, [6, 10], **TINY[name])
    mask = torch.zeros(2, 31, dtype=torch.bool)
    mask[1, 10:20] = True
    inputs = [torch.randn(2, 31, d, requires_grad=True) for d in (6, 10)]
    out = module(inputs, mask)
    assert (out[0] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in inputs)


# -------------------------------------------------------------------------------------- gates


def test_bgca_scale_gate_sums_to_one_over_scales() -> None:
    module = build("bgca", [6, 10], dim=8, heads=2, groups=2, kernel_sizes=[3, 5, 7]).eval()
    inputs, mask = make_batch(8, 33, [6, 10], seed=5)
    with torch.no_grad():
        parts = module.components(inputs, mask)
    alpha = parts["alpha"]
    assert alpha.shape == (8, 33, 3)
    assert ((alpha > 0) & (alpha < 1)).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(8, 33))
    # eq. 5: ConvFusion is the alpha-weighted sum of the per-scale convolutions
    torch.testing.assert_close(parts["conv_fusion"], (alpha.unsqueeze(-1) * parts["conv"]).sum(2))


def test_bgca_final_gate_is_a_convex_combination() -> None:
    module = build("bgca", [6, 10], dim=8, heads=2, groups=2).eval()
    inputs, mask = make_batch(8, 33, [6, 10], seed=6)
    with torch.no_grad():
        parts = module.components(inputs, mask)
    beta = parts["beta"]
    assert beta.shape == (8, 33, 2, 8)
    assert ((beta > 0) & (beta < 1)).all()
    torch.testing.assert_close(beta.sum(-2), torch.ones(8, 33, 8))
    want = beta[..., 0, :] * parts["conv_fusion"] + beta[..., 1, :] * parts["attn2"]  # eq. 7
    torch.testing.assert_close(parts["out"][mask], want[mask])


@pytest.mark.parametrize("dims", [[6, 10], [6, 6, 10, 10]])
def test_ldfn_distillation_gate(dims: list[int]) -> None:
    module = build("ldfn", dims, dim=8).eval()
    inputs, mask = make_batch(8, 33, dims, seed=7)
    with torch.no_grad():
        parts = module.components(inputs, mask)
    gate, attn = parts["gate"], parts["attn"]
    assert gate.shape == attn.shape == (8, 33, len(dims), 8)
    assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(gate.sum(-2), torch.ones(8, 33, 8))
    torch.testing.assert_close(parts["distilled"], (gate * attn).sum(2))  # eq. 10
    if len(dims) == 2:  # exactly eq. 9: g = sigmoid(W_g [Attn_1, Attn_2] + b_g)
        g = torch.sigmoid(module.gate(attn.flatten(-2)))
        torch.testing.assert_close(gate[..., 0, :], g)
        torch.testing.assert_close(gate[..., 1, :], 1 - g)


# ------------------------------------------------------------------------------- dependencies


@pytest.mark.parametrize("case_id", ["bgca", "bgca_variant", "ldfn2", "ldfn4"])
def test_output_depends_on_every_input(case_id: str) -> None:
    name, dims, cfg = _case(case_id)
    module = build(name, dims, **cfg).eval()
    inputs, mask = make_batch(8, 33, dims, seed=8)
    with torch.no_grad():
        base = module(inputs, mask)
        for i in range(len(dims)):
            changed = list(inputs)
            changed[i] = inputs[i] + torch.randn_like(inputs[i]) * mask.unsqueeze(-1)
            diff = (module(changed, mask) - base)[mask].abs().max()
            assert diff > 1e-4, f"{name}: output ignores input {i}"


def test_bgca_attention_crosses_positions_and_modalities() -> None:
    """Changing input 2 at one position alone changes Attn_1 at other positions (eq. 1)."""
    module = build("bgca", [6, 10], dim=8, heads=2, groups=2, residual=False).eval()
    inputs, mask = make_batch(1, 31, [6, 10], seed=9)
    changed = [inputs[0], inputs[1].clone()]
    changed[1][0, 5] += 3.0
    with torch.no_grad():
        a, b = module.components(inputs, mask), module.components(changed, mask)
    assert (a["attn1"][0, 20] - b["attn1"][0, 20]).abs().max() > 1e-5
    torch.testing.assert_close(a["attn2"][0, 20:], b["attn2"][0, 20:], rtol=0, atol=1e-5)
    assert (a["attn2"][0, 5] - b["attn2"][0, 5]).abs().max() > 1e-5


# ------------------------------------------------------------------------------ paper's sizes


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_at_the_papers_sizes() -> None:
    """The numbers quoted in docs/fusion-bgca-ldfn.md."""
    bgca = build("bgca", [1024, 1280], dim=256)
    ldfn = build("ldfn", [256, 256, 512, 512], dim=256)
    assert bgca.output_dims == ldfn.output_dims == {"out": 256}
    assert _n_params(bgca) == 1_889_283
    assert _n_params(ldfn) == 3_348_736
