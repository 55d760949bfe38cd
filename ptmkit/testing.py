"""Shared contract checks for plugin tests: ptmkit's own and any plugin package's.

Graph modules (fusion, backbone, head): a test file lists its cases and gets four standard
parametrised tests (output shapes, gradients, padding, determinism) with::

    from ptmkit.testing import standard_tests
    CASES = [("mine", MyFusion, [4, 4], {}, 4)]  # (id, node type or class, in dims, config, out size)
    test_shapes, test_gradients, test_padding, test_deterministic = standard_tests(CASES)

Heads (output [N, D]) are told apart from sequence modules (output [N, W, D]) by their kind.
Features and losses: ``check_feature(MyFeature)`` (shape [N, W, dim], float32, zeros at padding,
deterministic, stable cache key, empty table, state round trip) and ``check_loss(MyLoss)``
(scalar, finite, differentiable, deterministic). ``registry_with("my_package")`` builds a registry
of the built-ins plus a package's entry-point module, installed or not.

Plain asserts and torch only; pytest is imported just by :func:`standard_tests`.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from .alphabet import PAD_INDEX, encode_windows
from .hooks import build_registry, get_registry
from .plugin_api import Feature, GraphModule, Head, Loss
from .registry import Registry
from .sitetable import SiteTable

WIDTHS = (31, 33, 37, 41)
BATCHES = (1, 8)
#: (id, node type or class, input dims, config, expected "out" size)
Case = tuple[str, "str | type[GraphModule]", list[int], dict[str, Any], int]
#: Windows of width 15 for feature checks: unpadded, padded at either end or both, non-standard letters.
SAMPLE_WINDOWS = (
    "ACDEFGHIKLMNPQR",
    "----MKSTVWYACDE",
    "STVWYACDEKR----",
    "--KXLBSZJUOQ---",
    "GGGGGGGSGGGGGGG",
    "-------S-------",
)


def _pytest():  # noqa: ANN202 - the pytest module
    try:
        import pytest
    except ImportError:
        raise ImportError(
            "ptmkit.testing.standard_tests needs pytest: pip install pytest (or ptmkit[dev])"
        ) from None
    return pytest


def registry() -> Registry:
    """The registry of every installed plugin package (built once per process)."""
    return get_registry()


def registry_with(module: str, provider: str | None = None) -> Registry:
    """ptmkit's built-in plugins plus the entry-point module ``module`` registered as if installed
    under the distribution name ``provider`` (default: the module name): tests registration and
    recipes without ``pip install``. Check ``registry.broken`` for what failed."""
    builtin = [ep for ep in md.entry_points(group="ptmkit") if ep.name == "builtin"]
    return build_registry([*builtin, md.EntryPoint(provider or module, module, "ptmkit")])


# ---------------------------------------------------------------------------- graph modules
def node_class(node: str | type[GraphModule]) -> type[GraphModule]:
    """The class of a node type name (looked up like a recipe's ``type``) or the class itself."""
    return node if isinstance(node, type) else registry().get("module", node).obj


def is_head(node: str | type[GraphModule]) -> bool:
    if isinstance(node, type):
        return issubclass(node, Head)
    return registry().get("module", node).kind == "head"


def build(node: str | type[GraphModule], in_dims: list[int], **config: Any) -> GraphModule:
    """Construct a node the way the core does: config validation, then ``cls(config, in_dims)``."""
    cls = node_class(node)
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


def check_shapes(
    node: str | type[GraphModule], dims: list[int], cfg: dict[str, Any], out_dim: int, w: int, n: int
) -> None:
    torch.manual_seed(0)
    module = build(node, dims, **cfg)
    assert module.output_dims["out"] == out_dim
    inputs, mask = make_batch(n, w, dims)
    result = outputs_of(module(inputs, mask))
    assert set(result) == set(module.output_dims)
    for key, tensor in result.items():
        if is_head(node):
            assert tensor.shape == (n, module.output_dims[key]), key
        else:
            assert tensor.shape == (n, w, module.output_dims[key]), key
        assert torch.isfinite(tensor).all(), key


def check_gradients(
    node: str | type[GraphModule], dims: list[int], cfg: dict[str, Any], out_dim: int
) -> None:
    """Every parameter and every input gets a non-zero gradient through all outputs."""
    torch.manual_seed(0)
    module = build(node, dims, **cfg).train()
    heads = {}
    if not is_head(node):  # a head on each output turns [N, W, D] into logits
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
            assert p.grad is not None, f"{node}: {pname} got no gradient"
            assert p.grad.abs().sum() > 0, f"{node}: {pname} got an all-zero gradient"
    for i, x in enumerate(inputs):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"{node}: input {i} got no gradient"


def check_padding(node: str | type[GraphModule], dims: list[int], cfg: dict[str, Any]) -> None:
    """Garbage at padding positions (even though features encode zeros) must not leak."""
    torch.manual_seed(0)
    module = build(node, dims, **cfg).eval()
    inputs, mask = make_batch(8, 33, dims, seed=2)
    assert (~mask).any()
    noisy = [x + 100.0 * torch.randn_like(x) * (~mask).unsqueeze(-1) for x in inputs]
    with torch.no_grad():
        clean, dirty = outputs_of(module(inputs, mask)), outputs_of(module(noisy, mask))
    for key in clean:
        if is_head(node):
            torch.testing.assert_close(dirty[key], clean[key])
        else:
            torch.testing.assert_close(dirty[key][mask], clean[key][mask])


def check_deterministic(node: str | type[GraphModule], dims: list[int], cfg: dict[str, Any]) -> None:
    inputs, mask = make_batch(8, 37, dims, seed=10)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        module = build(node, dims, **cfg)
        torch.manual_seed(7)  # training-mode dropout draws from the global generator as well
        outs.append(outputs_of(module.train()(inputs, mask)))
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key].detach(), outs[1][key].detach(), rtol=0, atol=0)


