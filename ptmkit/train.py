"""The training loop: the recipe's optimiser and lr schedule, early stopping on a monitored epoch
metric (which also picks the kept checkpoint), callbacks, seeding.

``fit`` knows nothing about tracking: what a run records each epoch is a :class:`Callback`
(``ptmkit.run`` passes one that logs to its tracker), as in Lightning's callbacks and loggers.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, metrics
from .errors import PtmkitError
from .graph import ModelGraph
from .inference import Encoded, Inference, Rows, combined_loss, infer
from .plugin_api import Loss
from .recipe import MONITORS, SGD_MOMENTUM, EarlyStoppingSection, ScheduleSection, TrainSection


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a recipe + seed gives the same run twice on one machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PtmkitError("train.device is 'cuda' but this torch has no usable CUDA device; use cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PtmkitError("train.device is 'mps' but MPS is not available here; use cpu or auto")
    return torch.device(name)


def native_bf16() -> bool:
    """True when this CPU has bf16 matmul instructions (AVX512-BF16 or AMX-BF16, from
    /proc/cpuinfo). Without them bf16 is emulated and slower than fp32 (docs/benchmarks/roofline.md
    measured 0.36x on the BiLSTM); oneDNN's own check also says True for plain AVX512."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The training step's autocast context for ``train.precision`` (fp32: none). bf16 runs the
    matmuls and convolutions in bfloat16 and keeps the rest (losses, the scan's state) in fp32;
    the weights, the optimiser and validation scoring stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu" and not native_bf16():
        warnings.warn(
            "train.precision bf16 on a CPU without bf16 instructions (no avx512_bf16 / amx_bf16 in "
            "/proc/cpuinfo): it is emulated and slower than fp32 here",
            stacklevel=3,
        )
    return torch.autocast(device.type, dtype=torch.bfloat16)


def compiled_step(model: ModelGraph, probe: tuple[Any, ...]) -> Any:
    """What the training step runs under ``train.compile``: ``torch.compile(model)`` if it works
    here, else the model itself. Inductor needs a C++ compiler at run time (and
    Triton on GPUs); without one the first call fails, so one forward and backward on ``probe``
    (a real batch) is tried first, and any failure falls back to eager with a warning naming
    the cause. The weights stay the model's own (checkpoints never carry ``_orig_mod.``)."""
    try:
        compiled = torch.compile(model)
        compiled(*probe)["logits"].float().sum().backward()
    except Exception as exc:  # a missing compiler, an op inductor cannot lower, ...
        model.zero_grad(set_to_none=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"train.compile: torch.compile failed here, training eagerly: {first[:300]}", stacklevel=2
        )
        return model
    model.zero_grad(set_to_none=True)
    return compiled


@dataclass
class TrainResult:
    best_epoch: int
    #: the monitored metric (``monitor``) at the best epoch
    best_value: float
    monitor: str
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    #: validation scores of the best epoch (what the reloaded best weights give), so the caller
    #: can choose thresholds without another pass over the validation set
    best_val_scores: np.ndarray | None = None
    #: training windows the optimiser saw (every batch of every epoch run)
    windows_seen: int = 0
    #: why training ended: "epochs" (train.epochs ran out), "early_stopping", "budget_windows" or
    #: "budget_seconds"
    stopped_by: str = "epochs"

    @property
    def best_is_last(self) -> bool:
        """The best epoch was the last one run: the model may still have been improving."""
        return self.best_epoch == self.epochs_run


class Callback:
    """Hooks into :func:`fit`; override the ones you need (the others do nothing).

    ``row`` is the epoch's metrics (``train/loss``, ``train/lr``, ``val/loss``, ``val/ap``,
    ``val/auc``, ``val/mcc``, ``time/epoch_s``); callbacks see it before early stopping does.
    """

    def on_fit_start(self, cfg: TrainSection) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        """After epoch ``epoch`` (1-based) was trained and validated."""

    def on_fit_end(self, result: TrainResult) -> None:
        """After the last epoch, with the best weights loaded back into the model."""


class EarlyStopping:
    """Watches one epoch metric: which epoch is the best so far, and when to stop.

    An epoch is the new best when it beats the best by more than ``min_delta`` (ties do not
    count); the first epoch always is, and a non-finite best is beaten by any finite value.
    Training stops after ``patience`` epochs in a row without a new best.
    """

    def __init__(self, monitor: str = "val/ap", mode: str = "max", min_delta: float = 0.0, patience: int = 5):
        if mode not in ("max", "min"):
            raise ValueError(f"early stopping mode must be 'max' or 'min' (got {mode!r})")
        if not min_delta >= 0:
            raise ValueError(f"early stopping min_delta must be >= 0 (got {min_delta!r})")
        if patience < 1:
            raise ValueError(f"early stopping patience must be >= 1 (got {patience!r})")
        self.monitor, self.mode, self.min_delta, self.patience = monitor, mode, float(min_delta), patience
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0

    @classmethod
    def of(cls, section: EarlyStoppingSection) -> EarlyStopping:
        return cls(section.monitor, section.mode, section.min_delta, section.patience)

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if not math.isfinite(self.best):
            return math.isfinite(value)
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, epoch: int, row: dict[str, float]) -> bool:
        """Record ``epoch``'s row; True when it is the new best (its weights are the ones to keep)."""
        if self.monitor not in row:
            raise PtmkitError(
                f"early stopping monitors {self.monitor!r}, which the epoch metrics do not hold; "
                f"valid: {', '.join(k for k in row if k in MONITORS)}"
            )
        value = float(row[self.monitor])
        if self.improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.wait >= self.patience


