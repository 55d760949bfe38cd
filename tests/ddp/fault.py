"""A torchrun worker for test_distributed: ptmkit's command line with one more loss,
``rank_fault``, which raises on one rank at the start of one epoch (a real exception in a real
plugin, in the middle of training; the other ranks are then waiting in a collective)."""

from __future__ import annotations

import sys

from ptmkit_plugins.losses.binary import BCELoss, _InputConfig
from pydantic import Field

from ptmkit import distributed
from ptmkit.cli import main
from ptmkit.hooks import get_registry
from ptmkit.registry import Registrar


class FaultConfig(_InputConfig):
    rank: int = Field(1, description="the rank that raises")
    epoch: int = Field(2, description="the epoch at whose start it raises")


class RankFault(BCELoss):
    """Binary cross-entropy that raises on ``rank`` at the start of ``epoch``."""

    Config = FaultConfig

    def start_epoch(self, epoch: int, total: int) -> None:
        here = distributed.world().rank
        if epoch == self.config.epoch and here == self.config.rank:
            raise RuntimeError(f"injected failure on rank {here} at epoch {epoch}")


if __name__ == "__main__":
    Registrar(get_registry(), "ptmkit-tests", "0").loss("rank_fault", RankFault)
    sys.exit(main())
