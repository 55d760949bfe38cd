"""Built-in loss plugins: (outputs, labels) -> scalar."""

from __future__ import annotations

from .binary import BCELoss, FocalLoss, WeightedCELoss
from .contrastive import HierarchicalContrastiveLoss, InfoNCELoss

__all__ = ["BCELoss", "FocalLoss", "HierarchicalContrastiveLoss", "InfoNCELoss", "WeightedCELoss"]
