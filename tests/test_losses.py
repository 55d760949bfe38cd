"""Built-in losses: agreement with torch and with hand computations, stability, setup."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from ptmkit.hooks import build_registry
from ptmkit.plugin_api import Loss
from ptmkit.registry import Registry

NAMES = ("bce", "weighted_ce", "focal")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def build(registry: Registry, name: str, **config: Any) -> Loss:
    cls = registry.get("loss", name).obj
    return cls(cls.Config.model_validate(config))


def batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g) * 3
    labels = (torch.rand(n, generator=g) < 0.3).float()
    return logits, labels


def test_losses_are_registered(registry: Registry) -> None:
    assert set(NAMES) <= set(registry.names("loss"))
    for name in NAMES:
        spec = registry.get("loss", name)
        assert issubclass(spec.obj, Loss) and spec.doc
        for field, info in spec.obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


def test_bce_equals_torch(registry: Registry) -> None:
    logits, labels = batch()
    loss = build(registry, "bce")({"logits": logits}, labels)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, labels))
    torch.testing.assert_close(loss, nn.BCELoss()(torch.sigmoid(logits), labels))
    assert loss.dim() == 0


def test_input_selects_the_output_entry(registry: Registry) -> None:
    logits, labels = batch()
    outputs = {"logits": torch.zeros_like(logits), "head.out": logits.unsqueeze(1)}
    loss = build(registry, "bce", input="head.out")(outputs, labels)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, labels))


def test_missing_input_and_wrong_shape_are_clear_errors(registry: Registry) -> None:
    logits, labels = batch()
    with pytest.raises(KeyError, match="'aux'.*logits"):
        build(registry, "focal", input="aux")({"logits": logits}, labels)
    with pytest.raises(ValueError, match=r"shape \[64, 2\]"):
        build(registry, "bce")({"logits": torch.zeros(64, 2)}, labels)


def test_focal_with_gamma_0_and_alpha_half_is_half_bce(registry: Registry) -> None:
    logits, labels = batch()
    focal = build(registry, "focal", gamma=0.0, alpha=0.5)({"logits": logits}, labels)
    torch.testing.assert_close(focal, 0.5 * F.binary_cross_entropy_with_logits(logits, labels))


def test_focal_matches_a_hand_computed_example(registry: Registry) -> None:
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.0])
    # p_t = probability of the true class; alpha_t = alpha for positives, 1 - alpha otherwise.
    terms = []
    for x, y in zip(logits.tolist(), labels.tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-x))
        p_t = p if y == 1 else 1.0 - p
        alpha_t = 0.25 if y == 1 else 0.75
        terms.append(alpha_t * (1.0 - p_t) ** 2 * -math.log(p_t))
    expected = sum(terms) / 3
    assert expected == pytest.approx(0.1001677, abs=1e-6)
    loss = build(registry, "focal", alpha=0.25, gamma=2.0)({"logits": logits}, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_down_weights_easy_examples(registry: Registry) -> None:
    labels = torch.tensor([1.0])
    focal = build(registry, "focal", alpha=0.5, gamma=2.0)
    ratio = {
        x: (focal({"logits": torch.tensor([x])}, labels) / (0.5 * F.softplus(torch.tensor(-x))))
        for x in (4.0, -4.0)
    }
    assert ratio[4.0] < 1e-3 < 0.9 < ratio[-4.0]


def test_weighted_ce_auto_weight_is_neg_over_pos(registry: Registry) -> None:
    logits, labels = batch()
    loss = build(registry, "weighted_ce")
    loss.setup(labels.numpy())
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    assert loss.pos_weight.item() == pytest.approx(n_neg / n_pos)
    expected = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / n_pos))(logits, labels)
    torch.testing.assert_close(loss({"logits": logits}, labels), expected)


def test_weighted_ce_auto_on_a_small_example(registry: Registry) -> None:
    loss = build(registry, "weighted_ce")
    loss.setup(np.array([1, 0, 0, 0, 1, 0, 0, 0]))
    assert loss.pos_weight.item() == 3.0


def test_weighted_ce_fixed_weight_needs_no_setup(registry: Registry) -> None:
    logits, labels = batch()
    loss = build(registry, "weighted_ce", pos_weight=2.5)
    loss.setup(np.array([1, 0]))  # does not override an explicit weight
    expected = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.5))(logits, labels)
    torch.testing.assert_close(loss({"logits": logits}, labels), expected)


def test_weighted_ce_auto_before_setup_is_a_runtime_error(registry: Registry) -> None:
    logits, labels = batch()
    with pytest.raises(RuntimeError, match="setup"):
        build(registry, "weighted_ce")({"logits": logits}, labels)


def test_weighted_ce_auto_needs_both_classes(registry: Registry) -> None:
    with pytest.raises(ValueError, match="0 positive"):
        build(registry, "weighted_ce").setup(np.zeros(10))


def test_weighted_ce_weight_survives_a_state_dict_round_trip(registry: Registry) -> None:
    logits, labels = batch()
    trained = build(registry, "weighted_ce")
    trained.setup(labels.numpy())
    reloaded = build(registry, "weighted_ce")
    reloaded.load_state_dict(trained.state_dict())
    torch.testing.assert_close(reloaded({"logits": logits}, labels), trained({"logits": logits}, labels))


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("bce", {}),
        ("weighted_ce", {"pos_weight": 3.0}),
        ("focal", {}),
        ("focal", {"gamma": 0.5}),
        ("focal", {"gamma": 0.0, "alpha": 0.9}),
    ],
)
def test_large_logits_give_finite_values_and_gradients(
    registry: Registry, name: str, config: dict[str, Any]
) -> None:
    logits = torch.tensor([1e4, -1e4, 1e4, -1e4, 200.0, -200.0, 0.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    loss = build(registry, name, **config)({"logits": logits}, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # Two confidently wrong examples dominate: the loss reflects them instead of saturating.
    assert loss.item() > 100


def test_config_validation(registry: Registry) -> None:
    focal = registry.get("loss", "focal").obj
    with pytest.raises(ValidationError):
        focal.Config.model_validate({"alpha": 1.5})
    with pytest.raises(ValidationError):
        focal.Config.model_validate({"gamma": -1.0})
    with pytest.raises(ValidationError, match="gama"):
        focal.Config.model_validate({"gama": 2.0})
    weighted = registry.get("loss", "weighted_ce").obj
    with pytest.raises(ValidationError):
        weighted.Config.model_validate({"pos_weight": 0})
    with pytest.raises(ValidationError):
        weighted.Config.model_validate({"pos_weight": "balanced"})
