"""Built-in graph modules (fusion, backbones, heads): shapes, gradients, masking, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from ptmkit import testing
from ptmkit.hooks import build_registry
from ptmkit.plugin_api import GraphModule
from ptmkit.registry import Registry
from ptmkit.testing import assert_matches_trimmed, end_padded_batch, make_batch, out_of, standard_tests

WIDTHS = (31, 33, 37, 41)
BATCHES = (1, 8)

# (id, node type, input dims, config, expected "out" size); tiny dims keep the file fast.
CASES: list[tuple[str, str, list[int], dict[str, Any], int]] = [
    ("concat1", "concat", [3], {}, 3),
    ("concat3", "concat", [3, 5, 2], {}, 10),
    ("add", "add", [4, 4, 4], {}, 4),
    ("add_project", "add", [3, 5], {"project": True}, 5),
    ("add_project_dim", "add", [3, 5], {"project": True, "dim": 6}, 6),
    ("bilstm", "bilstm", [5], {"hidden": 4, "layers": 2, "dropout": 0.1}, 8),
    ("cnn", "cnn", [5], {"channels": 3, "kernel_sizes": [3, 5], "layers": 2}, 6),
    ("cnn_one_kernel", "cnn", [6], {"channels": 6, "kernel_sizes": [1], "layers": 3}, 6),
    ("head_center", "mlp_head", [5], {"pool": "center", "hidden": [6, 4]}, 1),
    ("head_mean", "mlp_head", [5], {"pool": "mean", "hidden": [4]}, 1),
    ("head_max", "mlp_head", [5], {"pool": "max", "hidden": [4], "tasks": 3}, 3),
    ("head_attention", "mlp_head", [5], {"pool": "attention", "hidden": [4]}, 1),
    ("head_center_attention", "mlp_head", [5], {"pool": "center+attention", "hidden": [4]}, 1),
    ("head_linear", "mlp_head", [5], {"pool": "mean", "hidden": []}, 1),
    # MTPrompt-PTM's heads: shared Linear + BatchNorm + ReLU, one logit per task
    ("task_heads", "task_heads", [5], {"tasks": 4, "dropout": 0.1}, 4),
    ("task_heads_attention", "task_heads", [5], {"pool": "center+attention", "hidden": [], "tasks": 2}, 2),
]
IDS = [c[0] for c in CASES]
HEADS = {"mlp_head", "task_heads"}
BACKBONES = {"bilstm", "cnn"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def build(registry: Registry, name: str, in_dims: list[int], **config: Any) -> GraphModule:
    return testing.build(name, in_dims, **config)


# ---------------------------------------------------------------------------------- registry


def test_modules_are_registered_under_their_kinds(registry: Registry) -> None:
    assert {"concat", "add"} <= set(registry.names("fusion"))
    assert {"bilstm", "cnn"} <= set(registry.names("backbone"))
    assert "mlp_head" in registry.names("head")
    for name in ("concat", "add", "bilstm", "cnn", "mlp_head"):
        spec = registry.get("module", name)
        assert issubclass(spec.obj, GraphModule)
        assert spec.doc, f"{name} needs a one-line docstring for listings"


def test_config_rejects_unknown_keys_and_bad_values(registry: Registry) -> None:
    bilstm = registry.get("module", "bilstm").obj
    with pytest.raises(ValidationError, match="hiden"):
        bilstm.Config.model_validate({"hiden": 4})
    with pytest.raises(ValidationError):
        bilstm.Config.model_validate({"hidden": 0})
    head = registry.get("module", "mlp_head").obj
    with pytest.raises(ValidationError):
        head.Config.model_validate({"pool": "sum"})


def test_config_fields_are_documented(registry: Registry) -> None:
    for name in ("concat", "add", "bilstm", "cnn", "mlp_head"):
        for field, info in registry.get("module", name).obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


# ------------------------------------------- shapes, gradients, padding, determinism (shared)

(
    test_output_shapes,
    test_gradients_reach_every_parameter,
    test_padding_values_do_not_change_real_outputs,
    test_deterministic_under_manual_seed,
) = standard_tests(CASES)


@pytest.mark.parametrize("name", ["bilstm", "cnn", "add_project"])
def test_padding_positions_are_zero(registry: Registry, name: str) -> None:
    case = next(c for c in CASES if c[0] == name)
    module = build(registry, case[1], case[2], **case[3]).eval()
    inputs, mask = make_batch(8, 31, case[2], seed=3)
    with torch.no_grad():
        out = out_of(module(inputs, mask))
    assert (out[~mask] == 0).all()
    assert (out[mask] != 0).any()


@pytest.mark.parametrize("name", ["bilstm", "cnn"])
def test_end_padding_is_invisible_to_backbones(registry: Registry, name: str) -> None:
    """Each row's real positions get exactly the output of its unpadded (trimmed) sequence.

    Stronger than value invariance: for the LSTM, zeroing the padding alone would still let
    the state step through it; for the CNN, it checks that padding is re-zeroed between blocks.
    """
    case = next(c for c in CASES if c[0] == name)
    torch.manual_seed(0)
    module = build(registry, case[1], case[2], **case[3]).eval()
    inputs, mask = end_padded_batch(case[2])
    assert_matches_trimmed(module, inputs, mask)


def test_bilstm_result_does_not_depend_on_batch_mates(registry: Registry) -> None:
    module = build(registry, "bilstm", [5], hidden=4).eval()
    inputs, mask = make_batch(8, 33, [5], seed=5)
    with torch.no_grad():
        batch = module(inputs, mask)
        for row in (0, 3, 7):
            single = module([inputs[0][row : row + 1]], mask[row : row + 1])
            torch.testing.assert_close(batch[row : row + 1], single, atol=1e-6, rtol=1e-5)


def test_rows_without_real_residues_stay_finite(registry: Registry) -> None:
    mask = torch.zeros(2, 31, dtype=torch.bool)
    mask[1, 10:20] = True
    x = torch.randn(2, 31, 5, requires_grad=True)
    for name, cfg in [("bilstm", {"hidden": 3}), ("cnn", {"channels": 2})]:
        out = build(registry, name, [5], **cfg)([x], mask)
        assert (out[0] == 0).all()
    for pool in ("mean", "max", "attention"):
        head = build(registry, "mlp_head", [5], pool=pool, hidden=[3])
        result = head([x], mask)
        result["out"].sum().backward()
        assert torch.isfinite(result["out"]).all(), pool
        assert torch.isfinite(x.grad).all(), pool
        x.grad = None


# -------------------------------------------------------------------------------------- heads


def test_head_pooling_matches_a_direct_computation(registry: Registry) -> None:
    inputs, mask = make_batch(8, 31, [5], seed=6)
    (x,) = inputs
    keep = mask.unsqueeze(-1)
    expected = {
        "center": x[:, 15],
        "mean": (x * keep).sum(1) / keep.sum(1),
        "max": torch.stack([x[i][mask[i]].max(0).values for i in range(8)]),
    }
    for pool, want in expected.items():
        head = build(registry, "mlp_head", [5], pool=pool)
        torch.testing.assert_close(head.pool(x, mask), want)


def test_attention_pooling_ignores_padding_and_is_a_convex_combination(
    registry: Registry,
) -> None:
    head = build(registry, "mlp_head", [5], pool="attention")
    inputs, mask = make_batch(8, 31, [5], seed=7)
    (x,) = inputs
    # With identical real rows, any convex combination of them returns that row.
    const = torch.randn(8, 1, 5).expand(8, 31, 5) * mask.unsqueeze(-1)
    torch.testing.assert_close(head.pool(const, mask), const[:, 15])
    # Without the mask the padding (zeros) would dilute the pool: the mask matters.
    assert not torch.allclose(head.pool(x, mask), head.pool(x, torch.ones_like(mask)))


def test_center_pooling_sees_only_the_centre(registry: Registry) -> None:
    head = build(registry, "mlp_head", [5], pool="center").eval()
    inputs, mask = make_batch(4, 33, [5], seed=8)
    (x,) = inputs
    other = x.clone()
    other[:, :16] += 1.0
    other[:, 17:] -= 1.0
    with torch.no_grad():
        torch.testing.assert_close(head([other], mask)["out"], head([x], mask)["out"])
        other[:, 16] += 1.0
        assert not torch.allclose(head([other], mask)["out"], head([x], mask)["out"])


def test_head_embedding_feeds_the_classifier(registry: Registry) -> None:
    head = build(registry, "mlp_head", [5], pool="mean", hidden=[6, 4], tasks=2).eval()
    inputs, mask = make_batch(8, 31, [5], seed=9)
    with torch.no_grad():
        result = head(inputs, mask)
    assert (result["embedding"] >= 0).all()  # post-ReLU activation
    torch.testing.assert_close(result["out"], head.classifier(result["embedding"]))


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "dims", "cfg", "fragment"),
    [
        ("add", [20, 23], {}, "add needs inputs of equal size, got [20, 23]"),
        ("add", [20], {}, "got 1 (dims [20])"),
        ("concat", [], {}, "got 0 (dims [])"),
        ("concat", [4, 0], {}, "[4, 0]"),
        ("bilstm", [4, 5], {}, "bilstm takes exactly 1 input, got 2 (dims [4, 5])"),
        ("cnn", [4, 5], {}, "cnn takes exactly 1 input, got 2 (dims [4, 5])"),
        ("mlp_head", [4, 5], {}, "mlp_head takes exactly 1 input, got 2 (dims [4, 5])"),
        ("bilstm", [0], {}, "[0]"),
    ],
)
def test_dimension_errors_name_the_dims(
    registry: Registry, name: str, dims: list[int], cfg: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        build(registry, name, dims, **cfg)
    assert fragment in str(info.value)


def test_add_projection_allows_mismatched_dims(registry: Registry) -> None:
    assert build(registry, "add", [20, 23], project=True).output_dims == {"out": 23}
    assert build(registry, "add", [20, 23], project=True, dim=8).output_dims == {"out": 8}
    # Equal sizes need no projection, so no parameters are added.
    assert not list(build(registry, "add", [7, 7], project=True).parameters())
    with pytest.raises(ValueError, match="only used with `project: true`"):
        build(registry, "add", [20, 20], dim=8)


def test_cnn_rejects_even_kernel_sizes(registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"(?s)kernel_sizes.1.*odd.*got 4"):
        build(registry, "cnn", [5], kernel_sizes=[3, 4])
    with pytest.raises(ValueError):
        build(registry, "cnn", [5], kernel_sizes=[])
