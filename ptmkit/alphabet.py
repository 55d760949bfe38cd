"""Amino-acid alphabet and the integer encoding every table-lookup feature shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The 20 standard amino acids, in the order every per-residue feature uses for its rows.
STANDARD = "ACDEFGHIKLMNPQRSTVWY"
#: Letters that are amino acids but not one of the 20 (ambiguity codes, Sec, Pyl, unknown).
NONSTANDARD = "BZJUOX"
#: Padding used when a window runs past a protein's end. Padding is not a residue.
PAD = "-"
ALLOWED = frozenset(STANDARD + NONSTANDARD + PAD)
#: Letters a whole protein may contain (padding makes no sense inside a protein): what the protein
#: readers accept and ``ptmkit predict`` scans.
PROTEIN_LETTERS = frozenset(STANDARD + NONSTANDARD)

UNKNOWN_INDEX = 20  # any non-standard letter
PAD_INDEX = 21
N_SYMBOLS = 22

_LUT = np.full(256, -1, dtype=np.int8)
for _i, _aa in enumerate(STANDARD):
    _LUT[ord(_aa)] = _i
for _aa in NONSTANDARD:
    _LUT[ord(_aa)] = UNKNOWN_INDEX
_LUT[ord(PAD)] = PAD_INDEX


def encode_windows(windows: Sequence[str]) -> np.ndarray:
    """Encode equal-length windows to int8 indices [N, W] (0-19 standard, 20 unknown, 21 pad).

    One vectorised lookup for the whole batch: features index their tables with the result.
    """
    if len(windows) == 0:
        return np.zeros((0, 0), dtype=np.int8)
    width = len(windows[0])
    joined = "".join(windows)
    if len(joined) != width * len(windows):
        raise ValueError("encode_windows needs windows of equal width")
    codes = _LUT[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)]
    if (codes < 0).any():
        bad = joined[int(np.argmax(codes < 0))]
        raise ValueError(f"character {bad!r} is not an amino-acid letter or padding {PAD!r}")
    return codes.reshape(len(windows), width)


def invalid_characters(sequence: str) -> list[tuple[int, str]]:
    """Return (0-based index, char) for every character outside the allowed alphabet."""
    return [(i, c) for i, c in enumerate(sequence) if c not in ALLOWED]
