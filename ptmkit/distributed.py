"""Several processes, one job: torch.distributed as ``torchrun`` starts it.

``torchrun --nproc-per-node N -m ptmkit run RECIPE`` (or ``ptmkit run --nproc N``) starts N
copies of a command with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` set;
:func:`joined` turns that into a process group (gloo on CPU, NCCL on CUDA) and a :class:`World`
that the training loop, ``predict`` and ``cache fill`` ask how to share their work. Outside
torchrun the world is one process and every helper here is the identity, so single-process runs
are exactly what they were.

A failure on one rank is written to the rendezvous store (the torchrun agent's key-value store)
before that rank exits; rank 0, whose collective then fails or who is terminated by torchrun,
reads it (:func:`peer_failure`) and ends its MLflow run FAILED with that rank's error.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .errors import PtmkitError, Terminated

#: Environment variables torchrun sets for every worker.
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: Store key (one per rank) holding a failed rank's error.
FAILURE_KEY = "ptmkit/failure/{rank}"
#: Seconds a rank waits for its peers at the rendezvous and in collectives (gloo's default is
#: 30 min; a peer that died is seen at once, this bounds a peer that hangs).
TIMEOUT_S = float(os.environ.get("PTMKIT_DIST_TIMEOUT_S", 1800))


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        """More than one process: the helpers below communicate."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes MLflow, checkpoints, packages and merged outputs."""
        return self.rank == 0

    def part(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of ``index`` (shares differ in size by at most one)."""
        if not self.active:
            return index
        return torch.tensor_split(index, self.size)[self.rank]

    def shard(self, n: int) -> torch.Tensor:
        """This rank's contiguous share of ``range(n)``; the shares in rank order are ``range(n)``."""
        return self.part(torch.arange(n))

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over ranks (float64)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """The rows of every rank's :meth:`shard` of ``range(n)``, in order (every rank gets all)."""
        if not self.active:
            return local
        sizes = [len(p) for p in torch.tensor_split(torch.arange(n), self.size)]
        width = max(sizes)
        device = self._comm_device()
        mine = torch.zeros((width, *local.shape[1:]), dtype=torch.float32, device=device)
        mine[: len(local)] = torch.from_numpy(np.ascontiguousarray(local, dtype=np.float32)).to(device)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(parts, mine)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()

    def decide(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a decision only rank 0 can make, e.g. a time budget).
        The value travels as torch's object broadcast: between this job's own processes only."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device())
            if self.backend == "nccl"
            else torch.device("cpu")
        )

    def label(self) -> str:
        return f"rank {self.rank} of {self.size}"


_WORLD = World()
_STORE: Any = None


def world() -> World:
    """The current world: the one :func:`joined` set up, else one process."""
    return _WORLD


def launched() -> bool:
    """True when this process was started by torchrun (or like it) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and all(k in os.environ for k in ENV)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise (CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


def local_device(name: str) -> torch.device:
    """``train.device`` for this rank: a CUDA device is the rank's own (``cuda:LOCAL_RANK``)."""
    from .train import pick_device

    device = pick_device(name)
    if device.type == "cuda" and launched():
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise PtmkitError(
                f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if device.type == "mps" and launched():
        raise PtmkitError("several processes on MPS are not supported by torch.distributed; use cpu")
    return device


@contextlib.contextmanager
def joined(device_name: str = "cpu") -> Iterator[World]:
    """Join the job's process group for the block (nothing outside torchrun), and leave it after.

    An exception on this rank is recorded for rank 0 (:func:`peer_failure`) before it propagates
    (a signal is not: it reached every rank, and the run ends KILLED).
    Nested use (a run inside a command that already joined) reuses the group.
    """
    global _WORLD, _STORE
    if _WORLD.active or not launched():
        yield _WORLD
        return
    device = local_device(device_name)
    backend = backend_for(device)
    timeout = timedelta(seconds=TIMEOUT_S)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # env:// as init_process_group does it, keeping the store for failure reports
    store, rank, size = next(dist.rendezvous("env://", rank, size, timeout=timeout))
    store.set_timeout(timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout)
    _STORE = store
    _WORLD = World(rank, size, int(os.environ["LOCAL_RANK"]), backend)
    try:
        yield _WORLD
    except (KeyboardInterrupt, Terminated):  # a signal to the job, not this rank's failure:
        raise  # rank 0 ends the run KILLED
    except BaseException as exc:
        record_failure(exc)
        raise
    finally:
        _WORLD, _STORE = World(), None
        with contextlib.suppress(Exception):  # a peer that died leaves nothing to agree on
            dist.destroy_process_group()


def record_failure(exc: BaseException) -> None:
    """Write this rank's error where rank 0 will look for it (a no-op outside a job)."""
    if _STORE is None or not _WORLD.active:
        return
    message = f"rank {_WORLD.rank} of {_WORLD.size} on {socket.gethostname()}: {type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):  # the store went away: rank 0 reports its own error
        _STORE.set(FAILURE_KEY.format(rank=_WORLD.rank), message[:4000])


def peer_failure() -> str | None:
    """The error another rank recorded (the lowest such rank), if any; None outside a job."""
    if _STORE is None or not _WORLD.active:
        return None
    for rank in range(_WORLD.size):
        if rank == _WORLD.rank:
            continue
        key = FAILURE_KEY.format(rank=rank)
        with contextlib.suppress(Exception):
            if _STORE.check([key]):
                return _STORE.get(key).decode("utf-8", "replace")
    return None


def balanced_shares(costs: Sequence[int], size: int) -> list[list[int]]:
    """Items (by index) dealt to ``size`` shares with near-equal total cost: longest first, each
    to the share with the least cost so far (ties to the lowest rank). Deterministic, so every
    rank computes the same shares from the same input. Each share lists its items in input order."""
    shares: list[list[int]] = [[] for _ in range(size)]
    heap = [(0, r) for r in range(size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        shares[r].append(i)
        heapq.heappush(heap, (load + int(costs[i]), r))
    return [sorted(s) for s in shares]


def my_share(costs: Sequence[int], w: World | None = None) -> list[int]:
    """This rank's items of :func:`balanced_shares` (all of them in a one-process world)."""
    w = w or world()
    if not w.active:
        return list(range(len(costs)))
    return balanced_shares(costs, w.size)[w.rank]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` under DistributedDataParallel (gradients averaged over ranks each step); the
    model itself outside a job. A task-conditioned model (``reads_task``) may leave a task's
    prompts without gradient in a batch without that task: DDP then looks for unused parameters
    each step (an extra pass over the autograd graph other models are spared)."""
    if not world().active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    unused = bool(getattr(model, "reads_task", False))
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters DDP does not hold (a loss's own, e.g. a temperature)."""
    w = world()
    if not w.active or not params:
        return
    for p in params:
        if p.grad is None:  # every rank joins each all_reduce: a missing gradient counts as zero
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= w.size


class _GlobalSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the gradients (every rank's loss
    depends on every rank's share through the sum)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks, differentiably (synchronised batch statistics); ``t`` outside a job."""
    if not world().active:
        return t
    return _GlobalSum.apply(t)
