import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from ptmkit_plugin_example.label_smoothing import LabelSmoothingBCE

LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0])
LABELS = torch.tensor([1.0, 0.0, 0.0, 1.0])


def loss_of(**config) -> LabelSmoothingBCE:
    return LabelSmoothingBCE(LabelSmoothingBCE.Config(**config))


def test_zero_smoothing_is_plain_bce():
    got = loss_of(smoothing=0.0)({"logits": LOGITS}, LABELS)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(LOGITS, LABELS))


def test_targets_are_smoothed():
    got = loss_of(smoothing=0.2)({"logits": LOGITS}, LABELS)
    target = torch.tensor([0.9, 0.1, 0.1, 0.9])
    expected = -(target * F.logsigmoid(LOGITS) + (1 - target) * F.logsigmoid(-LOGITS)).mean()
    torch.testing.assert_close(got, expected)


def test_linear_schedule_anneals_to_zero_through_start_epoch():
    loss = loss_of(smoothing=0.2, schedule="linear")
    loss.start_epoch(1, 5)
    assert loss.eps == pytest.approx(0.2)
    loss.start_epoch(3, 5)
    assert loss.eps == pytest.approx(0.1)
    loss.start_epoch(5, 5)
    assert loss.eps == 0.0
    constant = loss_of(smoothing=0.2)
    constant.start_epoch(5, 5)
    assert constant.eps == 0.2


def test_finite_for_huge_logits_and_reads_the_configured_output():
    loss = loss_of(input="head")
    assert loss.required_outputs() == ["head"]
    value = loss({"head": torch.tensor([[1e4], [-1e4]])}, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(value)


def test_errors_are_clear():
    with pytest.raises(ValidationError):
        loss_of(smoothing=0.5)
    with pytest.raises(ValidationError):
        loss_of(schedule="cosine")
    with pytest.raises(ValueError, match="one logit per example"):
        loss_of()({"logits": torch.zeros(4, 2)}, LABELS)
