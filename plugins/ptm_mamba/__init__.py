"""PTM-Mamba (Peng et al., Nature Methods 2025) as ptmkit parts: its PTM-aware vocabulary and the
bidirectional gated Mamba language model (``ptm_mamba``, a language_model plugin), its
cached feature (``ptm_mamba``) and a fine-tunable graph node (``ptm_mamba_encoder``)."""

from __future__ import annotations

from .feature import PtmMambaEncoder, PtmMambaFeature
from .model import PtmMamba

__all__ = ["PtmMamba", "PtmMambaEncoder", "PtmMambaFeature"]
