"""Figures people would rather look at than read: ROC, PR and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)  # noqa: E402

from .outputs import atomic_open  # noqa: E402


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    """Save and close ``fig`` through ptmkit.outputs: atomic, special files in place, errors named."""
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    finally:
        plt.close(fig)
    return path


def roc_pr(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """ROC and precision-recall side by side, one line per split (name -> labels, scores)."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
        precision, recall, _ = precision_recall_curve(labels, scores)
        pr_ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(labels, scores):.3f})")
        pr_ax.axhline(float(np.mean(labels)), ls=":", lw=0.8, color=pr_ax.lines[-1].get_color())
    roc_ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def training_curves(history: list[dict[str, float]], best_epoch: int, path: Path, title: str) -> Path:
    """Losses and validation AP per epoch, with the kept (best) epoch marked."""
    epochs = np.arange(1, len(history) + 1)
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train/loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val/loss"] for h in history], label="validation")
    ap_ax.plot(epochs, [h["val/ap"] for h in history], label="validation AP")
    ap_ax.plot(epochs, [h["val/auc"] for h in history], label="validation AUC")
    for ax in (loss_ax, ap_ax):
        ax.axvline(best_epoch, ls="--", color="grey", lw=0.8, label=f"kept epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    loss_ax.set_title("loss")
    ap_ax.set_title("validation")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_bars(table, metrics: list[str], path: Path, title: str) -> Path:  # noqa: ANN001
    """Grouped bars: one group per metric, one bar per variant (the sweep's comparison)."""
    variants = list(table.index)
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(len(variants), 2) / 2), 4.5))
    x = np.arange(len(metrics))
    for i, variant in enumerate(variants):
        values = [float(table.at[variant, m]) for m in metrics]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=str(variant))
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
