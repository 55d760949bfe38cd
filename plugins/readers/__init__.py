"""Built-in reader plugins: source files -> SiteTable.

``fasta_fragments`` and ``posneg_fasta`` read pre-cut windows, ``csv_sites`` one window per CSV
row, ``protein_sites`` and ``musite_fasta`` whole proteins with marked sites.
"""

from __future__ import annotations

from .csv_sites import CsvSites
from .fragments import FastaFragments, PosNegFasta
from .proteins import MusiteFasta, ProteinSites

__all__ = ["CsvSites", "FastaFragments", "MusiteFasta", "PosNegFasta", "ProteinSites"]
