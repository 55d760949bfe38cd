"""Built-in loss plugins: (outputs, labels) -> scalar."""

from __future__ import annotations

from ptmkit.registry import Registrar

from .binary import BCELoss, FocalLoss, WeightedCELoss
from .contrastive import HierarchicalContrastiveLoss, InfoNCELoss


def register(registry: Registrar) -> None:
    """Register every built-in loss plugin."""
    registry.loss("bce", BCELoss)
    registry.loss("weighted_ce", WeightedCELoss)
    registry.loss("focal", FocalLoss)
    registry.loss("hcl", HierarchicalContrastiveLoss)
    registry.loss("infonce", InfoNCELoss)