def standard_tests(cases: list[Case]):  # noqa: ANN201
    """The four parametrised tests for ``cases``, to assign at module level in a test file."""
    pytest = _pytest()
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


# ---------------------------------------------------------------------------- features
def window_table(
    windows: Sequence[str], *, labels: Sequence[int] | None = None, split: str = "train", task: str = "test"
) -> SiteTable:
    """A SiteTable of pre-cut ``windows`` as a fragment reader makes it (labels alternate 0/1)."""
    return SiteTable.from_records(
        [
            {
                "protein_id": f"P{i}",
                "position": pd.NA,
                "residue": w[len(w) // 2],
                "window": w,
                "label": int(labels[i]) if labels is not None else i % 2,
                "task": task,
                "split": split,
                "origin": f"test:{i + 1}",
            }
            for i, w in enumerate(windows)
        ]
    )


def _has_fit(cls: type[Feature]) -> bool:
    return cls.fit is not Feature.fit


def check_feature(feature: Feature | type[Feature], table: SiteTable | None = None) -> torch.Tensor:
    """Check the feature contract on ``table`` (default: :data:`SAMPLE_WINDOWS`); returns the encoding.

    A class is built with its default config. A feature with ``fit`` is fitted on ``table`` (as
    is the fresh copy it is compared with). Checks: a float32 tensor [N, W, dim] of finite values,
    zeros at padding, equal outputs from a second call and from a fresh instance, a 16-hex
    ``cache_key`` equal across instances, an empty table encoding to [0, *, dim], and for a
    stateful feature an ``export_state``/``import_state`` round trip that reproduces the output.
    """
    if isinstance(feature, type):
        feature = feature(feature.Config())
    cls = type(feature)
    name = f"{cls.__module__}.{cls.__qualname__}"
    table = window_table(SAMPLE_WINDOWS) if table is None else table
    fresh = cls(feature.config)
    if _has_fit(cls):
        feature.fit(table)
        fresh.fit(table)
    dim = feature.dim
    assert isinstance(dim, int) and dim > 0, f"{name}: dim must be a positive int, got {dim!r}"
    out = feature.encode(table)
    assert isinstance(out, torch.Tensor), f"{name}: encode returned {type(out).__name__}, not a tensor"
    assert out.dtype == torch.float32, f"{name}: encode returned {out.dtype}, expected torch.float32"
    expected = (len(table), table.width, dim)
    assert tuple(out.shape) == expected, f"{name}: shape {tuple(out.shape)}, expected {expected} (N, W, dim)"
    assert torch.isfinite(out).all(), f"{name}: encode returned non-finite values"
    padding = torch.from_numpy(encode_windows(table.windows) == PAD_INDEX)
    leaks = (out[padding] != 0).any(dim=-1) if padding.any() else torch.zeros(0, dtype=torch.bool)
    if leaks.any():
        row, col = (int(i) for i in padding.nonzero()[int(leaks.nonzero()[0])])
        raise AssertionError(f"{name}: padding position {col} of row {row} encodes to non-zero values")
    torch.testing.assert_close(
        feature.encode(table), out, rtol=0, atol=0, msg=f"{name}: a second encode differs"
    )
    torch.testing.assert_close(
        fresh.encode(table), out, rtol=0, atol=0, msg=f"{name}: a fresh instance differs"
    )
    key = feature.cache_key()
    assert isinstance(key, str) and re.fullmatch(r"[0-9a-f]{16}", key), f"{name}: cache_key {key!r}"
    assert feature.cache_key() == key == fresh.cache_key(), f"{name}: cache_key is not stable"
    empty = feature.encode(window_table([]))
    assert empty.shape[0] == 0 and empty.shape[-1] == dim, f"{name}: empty table gave {tuple(empty.shape)}"
    if cls.stateful:
        state = feature.export_state()
        assert isinstance(state, dict), f"{name}: export_state returned {type(state).__name__}, not a dict"
        restored = cls(feature.config)
        restored.import_state(state)
        torch.testing.assert_close(
            restored.encode(table), out, rtol=0, atol=0, msg=f"{name}: import_state(export_state()) differs"
        )
    return out


# ---------------------------------------------------------------------------- losses
def check_loss(
    loss: Loss | type[Loss],
    outputs: dict[str, torch.Tensor] | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Check the loss contract, calling the hooks in the core's order; returns the value.

    A class is built with its default config. Default ``outputs``: random ``"logits"`` [8], an
    all-true ``"mask"`` [8, 11], and a random [8, 6] tensor for every other required output;
    default ``labels`` alternate 0/1. Checks: a finite scalar tensor, finite non-zero gradients
    for every required output, gradients for the loss's own parameters, and equal values from a
    second call.
    """
    if isinstance(loss, type):
        loss = loss(loss.Config())
    name = f"{type(loss).__module__}.{type(loss).__qualname__}"
    n = 8
    g = torch.Generator().manual_seed(0)
    labels = (torch.arange(n) % 2).float() if labels is None else labels
    given = dict(
        outputs or {"logits": torch.randn(n, generator=g), "mask": torch.ones(n, 11, dtype=torch.bool)}
    )
    required = loss.required_outputs()
    for key in required:
        given.setdefault(key, torch.randn(n, 6, generator=g))
    inputs = {
        k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in given.items() if k != "mask"
    }
    if "mask" in given:
        inputs["mask"] = given["mask"]
    loss.bind(
        {k: int(v.shape[-1]) for k, v in inputs.items() if k not in ("logits", "mask") and v.dim() >= 2}
    )
    loss.setup(labels.numpy())
    loss.start_epoch(1, 1)
    value = loss(inputs, labels)
    assert isinstance(value, torch.Tensor), f"{name}: returned {type(value).__name__}, not a tensor"
    assert value.dim() == 0, f"{name}: returned shape {tuple(value.shape)}, expected a scalar"
    assert torch.isfinite(value), f"{name}: returned {float(value)}"
    value.backward()
    for key in required:
        grad = inputs[key].grad
        assert grad is not None, f"{name}: no gradient reaches {key!r}"
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient for {key!r}"
        assert grad.abs().sum() > 0, f"{name}: all-zero gradient for {key!r}"
    for pname, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), (
            f"{name}: parameter {pname} got no gradient"
        )
    again = loss({k: v.detach() if k != "mask" else v for k, v in inputs.items()}, labels)
    torch.testing.assert_close(
        again.detach(), value.detach(), rtol=0, atol=0, msg=f"{name}: not deterministic"
    )
    return value.detach()


def save_tiny_esm2(folder: Any, *, hidden: int = 16, layers: int = 2, heads: int = 2, seed: int = 0) -> Any:
    """A random ESM-2 with ESM's real vocabulary and tokenizer saved by ``save_pretrained`` at
    ``folder``: what the ``esm2`` feature (and anything loading ESM-2 from a local folder) reads,
    for tests where the hub's weights cannot be downloaded. Returns the folder."""
    from pathlib import Path

    import transformers
    from ptmkit_plugins.features.plm_models import ESM2_TOKENS, esm2_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(ESM2_TOKENS) + "\n")
    config = esm2_config(hidden=hidden, layers=layers, heads=heads)
    torch.manual_seed(seed)
    transformers.EsmModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    transformers.EsmTokenizer(str(vocab)).save_pretrained(folder)
    return folder
