"""Selective scan (the S6 recurrence of Mamba) in plain PyTorch, plus the lazy CUDA kernel lookup.

The recurrence, per batch row, channel ``d`` and state ``k`` (diagonal A, one state per pair)::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      (h_{-1} = 0)
    y_t = sum_k C_t[k] * h_t[k] + D * u_t

Layout (batch-first, channels last, as the rest of ptmkit): ``u, delta: [N, L, d]``,
``A: [d, n]``, ``B, C: [N, L, n]``, ``D: [d]``; returns ``y: [N, L, d]``.

Implementation: a tight loop over positions, time-major so that each step reads contiguous
blocks, in which every operation works on one ``[N, d, n]`` state block
(``h = exp(delta_t A) * h + (delta_t u_t) B_t`` as exp / in-place mul / in-place addcmul, and
``y_t = h C_t`` as a batched matrix-vector product). A hand-written backward (a reverse scan)
replaces autograd through the loop and recomputes the states instead of storing them, as the
CUDA kernel of mamba-ssm does.

Memory: the forward never holds more than one ``[N, d, n]`` state, whatever the length. The
sequence is cut into chunks of ``chunk`` positions (the state is carried across), and the
backward of a chunk recomputes its states into one ``[chunk, N, d, n]`` buffer, so the peak is
``O(N·chunk·d·n)`` plus the saved inputs ``O(N·L·(d + n))``: a 1500-residue protein never
materialises ``N·L·d·n`` values.

Speed, measured with
``python -c "from ptmkit_plugins.backbones.selective_scan import benchmark; benchmark(threads=1)"``
(N=64, L=41, d_inner=128, d_state=16, float32, on a 2-core machine shared with other jobs;
min of 30 runs, 1 / 2 torch threads):

    ======================================  ===============  ==================
    formulation                             forward          forward+backward
    ======================================  ===============  ==================
    step loop + own backward (this module)  12 / 6.6 ms      40 / 24 ms
    loop over precomputed exp(delta A),     19 / 11 ms       221 / 127 ms
    einsum, autograd backward
    log-space cumsum (logcumsumexp of the   373 / 216 ms     1133 / 608 ms
    +/- parts of delta B u, fully parallel)
    ======================================  ===============  ==================

A fourth variant, the chunk's ``exp(delta A)`` and ``delta B u`` precomputed as whole
``[T, N, d, n]`` tensors with the same own backward, was as fast at best but erratic (16-45 ms
forward), its ~21 MB temporaries hitting the allocator's page faults. The log-space form is
also less exact (~1e-4 from cancellation, vs ~4e-6 for the loops, against float64). Only the
step loop is used; the other two remain below for the benchmark.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

#: Default positions per chunk: a site window (31-41 residues) is always one chunk.
DEFAULT_CHUNK = 64


class _ScanChunk(torch.autograd.Function):
    """One chunk of the scan: ``(u, delta, A, B, C, h0) -> (y without D*u, h_last)``.

    Time-major and contiguous: ``u, delta: [T, N, d]``, ``B, C: [T, N, n]``, ``h0: [N, d, n]``.
    Every step works on ``[N, d, n]`` blocks only; the one ``[T, N, d, n]`` buffer is the
    recomputed states in backward.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0):  # noqa: ANN001, ANN205
        du = delta * u
        y = torch.empty_like(u)
        h = h0
        for t in range(u.shape[0]):
            # h = exp(delta_t A) * h + (delta_t u_t) B_t ;  y_t = h C_t
            h = torch.exp(delta[t].unsqueeze(-1) * A).mul_(h).addcmul_(du[t].unsqueeze(-1), B[t].unsqueeze(1))
            torch.bmm(h, C[t].unsqueeze(-1), out=y[t].unsqueeze(-1))
        ctx.save_for_backward(u, delta, A, B, C, h0)
        return y, h

    @staticmethod
    def backward(ctx, gy, gh_last):  # noqa: ANN001, ANN205
        u, delta, A, B, C, h0 = ctx.saved_tensors
        T = u.shape[0]
        gy = gy.contiguous()
        du = delta * u
        # Recompute the states (not stored by forward, to keep memory at the inputs' size).
        H = u.new_empty(T, *h0.shape)
        h = h0
        for t in range(T):
            h = torch.mul(torch.exp(delta[t].unsqueeze(-1) * A), h, out=H[t])
            h.addcmul_(du[t].unsqueeze(-1), B[t].unsqueeze(1))
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gB, gC = torch.empty_like(B), torch.empty_like(C)
        gA_rows = torch.zeros_like(h0)  # sum over t of g(delta*A) * delta, summed over N at the end
        # Reverse scan. G = dLoss/dh_t, accumulated from y_t = h_t C_t and h_{t+1} = dA_{t+1} h_t + ...
        G = torch.zeros_like(h0) if gh_last is None else gh_last.clone()
        for t in range(T - 1, -1, -1):
            torch.bmm(gy[t].unsqueeze(1), H[t], out=gC[t].unsqueeze(1))
            G.addcmul_(gy[t].unsqueeze(-1), C[t].unsqueeze(1))
            # (delta_t u_t) B_t enters h_t directly.
            GB = torch.bmm(G, B[t].unsqueeze(-1)).squeeze(-1)
            torch.mul(delta[t], GB, out=gu[t])
            torch.bmm(du[t].unsqueeze(1), G, out=gB[t].unsqueeze(1))
            # exp(delta_t A) multiplies h_{t-1}: g(delta_t A) = G * dA_t * h_{t-1}.
            G = G.mul_(torch.exp(delta[t].unsqueeze(-1) * A))  # now dLoss/dh_{t-1} (through dA_t)
            P = G * (H[t - 1] if t > 0 else h0)
            torch.add(u[t] * GB, (P * A).sum(-1), out=gdelta[t])
            gA_rows.addcmul_(P, delta[t].unsqueeze(-1))
        return gu, gdelta, gA_rows.sum(0), gB, gC, G


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """The selective scan of the module docstring; ``y: [N, L, d]``.

    ``delta`` is used as given (apply softplus and any bias before). A position with
    ``delta = 0`` leaves the state unchanged and adds nothing to it, which is how padding is
    skipped.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dtypes = {x.dtype for x in (u, delta, A, B, C)}
    low = dtypes & {torch.bfloat16, torch.float16}
    if len(dtypes) > 1 or low or _autocast_on(u.device.type):
        # The recurrence runs in fp32 (fp64 if given) whatever the caller's precision, as mamba-ssm's
        # kernel keeps its state in fp32: a bf16 state loses the small per-step updates (and under
        # autocast the inputs arrive as bf16 next to an fp32 A). y is returned in u's dtype.
        work = torch.float64 if torch.float64 in dtypes else torch.float32
        with torch.autocast(u.device.type, enabled=False):
            y = selective_scan(
                *(x.to(work) for x in (u, delta, A, B, C)), None if D is None else D.to(work), chunk=chunk
            )
        return y.to(u.dtype)
    N, L, d = u.shape
    n = A.shape[1]
    # Time-major, contiguous: each step of the loop then reads one contiguous [N, d, n] block.
    uT, deltaT = u.transpose(0, 1).contiguous(), delta.transpose(0, 1).contiguous()
    BT, CT = B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous()
    h = u.new_zeros(N, d, n)
    ys = []
    for start in range(0, L, chunk):
        part = slice(start, start + chunk)
        y, h = _ScanChunk.apply(uT[part], deltaT[part], A, BT[part], CT[part], h)
        ys.append(y)
    y = (torch.cat(ys) if len(ys) > 1 else ys[0]).transpose(0, 1)
    if D is not None:
        y = y + u * D
    return y


@functools.cache
def _load_cuda_scan() -> tuple[Callable[..., torch.Tensor] | None, str]:
    # mamba-ssm needs a CUDA build and raises all sorts of errors without one (ImportError,
    # OSError from the extension, RuntimeError): any failure means "not available".
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # noqa: BLE001 - see above
        return None, f"{type(exc).__name__}: {exc}"
    return selective_scan_fn, ""


def cuda_scan_status() -> tuple[Callable[..., torch.Tensor] | None, str]:
    """``(selective_scan_fn, "")`` when mamba-ssm's CUDA kernel imports, else ``(None, reason)``.

    Imported lazily (never at module import time) and only once per process.
    """
    if not torch.cuda.is_available():
        return None, "torch.cuda.is_available() is False"
    return _load_cuda_scan()


def cuda_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as :func:`selective_scan`, run by mamba-ssm's ``selective_scan_fn``."""
    fn, reason = cuda_scan_status()
    if fn is None:
        raise RuntimeError(f"the mamba-ssm CUDA selective scan is not available ({reason})")
    # mamba-ssm wants channels-first: u, delta [N, d, L]; B, C [N, n, L].
    y = fn(
        u.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A.contiguous(),
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        None if D is None else D.float(),
        delta_softplus=False,
    )
    return y.transpose(1, 2)


