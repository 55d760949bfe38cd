"""Fusion nodes macp, cross_attention, channel_attention, self_attention and project."""

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
    out_of,
    outputs_of,
    registry,
    standard_tests,
)

NAMES = ("macp", "cross_attention", "channel_attention", "self_attention", "project")

# (id, node type, input dims, config, expected "out" size); tiny dims keep the file fast.
CASES: list[tuple[str, str, list[int], dict[str, Any], int]] = [
    # The shared gradient check puts an mlp_head (hidden=[4], ReLU) on every output; at these
    # tiny sizes its ReLUs can all start dead on an output whose pooled values are small, which
    # says nothing about macp. test_macp_gradients_reach_every_parameter checks macp itself.
    ("macp", "macp", [8], {"reduction": 4}, 8),
    ("macp_dim", "macp", [5], {"dim": 8, "reduction": 2, "dilation": 3}, 8),
    ("cross_concat", "cross_attention", [4, 6], {"heads": 2}, 12),
    ("cross_mean_dim", "cross_attention", [4, 6], {"dim": 8, "heads": 4, "combine": "mean"}, 8),
    ("cross_same", "cross_attention", [6, 6], {"heads": 3, "dropout": 0.0}, 12),
    ("channel1", "channel_attention", [6], {"reduction": 2}, 6),
    ("channel3_dim", "channel_attention", [3, 5, 2], {"reduction": 4, "dim": 4, "dropout": 0.1}, 4),
    ("self1", "self_attention", [6], {"heads": 2}, 6),
    ("self2_dim", "self_attention", [3, 5], {"dim": 8, "heads": 2}, 8),
    ("project_conv", "project", [5], {"dim": 6}, 6),
    ("project_k5_relu", "project", [5], {"dim": 4, "conv_kernel": 5, "activation": "relu"}, 4),
    ("project_linear", "project", [20], {"dim": 6, "conv_kernel": None, "dropout": 0.0}, 6),
]

(
    test_output_shapes,
    test_gradients_reach_every_parameter,
    test_padding_values_do_not_change_real_outputs,
    test_deterministic_under_manual_seed,
) = standard_tests(CASES)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202
    """Tiny tensors gain nothing from intra-op threads; on a busy machine they only cost time."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _case(case_id: str) -> tuple[str, list[int], dict[str, Any]]:
    _, name, dims, cfg, _ = next(c for c in CASES if c[0] == case_id)
    return name, dims, cfg


# --------------------------------------------------------------------------------- registry


def test_registered_as_fusion_with_documented_config() -> None:
    assert set(NAMES) <= set(registry().names("fusion"))
    for name in NAMES:
        spec = registry().get("module", name)
        assert issubclass(spec.obj, GraphModule)
        assert spec.doc, f"{name} needs a one-line docstring"
        for field, info in spec.obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


# ------------------------------------------------------------------------- padding, all nodes


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_padding_outputs_are_zero_and_end_padding_is_invisible(case_id: str) -> None:
    """Padding outputs are 0; each row's real positions equal those of its trimmed window."""
    name, dims, cfg = _case(case_id)
    torch.manual_seed(0)
    module = build(name, dims, **cfg).eval()
    inputs, mask = end_padded_batch(dims)
    with torch.no_grad():
        full = outputs_of(module(inputs, mask))
    for key, out in full.items():
        assert (out[~mask] == 0).all(), key
        assert (out[mask] != 0).any(), key
    assert_matches_trimmed(module, inputs, mask)


@pytest.mark.parametrize("case_id", ["macp", "cross_concat", "channel1", "self1", "project_conv"])
def test_rows_without_real_residues_stay_finite(case_id: str) -> None:
    name, dims, cfg = _case(case_id)
    mask = torch.zeros(2, 31, dtype=torch.bool)
    mask[1, 10:20] = True
    inputs = [torch.randn(2, 31, d, requires_grad=True) for d in dims]
    result = outputs_of(build(name, dims, **cfg)(inputs, mask))
    sum(t.sum() for t in result.values()).backward()
    for key, out in result.items():
        assert torch.isfinite(out).all() and (out[0] == 0).all(), key
    assert all(torch.isfinite(x.grad).all() for x in inputs)


