"""Built-in backbone plugins: sequence encoders [N, W, D] -> [N, W, D']."""

from __future__ import annotations

from .bilstm import BiLSTM
from .cnn import MultiKernelCNN
from .esm2_encoder import Esm2Encoder
from .mamba import Mamba
from .multiscale_cnn import MultiScaleCNN
from .resnet1d import ResNet1d
from .transformer import Transformer

__all__ = ["BiLSTM", "Esm2Encoder", "Mamba", "MultiKernelCNN", "MultiScaleCNN", "ResNet1d", "Transformer"]
