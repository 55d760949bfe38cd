"""Fixtures shared by the bad-input cases."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real package folder written by ptmkit's own writer (untrained weights: loading and
    refusing, not quality, are under test). The quickstart recipe with a 4-unit BiLSTM."""
    from ptmkit import recipe as recipes
    from ptmkit.assembly import assemble
    from ptmkit.package import write_package

    recipe = recipes.load(ROOT / "experiments/quickstart.yaml", ["model.nodes.encoder.hidden=4"])
    built = assemble(recipe)
    return write_package(
        tmp_path_factory.mktemp("pkg") / "model",
        model=built.graph,
        recipe=recipe,
        features=built.features,
        dataset="uniptms:H1",
        ptm="N-phosphorylation",
        residues="H",
        window=37,
        thresholds={"val_max_mcc": 0.4, "val_spec95": 0.7},
        best_epoch=1,
    )