def save_atomic(state: dict, path: Path) -> None:
    """Write a checkpoint via a temp file + rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def epoch_rows(
    n: int,
    cap: int | None,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    tasks: torch.Tensor | None = None,
) -> torch.Tensor:
    """This epoch's training rows in random order.

    Without ``labels``: all ``n`` rows, or a fresh random ``cap`` of them (a cap bounds the
    cost of an epoch on large sets; a new draw each epoch still covers the whole set).
    With ``labels`` (class-balanced epochs): as many positives as negatives, ``cap // 2`` of
    each (or all of the smaller class when there is no cap or it has fewer), drawn afresh each
    epoch, so an imbalanced set shows its rare positives at the rate it shows negatives.
    With ``tasks`` (task-balanced epochs, each row's task index): every task gives the same
    number of rows, ``epoch_size // T``, drawn without repeats where a task has enough rows and
    with repeats where it has fewer (class-balanced within each task when ``labels`` is given).
    """
    if tasks is not None:
        return _task_balanced(n, cap, generator, labels, tasks)
    if labels is None:
        order = torch.randperm(n, generator=generator)
        return order if cap is None or cap >= n else order[:cap]
    pos = torch.nonzero(labels > 0.5).flatten()
    neg = torch.nonzero(labels <= 0.5).flatten()
    k = _per_class(len(pos), len(neg), cap)
    picked = torch.cat(
        [
            pos[torch.randperm(len(pos), generator=generator)[:k]],
            neg[torch.randperm(len(neg), generator=generator)[:k]],
        ]
    )
    return picked[torch.randperm(len(picked), generator=generator)]


def _task_balanced(
    n: int, cap: int | None, generator: torch.Generator, labels: torch.Tensor | None, tasks: torch.Tensor
) -> torch.Tensor:
    count = _rows_per_task(n, cap, tasks)
    picked = []
    for t in torch.unique(tasks):
        rows = torch.nonzero(tasks == t).flatten()
        if labels is None:
            picked.append(_draw(rows, count, generator))
            continue
        half = count // 2
        for cls in (labels[rows] > 0.5, labels[rows] <= 0.5):
            if cls.any():
                picked.append(_draw(rows[cls], half, generator))
    order = torch.cat(picked)
    return order[torch.randperm(len(order), generator=generator)]


def _draw(rows: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` of ``rows``: a permutation's prefix, or whole permutations plus a prefix."""
    repeats = -(-count // max(len(rows), 1))
    perms = [rows[torch.randperm(len(rows), generator=generator)] for _ in range(repeats)]
    return torch.cat(perms)[:count]


def _rows_per_task(n: int, cap: int | None, tasks: torch.Tensor) -> int:
    """Rows each task gives a task-balanced epoch: the epoch (``cap``, else all ``n`` rows)
    shared equally by the tasks."""
    total = n if cap is None or cap >= n else cap
    return max(total // len(torch.unique(tasks)), 2)


def _per_class(n_pos: int, n_neg: int, cap: int | None) -> int:
    return min(n_pos, n_neg) if cap is None else min(cap // 2, n_pos, n_neg)


def epoch_size(
    n: int, cap: int | None, labels: torch.Tensor | None = None, tasks: torch.Tensor | None = None
) -> int:
    """``len(epoch_rows(n, cap, ..., labels, tasks))``, without drawing (the schedule's length)."""
    if tasks is not None:
        count = _rows_per_task(n, cap, tasks)
        if labels is None:
            return count * len(torch.unique(tasks))
        total = 0
        for t in torch.unique(tasks):
            task_labels = labels[tasks == t]
            classes = int((task_labels > 0.5).any()) + int((task_labels <= 0.5).any())
            total += classes * (count // 2)
        return total
    if labels is None:
        return n if cap is None or cap >= n else cap
    n_pos = int((labels > 0.5).sum())
    return 2 * _per_class(n_pos, len(labels) - n_pos, cap)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimisation steps of an epoch of ``rows``: a last batch of one is skipped (see fit)."""
    full, rest = divmod(rows, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and full == 0) else 0)


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainSection) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``params`` with ``train.lr`` and ``train.weight_decay``."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        momentum = SGD_MOMENTUM if cfg.momentum is None else cfg.momentum
        return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay)
    raise PtmkitError(f"train.optimizer: unknown optimizer {cfg.optimizer!r}; valid: adamw, adam, sgd")


def lr_factor(step: int, warmup: int, total: int, kind: str, floor: float) -> float:
    """The schedule's multiple of the peak lr at optimisation step ``step`` (0-based).

    Warmup rises linearly, ``(step + 1) / (warmup + 1)``, so no step trains at lr 0; then
    ``constant`` stays at 1 and ``cosine`` / ``linear`` fall to ``floor`` (min_lr / lr) at
    ``total`` steps, and stay there.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - floor) * progress


def planned_epochs(cfg: TrainSection, windows_per_epoch: int) -> int:
    """The epochs a decaying schedule spans: ``train.epochs``, or fewer when ``train.budget.windows``
    ends training sooner (the epoch in which the budget is reached), so the decay reaches
    ``min_lr`` where training ends rather than being cut off half-way. (A seconds budget cannot
    be known in advance: the schedule then spans ``train.epochs``.)"""
    if cfg.budget.windows is None:
        return cfg.epochs
    # what an epoch really trains on: a last batch of one is skipped (steps_per_epoch)
    trained = windows_per_epoch - (
        1 if windows_per_epoch > 1 and windows_per_epoch % cfg.batch_size == 1 else 0
    )
    return max(1, min(cfg.epochs, math.ceil(cfg.budget.windows / max(trained, 1))))


def build_schedule(
    optimiser: torch.optim.Optimizer, schedule: ScheduleSection, lr: float, per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step ``LambdaLR`` for ``train.schedule``; None for a constant lr without warmup
    (no scheduler object at all, so such runs are those of before schedules existed)."""
    if schedule.is_constant:
        return None
    if schedule.warmup_steps is not None:
        warmup = schedule.warmup_steps
    else:
        warmup = round((schedule.warmup_epochs or 0.0) * per_epoch)
    total, floor, kind = per_epoch * epochs, schedule.min_lr / lr, schedule.type
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, warmup, total, kind, floor)
    )


def task_weights(cfg: TrainSection, task: torch.Tensor, n_tasks: int) -> torch.Tensor | None:
    """Each task's loss weight [T] (``train.task_weights``): None when uniform; ``size``:
    ``n_t^-exponent`` over the training rows ``n_t`` of each task, normalised to mean 1."""
    if cfg.task_weights == "uniform":
        return None
    sizes = torch.bincount(task, minlength=n_tasks).double().clamp(min=1)
    weights = sizes.pow(-cfg.task_weight_exponent)
    return (weights / weights.mean()).float()


def validation_row(
    labels: np.ndarray, scored: np.ndarray, task: torch.Tensor | None, tasks: Sequence[str]
) -> dict[str, float]:
    """An epoch's validation metrics at 0.5: pooled ``val/<metric>``, and with tasks also
    ``val/<task>/<metric>`` and ``val/macro/<metric>`` (the mean over tasks)."""
    m = metrics.at_threshold(labels, scored, 0.5)
    row = {"val/ap": m["ap"], "val/auc": m["auc"], "val/mcc": m["mcc"]}
    if task is not None and tasks:

        def report(y: np.ndarray, s: np.ndarray, cut: float) -> dict[str, float]:
            r = metrics.at_threshold(y, s, cut)
            return {k: r[k] for k in ("ap", "auc", "mcc")}

        per = metrics.by_task(report, labels, scored, task.numpy(), tasks)
        row.update({f"val/{k}": v for k, v in per.items()})
    return row


def stop_reason(stopping: EarlyStopping, cfg: TrainSection, windows_seen: int, seconds: float) -> str:
    """Why training ends after this epoch (``TrainResult.stopped_by``), or "" to go on."""
    if stopping.should_stop:
        return "early_stopping"
    if cfg.budget.windows is not None and windows_seen >= cfg.budget.windows:
        return "budget_windows"
    if cfg.budget.seconds is not None and seconds >= cfg.budget.seconds:
        return "budget_seconds"
    return ""


def rank_share(train: Rows, index: torch.Tensor, world: distributed.World) -> tuple[torch.Tensor, float]:
    """This rank's rows of a global batch (``Rows.parts``) and their weight. A batch with fewer
    rows (or units) than ranks leaves some ranks without a share: they compute rank 0's at
    weight 0, since every rank must join the step's gradient average. With one row or unit,
    every rank then computes the same one, so synchronised batch statistics stay the batch's."""
    shares = train.parts(index, world.size)
    mine = shares[world.rank]
    return (mine, 1.0) if len(mine) else (shares[0], 0.0)


def infer_shared(
    model: ModelGraph, rows: Rows, device: torch.device, losses: list[tuple[float, Loss]] | None = None
) -> Inference:
    """:func:`infer` with the rows shared among the ranks of a torchrun job (each scores its
    contiguous share; every rank gets all scores, in order, and the mean loss); plain ``infer``
    in one process."""
    world = distributed.world()
    if not world.active:
        return infer(model, rows, device=device, losses=losses)
    share = world.shard(len(rows))
    part = infer(model, rows.rows(share), device=device, losses=losses)
    loss = None
    if part.loss is not None:
        (loss,) = world.sum([part.loss * len(share)])
        loss /= max(len(rows), 1)
    logits = part.logits if part.logits is not None else np.zeros(0, dtype=np.float32)
    return Inference(world.gather_rows(part.scores, len(rows)), loss, world.gather_rows(logits, len(rows)))


def fit(
    model: ModelGraph,
    losses: list[tuple[float, Loss]],
    train: Rows,
    valid: Rows,
    cfg: TrainSection,
    checkpoint: Path,
    *,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    tasks: Sequence[str] = (),
) -> TrainResult:
    """Train until ``cfg.early_stopping`` says stop; keep (and load back) the best epoch's weights.

    ``tasks``: the model's task names (a multi-task model; the rows carry their task index):
    validation is then also scored per task, and ``train.task_balance`` / ``task_weights`` apply.

    Under torchrun (``ptmkit.distributed``) every rank draws the same epoch and the same global
    batches (``train.batch_size`` rows, the recipe's meaning) and trains on its share of each;
    DDP averages the gradients, each rank's loss weighted by its share of the batch's rows, so a
    step is the one-process step on the whole batch (up to summation order; dropout draws per
    rank). Validation is scored in shares and gathered, so every rank sees the same metrics and
    stops at the same epoch; rank 0 alone writes the checkpoint and loads the best weights back.
    """
    if train.labels is None or valid.labels is None:
        raise PtmkitError("fit needs labelled training and validation rows")
    if tasks and (train.task is None or valid.task is None):
        raise PtmkitError("fit with tasks needs each row's task index (ptmkit.inference.encode(tasks=...))")
    world = distributed.world()
    device = distributed.local_device(cfg.device)  # pick_device, and a rank's own GPU under torchrun
    progress = progress and world.main
    model.to(device)
    for _, loss in losses:
        loss.to(device)
    params = list(model.parameters()) + [p for _, loss in losses for p in loss.parameters()]
    optimiser = build_optimizer(params, cfg)
    balance_labels = train.labels if cfg.balance else None
    balance_tasks = train.task if tasks and cfg.task_balance else None
    weights = task_weights(cfg, train.task, len(tasks)) if tasks and train.task is not None else None
    if weights is not None:
        weights = weights.to(device)
    windows_per_epoch = epoch_size(len(train), cfg.epoch_windows, balance_labels, balance_tasks)
    generator = torch.Generator().manual_seed(cfg.seed)
    per_epoch = steps_per_epoch(windows_per_epoch, cfg.batch_size)
    if not isinstance(train, Encoded):  # protein units: batches depend on the draw; count one
        dry = torch.Generator().manual_seed(cfg.seed)
        order = epoch_rows(len(train), cfg.epoch_windows, dry, balance_labels, balance_tasks)
        per_epoch = len(train.batches(order, cfg.batch_size, dry))
    planned = planned_epochs(cfg, windows_per_epoch)
    scheduler = build_schedule(optimiser, cfg.schedule, cfg.lr, per_epoch, planned)
    stopping = EarlyStopping.of(cfg.early_stopping)
    result = TrainResult(
        best_epoch=0, best_value=math.nan, monitor=stopping.monitor, epochs_run=0, checkpoint=checkpoint
    )
    val_labels = valid.labels.numpy()
    step_precision = autocast_for(cfg.precision, device)  # re-entered each step (warns once)
    forward: Any = distributed.wrap(model, device)
    loss_params = [p for _, loss in losses for p in loss.parameters() if p.requires_grad]
    if world.active:  # the same initial weights everywhere (built with one seed); dropout per rank
        torch.manual_seed(cfg.seed + world.rank)
    if cfg.compile:
        with step_precision:
            probe = train.batch(train.batches(torch.arange(len(train)), cfg.batch_size)[0], device)
            args = (probe.features, probe.mask, probe.task, probe.sites, probe.unit_task)
            forward = compiled_step(forward, args)
    for callback in callbacks:
        callback.on_fit_start(cfg)
    bar = tqdm(range(1, cfg.epochs + 1), desc="training", unit="epoch", disable=not progress)
    fit_start = time.perf_counter()
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        for _, loss in losses:
            loss.start_epoch(epoch, planned)  # ramps (HCL's lambda) span the epochs training will run
        lr = float(optimiser.param_groups[0]["lr"])  # what the epoch's first step uses
        order = epoch_rows(len(train), cfg.epoch_windows, generator, balance_labels, balance_tasks)
        total, seen = 0.0, 0
        for index in train.batches(order, cfg.batch_size, generator):
            rows = len(index)  # the global batch; under torchrun this rank trains on its share
            weight = 1.0
            if world.active:
                index, weight = rank_share(train, index, world)
            batch = train.batch(index, device)
            with step_precision:
                outputs = forward(batch.features, batch.mask, batch.task, batch.sites, batch.unit_task)
            if cfg.precision != "fp32":  # losses (logsumexp, temperatures) in fp32, outside autocast
                outputs = {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}
            if weights is not None:  # the loss plugins weight each row by its task (row_weight)
                outputs["row_weight"] = weights[batch.task]
            if batch.targets:  # per-row targets (a distilled run's teacher logits)
                outputs.update(batch.targets)
            loss = combined_loss(losses, outputs, batch.labels)
            optimiser.zero_grad(set_to_none=True)
            if world.active:  # DDP averages over ranks: weight each by its share of the rows
                (loss * (weight * len(index) * world.size / rows)).backward()
                distributed.average_gradients(loss_params)
            else:
                loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(index) * weight
            seen += rows
        result.windows_seen += seen
        (total,) = world.sum([total])
        scored = infer_shared(model, valid, device, losses)
        row = {
            "train/loss": total / max(seen, 1),
            "train/lr": lr,
            "val/loss": float(scored.loss or 0.0),
            **validation_row(val_labels, scored.scores, valid.task, tasks),
            "time/epoch_s": time.perf_counter() - epoch_start,
        }
        result.history.append(row)
        result.epochs_run = epoch
        for callback in callbacks:
            callback.on_epoch_end(epoch, row)
        if stopping.update(epoch, row):
            result.best_epoch, result.best_value = epoch, row[stopping.monitor]
            result.best_val_scores = scored.scores
            if world.main:
                save_atomic(model.state_dict(), checkpoint)
        bar.set_postfix(
            loss=f"{row['train/loss']:.4f}", val_ap=f"{row['val/ap']:.4f}", best=result.best_epoch
        )
        stop = stop_reason(stopping, cfg, result.windows_seen, time.perf_counter() - fit_start)
        stop = world.decide(stop)  # rank 0's clock decides a seconds budget for every rank
        if stop:
            result.stopped_by = stop
            break
    if world.main:
        model.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True))
    for callback in callbacks:
        callback.on_fit_end(result)
    return result
