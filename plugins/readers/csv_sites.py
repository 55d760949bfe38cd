"""Reader ``csv_sites``: one window per CSV row (H1: ``protein,sequence,label``)."""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ptmkit.alphabet import ALLOWED
from ptmkit.api import register
from ptmkit.errors import DataError
from ptmkit.plugin_api import ReadContext, Reader
from ptmkit.sitetable import SiteTable

from ._common import (
    FilesMixin,
    Rows,
    WindowChecker,
    bad_character,
    check_pad,
    parse_label,
    read_lines,
)


class CsvSitesConfig(FilesMixin):
    id_column: str = Field("protein", description="column holding the protein id")
    window_column: str = Field("sequence", description="column holding the window")
    label_column: str = Field("label", description="column holding the 0/1 label")
    position_column: str | None = Field(
        None, description="optional column with the 1-based site position in its protein"
    )
    delimiter: str = Field(",", description="field separator (one character; '\\t' for TSV)")
    positive: list[str] = Field(["1"], description="label values meaning positive")
    negative: list[str] = Field(["0"], description="label values meaning negative")
    terminal_pad: str | None = Field(
        None, description="letter padding windows past the protein ends (e.g. 'X'), made '-'"
    )

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("delimiter must be a single character")
        return value

    @field_validator("terminal_pad")
    @classmethod
    def _check_pad(cls, value: str | None) -> str | None:
        return check_pad(value)

    @model_validator(mode="after")
    def _disjoint_labels(self) -> CsvSitesConfig:
        if set(self.positive) & set(self.negative):
            raise ValueError("a label value cannot be both positive and negative")
        return self


@register.reader("csv_sites")
class CsvSites(Reader):
    """CSV/TSV with one window per row; errors name the physical line of the row."""

    Config = CsvSitesConfig

    def read(self, context: ReadContext) -> SiteTable:
        cfg: CsvSitesConfig = self.config  # type: ignore[assignment]
        rows = Rows(context.task)
        widths = WindowChecker()
        for split, name in cfg.files.items():
            path = context.resolve(name)
            widths.start_file()
            self._read_file(path, split, cfg, rows, widths)
        return rows.table()

    def _read_file(
        self, path: Path, split: str, cfg: CsvSitesConfig, rows: Rows, widths: WindowChecker
    ) -> None:
        reader = csv.reader(read_lines(path), delimiter=cfg.delimiter)
        columns = next(reader)
        first: dict[str, int] = {}
        for number, column in enumerate(columns, 1):
            if column in first:  # pandas would silently rename it to 'x.1'; which one is meant?
                raise DataError(
                    f"column name {column!r} appears twice in the header row (columns "
                    f"{first[column]} and {number}); valid: unique column names",
                    path=path,
                    line=reader.line_num,
                )
            first[column] = number
        wanted = [cfg.id_column, cfg.window_column, cfg.label_column]
        if cfg.position_column:
            wanted.append(cfg.position_column)
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataError(
                f"column(s) {missing} not in the header row; it has {columns}",
                path=path,
                line=reader.line_num,
            )
        i_id, i_win, i_label = (columns.index(c) for c in wanted[:3])
        i_pos = columns.index(cfg.position_column) if cfg.position_column else None
        n_rows = 0
        for record in reader:
            line = reader.line_num
            if not record or record == [""]:
                continue
            if len(record) != len(columns):
                raise DataError(
                    f"row has {len(record)} fields, the header row has {len(columns)}",
                    path=path,
                    line=line,
                )
            raw = record[i_win].strip()
            window = raw.upper()
            if not window:
                raise DataError(f"empty {cfg.window_column!r} field", path=path, line=line)
            if not ALLOWED.issuperset(window):
                raise bad_character(path, line, raw, ALLOWED)
            label = parse_label(record[i_label].strip(), cfg.positive, cfg.negative, path, line)
            window = widths.check(path, line, window, cfg.terminal_pad)
            position = None
            if i_pos is not None:
                text = record[i_pos].strip()
                if text and (not text.isdigit() or int(text) < 1):
                    raise DataError(f"position {text!r} is not a 1-based number", path=path, line=line)
                position = int(text) if text else None
            protein = record[i_id].strip()
            rows.add(protein, position, window, label, split, f"{path}:{line}")
            n_rows += 1
        if not n_rows:
            raise DataError("no data rows after the header row", path=path, line=reader.line_num)
