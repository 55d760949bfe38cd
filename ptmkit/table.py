"""Plain-text, Markdown and CSV rendering of small result tables (no extra dependency)."""

from __future__ import annotations

import io
import math

import pandas as pd


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return "" if value is None or value is pd.NA else str(value)


def render(frame: pd.DataFrame, fmt: str = "text", digits: int = 3, index: bool = True) -> str:
    """Render ``frame`` as ``text`` (aligned columns), ``markdown`` or ``csv``."""
    if fmt == "csv":
        buf = io.StringIO()
        frame.to_csv(buf, index=index)
        return buf.getvalue()
    head = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    rows = [
        ([str(i)] if index else []) + [_cell(v, digits) for v in row]
        for i, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    if fmt != "text":
        raise ValueError(f"unknown table format {fmt!r}; use text, markdown or csv")
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    numeric = [all(_is_number(r[i]) for r in rows) and rows for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == ""
    return True
