"""Shared helpers of the handcrafted features: each one is a table lookup on residue codes."""

from __future__ import annotations

import numpy as np
import torch

from ptmkit.alphabet import N_SYMBOLS, PAD_INDEX, encode_windows
from ptmkit.sitetable import SiteTable


def codes(table: SiteTable) -> torch.Tensor:
    """Residue codes of every window as int64 [N, W] (0-19 standard, 20 unknown, 21 padding).

    An empty table gives [0, 0] (its width is unknown), so features return [0, 0, D].
    """
    return torch.from_numpy(encode_windows(table.windows).astype(np.int64))


def empty_lut(dim: int) -> np.ndarray:
    """A [22, dim] lookup table of zeros, one row per residue code."""
    return np.zeros((N_SYMBOLS, dim), dtype=np.float64)


def lookup(lut: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
    """Index a [22, D] per-code table with codes [N, W] -> float32 [N, W, D].

    The padding row is checked to be zero here, so no feature can leak signal through padding.
    """
    if lut.shape[0] != N_SYMBOLS or np.any(lut[PAD_INDEX] != 0):
        raise ValueError("a feature lookup table needs 22 rows and an all-zero padding row")
    return torch.tensor(lut, dtype=torch.float32)[idx]


def standardise(values: np.ndarray) -> np.ndarray:
    """Z-score each column of [20, D] over the 20 residues (population std, as Chou does).

    NaN entries (values missing from the source) are left out of mean and std and then set to
    0, the average residue. A constant column becomes zeros rather than NaN.
    """
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    std[std == 0] = 1.0
    return np.nan_to_num((values - mean) / std, nan=0.0)
