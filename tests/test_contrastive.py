"""Contrastive losses ``hcl`` and ``infonce``: values against loop implementations, gradients,
lambda(t) schedules, degenerate batches, pooling, binding, and a pass through the real core."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ptmkit_plugins.losses.contrastive import schedule_value
from pydantic import ValidationError

from ptmkit import recipe as recipes
from ptmkit.errors import GraphError
from ptmkit.graph import ModelGraph
from ptmkit.hooks import build_registry
from ptmkit.inference import combined_loss
from ptmkit.objective import build_losses
from ptmkit.plugin_api import Loss
from ptmkit.registry import Registry

LEVELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def build(registry: Registry, name: str, dims: dict[str, int] | None = None, **config: Any) -> Loss:
    cls = registry.get("loss", name).obj
    loss = cls(cls.Config.model_validate(config))
    if dims is not None:
        loss.bind(dims)
    return loss


def unit_batch(n: int = 7, d: int = 5, k: int = 3, seed: int = 0) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outputs = {name: torch.randn(n, d, generator=g) for name in LEVELS[:k]}
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0][:n], dtype=torch.float32)
    return outputs, labels


# ----------------------------------------------------------------------------- loop references
def dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def unit(rows: torch.Tensor) -> list[list[float]]:
    out = []
    for row in rows.tolist():
        norm = math.sqrt(sum(x * x for x in row))
        out.append([x / norm for x in row])
    return out


def loop_supcon(z: list[list[float]], y: list[float], t: float) -> float:
    """Khosla et al. L_out, anchors with >= 1 positive and >= 1 negative, mean over anchors."""
    n, losses = len(z), []
    for i in range(n):
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        denom = sum(math.exp(dot(z[i], z[m]) / t) for m in range(n) if m != i)
        terms = [math.log(math.exp(dot(z[i], z[j]) / t) / denom) for j in pos]
        losses.append(-sum(terms) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def loop_cross(a: list[list[float]], b: list[list[float]], t: float, y: list[float] | None = None) -> float:
    """-1/B sum_i log(exp(a_i.b_i/t) / sum_m exp(a_i.b_m/t)); with y, same-label m != i dropped."""
    n, total = len(a), 0.0
    for i in range(n):
        keep = [m for m in range(n) if m == i or y is None or y[m] != y[i]]
        denom = sum(math.exp(dot(a[i], b[m]) / t) for m in keep)
        total += -math.log(math.exp(dot(a[i], b[i]) / t) / denom)
    return total / n


# ----------------------------------------------------------------------------- registry, config
def test_registered_with_documented_fields(registry: Registry) -> None:
    for name in ("hcl", "infonce"):
        spec = registry.get("loss", name)
        assert issubclass(spec.obj, Loss) and spec.doc
        for field, info in spec.obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"
    hcl = registry.get("loss", "hcl").obj.Config()
    assert hcl.inputs == ["macp.shallow", "macp.middle", "macp.deep"]
    assert (hcl.beta, hcl.temperature, hcl.proj_dim, hcl.pool) == (0.7, 0.1, 128, "mean")
    assert (hcl.schedule, hcl.lambda_start, hcl.lambda_end) == ("linear", 1.0, 0.1)


def test_config_validation(registry: Registry) -> None:
    hcl = registry.get("loss", "hcl").obj.Config
    infonce = registry.get("loss", "infonce").obj.Config
    with pytest.raises(ValidationError, match="min_temperature"):
        hcl.model_validate({"temperature": 5.0})
    with pytest.raises(ValidationError):
        hcl.model_validate({"schedule": "step"})
    with pytest.raises(ValidationError):
        hcl.model_validate({"inputs": []})
    with pytest.raises(ValidationError, match="betta"):
        hcl.model_validate({"betta": 0.5})
    with pytest.raises(ValidationError):
        infonce.model_validate({"inputs": ["a", "b", "c"]})
    with pytest.raises(ValidationError):
        infonce.model_validate({})


def test_required_outputs_are_the_inputs(registry: Registry) -> None:
    assert build(registry, "hcl").required_outputs() == ["macp.shallow", "macp.middle", "macp.deep"]
    assert build(registry, "infonce", inputs=["x", "y.out"]).required_outputs() == ["x", "y.out"]


# ----------------------------------------------------------------------------- bind
@pytest.mark.parametrize("projection", ["mlp", "linear"])
def test_bind_sizes_heads_from_the_dims(registry: Registry, projection: str) -> None:
    dims = {"a": 5, "b": 7, "c": 9, "other": 3}
    loss = build(registry, "hcl", dims, inputs=LEVELS, proj_dim=16, projection=projection)
    assert len(loss.heads) == 3
    for head, d in zip(loss.heads, (5, 7, 9), strict=True):
        linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        assert linears[0].in_features == d and linears[-1].out_features == 16
    outputs = {name: torch.randn(6, d) for name, d in dims.items()}
    assert torch.isfinite(loss(outputs, torch.tensor([0.0, 1, 0, 1, 1, 0])))
    # the heads (and the temperature) are parameters, so the trainer optimises them
    assert len(list(loss.parameters())) == 1 + (6 if projection == "linear" else 12)


def test_bind_errors(registry: Registry) -> None:
    with pytest.raises(ValueError, match="equal sizes"):
        build(registry, "hcl", {"a": 5, "b": 7, "c": 5}, inputs=LEVELS, projection="none")
    with pytest.raises(KeyError, match="'c'"):
        build(registry, "hcl", {"a": 5, "b": 7}, inputs=LEVELS)
    outputs, labels = unit_batch()
    with pytest.raises(RuntimeError, match="bind"):
        build(registry, "hcl", inputs=LEVELS)(outputs, labels)


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("exclude", [False, True])
def test_hcl_matches_loop_implementation(registry: Registry, exclude: bool) -> None:
    outputs, labels = unit_batch()
    t, beta = 0.3, 0.7
    loss = build(
        registry,
        "hcl",
        {n: 5 for n in LEVELS},
        inputs=LEVELS,
        projection="none",
        temperature=t,
        beta=beta,
        exclude_same_label_negatives=exclude,
    )
    value = loss(outputs, labels)
    z = [unit(outputs[n]) for n in LEVELS]
    y = labels.tolist()
    intra = [loop_supcon(zk, y, t) for zk in z]
    cross = [loop_cross(z[k], z[k + 1], t, y if exclude else None) for k in range(2)]
    for k in range(3):
        assert loss.last_terms[f"intra_{k + 1}"].item() == pytest.approx(intra[k], rel=1e-5)
    for k in range(2):
        assert loss.last_terms[f"cross_{k + 1}"].item() == pytest.approx(cross[k], rel=1e-5)
    expected = sum(intra) / 3 + beta / 2 * sum(cross)  # eq. 39
    assert loss.last_terms["cont"].item() == pytest.approx(expected, rel=1e-5)
    assert loss.last_terms["lambda"].item() == 1.0  # lambda_start before any start_epoch
    assert loss.last_terms["temperature"].item() == pytest.approx(t)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_hcl_symmetric_cross_averages_both_directions(registry: Registry) -> None:
    outputs, labels = unit_batch(k=2)
    loss = build(
        registry, "hcl", {"a": 5, "b": 5}, inputs=["a", "b"], projection="none", symmetric_cross=True
    )
    loss(outputs, labels)
    a, b = unit(outputs["a"]), unit(outputs["b"])
    expected = 0.5 * (loop_cross(a, b, 0.1) + loop_cross(b, a, 0.1))
    assert loss.last_terms["cross_1"].item() == pytest.approx(expected, rel=1e-5)


def test_hcl_with_one_level_is_plain_supcon(registry: Registry) -> None:
    outputs, labels = unit_batch()
    loss = build(registry, "hcl", {"a": 5}, inputs=["a"], projection="none", temperature=0.5)
    expected = loop_supcon(unit(outputs["a"]), labels.tolist(), 0.5)
    assert loss(outputs, labels).item() == pytest.approx(expected, rel=1e-5)
    assert not any(k.startswith("cross") for k in loss.last_terms)


@pytest.mark.parametrize("exclude", [False, True])
def test_infonce_matches_loop_implementation(registry: Registry, exclude: bool) -> None:
    outputs, labels = unit_batch(k=2)
    loss = build(
        registry,
        "infonce",
        {"a": 5, "b": 5},
        inputs=["a", "b"],
        projection="none",
        temperature=0.2,
        exclude_same_label_negatives=exclude,
    )
    a, b = unit(outputs["a"]), unit(outputs["b"])
    y = labels.tolist() if exclude else None
    expected = 0.5 * (loop_cross(a, b, 0.2, y) + loop_cross(b, a, 0.2, y))
    assert loss(outputs, labels).item() == pytest.approx(expected, rel=1e-5)
    assert loss.last_terms["infonce"].item() == pytest.approx(expected, rel=1e-5)


def test_projection_heads_are_applied(registry: Registry) -> None:
    outputs, labels = unit_batch()
    loss = build(registry, "hcl", {"a": 5, "b": 5, "c": 5}, inputs=LEVELS, proj_dim=4)
    loss(outputs, labels)
    z = [unit(head(outputs[n]).detach()) for head, n in zip(loss.heads, LEVELS, strict=True)]
    assert loss.last_terms["intra_2"].item() == pytest.approx(
        loop_supcon(z[1], labels.tolist(), 0.1), rel=1e-5
    )
    assert loss.last_terms["cross_2"].item() == pytest.approx(loop_cross(z[1], z[2], 0.1), rel=1e-5)


# ----------------------------------------------------------------------------- pooling
def test_per_residue_inputs_are_mean_pooled_over_real_residues(registry: Registry) -> None:
    g = torch.Generator().manual_seed(1)
    n, w, d = 6, 5, 4
    mask = torch.ones(n, w, dtype=torch.bool)
    mask[0, :2] = False
    mask[3, 3:] = False
    per_residue = {name: torch.randn(n, w, d, generator=g) for name in LEVELS}
    labels = torch.tensor([1.0, 0, 1, 0, 0, 1])
    pooled = {
        name: (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True) for name, x in per_residue.items()
    }
    loss = build(registry, "hcl", {n_: d for n_ in LEVELS}, inputs=LEVELS)
    value = loss({**per_residue, "mask": mask}, labels)
    torch.testing.assert_close(value, loss(pooled, labels))
    # padding content does not matter
    noisy = {name: x.masked_fill(~mask.unsqueeze(-1), 100.0) for name, x in per_residue.items()}
    torch.testing.assert_close(loss({**noisy, "mask": mask}, labels), value)


def test_center_pooling_takes_the_middle_position(registry: Registry) -> None:
    g = torch.Generator().manual_seed(2)
    x = {name: torch.randn(6, 7, 4, generator=g) for name in ("a", "b")}
    labels = torch.tensor([1.0, 0, 1, 0, 0, 1])
    loss = build(registry, "infonce", {"a": 4, "b": 4}, inputs=["a", "b"], pool="center")
    mask = torch.ones(6, 7, dtype=torch.bool)
    torch.testing.assert_close(
        loss({**x, "mask": mask}, labels), loss({k: v[:, 3] for k, v in x.items()}, labels)
    )


def test_bad_shapes_are_clear_errors(registry: Registry) -> None:
    loss = build(registry, "infonce", {"a": 4, "b": 4}, inputs=["a", "b"])
    labels = torch.tensor([1.0, 0, 1])
    with pytest.raises(ValueError, match=r"'a' has shape \[3\]"):
        loss({"a": torch.randn(3), "b": torch.randn(3, 4)}, labels)
    with pytest.raises(ValueError, match="mask"):
        loss({"a": torch.randn(3, 5, 4), "b": torch.randn(3, 4), "mask": torch.ones(3, 6)}, labels)
    with pytest.raises(ValueError, match="4 rows"):
        loss({"a": torch.randn(4, 4), "b": torch.randn(4, 4)}, labels)
    with pytest.raises(KeyError, match="'b'"):
        loss({"a": torch.randn(3, 4)}, labels)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["hcl", "infonce"])
def test_gradients_reach_heads_temperature_and_inputs(registry: Registry, name: str) -> None:
    inputs = LEVELS if name == "hcl" else LEVELS[:2]
    g = torch.Generator().manual_seed(3)
    dims = {"a": 4, "b": 6, "c": 8}
    outputs = {n: torch.randn(8, 5, dims[n], generator=g, requires_grad=True) for n in inputs}
    mask = torch.ones(8, 5, dtype=torch.bool)
    mask[:, 0] = False
    labels = torch.tensor([1.0, 0, 0, 1, 1, 0, 0, 1])
    loss = build(registry, name, dims, inputs=inputs, temperature=0.2)
    loss({**outputs, "mask": mask}, labels).backward()
    for pname, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert loss.log_temperature_offset.grad is not None
    for n in inputs:
        grad = outputs[n].grad
        assert grad is not None and grad[:, 1:].abs().sum() > 0
        assert (grad[:, 0] == 0).all()  # padding is not part of the pooled vector


def test_fixed_temperature_is_not_a_parameter(registry: Registry) -> None:
    loss = build(registry, "hcl", {n: 4 for n in LEVELS}, inputs=LEVELS, learn_temperature=False)
    names = [n for n, _ in loss.named_parameters()]
    assert names and not any("temperature" in n for n in names)
    assert loss.temperature().item() == pytest.approx(0.1)


def test_temperature_is_clamped(registry: Registry) -> None:
    loss = build(registry, "hcl", {n: 4 for n in LEVELS}, inputs=LEVELS, max_temperature=0.5)
    with torch.no_grad():
        loss.log_temperature_offset.fill_(10.0)
    assert loss.temperature().item() == pytest.approx(0.5)
    with torch.no_grad():
        loss.log_temperature_offset.fill_(-10.0)
    assert loss.temperature().item() == pytest.approx(0.01)


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    ("schedule", "config", "expected"),
    [
        ("constant", {}, {1: 1.0, 6: 1.0, 11: 1.0}),
        ("linear", {}, {1: 1.0, 3: 0.82, 6: 0.55, 11: 0.1}),
        (
            "cosine",
            {},
            {1: 1.0, 3: 0.1 + 0.45 * (1 + math.cos(0.2 * math.pi)), 6: 0.55, 11: 0.1},
        ),
        (
            "warmup",
            {"lambda_start": 0.0, "lambda_end": 1.0, "warmup_epochs": 4},
            {1: 0.0, 3: 0.5, 5: 1.0, 6: 1.0, 11: 1.0},
        ),
    ],
)
def test_lambda_schedule(registry: Registry, schedule: str, config: dict, expected: dict) -> None:
    outputs, labels = unit_batch()
    loss = build(
        registry, "hcl", {n: 5 for n in LEVELS}, inputs=LEVELS, projection="none", schedule=schedule, **config
    )
    for epoch, lam in expected.items():
        loss.start_epoch(epoch, 11)
        assert loss.lam == pytest.approx(lam)
        value = loss(outputs, labels)
        assert loss.last_terms["lambda"].item() == pytest.approx(lam)
        assert value.item() == pytest.approx(lam * loss.last_terms["cont"].item(), rel=1e-5, abs=1e-7)


def test_schedule_edge_cases() -> None:
    assert schedule_value("linear", 1.0, 0.1, 1, 1) == 1.0  # a one-epoch run stays at the start
    assert schedule_value("cosine", 1.0, 0.1, 50, 10) == pytest.approx(0.1)  # past the end: held
    assert schedule_value("warmup", 1.0, 0.2, 2, 30, warmup_epochs=1) == pytest.approx(0.2)


# ----------------------------------------------------------------------------- degenerate batches
@pytest.mark.parametrize("name", ["hcl", "infonce"])
def test_batch_of_one_gives_zero(registry: Registry, name: str) -> None:
    inputs = LEVELS if name == "hcl" else LEVELS[:2]
    outputs = {n: torch.randn(1, 4, requires_grad=True) for n in inputs}
    loss = build(registry, name, {n: 4 for n in inputs}, inputs=inputs)
    value = loss(outputs, torch.tensor([1.0]))
    assert value.item() == 0.0
    value.backward()
    for p in [*loss.parameters(), *outputs.values()]:
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_single_class_batch_has_zero_intra_and_finite_loss(registry: Registry, label: float) -> None:
    outputs = {n: torch.randn(5, 4, requires_grad=True) for n in LEVELS}
    labels = torch.full((5,), label)
    loss = build(registry, "hcl", {n: 4 for n in LEVELS}, inputs=LEVELS)
    value = loss(outputs, labels)
    value.backward()
    assert torch.isfinite(value)
    assert all(loss.last_terms[f"intra_{k}"].item() == 0.0 for k in (1, 2, 3))
    for p in [*loss.parameters(), *outputs.values()]:
        assert p.grad is None or torch.isfinite(p.grad).all()
    # no cross-layer weight: nothing left, exactly 0
    only_intra = build(registry, "hcl", {n: 4 for n in LEVELS}, inputs=LEVELS, beta=0.0)
    assert only_intra(outputs, labels).item() == 0.0
    # with same-label negatives excluded the cross terms have no negatives either
    excluded = build(
        registry, "hcl", {n: 4 for n in LEVELS}, inputs=LEVELS, exclude_same_label_negatives=True
    )
    assert excluded(outputs, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_extreme_temperature_and_identical_embeddings_stay_finite(registry: Registry) -> None:
    x = torch.zeros(6, 4, requires_grad=True)
    outputs = {n: x * 1.0 for n in LEVELS}
    outputs["a"] = outputs["a"] + torch.tensor([50.0, -50, 0, 0])
    labels = torch.tensor([1.0, 0, 1, 0, 1, 0])
    loss = build(
        registry,
        "hcl",
        {n: 4 for n in LEVELS},
        inputs=LEVELS,
        projection="none",
        temperature=0.01,
        learn_temperature=False,
    )
    value = loss(outputs, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- behaviour
def test_clustered_embeddings_have_lower_intra_loss(registry: Registry) -> None:
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0.0, 1.0] * 16)
    centres = torch.randn(2, 16, generator=g) * 3
    clustered = centres[labels.long()] + 0.1 * torch.randn(32, 16, generator=g)
    scattered = torch.randn(32, 16, generator=g)
    loss = build(registry, "hcl", {"a": 16}, inputs=["a"], projection="none", temperature=0.1)
    assert loss({"a": clustered}, labels) < loss({"a": scattered}, labels) - 0.5


def test_optimising_the_loss_pulls_classes_apart(registry: Registry) -> None:
    torch.manual_seed(5)
    labels = torch.tensor([0.0, 1.0] * 8)
    x = torch.randn(16, 8, requires_grad=True)
    loss = build(registry, "hcl", {"a": 8}, inputs=["a"], projection="none")
    optimiser = torch.optim.SGD([x, *loss.parameters()], lr=0.5)
    first = None
    for _ in range(10):
        value = loss({"a": x}, labels)
        first = value.item() if first is None else first
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    assert loss({"a": x}, labels).item() < first


# ----------------------------------------------------------------------------- through the core
RECIPE: dict[str, Any] = {
    "name": "hcl-e2e",
    "data": {"source": "uniptms:H1"},
    "features": {"onehot": {"type": "onehot"}},
    "model": {
        "nodes": {
            "l1": {"type": "cnn", "inputs": ["onehot"], "channels": 4, "kernel_sizes": [3], "layers": 1},
            "l2": {"type": "cnn", "inputs": ["l1"], "channels": 4, "kernel_sizes": [3, 5], "layers": 1},
            "l3": {"type": "cnn", "inputs": ["l2"], "channels": 4, "kernel_sizes": [3, 5, 7], "layers": 1},
            "head": {"type": "mlp_head", "inputs": ["l3"], "hidden": [8]},
        }
    },
    "losses": [
        {"type": "focal"},
        {"type": "hcl", "inputs": ["l1", "l2", "l3"], "proj_dim": 16, "weight": 0.5},
    ],
}


def test_end_to_end_through_the_core(registry: Registry) -> None:
    torch.manual_seed(6)
    recipe = recipes.parse(RECIPE, registry)
    model = ModelGraph(recipe, {"onehot": 20})
    losses = build_losses(recipe, model)
    assert [w for w, _ in losses] == [1.0, 0.5]
    hcl = losses[1][1]
    assert [h[0].in_features for h in hcl.heads] == [4, 8, 12]
    for _, loss in losses:
        loss.setup(np.array([0, 1, 1, 0]))
        loss.start_epoch(1, 10)
    n, w = 12, 9
    feats = {"onehot": F.one_hot(torch.randint(0, 20, (n, w)), 20).float()}
    mask = torch.ones(n, w, dtype=torch.bool)
    mask[:3, :2] = False
    labels = torch.tensor([0.0, 1.0] * 6)
    total = combined_loss(losses, model(feats, mask), labels)
    total.backward()
    assert torch.isfinite(total)
    params = dict(hcl.named_parameters())
    assert "log_temperature_offset" in params and len(params) == 13
    for pname, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    for node in ("l1", "l2", "l3"):
        grads = [p.grad for p in model.blocks[node].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), node


def test_core_reports_an_unknown_input(registry: Registry) -> None:
    raw = {**RECIPE, "losses": [{"type": "focal"}, {"type": "hcl", "inputs": ["l1", "l2", "l4"]}]}
    recipe = recipes.parse(raw, registry)
    model = ModelGraph(recipe, {"onehot": 20})
    with pytest.raises(GraphError, match=r"'l4'.*Did you mean"):
        build_losses(recipe, model)
