"""The training loop: AdamW, early stopping on validation AP, best-epoch checkpoint, seeding."""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .errors import PtmkitError
from .graph import ModelGraph
from .plugin_api import Loss
from .recipe import TrainSection


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


@dataclass
class Split:
    """Pre-tensorised rows of one split: features, padding mask and labels."""

    features: dict[str, torch.Tensor]
    mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor]:
        feats = {k: v[index].to(device) for k, v in self.features.items()}
        return feats, self.mask[index].to(device), self.labels[index].to(device)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_ap: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    #: validation scores of the best epoch (what the reloaded best weights give), so the caller
    #: can choose thresholds without another pass over the validation set
    best_val_scores: np.ndarray | None = None


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


def combined_loss(losses: list[tuple[float, Loss]], outputs: dict, labels: torch.Tensor) -> torch.Tensor:
    return sum(w * loss(outputs, labels) for w, loss in losses)  # type: ignore[return-value]


@torch.no_grad()
def predict(model: ModelGraph, split: Split, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Sigmoid scores for every row, in order."""
    return _score(model, split, device, batch_size)[0]


@torch.no_grad()
def _score(
    model: ModelGraph,
    split: Split,
    device: torch.device,
    batch_size: int = 512,
    losses: list[tuple[float, Loss]] | None = None,
) -> tuple[np.ndarray, float]:
    """Scores and (with ``losses``) the mean loss, in one pass: validation is paid once per epoch."""
    model.eval()
    scores, total = [], 0.0
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        feats, mask, labels = split.batch(index, device)
        outputs = model(feats, mask)
        scores.append(torch.sigmoid(outputs["logits"]).float().cpu())
        if losses:
            total += float(combined_loss(losses, outputs, labels)) * len(index)
    return (torch.cat(scores).numpy() if scores else np.zeros(0)), total / max(len(split), 1)


def epoch_rows(
    n: int, cap: int | None, generator: torch.Generator, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """This epoch's training rows in random order.

    Without ``labels``: all ``n`` rows, or a fresh random ``cap`` of them (a cap bounds the
    cost of an epoch on large sets; a new draw each epoch still covers the whole set).
    With ``labels`` (class-balanced epochs): as many positives as negatives, ``cap // 2`` of
    each (or all of the smaller class when there is no cap or it has fewer), drawn afresh each
    epoch, so an imbalanced set shows its rare positives at the rate it shows negatives.
    """
    if labels is None:
        order = torch.randperm(n, generator=generator)
        return order if cap is None or cap >= n else order[:cap]
    pos = torch.nonzero(labels > 0.5).flatten()
    neg = torch.nonzero(labels <= 0.5).flatten()
    k = min(len(pos), len(neg)) if cap is None else min(cap // 2, len(pos), len(neg))
    picked = torch.cat(
        [
            pos[torch.randperm(len(pos), generator=generator)[:k]],
            neg[torch.randperm(len(neg), generator=generator)[:k]],
        ]
    )
    return picked[torch.randperm(len(picked), generator=generator)]


def fit(
    model: ModelGraph,
    losses: list[tuple[float, Loss]],
    train: Split,
    valid: Split,
    cfg: TrainSection,
    checkpoint: Path,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train until validation AP stops improving for ``patience`` epochs; keep the best weights."""
    device = pick_device(cfg.device)
    model.to(device)
    for _, loss in losses:
        loss.to(device)
    params = list(model.parameters()) + [p for _, loss in losses for p in loss.parameters()]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(best_epoch=0, best_val_ap=-1.0, epochs_run=0, checkpoint=checkpoint)
    stale = 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        for _, loss in losses:
            loss.start_epoch(epoch, cfg.epochs)
        order = epoch_rows(len(train), cfg.epoch_windows, generator, train.labels if cfg.balance else None)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            index = order[start : start + cfg.batch_size]
            if len(index) < 2 and seen:  # a batch of one breaks batch statistics
                continue
            feats, mask, labels = train.batch(index, device)
            outputs = model(feats, mask)
            loss = combined_loss(losses, outputs, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimiser.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        val_scores, val_loss = _score(model, valid, device, losses=losses)
        val_labels = valid.labels.numpy()
        m = metrics.at_threshold(val_labels, val_scores, 0.5)
        row = {
            "train/loss": total / max(seen, 1),
            "val/loss": val_loss,
            "val/ap": m["ap"],
            "val/auc": m["auc"],
            "val/mcc": m["mcc"],
            "time/epoch_s": time.perf_counter() - epoch_start,
        }
        result.history.append(row)
        result.epochs_run = epoch
        if on_epoch:
            on_epoch(epoch, row)
        if m["ap"] > result.best_val_ap:
            result.best_val_ap, result.best_epoch, stale = m["ap"], epoch, 0
            result.best_val_scores = val_scores
            save_atomic(model.state_dict(), checkpoint)
        else:
            stale += 1
        bar.set_postfix(loss=f"{row['train/loss']:.4f}", val_ap=f"{m['ap']:.4f}", best=result.best_epoch)
        if stale >= cfg.patience:
            break
    model.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True))
    return result
