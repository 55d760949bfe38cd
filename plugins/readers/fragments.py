"""Readers for files of pre-cut windows: ``fasta_fragments`` and ``posneg_fasta``.

Fragment files hold one window per record, so the centre residue is the site; the protein
position is known only when the header says it.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ptmkit.api import register
from ptmkit.plugin_api import PluginConfig, ReadContext, Reader
from ptmkit.sitetable import PROTEIN_IDS, SPLITS, SiteTable

from ._common import (
    PRESET_LABELS,
    FilesMixin,
    Rows,
    WindowChecker,
    check_pad,
    compile_header,
    group,
    header_match,
    iter_fasta,
    parse_label,
    position_of,
)

_PAD_DOC = (
    "letter the file pads windows with past the protein ends (e.g. 'X'); its runs at the two "
    "window ends become '-' padding"
)


class FastaFragmentsConfig(FilesMixin):
    header: str = Field(
        "pipe",
        description="preset ('pipe': >id|label|..., 'sign': >+id_pos) or a regex with named "
        "groups label (and optional id, position), matched against the whole header",
    )
    positive: list[str] = Field(
        ["1"], description="header label values meaning positive (preset 'sign': '+')"
    )
    negative: list[str] = Field(
        ["0"], description="header label values meaning negative (preset 'sign': '-')"
    )
    terminal_pad: str | None = Field(None, description=_PAD_DOC)

    @model_validator(mode="before")
    @classmethod
    def _preset_labels(cls, data: object) -> object:
        """A preset brings its own label values unless the recipe gives them."""
        if isinstance(data, dict) and isinstance(data.get("header"), str):
            pos, neg = PRESET_LABELS.get(data["header"], (["1"], ["0"]))
            data = {"positive": pos, "negative": neg, **data}
        return data

    @field_validator("terminal_pad")
    @classmethod
    def _check_pad(cls, value: str | None) -> str | None:
        return check_pad(value)

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        compile_header(value, required=("label",))
        return value

    @model_validator(mode="after")
    def _disjoint_labels(self) -> FastaFragmentsConfig:
        if set(self.positive) & set(self.negative):
            raise ValueError("a label value cannot be both positive and negative")
        return self


@register.reader("fasta_fragments")
class FastaFragments(Reader):
    """FASTA of fixed-width windows, label (and maybe id/position) in each header (T1, T2, C1)."""

    Config = FastaFragmentsConfig

    def read(self, context: ReadContext) -> SiteTable:
        cfg: FastaFragmentsConfig = self.config  # type: ignore[assignment]
        pattern = compile_header(cfg.header, required=("label",))
        rows = Rows(context.task)
        widths = WindowChecker()
        for split, name in cfg.files.items():
            path = context.resolve(name)
            widths.start_file()
            for rec in iter_fasta(path):
                match = header_match(pattern, rec.header, path, rec.line)
                label = parse_label(match.group("label"), cfg.positive, cfg.negative, path, rec.line)
                window = widths.check(path, rec.seq_line, rec.sequence, cfg.terminal_pad)
                protein = group(match, "id") or rec.header
                position = position_of(match, path, rec.line)
                rows.add(protein, position, window, label, split, f"{path}:{rec.line}")
        # with the 'pipe' preset (or no id group) the id names a record (Pos_1), not a protein
        proteins = cfg.header != "pipe" and "id" in pattern.groupindex
        return rows.table(meta={PROTEIN_IDS: proteins})


class PosNegFastaConfig(PluginConfig):
    positive: str = Field(description="FASTA file of positive windows, relative to the recipe")
    negative: str = Field(description="FASTA file of negative windows, relative to the recipe")
    split: str = Field("unsplit", description="split every row belongs to (train/test/unsplit)")
    header: str = Field(
        "id",
        description="preset ('id': >[prefix|]id[_position]) or a regex with optional named "
        "groups id and position, matched against the whole header",
    )
    terminal_pad: str | None = Field(None, description=_PAD_DOC)

    @field_validator("terminal_pad")
    @classmethod
    def _check_pad(cls, value: str | None) -> str | None:
        return check_pad(value)

    @field_validator("split")
    @classmethod
    def _check_split(cls, value: str) -> str:
        if value not in SPLITS:
            raise ValueError(f"unknown split {value!r}; use {', '.join(SPLITS)}")
        return value

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        compile_header(value)
        return value


@register.reader("posneg_fasta")
class PosNegFasta(Reader):
    """Two FASTA files of fixed-width windows, labelled by file (K1, C2)."""

    Config = PosNegFastaConfig

    def read(self, context: ReadContext) -> SiteTable:
        cfg: PosNegFastaConfig = self.config  # type: ignore[assignment]
        pattern = compile_header(cfg.header)
        rows = Rows(context.task)
        widths = WindowChecker()
        for label, name in ((1, cfg.positive), (0, cfg.negative)):
            path = context.resolve(name)
            widths.start_file()
            for rec in iter_fasta(path):
                match = header_match(pattern, rec.header, path, rec.line)
                window = widths.check(path, rec.seq_line, rec.sequence, cfg.terminal_pad)
                protein = group(match, "id") or rec.header
                position = position_of(match, path, rec.line)
                rows.add(protein, position, window, label, cfg.split, f"{path}:{rec.line}")
        return rows.table(meta={PROTEIN_IDS: "id" in pattern.groupindex})
