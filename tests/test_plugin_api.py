"""The public plugin API: one module to import from, declared feature state, and the shared
contract checks of ``ptmkit.testing`` (applied to the built-ins, and shown to catch bad plugins)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import ptmkit
import ptmkit.api as api
from ptmkit.errors import PtmkitError
from ptmkit.hooks import get_registry
from ptmkit.testing import check_feature, check_loss, window_table

HANDCRAFTED = ("onehot", "blosum62", "aaindex", "pseaac", "eaac")


def test_one_module_exports_what_a_plugin_author_needs():
    needed = {
        "Reader", "ReadContext", "Feature", "GraphModule", "Head", "Loss", "PluginConfig", "OddInt",
        "SiteTable", "window_at", "SPLITS", "COLUMNS", "STANDARD", "PAD", "PAD_INDEX", "N_SYMBOLS",
        "encode_windows", "DataError", "PtmkitError", "register", "hookimpl", "Registrar",
        "API_VERSION", "Collection", "EmbeddingCache",
    }  # fmt: skip
    assert needed <= set(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)
    assert api.API_VERSION == ptmkit.API_VERSION == 2 and 1 in api.SUPPORTED_API_VERSIONS


def test_testing_imports_without_pytest_and_says_what_is_missing():
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import ptmkit.testing as t\n"
        "try:\n    t.standard_tests([])\nexcept ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ptmkit.testing.standard_tests needs pytest: pip install pytest" in done.stdout


# ---------------------------------------------------------------------------- feature state
class _Centred(api.Feature):
    """Learns a mean in fit: stateful because it implements the state methods."""

    dim = 1

    def fit(self, train: api.SiteTable) -> None:
        self.mean = np.array([float(len(train))])

    def export_state(self) -> dict:
        return {"mean": self.mean}

    def import_state(self, state: dict) -> None:
        self.mean = np.asarray(state["mean"])

    def encode(self, table: api.SiteTable) -> torch.Tensor:
        real = torch.from_numpy(api.encode_windows(table.windows) != api.PAD_INDEX).float()
        return (real * float(self.mean[0])).unsqueeze(-1)


class _ChecksOnly(api.Feature):
    """Overrides fit only to check its input: declares that nothing is learned."""

    stateful = False
    dim = 1

    def fit(self, train: api.SiteTable) -> None:
        assert len(train) >= 0

    def encode(self, table: api.SiteTable) -> torch.Tensor:
        return torch.zeros(len(table), table.width, 1)


def test_stateful_is_declared_or_inferred():
    assert api.Feature.stateful is None
    assert get_registry().get("feature", "onehot").obj.stateful is None  # stateless, no fit
    assert _Centred.stateful is True and _ChecksOnly.stateful is False
    plain = get_registry().get("feature", "onehot").obj
    assert plain(plain.Config()).export_state() is None
    with pytest.raises(
        PtmkitError, match=r"test_plugin_api\._ChecksOnly: .* does not implement import_state"
    ):
        _ChecksOnly(_ChecksOnly.Config()).import_state({})


def test_check_feature_round_trips_declared_state():
    out = check_feature(_Centred)
    assert float(out.max()) == 6.0  # fitted on the six sample windows
    check_feature(_ChecksOnly)


# ---------------------------------------------------------------------------- the shared checks
@pytest.mark.parametrize("name", HANDCRAFTED)
def test_builtin_features_pass_the_feature_checks(name):
    cls = get_registry().get("feature", name).obj
    out = check_feature(cls)
    assert out.shape == (6, 15, cls(cls.Config()).dim)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("bce", {}),
        ("weighted_ce", {}),
        ("focal", {}),
        ("hcl", {"inputs": ["a.out", "b.out"]}),
        ("infonce", {"inputs": ["a.out", "b.out"]}),
    ],
)
def test_builtin_losses_pass_the_loss_checks(name, config):
    cls = get_registry().get("loss", name).obj
    value = check_loss(cls(cls.Config.model_validate(config)))
    assert value.dim() == 0


class _LeakyPadding(api.Feature):
    dim = 2

    def encode(self, table: api.SiteTable) -> torch.Tensor:
        return torch.ones(len(table), table.width, 2)


class _Float64(_LeakyPadding):
    def encode(self, table: api.SiteTable) -> torch.Tensor:
        return torch.zeros(len(table), table.width, 2, dtype=torch.float64)


class _PerRowLoss(api.Loss):
    def forward(self, outputs: dict, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(
            outputs["logits"], labels, reduction="none"
        )


class _DetachedLoss(api.Loss):
    def forward(self, outputs: dict, labels: torch.Tensor) -> torch.Tensor:
        return (outputs["logits"].detach() * 0 + labels).mean().requires_grad_()


def test_the_checks_catch_broken_plugins():
    with pytest.raises(AssertionError, match="padding position 0 of row 1 encodes to non-zero values"):
        check_feature(_LeakyPadding)
    with pytest.raises(AssertionError, match="encode returned torch.float64, expected torch.float32"):
        check_feature(_Float64)
    with pytest.raises(AssertionError, match=r"returned shape \(8,\), expected a scalar"):
        check_loss(_PerRowLoss)
    with pytest.raises(AssertionError, match="no gradient reaches 'logits'"):
        check_loss(_DetachedLoss)


def test_window_table_is_what_a_fragment_reader_makes():
    table = window_table(["--ACK", "LXGAA"], labels=[1, 0])
    assert table.width == 5 and list(table.labels) == [1, 0] and len(table) == 2
