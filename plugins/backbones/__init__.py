"""Built-in backbone plugins: sequence encoders [N, W, D] -> [N, W, D']."""

from __future__ import annotations

from ptmkit.registry import Registrar

from .bilstm import BiLSTM
from .cnn import MultiKernelCNN
from .mamba import Mamba
from .resnet1d import ResNet1d
from .transformer import Transformer


def register(registry: Registrar) -> None:
    """Register every built-in backbone plugin."""
    registry.backbone("bilstm", BiLSTM)
    registry.backbone("cnn", MultiKernelCNN)
    registry.backbone("mamba", Mamba)
    registry.backbone("transformer", Transformer)
    registry.backbone("resnet1d", ResNet1d)
