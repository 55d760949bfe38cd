"""UniPTMs master-slave fusion nodes ``bhgfn`` (eqs. 13-22) and ``hdwf`` (eqs. 23-31)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ptmkit_plugins.fusion.bhgfn import dynamic_conv
from pydantic import ValidationError

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.plugin_api import GraphModule
from ptmkit.testing import (
    assert_matches_trimmed,
    build,
    end_padded_batch,
    make_batch,
    registry,
    standard_tests,
)

# (id, node type, input dims [master, slave], config, expected "out" size); tiny dims keep it fast.
CASES: list[tuple[str, str, list[int], dict[str, Any], int]] = [
    ("bhgfn", "bhgfn", [8, 6], {"heads": 2}, 8),
    ("bhgfn_dim", "bhgfn", [8, 6], {"dim": 12, "heads": 3, "kernel_size": 5}, 12),
    ("bhgfn_k1_wide_slave", "bhgfn", [6, 10], {"heads": 1, "kernel_size": 1, "dropout": 0.0}, 6),
    ("hdwf", "hdwf", [8, 6], {"heads": 2}, 8),
    ("hdwf_dim", "hdwf", [8, 6], {"dim": 12, "heads": 4, "kernel_size": 5, "layer_scale_init": 1e-4}, 12),
    ("hdwf_wide_slave", "hdwf", [6, 10], {"heads": 3, "dropout": 0.0}, 6),
]
NAMES = ("bhgfn", "hdwf")

(
    test_output_shapes,
    test_gradients_reach_every_parameter,
    test_padding_values_do_not_change_real_outputs,
    test_deterministic_under_manual_seed,
) = standard_tests(CASES)


def case(case_id: str) -> tuple[list[int], dict[str, Any]]:
    found = next(c for c in CASES if c[0] == case_id)
    return found[2], found[3]


# ---------------------------------------------------------------------------- registry, config


def test_registered_as_documented_fusion_plugins() -> None:
    for name in NAMES:
        spec = registry().get("module", name)
        assert spec.kind == "fusion"
        assert issubclass(spec.obj, GraphModule)
        assert spec.obj.n_inputs == (2, 2)
        assert spec.doc
        for field, info in spec.obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


@pytest.mark.parametrize("name", NAMES)
def test_config_and_dimension_errors(name: str) -> None:
    cls = registry().get("module", name).obj
    with pytest.raises(ValidationError, match="odd"):
        cls.Config.model_validate({"kernel_size": 4})
    with pytest.raises(ValidationError, match="head"):
        cls.Config.model_validate({"head": 2})
    with pytest.raises(ValueError, match=r"size 10 .*heads=4.*master 10, slave 6"):
        build(name, [10, 6], heads=4)
    with pytest.raises(ValueError, match=r"size 9 .*heads=2.*master 8, slave 6, dim 9"):
        build(name, [8, 6], heads=2, dim=9)
    with pytest.raises(ValueError, match=r"exactly 2 input.*\[8\]"):
        build(name, [8], heads=2)
    with pytest.raises(ValueError, match=r"exactly 2 input.*\[8, 6, 4\]"):
        build(name, [8, 6, 4], heads=2)


# ----------------------------------------------------------------------------- padding, masks


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_padding_positions_are_zero_and_padding_keys_get_no_attention(case_id: str) -> None:
    dims, cfg = case(case_id)
    module = build(case_id.split("_")[0], dims, **cfg).eval()
    inputs, mask = make_batch(8, 31, dims, seed=3)
    with torch.no_grad():
        comp = module.components(inputs, mask)
    assert (comp["out"][~mask] == 0).all()
    assert (comp["out"][mask] != 0).any()
    for key in ("attn1", "attn2", "attn"):
        if key in comp:  # [N, H, Wq, Wk]: zero weight on padding keys, rows sum to one
            attn = comp[key]
            assert (attn.transpose(1, 3)[~mask] == 0).all(), key
            torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))


@pytest.mark.parametrize("case_id", ["bhgfn_dim", "hdwf_dim"])
def test_real_outputs_equal_those_of_the_trimmed_window(case_id: str) -> None:
    """Stronger than value invariance: end padding is invisible (masked pools, zero-padded convs)."""
    dims, cfg = case(case_id)
    torch.manual_seed(0)
    module = build(case_id.split("_")[0], dims, **cfg).eval()
    inputs, mask = end_padded_batch(dims, zero_padding=False)
    assert_matches_trimmed(module, inputs, mask)


@pytest.mark.parametrize("name", NAMES)
def test_rows_without_real_residues_stay_finite(name: str) -> None:
    mask = torch.zeros(2, 31, dtype=torch.bool)
    mask[1, 10:20] = True
    inputs = [torch.randn(2, 31, 8, requires_grad=True), torch.randn(2, 31, 6, requires_grad=True)]
    out = build(name, [8, 6], heads=2)(inputs, mask)
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in inputs)


# ------------------------------------------------------------------------ module-specific checks


@pytest.mark.parametrize("name", NAMES)
def test_master_and_slave_are_not_interchangeable(name: str) -> None:
    torch.manual_seed(0)
    module = build(name, [6, 6], heads=2).eval()
    (a, b), mask = make_batch(4, 31, [6, 6], seed=5)
    with torch.no_grad():
        ab, ba = module([a, b], mask), module([b, a], mask)
    assert (ab[mask] - ba[mask]).abs().max() > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_slave_changes_the_output(name: str) -> None:
    torch.manual_seed(0)
    module = build(name, [8, 6], heads=2).eval()
    (m, s), mask = make_batch(4, 31, [8, 6], seed=6)
    with torch.no_grad():
        assert not torch.allclose(
            module([m, s], mask), module([m, torch.randn_like(s) * mask[..., None]], mask)
        )


def test_bhgfn_gates_lie_strictly_between_zero_and_one() -> None:
    module = build("bhgfn", [8, 6], heads=2).eval()
    inputs, mask = make_batch(8, 33, [8, 6], seed=7)
    with torch.no_grad():
        comp = module.components(inputs, mask)
    assert comp["g_attn"].shape == (8, 33, 8)
    assert comp["g_channel"].shape == (8, 33, 8)
    assert comp["g_spatial"].shape == (8, 33, 1)
    for key in ("g_attn", "g_channel", "g_spatial"):
        gate = comp[key][mask]
        assert ((gate > 0) & (gate < 1)).all(), key
        assert gate.std() > 0, key


def test_hdwf_weights_lie_in_range_and_temperature_is_positive() -> None:
    module = build("hdwf", [8, 6], heads=2).eval()
    inputs, mask = make_batch(8, 33, [8, 6], seed=8)
    with torch.no_grad():
        comp = module.components(inputs, mask)
    assert comp["g_channel"].shape == (8, 1, 8)  # one weight per sample and master channel
    assert comp["g_spatial"].shape == (8, 33, 1)  # one weight per slave position
    for key in ("g_channel", "g_spatial", "head_weights"):
        gate = comp[key]
        assert ((gate > 0) & (gate < 1)).all(), key
    torch.testing.assert_close(comp["head_weights"].sum(-1), torch.ones(8, 33))
    assert comp["tau"].shape == (8,) and (comp["tau"] > 0).all()
    # tau = softplus(a) + mean over real positions of the master's channel std (eq. 26 as read)
    m = inputs[0]
    std = torch.stack([m[i][mask[i]].std(-1, unbiased=False).mean() for i in range(8)])
    torch.testing.assert_close(comp["tau"], 0.5 + std, atol=1e-4, rtol=1e-4)
    # even with an all-zero master (mean 0, std 0) the temperature stays positive
    with torch.no_grad():
        assert (module.components([torch.zeros_like(m), inputs[1]], mask)["tau"] > 0.4).all()


def test_hdwf_starts_as_post_norm_residual() -> None:
    """At init: lambda = layer_scale_init, gamma = 0, beta = 1, so out = LN((1 + eps) M + G~)."""
    module = build("hdwf", [8, 6], heads=2, layer_scale_init=1e-3)
    torch.testing.assert_close(module.layer_scale.detach(), torch.full((8,), 1e-3))
    assert module.gamma.item() == 0.0 and module.beta.item() == 1.0


def test_dynamic_kernels_depend_on_the_sample() -> None:
    torch.manual_seed(0)
    module = build("bhgfn", [8, 6], heads=2, kernel_size=5).eval()
    inputs, mask = make_batch(3, 31, [8, 6], seed=9)
    with torch.no_grad():
        kernels = module.components(inputs, mask)["kernels"]
        assert kernels.shape == (3, 8, 5)
        assert (kernels[0] - kernels[1]).abs().max() > 1e-3
        # a sample's kernels do not depend on its batch mates
        alone = module.components([x[1:2] for x in inputs], mask[1:2])["kernels"]
    torch.testing.assert_close(alone[0], kernels[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_dynamic_conv_equals_a_naive_per_sample_loop(k: int) -> None:
    g = torch.Generator().manual_seed(11)
    n, w, d = 3, 9, 4
    x, kernels = torch.randn(n, w, d, generator=g), torch.randn(n, d, k, generator=g)
    want = torch.zeros(n, w, d)
    for s in range(n):
        for c in range(d):
            for i in range(w):
                for t in range(k):
                    j = i + t - k // 2
                    if 0 <= j < w:
                        want[s, i, c] += kernels[s, c, t] * x[s, j, c]
    torch.testing.assert_close(dynamic_conv(x, kernels), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case_id", ["bhgfn_dim", "hdwf_dim"])
def test_no_parameter_has_a_vanishing_gradient(case_id: str) -> None:
    """Catches parameters the maths cancels (e.g. a key bias under softmax), whose gradient is
    only rounding noise and would slip through a ``> 0`` check."""
    dims, cfg = case(case_id)
    torch.manual_seed(0)
    module = build(case_id.split("_")[0], dims, **cfg).train()
    inputs, mask = make_batch(8, 31, dims, seed=12)
    out = module(inputs, mask)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad.abs().max() > 1e-4, pname


def test_nodes_work_in_a_recipe_graph(tmp_path: Path) -> None:
    """Mid fusion twice, then late fusion, as in UniPTMs (with stand-ins for Mamba and MACP)."""
    path = tmp_path / "g.yaml"
    path.write_text(
        """\
