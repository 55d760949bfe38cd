"""MusiteDeep's annotated whole proteins (phospho-S/T): a source of whole proteins with sites.

The file is MusiteDeep's public test set (Wang et al. 2017/2020; github.com/duolinwang/MusiteDeep_web,
MIT); here it is a plain source of experimentally annotated whole proteins, for pretraining a
PTM-aware language model, whole-protein models or a phospho-S/T task. It has no published split
(carve one by protein, seeded) and no ptmkit-comparable published metrics.
"""

from __future__ import annotations

from ptmkit.api import register
from ptmkit.catalog import Collection, Dataset

COLLECTION = "musitedeep"

_ENTRIES = [
    Dataset(
        collection=COLLECTION,
        id="ST",
        ptm="phosphorylation",
        residues="ST",
        window=33,
        reader="musite_fasta",
        config={"files": {"unsplit": "phospho_ST_allspecies_annotated.fasta"}},
        files={
            "phospho_ST_allspecies_annotated.fasta": (
                "18ec162345a75fc72c00f39858ba3b23b96d6d7212870b6ea0d0c2e9482a209c"
            )
        },
        # 2,476 proteins; 6,885 S# + 1,874 T#; every other S/T a negative, as MusiteDeep treats them
        counts={"unsplit": (8759, 230755)},
        paper_counts={"unsplit": (8759, 230755)},
        defects=("no train/test split: carve one by protein (data.split.group: protein)",),
    ),
]


@register.dataset(COLLECTION)
class MusiteDeep(Collection):
    """MusiteDeep's annotated whole proteins: phospho-S/T on 2,476 proteins (no published split)."""

    name = COLLECTION
    # upstream names the file test_allspecies_sequences_annotated.fasta (MusiteDeep_web, commit
    # cca9f0c, MusiteDeep/testdata/Phosphorylation/ST/): no base URL maps to this name
    base_url = None
    datasets = tuple(_ENTRIES)
