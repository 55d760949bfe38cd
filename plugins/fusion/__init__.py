"""Built-in fusion plugins: combine several per-residue inputs into one."""

from __future__ import annotations

from ptmkit.registry import Registrar

from .attention import ChannelAttention, CrossAttention, SelfAttention
from .basic import Add, Concat
from .bgca import BGCA
from .bhgfn import BHGFN
from .hdwf import HDWF
from .ldfn import LDFN
from .macp import MACP
from .project import Project


def register(registry: Registrar) -> None:
    """Register every built-in fusion plugin."""
    registry.fusion("concat", Concat)
    registry.fusion("add", Add)
    registry.fusion("bgca", BGCA)
    registry.fusion("ldfn", LDFN)
    registry.fusion("macp", MACP)
    registry.fusion("bhgfn", BHGFN)
    registry.fusion("hdwf", HDWF)
    registry.fusion("cross_attention", CrossAttention)
    registry.fusion("channel_attention", ChannelAttention)
    registry.fusion("self_attention", SelfAttention)
    registry.fusion("project", Project)
