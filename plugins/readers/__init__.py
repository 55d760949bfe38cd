"""Built-in reader plugins: source files -> SiteTable.

``fasta_fragments`` and ``posneg_fasta`` read pre-cut windows, ``csv_sites`` one window per CSV
row, ``protein_sites`` and ``musite_fasta`` whole proteins with marked sites.
"""

from __future__ import annotations

from ptmkit.registry import Registrar

from .csv_sites import CsvSites
from .fragments import FastaFragments, PosNegFasta
from .proteins import MusiteFasta, ProteinSites


def register(registry: Registrar) -> None:
    """Register every built-in reader plugin."""
    registry.reader("fasta_fragments", FastaFragments)
    registry.reader("csv_sites", CsvSites)
    registry.reader("posneg_fasta", PosNegFasta)
    registry.reader("protein_sites", ProteinSites)
    registry.reader("musite_fasta", MusiteFasta)
