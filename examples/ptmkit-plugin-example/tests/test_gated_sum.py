import pytest
import torch
from pydantic import ValidationError

from ptmkit_plugin_example.gated_sum import GatedSum


def inputs_and_mask(dims: list[int], n: int = 4, width: int = 9, pad: int = 2):
    torch.manual_seed(0)
    mask = torch.ones(n, width, dtype=torch.bool)
    mask[:, :pad] = False
    xs = [torch.randn(n, width, d) * mask.unsqueeze(-1) for d in dims]
    return xs, mask


def test_declares_its_outputs_and_returns_them():
    node = GatedSum(GatedSum.Config(), [20, 75])
    assert node.output_dims == {"out": 75, "gates": 2}
    xs, mask = inputs_and_mask([20, 75])
    result = node(xs, mask)
    assert result["out"].shape == (4, 9, 75)
    assert result["gates"].shape == (4, 9, 2)
    assert GatedSum(GatedSum.Config(dim=8), [20, 75, 8]).output_dims == {"out": 8, "gates": 3}


def test_gates_are_a_mixture_at_real_positions_and_padding_is_zero():
    node = GatedSum(GatedSum.Config(), [6, 6, 6])
    xs, mask = inputs_and_mask([6, 6, 6])
    result = node(xs, mask)
    torch.testing.assert_close(result["gates"][mask].sum(-1), torch.ones(int(mask.sum())))
    assert torch.all(result["out"][~mask] == 0) and torch.all(result["gates"][~mask] == 0)


def test_equal_sizes_pass_through_and_the_sum_is_gated():
    node = GatedSum(GatedSum.Config(), [5, 5])
    assert all(isinstance(p, torch.nn.Identity) for p in node.proj)
    xs, mask = inputs_and_mask([5, 5], pad=0)
    result = node(xs, mask)
    g = result["gates"]
    torch.testing.assert_close(result["out"], g[..., :1] * xs[0] + g[..., 1:] * xs[1])


def test_padding_content_never_reaches_real_positions():
    node = GatedSum(GatedSum.Config(dim=7), [4, 9])
    xs, mask = inputs_and_mask([4, 9])
    noisy = [x + 100 * (~mask).unsqueeze(-1) for x in xs]
    torch.testing.assert_close(node(xs, mask)["out"][mask], node(noisy, mask)["out"][mask])


def test_gradients_reach_every_parameter():
    node = GatedSum(GatedSum.Config(dim=3), [4, 9])
    xs, mask = inputs_and_mask([4, 9])
    node(xs, mask)["out"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in node.parameters())


def test_bad_wiring_and_config_are_refused():
    with pytest.raises(ValueError, match="at least 2 inputs"):
        GatedSum(GatedSum.Config(), [20])
    with pytest.raises(ValidationError):
        GatedSum.Config(temperature=0)
    with pytest.raises(ValidationError):
        GatedSum.Config(dims=4)
