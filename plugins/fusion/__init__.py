"""Built-in fusion plugins: combine several per-residue inputs into one."""

from __future__ import annotations

from .attention import ChannelAttention, CrossAttention, SelfAttention
from .basic import Add, Concat
from .bgca import BGCA
from .bhgfn import BHGFN
from .hdwf import HDWF
from .ldfn import LDFN
from .macp import MACP
from .project import Project

__all__ = [
    "Add",
    "BGCA",
    "BHGFN",
    "ChannelAttention",
    "Concat",
    "CrossAttention",
    "HDWF",
    "LDFN",
    "MACP",
    "Project",
    "SelfAttention",
]