def test_results_do_not_depend_on_batch_mates() -> None:
    for case_id in ("macp", "cross_concat", "channel3_dim", "self2_dim", "project_conv"):
        name, dims, cfg = _case(case_id)
        module = build(name, dims, **cfg).eval()
        inputs, mask = make_batch(8, 33, dims, seed=5)
        with torch.no_grad():
            batch = out_of(module(inputs, mask))
            single = out_of(module([x[3:4] for x in inputs], mask[3:4]))
        torch.testing.assert_close(batch[3:4], single, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------- macp


def test_macp_outputs_are_distinct_and_out_is_deep() -> None:
    torch.manual_seed(0)
    module = build("macp", [6], reduction=2).eval()
    inputs, mask = make_batch(8, 31, [6], seed=11)
    with torch.no_grad():
        out = module(inputs, mask)
    assert set(out) == {"out", "shallow", "middle", "deep"}
    assert module.output_dims == {"out": 6, "shallow": 6, "middle": 6, "deep": 6}
    assert build("macp", [6], dim=10).output_dims == {"out": 10, "shallow": 10, "middle": 10, "deep": 10}
    assert out["out"] is out["deep"]
    real = mask.unsqueeze(-1).expand_as(out["deep"])
    for a, b in [("shallow", "middle"), ("middle", "deep"), ("shallow", "deep")]:
        assert not torch.allclose(out[a][real], out[b][real]), (a, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("dims", "cfg"), [([6], {"reduction": 2}), ([5], {"dim": 4, "reduction": 1})])
def test_macp_gradients_reach_every_parameter(dims: list[int], cfg: dict[str, Any], seed: int) -> None:
    """Through the four outputs together, every macp parameter and the input get a gradient."""
    torch.manual_seed(seed)
    module = build("macp", dims, **cfg).train()
    inputs, mask = make_batch(8, 31, dims, seed=seed)
    x = inputs[0].requires_grad_()
    out = module([x], mask)
    g = torch.Generator().manual_seed(seed)
    sum((t * torch.randn(t.shape, generator=g)).sum() for t in out.values()).backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


def test_macp_stages_are_sequential() -> None:
    """Deep = middle reweighted by coordinate attention weights in (0, 1), position by position."""
    torch.manual_seed(0)
    module = build("macp", [6], reduction=2).eval()
    inputs, mask = make_batch(4, 31, [6], seed=12)
    with torch.no_grad():
        out = module(inputs, mask)
        f2 = module.middle(out["shallow"], mask)
    torch.testing.assert_close(out["middle"], f2)
    ratio = out["deep"][mask] / out["middle"][mask]
    assert ((ratio > 0) & (ratio < 1)).all()


def test_macp_kernel_selection_depends_on_the_window() -> None:
    """alpha = sigmoid(W_s GAP(X)) changes with the window, so the 3/5 mix is sample-adaptive."""
    module = build("macp", [6], reduction=2)
    inputs, mask = make_batch(8, 31, [6], seed=13)
    from ptmkit_plugins.fusion.attention import masked_mean

    alpha = torch.sigmoid(module.shallow.select(masked_mean(inputs[0], mask)))
    assert alpha.shape == (8, 6)
    assert not torch.allclose(alpha[0], alpha[1])


# ------------------------------------------------------------------------------ attention


def test_cross_attention_depends_on_both_inputs() -> None:
    torch.manual_seed(0)
    module = build("cross_attention", [4, 6], heads=2).eval()
    (a, b), mask = make_batch(8, 31, [4, 6], seed=14)
    with torch.no_grad():
        base = module([a, b], mask)
        a_changed = module([a + torch.randn_like(a) * mask.unsqueeze(-1), b], mask)
        b_changed = module([a, b + torch.randn_like(b) * mask.unsqueeze(-1)], mask)
    d = 6  # default dim = larger input; out = [a attends b ; b attends a]
    # Each half sees the other input through attention, not only its own residual path.
    assert not torch.allclose(base[..., :d][mask], b_changed[..., :d][mask])
    assert not torch.allclose(base[..., d:][mask], a_changed[..., d:][mask])


def test_cross_attention_mean_combines_the_two_directions() -> None:
    torch.manual_seed(0)
    concat = build("cross_attention", [4, 6], heads=2, dropout=0.0)
    torch.manual_seed(0)
    mean = build("cross_attention", [4, 6], heads=2, dropout=0.0, combine="mean")
    inputs, mask = make_batch(4, 31, [4, 6], seed=15)
    with torch.no_grad():
        both = concat(inputs, mask)
        torch.testing.assert_close(mean(inputs, mask), (both[..., :6] + both[..., 6:]) / 2)


def test_attention_ignores_padding_keys() -> None:
    """A real position's output equals attending over its real positions alone."""
    from ptmkit_plugins.fusion.attention import MaskedMultiheadAttention

    torch.manual_seed(0)
    attn = MaskedMultiheadAttention(6, 2, 0.0)
    x = torch.randn(1, 10, 6)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 7:] = False
    with torch.no_grad():
        full = attn(x, x, mask)
        short = attn(x[:, :7], x[:, :7], mask[:, :7])
    torch.testing.assert_close(full[:, :7], short)


def test_channel_attention_weights_are_in_unit_interval_and_scale_channels() -> None:
    module = build("channel_attention", [3, 5], reduction=2)
    inputs, mask = make_batch(8, 31, [3, 5], seed=16)
    with torch.no_grad():
        w = module.weights(inputs, mask)
        out = module(inputs, mask)
    assert w.shape == (8, 8)
    assert ((w > 0) & (w < 1)).all()
    assert not torch.allclose(w[0], w[1])  # window-dependent
    torch.testing.assert_close(out, torch.cat(inputs, -1) * w.unsqueeze(1))


