"""Backbones mamba, transformer and resnet1d: standard checks, the selective scan, chains."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from ptmkit_plugins.backbones.selective_scan import selective_scan
from pydantic import ValidationError
from torch.utils._python_dispatch import TorchDispatchMode

from ptmkit import recipe as recipes
from ptmkit.errors import GraphError
from ptmkit.graph import ModelGraph
from ptmkit.hooks import build_registry
from ptmkit.plugin_api import GraphModule
from ptmkit.testing import assert_matches_trimmed, build, end_padded_batch, make_batch, standard_tests

NEW = ("mamba", "transformer", "resnet1d", "multiscale_cnn")

# (id, node type, input dims, config, expected "out" size); tiny dims keep the file fast.
CASES: list[tuple[str, str, list[int], dict[str, Any], int]] = [
    ("mamba", "mamba", [5], {"d_state": 4, "layers": 2, "dropout": 0.1}, 5),
    # projection, one direction, LayerNorm, a chunk shorter than the window (state carried over)
    (
        "mamba_proj_uni_chunked",
        "mamba",
        [5],
        {"d_model": 6, "d_state": 3, "d_conv": 3, "bidirectional": False, "norm": "layer", "chunk": 7},
        6,
    ),
    ("transformer", "transformer", [6], {"heads": 2, "layers": 2, "ff_mult": 2}, 6),
    (
        "transformer_learned_proj",
        "transformer",
        [5],
        {"d_model": 8, "heads": 2, "layers": 1, "positional": "learned", "max_len": 64},
        8,
    ),
    ("transformer_nopos", "transformer", [4], {"heads": 1, "layers": 1, "positional": "none"}, 4),
    ("resnet1d", "resnet1d", [5], {"channels": 4, "blocks": 3, "dilations": [1, 2]}, 4),
    (
        "resnet1d_batchnorm",
        "resnet1d",
        [4],
        {"channels": 4, "blocks": 2, "kernel_size": 5, "norm": "batch"},
        4,
    ),
    # MTPrompt-PTM's trunk, small: BatchNorm statistics over real residues only
    ("multiscale_cnn", "multiscale_cnn", [5], {"channels": 3, "kernel_sizes": [1, 3, 5], "dropout": 0.2}, 9),
]
CASE = {c[0]: c for c in CASES}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine the idle
    OpenMP workers spin: one thread runs this file ~5x faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


(
    test_output_shapes,
    test_gradients_reach_every_parameter,
    test_padding_values_do_not_change_real_outputs,
    test_deterministic_under_manual_seed,
) = standard_tests(CASES)


def module_of(case_id: str, **extra: Any) -> GraphModule:
    _, name, dims, cfg, _ = CASE[case_id]
    torch.manual_seed(0)
    return build(name, dims, **{**cfg, **extra})


def trained_like(module: GraphModule) -> GraphModule:
    """Perturb every parameter (and norm statistics), as training would.

    Fresh norms have zero bias, so a norm of a zeroed padding position is still zero; after
    training it is not, and only then do e.g. the zeroing before mamba's conv or between
    resnet1d's convolutions matter.
    """
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return module


def end_padded_mask(w: int) -> torch.Tensor:
    mask = torch.ones(4, w, dtype=torch.bool)
    mask[1, :9] = False  # N-terminal padding
    mask[2, w - 6 :] = False  # C-terminal padding
    mask[3, :4] = False  # both ends
    mask[3, w - 12 :] = False
    return mask


# ---------------------------------------------------------------------------- registry, config


def test_backbones_are_registered_with_documented_configs() -> None:
    registry = build_registry()
    assert set(NEW) <= set(registry.names("backbone"))
    for name in NEW:
        spec = registry.get("module", name)
        assert issubclass(spec.obj, GraphModule)
        assert spec.doc, f"{name} needs a one-line docstring for listings"
        for field, info in spec.obj.Config.model_fields.items():
            assert info.description, f"{name}.{field} has no description"
        with pytest.raises(ValidationError, match="layerz"):
            spec.obj.Config.model_validate({"layerz": 2})


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("mamba", {"d_state": 0}),
        ("mamba", {"impl": "triton"}),
        ("transformer", {"positional": "rotary"}),
        ("resnet1d", {"kernel_size": 4}),
        ("resnet1d", {"dilations": [1, 0]}),
        ("resnet1d", {"dilations": []}),
        ("resnet1d", {"norm": "group"}),
    ],
)
def test_bad_config_values_are_rejected(name: str, cfg: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        build(name, [4], **cfg)


@pytest.mark.parametrize(
    ("name", "dims", "cfg", "fragment"),
    [
        ("mamba", [4, 5], {}, "mamba takes exactly 1 input, got 2 (dims [4, 5])"),
        ("transformer", [4, 5], {}, "transformer takes exactly 1 input, got 2 (dims [4, 5])"),
        ("resnet1d", [4, 5], {}, "resnet1d takes exactly 1 input, got 2 (dims [4, 5])"),
        ("transformer", [6], {"heads": 4}, "d_model 6 is not divisible by heads 4"),
        ("transformer", [6], {"d_model": 10, "heads": 4}, "d_model 10 is not divisible by heads 4"),
    ],
)
def test_dimension_errors_name_the_dims(
    name: str, dims: list[int], cfg: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        build(name, dims, **cfg)
    assert fragment in str(info.value)


def test_output_sizes_follow_the_config() -> None:
    assert build("mamba", [7]).output_dims == {"out": 7}
    assert build("mamba", [7], d_model=12).output_dims == {"out": 12}
    assert build("transformer", [8]).output_dims == {"out": 8}
    assert build("transformer", [7], d_model=12).output_dims == {"out": 12}
    assert build("resnet1d", [7]).output_dims == {"out": 64}
    assert build("resnet1d", [7], channels=16).output_dims == {"out": 16}
    # Equal sizes need no input projection.
    assert build("mamba", [7]).project is None
    assert build("resnet1d", [16], channels=16).stem is None


# -------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("case_id", list(CASE))
def test_padding_positions_are_zero(case_id: str) -> None:
    module = module_of(case_id).eval()
    inputs, mask = make_batch(8, 31, CASE[case_id][2], seed=3)
    with torch.no_grad():
        out = module(inputs, mask)
    assert (out[~mask] == 0).all()
    assert (out[mask] != 0).any()


@pytest.mark.parametrize("case_id", list(CASE))
def test_end_padding_is_invisible(case_id: str) -> None:
    """Each row's real positions get exactly the output of its unpadded (trimmed) sequence.

    For mamba this checks that padding neither feeds the conv nor moves the state (delta = 0),
    in both scan directions; for the transformer, that positions count from the first real
    residue; for resnet1d, that padding is re-zeroed around every convolution.
    """
    module = trained_like(module_of(case_id)).eval()
    inputs, mask = end_padded_batch(CASE[case_id][2])
    assert_matches_trimmed(module, inputs, mask)


@pytest.mark.parametrize("case_id", list(CASE))
def test_padding_values_at_both_ends_do_not_leak(case_id: str) -> None:
    module = module_of(case_id).eval()
    mask = end_padded_mask(33)
    inputs, _ = make_batch(4, 33, CASE[case_id][2], seed=5)
    clean = [x * mask.unsqueeze(-1) for x in inputs]
    g = torch.Generator().manual_seed(1)
    dirty = [x + 50.0 * torch.randn(x.shape, generator=g) * (~mask).unsqueeze(-1) for x in clean]
    with torch.no_grad():
        torch.testing.assert_close(module(dirty, mask)[mask], module(clean, mask)[mask])


def test_masked_batchnorm_ignores_padding_in_training_mode() -> None:
    """Batch statistics come from real residues only, so train-mode outputs are padding-blind too."""
    module = module_of("resnet1d_batchnorm", dropout=0.0).train()
    mask = end_padded_mask(33)
    inputs, _ = make_batch(4, 33, [4], seed=6)
    clean = [x * mask.unsqueeze(-1) for x in inputs]
    dirty = [x + 50.0 * torch.randn_like(x) * (~mask).unsqueeze(-1) for x in clean]
    torch.testing.assert_close(module(dirty, mask)[mask], module(clean, mask)[mask])
    assert module.blocks[0].norm1.num_batches_tracked == 2
    assert not torch.allclose(module.blocks[0].norm1.running_mean, torch.zeros(4))


@pytest.mark.parametrize("name", NEW)
def test_rows_without_real_residues_are_zero_and_finite(name: str) -> None:
    module = build(name, [4], **({"heads": 2} if name == "transformer" else {}))
    mask = torch.zeros(2, 31, dtype=torch.bool)
    mask[1, 10:20] = True
    x = torch.randn(2, 31, 4, requires_grad=True)
    out = module([x], mask)
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_one_directional_mamba_is_causal_and_bidirectional_is_not() -> None:
    inputs, mask = make_batch(2, 31, [5], seed=7)
    changed = [inputs[0].clone()]
    changed[0][:, 20] += 1.0
    for bidirectional, later_changes_earlier in [(False, False), (True, True)]:
        module = module_of("mamba", bidirectional=bidirectional).eval()
        with torch.no_grad():
            a, b = module(inputs, mask), module(changed, mask)
        assert torch.equal(a[:, :20], b[:, :20]) != later_changes_earlier
        assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_mamba_output_does_not_depend_on_the_scan_chunk() -> None:
    inputs, mask = make_batch(8, 41, [5], seed=8)
    ref = module_of("mamba").eval()
    with torch.no_grad():
        want = ref(inputs, mask)
        for chunk in (1, 5, 40):
            module = module_of("mamba", chunk=chunk).eval()
            module.load_state_dict(ref.state_dict())
            torch.testing.assert_close(module(inputs, mask), want, atol=1e-5, rtol=1e-5)


def test_transformer_learned_positions_beyond_max_len_are_an_error() -> None:
    module = build("transformer", [4], heads=2, positional="learned", max_len=16)
    with pytest.raises(ValueError, match="exceeds the learned positional table"):
        module([torch.randn(1, 17, 4)], torch.ones(1, 17, dtype=torch.bool))


# ------------------------------------------------------------------------------ selective scan


def scan_inputs(n: int, length: int, d: int, s: int, seed: int, dtype: torch.dtype = torch.float32):  # noqa: ANN201
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    u = r(n, length, d)
    delta = torch.nn.functional.softplus(r(n, length, d) - 1.0)
    A = -torch.exp(r(d, s) * 0.5)  # negative, varied magnitudes
    return u, delta, A, r(n, length, s), r(n, length, s), r(d)


def sequential(u, delta, A, B, C, D):  # noqa: ANN001, ANN201
    """The S6 recurrence written plainly, one position at a time."""
    n, length, d = u.shape
    h = torch.zeros(n, d, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, t, :, None] * A)  # exp(delta_t A)
        dBx = delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]  # delta_t B_t x_t
        h = dA * h + dBx
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])  # C_t h_t + D x_t
    return torch.stack(ys, dim=1)


@pytest.mark.parametrize("length", [1, 2, 17, 41, 300])
@pytest.mark.parametrize("chunk", [64, 5])
def test_selective_scan_equals_the_sequential_recurrence(length: int, chunk: int) -> None:
    args = scan_inputs(3, length, 8, 4, seed=length)
    got = selective_scan(*args, chunk=chunk)
    assert got.shape == (3, length, 8)
    torch.testing.assert_close(got, sequential(*args), atol=1e-5, rtol=1e-5)


def test_selective_scan_under_bf16_autocast_keeps_its_state_in_fp32() -> None:
    u, delta, A, B, C, D = scan_inputs(3, 41, 8, 4, seed=3)
    half = [t.to(torch.bfloat16) for t in (u, delta, B, C)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # u, delta, B, C as a bf16 linear gives them
        got = selective_scan(half[0], half[1], A, half[2], half[3], D)
    assert got.dtype == torch.bfloat16
    # the same bf16-rounded inputs through the fp32 recurrence: only the output's rounding differs
    expected = sequential(*(t.float() for t in half[:2]), A, *(t.float() for t in half[2:]), D)
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.01)
    mixed = [t.requires_grad_() for t in (half[0].clone(), half[1].clone())]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        selective_scan(mixed[0], mixed[1], A, half[2], half[3], D).float().sum().backward()
    for t in mixed:
        assert t.grad is not None and t.grad.dtype == torch.bfloat16 and t.grad.isfinite().all()


@pytest.mark.parametrize("length", [1, 13, 300])
def test_selective_scan_gradients_equal_autograd_through_the_recurrence(length: int) -> None:
    args = [t.requires_grad_() for t in scan_inputs(2, length, 5, 3, seed=1, dtype=torch.float64)]
    gy = torch.randn(2, length, 5, dtype=torch.float64)
    got = torch.autograd.grad(selective_scan(*args, chunk=6), args, gy)
    want = torch.autograd.grad(sequential(*args), args, gy)
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D"], got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=f"gradient of {name}")


def test_selective_scan_passes_gradcheck() -> None:
    args = [t.requires_grad_() for t in scan_inputs(2, 7, 3, 2, seed=2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=3), args)


def test_zero_delta_skips_a_position() -> None:
    """delta = 0 (how padding is fed) leaves the state as if the position were not there."""
    u, delta, A, B, C, D = scan_inputs(2, 20, 4, 3, seed=3)
    skip = torch.zeros(20, dtype=torch.bool)
    skip[[0, 1, 7, 8, 19]] = True
    with_gaps = selective_scan(u, delta * ~skip[None, :, None], A, B, C, D)
    kept = ~skip
    without = selective_scan(u[:, kept], delta[:, kept], A, B[:, kept], C[:, kept], D)
    torch.testing.assert_close(with_gaps[:, kept], without, atol=1e-6, rtol=1e-5)


def test_selective_scan_matches_mamba_ssm_reference() -> None:
    """Only where mamba-ssm imports (a CUDA build); skipped elsewhere."""
    ssi = pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    u, delta, A, B, C, D = scan_inputs(2, 50, 6, 4, seed=4)
    ref = ssi.selective_scan_ref(
        u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D
    ).transpose(1, 2)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, D), ref, atol=1e-5, rtol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_whole_protein_length_runs_with_bounded_memory() -> None:
    """L=1500: no tensor of the full N*L*d_inner*d_state state size is ever made.

    The scan's forward keeps one [N, d_inner, d_state] state; its backward recomputes one chunk
    of states at a time ([64, N, d_inner, d_state]). The largest tensors are then [N, L, .]
    activations such as x_proj's [N, L, dt_rank + 2 d_state].
    """
    n, length, d_model, d_state = 1, 1500, 8, 16
    module = build("mamba", [d_model], d_state=d_state, chunk=64)
    full = n * length * (2 * d_model) * d_state
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, length, d_model, generator=g)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, -100:] = False
    with torch.no_grad(), _LargestTensor() as probe:
        out = module([x], mask)
    assert out.shape == (n, length, d_model) and torch.isfinite(out).all()
    assert probe.largest < full / 4
    with _LargestTensor() as probe:
        module([x], mask).square().mean().backward()
    assert probe.largest < full / 4
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_selective_scan_keeps_only_inputs_and_one_state_per_chunk_for_backward() -> None:
    n, length, d, s, chunk = 2, 1500, 16, 16, 64
    args = [t.requires_grad_() for t in scan_inputs(n, length, d, s, seed=5)]
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = selective_scan(*args, chunk=chunk)
    # Slices of u, delta, B and C; u and D again for the D skip; per chunk A (the same tensor,
    # counted each time) and the chunk's initial state h0.
    chunks = -(-length // chunk)
    assert sum(saved) == n * length * (3 * d + 2 * s) + d + chunks * (d * s + n * d * s)
    assert sum(saved) < n * length * d * s / 2  # vs one full state tensor
    y.sum().backward()


# ----------------------------------------------------------------------------------- CUDA path


def test_impl_cuda_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        build("mamba", [4], impl="cuda")
    message = str(info.value)
    assert "impl='cuda'" in message and "torch.cuda.is_available() is False" in message
    assert 'pip install "ptmkit[cuda]"' in message and "impl: auto" in message
    # Through the graph the node's recipe location is added.
    with pytest.raises(GraphError, match=r"model.nodes.enc: mamba .*impl='cuda'"):
        chain_graph([("mamba", {"impl": "cuda"})])


def test_cpu_runs_never_import_mamba_ssm() -> None:
    before = "mamba_ssm" in sys.modules
    module = build("mamba", [4], impl="auto")
    inputs, mask = make_batch(2, 31, [4])
    module(inputs, mask)
    build("mamba", [4], impl="torch")(inputs, mask)
    assert ("mamba_ssm" in sys.modules) == before


# ------------------------------------------------------------------ Table 9 chains via the graph

TINY: dict[str, dict[str, Any]] = {
    "bilstm": {"hidden": 4},  # out 8
    "mamba": {"d_state": 4},  # out = input size
    "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff_mult": 2},  # out 8
    "resnet1d": {"channels": 8, "blocks": 2},  # out 8
}


def chain_graph(encoders: list[tuple[str, dict[str, Any]]]) -> ModelGraph:
    """A recipe onehot -> enc -> (enc2) -> mlp_head, parsed and built by the real core code."""
    nodes: dict[str, Any] = {}
    previous = "onehot"
    for i, (kind, cfg) in enumerate(encoders):
        name = "enc" if len(encoders) == 1 else f"enc{i + 1}"
        nodes[name] = {"type": kind, "inputs": [previous], **cfg}
        previous = name
    nodes["head"] = {"type": "mlp_head", "inputs": [previous], "pool": "center", "hidden": [4]}
    raw = {
        "name": "chain",
        "data": {"source": "uniptms:H1"},
        "features": {"onehot": {"type": "onehot"}},
        "model": {"nodes": nodes},
    }
    recipe = recipes.parse(raw, build_registry())
    return ModelGraph(recipe, {"onehot": 20})


# UniPTMs Table 9 (section 3.1.4): the paper's BiLSTM -> Mamba and the five alternatives.
TABLE9 = [
    ("bilstm", "mamba"),
    ("bilstm", "transformer"),
    ("bilstm", "resnet1d"),
    ("transformer", "mamba"),
    ("mamba", "transformer"),
    ("mamba", "bilstm"),
]


@pytest.mark.parametrize(("first", "second"), TABLE9, ids=[f"{a}->{b}" for a, b in TABLE9])
def test_table9_chains_build_through_the_graph_and_train(first: str, second: str) -> None:
    torch.manual_seed(0)
    g = chain_graph([(first, TINY[first]), (second, TINY[second])])
    assert g.order == ["enc1", "enc2", "head"]
    assert g.dims["enc1"] == build(first, [20], **TINY[first]).output_dims["out"]
    assert g.dims["enc2"] == build(second, [g.dims["enc1"]], **TINY[second]).output_dims["out"]
    x = torch.zeros(4, 31, 20)
    x[torch.arange(4)[:, None], torch.arange(31), torch.randint(0, 20, (4, 31))] = 1.0
    mask = torch.ones(4, 31, dtype=torch.bool)
    mask[1, :10] = False
    mask[2, 25:] = False
    out = g({"onehot": x * mask.unsqueeze(-1)}, mask)
    assert out["logits"].shape == (4,) and torch.isfinite(out["logits"]).all()
    assert (out["enc2"][~mask] == 0).all()
    torch.nn.functional.binary_cross_entropy_with_logits(
        out["logits"], torch.tensor([0.0, 1, 0, 1])
    ).backward()
    for name in ("enc1", "enc2"):
        grads = [p.grad for p in g.blocks[name].parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads), name
        assert any(gr.abs().sum() > 0 for gr in grads), name
