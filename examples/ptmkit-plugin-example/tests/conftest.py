"""Helpers shared by the example package's tests."""

from __future__ import annotations

import pandas as pd
import pytest
from ptmkit.sitetable import SiteTable


def make_table(windows: list[str]) -> SiteTable:
    """A SiteTable holding ``windows`` (labels alternate 0/1), as a reader would produce it."""
    records = [
        {
            "protein_id": f"P{i}",
            "position": pd.NA,
            "residue": w[len(w) // 2],
            "window": w,
            "label": i % 2,
            "task": "test",
            "split": "train",
            "origin": f"test:{i + 1}",
        }
        for i, w in enumerate(windows)
    ]
    return SiteTable.from_records(records)


@pytest.fixture
def table_of():
    """``table_of(windows)`` -> SiteTable."""
    return make_table
