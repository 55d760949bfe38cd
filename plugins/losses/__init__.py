"""Built-in loss plugins: (outputs, labels) -> scalar."""

from __future__ import annotations

from .binary import BCELoss, FocalLoss, WeightedCELoss
from .contrastive import HierarchicalContrastiveLoss, InfoNCELoss
from .distill import DistillLoss

__all__ = [
    "BCELoss",
    "DistillLoss",
    "FocalLoss",
    "HierarchicalContrastiveLoss",
    "InfoNCELoss",
    "WeightedCELoss",
]
