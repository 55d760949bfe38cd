"""The UniPTMs benchmark datasets (Yu et al.): files, hashes, reader presets, the paper's numbers.

A dataset plugin: the core knows no dataset, it asks the registry for the collection named in
``uniptms:H1``. Kept as code (not YAML) so that a typo is caught by the tests and the type
checker, and so that ``ptmkit data fetch``, recipes and the data check read one source of truth.
Counts and defects were verified against the published files; where the README of the shared
copy disagrees, the numbers here are what the files contain (see the ``defects`` texts).
"""

from __future__ import annotations

from ptmkit.api import register
from ptmkit.catalog import Collection, Dataset, Metrics

#: Collection prefix of the catalogue names (``uniptms:T1``) and folder under the data root.
COLLECTION = "uniptms"

_T1_TRAIN = "972ab7d3f97139269e5dc5302d7390f9bb33b81f2c349063000cff8a623c0832"

_ENTRIES = [
    Dataset(
        collection=COLLECTION,
        id="T1",
        ptm="O-glycosylation",
        residues="T",
        window=41,
        reader="fasta_fragments",
        config={
            "files": {"train": "T1/Training.txt", "test": "T1/Independent.txt"},
            "header": "pipe",
        },
        files={
            "T1/Training.txt": _T1_TRAIN,
            "T1/Independent.txt": "9cfc806465b9c56e77b26203bbe71fea979b5247db17e494c28bf836320ddeac",
        },
        counts={"train": (879, 878), "test": (200, 200)},
        paper_counts={"train": (878, 878), "test": (200, 200)},
        reference={"UniPTMs": Metrics(0.785, 0.940, 0.914), "UniPTMs-mini": Metrics(0.758, 0.929, 0.888)},
        best_tool=("DOGpred", 0.742),
        defects=(
            "19 windows occur in both Training.txt and Independent.txt (train/test leakage)",
            "Training.txt holds 879 positives; the paper reports 878",
        ),
    ),
    Dataset(
        collection=COLLECTION,
        id="T2",
        ptm="O-glycosylation",
        residues="T",
        window=41,
        reader="fasta_fragments",
        config={
            "files": {"train": "T2/Training.txt", "test": "T2/Imbalanced_Independent.txt"},
            "header": "pipe",
        },
        files={
            "T2/Training.txt": _T1_TRAIN,
            "T2/Imbalanced_Independent.txt": (
                "acc08565d79c0b480938e482a1b6fe369ade08f60eb0b00f3220edd942854ef8"
            ),
        },
        counts={"train": (879, 878), "test": (182, 991)},
        paper_counts={"train": (862, 1503), "test": (216, 375)},
        reference={"UniPTMs": Metrics(0.746, 0.945, 0.921), "UniPTMs-mini": Metrics(0.701, 0.925, 0.893)},
        best_tool=("DOGpred", 0.640),
        defects=(
            "T2/Training.txt is byte-identical to T1/Training.txt",
            "counts differ from the paper: train 879/878 vs 862/1503, test 182/991 vs 216/375",
        ),
    ),
    Dataset(
        collection=COLLECTION,
        id="H1",
        ptm="N-phosphorylation",
        residues="H",
        window=37,
        reader="csv_sites",
        config={
            "files": {"train": "H1/train.csv", "test": "H1/test.csv"},
            "id_column": "protein",
            "window_column": "sequence",
            "label_column": "label",
            "terminal_pad": "X",
        },
        files={
            "H1/train.csv": "ae138c24f932050b14c347687fa4b8870cd7d6e73164f81bb15fe623ccdce737",
            "H1/test.csv": "639bb62c132338dbb9d81727f48cb39ee1d84404329d0f9b7ef47c072aa767f8",
        },
        counts={"train": (512, 512), "test": (52, 52)},
        paper_counts={"train": (512, 512), "test": (52, 52)},
        reference={"UniPTMs": Metrics(0.705, 0.919, 0.890), "UniPTMs-mini": Metrics(0.679, 0.890, 0.872)},
        best_tool=("Nphos", 0.630),
    ),
    Dataset(
        collection=COLLECTION,
        id="K1",
        ptm="succinylation",
        residues="K",
        window=33,
        reader="posneg_fasta",
        config={
            "positive": "K1/positive.fasta",
            "negative": "K1/negative.fasta",
            "split": "unsplit",
            "header": "id",
            "terminal_pad": "X",
        },
        files={
            "K1/positive.fasta": "39ed62b2125db13c4eaf75140de132ab9b1d41c46f664689058b45c452c8bcda",
            "K1/negative.fasta": "e1fcc606baa0613834d574f28cdb5ea137d103caf775ee6ca21e9c84bfe5a6ef",
        },
        counts={"unsplit": (13187, 47304)},
        paper_counts={"train": (10549, 37843), "test": (2638, 9461)},
        reference={"UniPTMs": Metrics(0.480, 0.796, 0.707), "UniPTMs-mini": Metrics(0.450, 0.775, 0.669)},
        best_tool=("LMSuccSite", 0.366),
        defects=("no train/test split in the files (the paper used an 80/20 split); totals match",),
    ),
    Dataset(
        collection=COLLECTION,
        id="K2",
        ptm="succinylation",
        residues="K",
        window=33,
        reader="protein_sites",
        config={
            "files": {"train": "K2/train_sequence.txt", "test": "K2/test_sequence.txt"},
            # the published file has one site past its protein's end: keep it usable, report it
            "on_bad_site": "warn",
        },
        files={
            "K2/train_sequence.txt": "aebdbbdfeb4d5dbc07dfef233d2c6ae972c7819a035fe4e413831447382cc3de",
            "K2/test_sequence.txt": "1a671bdb569f573a6af42d5ae91e2914240d703b7183e1dbde680b869fe26e93",
        },
        counts={"train": (4755, 50549), "test": (254, 2977)},
        paper_counts={"train": (4755, 50549), "test": (254, 2977)},
        reference={"UniPTMs": Metrics(0.442, 0.805, 0.655), "UniPTMs-mini": Metrics(0.426, 0.784, 0.639)},
        best_tool=("Deep-Ksucc", 0.346),
        defects=(
            "train_sequence.txt:1725 lists site 307 of P15559, whose sequence has 274 residues",
            "train_sequence.txt:767 lists '39' for P0ACR9 without '#'; read as no site, "
            "so K39 stays a negative (this reading reproduces the paper's 4755/50549)",
        ),
    ),
    Dataset(
        collection=COLLECTION,
        id="C1",
        ptm="S-carboxyethylation",
        residues="C",
        window=41,
        reader="fasta_fragments",
        config={
            "files": {
                "train": "C1/fold_train.fasta",
                "test": "C1/independent_set_test.fasta",
            },
            "header": "sign",
        },
        files={
            "C1/fold_train.fasta": "5fda97d7bc1e10b12ba04563a161e05eb9f6f4d5f000c3035d9dec8b01544100",
            "C1/independent_set_test.fasta": (
                "cba6e6d4cec3abff33c8735a747947f612694070316917c92256427846c014d2"
            ),
        },
        counts={"train": (602, 602), "test": (83, 830)},
        paper_counts={"train": (602, 602), "test": (358, 3580)},
        reference={"UniPTMs": Metrics(0.573, 0.816, 0.858), "UniPTMs-mini": Metrics(0.548, 0.796, 0.838)},
        best_tool=("DLBWE-Cys", 0.515),
        defects=("the independent test file holds 83/830, not the paper's 358/3580",),
    ),
    Dataset(
        collection=COLLECTION,
        id="C2",
        ptm="S-sulfhydration",
        residues="C",
        window=31,
        reader="posneg_fasta",
        config={
            "positive": "C2/positive1.txt",
            "negative": "C2/negative1.txt",
            "split": "unsplit",
            "header": "id",
            "terminal_pad": "X",
        },
        files={
            "C2/positive1.txt": "f866589ccbc0a034e36626b5137098b5d0bab4a0f1c4dda1f53c52fed4acbffa",
            "C2/negative1.txt": "988ad9de7ba91d516a4524c1793cf45094580a1a48e676051d145c1bf6d95e0b",
        },
        counts={"unsplit": (2705, 16697)},
        paper_counts={"train": (2164, 13358), "test": (541, 3339)},
        reference={"UniPTMs": Metrics(0.572, 0.789, 0.842), "UniPTMs-mini": Metrics(0.550, 0.772, 0.828)},
        best_tool=("Sul-BertGRU", 0.540),
        defects=(
            "184 duplicate positive rows (123 distinct windows), 493 duplicate negative rows "
            "(359 distinct windows)",
            "3 windows are labelled both positive and negative",
            "no train/test split in the files (the paper used an 80/20 split); totals match",
        ),
    ),
]


@register.dataset(COLLECTION)
class UniPTMs(Collection):
    """UniPTMs benchmarks: O-glyco T1/T2, N-phospho H1, succinyl K1/K2, Cys C1/C2 (paper tables 1-5)."""

    name = COLLECTION
    #: Where the authors publish the files (``<base_url><id>/<file>``).
    base_url = "https://raw.githubusercontent.com/Yuqiu-rgb/UniPTMs/main/data/"
    datasets = tuple(_ENTRIES)
    unavailable = {
        "H2": "the paper's second N-phosphorylation set (H2) is not in the authors' repository "
        "(github.com/Yuqiu-rgb/UniPTMs: data/H2 holds only a link to the Nphos benchmark page, "
        "http://www.bio-add.org/Nphos/static/download/Benchmark_dataset_H), so there are no "
        "published files or hashes to fetch",
    }