def test_self_attention_mixes_positions() -> None:
    torch.manual_seed(0)
    module = build("self_attention", [6], heads=2).eval()
    inputs, mask = make_batch(1, 31, [6], seed=17)
    (x,) = inputs
    other = x.clone()
    other[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(module([x], mask)[:, 15], module([other], mask)[:, 15])


# -------------------------------------------------------------------------------- project


def test_project_on_one_hot_is_a_learned_embedding() -> None:
    """Without conv, position i's output depends only on residue i (lookup + LayerNorm)."""
    module = build("project", [20], dim=6, conv_kernel=None, dropout=0.0)
    idx = torch.randint(0, 20, (2, 31))
    x = torch.nn.functional.one_hot(idx, 20).float()
    mask = torch.ones(2, 31, dtype=torch.bool)
    with torch.no_grad():
        out = module([x], mask)
        table = module.norm(module.linear.weight.T + module.linear.bias)
    torch.testing.assert_close(out, table[idx])


def test_project_conv_sees_neighbours_only_within_kernel() -> None:
    module = build("project", [5], dim=4, conv_kernel=3, dropout=0.0)
    inputs, mask = make_batch(1, 31, [5], seed=18)
    (x,) = inputs
    other = x.clone()
    other[:, 17] += 1.0
    with torch.no_grad():
        base, moved = module([x], mask), module([other], mask)
    changed = (base - moved).abs().sum(-1)[0] > 0
    assert changed.nonzero().squeeze(1).tolist() == [16, 17, 18]


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "dims", "cfg", "match"),
    [
        ("macp", [4, 4], {}, "macp takes exactly 1 input"),
        ("cross_attention", [4], {}, "cross_attention takes exactly 2 input"),
        ("cross_attention", [4, 4, 4], {}, "cross_attention takes exactly 2 input"),
        ("cross_attention", [4, 6], {"heads": 4}, "dim 6 is not divisible by heads 4"),
        ("self_attention", [3, 2], {"heads": 2}, "dim 5 is not divisible by heads 2"),
        ("project", [4, 4], {"dim": 3}, "project takes exactly 1 input"),
        ("channel_attention", [], {}, "channel_attention takes at least 1 input"),
    ],
)
def test_dimension_errors_are_named(name: str, dims: list[int], cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build(name, dims, **cfg)


@pytest.mark.parametrize(
    ("name", "cfg", "match"),
    [
        ("project", {"dim": 8, "conv_kernel": 4}, r"(?s)conv_kernel.*positive odd number"),
        ("project", {"dim": 8, "conv_kernel": 0}, r"(?s)conv_kernel.*positive odd number"),
        ("project", {"dim": 8, "conv_kernel": None, "activation": "relu"}, "only used with a conv"),
        ("project", {}, "dim"),
        ("project", {"dim": 8, "activation": "tanh"}, "activation"),
        ("cross_attention", {"combine": "sum"}, "combine"),
        ("macp", {"dim": 0}, "dim"),
        ("macp", {"dilation": 0}, "dilation"),
        ("macp", {"kernels": [3]}, "kernels"),
        ("self_attention", {"heads": 0}, "heads"),
    ],
)
def test_config_errors_are_named(name: str, cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        registry().get("module", name).obj.Config.model_validate(cfg)


# ---------------------------------------------------------------------------------- graph


def test_nodes_compose_in_a_recipe_graph(tmp_path) -> None:  # noqa: ANN001
    """Master-slave wiring: aligned auxiliary features, macp outputs referenced by name."""
    from ptmkit import recipe as recipes
    from ptmkit.assembly import assemble

    path = tmp_path / "r.yaml"
    path.write_text(
        """\
name: g
data: {source: uniptms:H1}
features:
  onehot: {type: onehot}
  blosum: {type: blosum62}
model:
  nodes:
    embed: {type: project, inputs: [onehot], dim: 8, conv_kernel: null}
    blosum_a: {type: project, inputs: [blosum], dim: 12}
    master: {type: cross_attention, inputs: [embed, blosum_a], dim: 8, heads: 2, combine: mean}
    slave: {type: channel_attention, inputs: [embed, blosum_a], dim: 6}
    macp: {type: macp, inputs: [slave], reduction: 2}
    mid: {type: self_attention, inputs: [master, macp.shallow, macp.middle], dim: 8, heads: 2}
    late: {type: concat, inputs: [mid, macp]}
    head: {type: mlp_head, inputs: [late], hidden: [4]}
"""
    )
    g = assemble(recipes.load(path)).graph
    assert g.dims["macp"] == g.dims["macp.deep"] == g.dims["macp.shallow"] == 6
    assert g.dims["master"] == 8 and g.dims["late"] == 14
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, :3] = False
    out = g({"onehot": torch.randn(3, 9, 20), "blosum": torch.randn(3, 9, 20)}, mask)
    assert out["logits"].shape == (3,)
    assert out["macp"] is out["macp.deep"]
    assert (out["late"][~mask] == 0).all()