name: g
data: {source: uniptms:H1}
features:
  onehot: {type: onehot}
  blosum: {type: blosum62}
model:
  nodes:
    master: {type: bilstm, inputs: [onehot], hidden: 4}
    slave: {type: cnn, inputs: [blosum], channels: 3, kernel_sizes: [3, 5]}
    mid1: {type: bhgfn, inputs: [master, slave], heads: 2}
    mid2: {type: bhgfn, inputs: [mid1, blosum], heads: 2, dim: 12}
    late: {type: hdwf, inputs: [mid2, slave], heads: 3}
    head: {type: mlp_head, inputs: [late], hidden: [4]}
"""
    )
    g = assemble(recipes.load(path)).graph
    assert (g.dims["mid1"], g.dims["mid2"], g.dims["late"]) == (8, 12, 12)
    feats = {"onehot": torch.randn(3, 7, 20), "blosum": torch.randn(3, 7, 20)}
    assert g(feats, torch.ones(3, 7, dtype=torch.bool))["logits"].shape == (3,)


@pytest.mark.parametrize(
    ("name", "dims", "total"),
    [("bhgfn", [256, 256], 527_681), ("bhgfn", [512, 256], 1_710_721), ("hdwf", [256, 256], 314_764)],
)
def test_parameter_counts_at_paper_sizes(name: str, dims: list[int], total: int) -> None:
    """The totals quoted in docs/fusion-bhgfn-hdwf.md (default config)."""
    assert sum(p.numel() for p in build(name, dims).parameters()) == total