# ------------------------------------------------------------------------------ benchmark
# The two alternatives below are only used by the benchmark, to reproduce the comparison.


def _scan_loop_autograd(u, delta, A, B, C, D):  # noqa: ANN001, ANN202
    """The same loop without the hand-written backward: autograd records every step."""
    dA = torch.exp(delta.unsqueeze(-1) * A)
    dBx = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    hs = []
    for t in range(u.shape[1]):
        h = dA[:, t] * h + dBx[:, t]
        hs.append(h)
    return torch.einsum("nldk,nlk->nld", torch.stack(hs, 1), C) + u * D


def _scan_logspace(u, delta, A, B, C, D):  # noqa: ANN001, ANN202
    """Fully parallel: states via logcumsumexp of the +/- parts (see the module docstring)."""
    S = torch.cumsum(delta.unsqueeze(-1) * A, 1)
    dBx = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    lp = torch.log(dBx.clamp(min=1e-30)) - S
    ln = torch.log((-dBx).clamp(min=1e-30)) - S
    H = torch.exp(S + torch.logcumsumexp(lp, 1)) - torch.exp(S + torch.logcumsumexp(ln, 1))
    return torch.einsum("nldk,nlk->nld", H, C) + u * D


def benchmark(
    threads: int | None = 1, N: int = 64, L: int = 41, d: int = 128, n: int = 16, reps: int = 30
) -> None:
    """Print min and median wall time of forward and forward+backward for each formulation.

    ``python -c "from ptmkit_plugins.backbones.selective_scan import benchmark; benchmark()"``
    (``threads``: torch intra-op threads for the run; None keeps the current setting).
    """
    import statistics
    import time

    if threads is not None:
        torch.set_num_threads(threads)

    g = torch.Generator().manual_seed(0)
    u = torch.randn(N, L, d, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(N, L, d, generator=g) - 2)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B, C = torch.randn(N, L, n, generator=g), torch.randn(N, L, n, generator=g)
    D = torch.ones(d)
    with torch.no_grad():
        exact = _scan_loop_autograd(*(t.double() for t in (u, delta, A, B, C, D)))

    def timed(fn: Callable[..., torch.Tensor], grad: bool) -> str:
        args = [t.clone().requires_grad_(grad) for t in (u, delta, A, B, C, D)]
        times = []
        for i in range(reps + 3):
            t0 = time.perf_counter()
            with torch.set_grad_enabled(grad):
                y = fn(*args)
                if grad:
                    y.sum().backward()
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
        return f"{min(times):7.2f} / {statistics.median(times):7.2f}"

    print(f"N={N} L={L} d_inner={d} d_state={n} float32, torch threads={torch.get_num_threads()}")
    print(f"{'':27s} {'forward ms (min / median)':>27s} {'fwd+bwd ms (min / median)':>27s}  max |err|")
    for name, fn in [
        ("step loop + own backward", selective_scan),
        ("precomputed loop + autograd", _scan_loop_autograd),
        ("log-space cumsum", _scan_logspace),
    ]:
        with torch.no_grad():
            err = (fn(u, delta, A, B, C, D).double() - exact).abs().max().item()
        print(f"{name:27s} {timed(fn, False):>27s} {timed(fn, True):>27s}  {err:.1e}")
