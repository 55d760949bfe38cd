"""Readers of whole proteins with marked sites: ``protein_sites`` (K2) and ``musite_fasta``.

Every residue of the target type is a candidate; marked ones are positives, the rest negatives.
Windows are cut with ``windows_at`` and the full sequences kept in ``table.proteins`` for
protein-level features. A marked site that cannot be a candidate (past the protein end, or not a
target residue) is an error by default; ``on_bad_site: warn`` drops and records it in
``table.meta`` instead, because some published files (K2) contain one and should stay usable.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ptmkit.api import register
from ptmkit.errors import DataError
from ptmkit.fasta import MisplacedMark, parse_marks, site_token
from ptmkit.plugin_api import ReadContext, Reader
from ptmkit.sitetable import SiteTable, windows_at

from ._common import (
    PROTEIN_LETTERS,
    FilesMixin,
    Rows,
    compile_header,
    first_header,
    header_match,
    iter_fasta,
)

BadSite = Literal["error", "warn", "skip"]


class _ProteinConfig(FilesMixin):
    on_bad_site: BadSite = Field(
        "error",
        description="a marked site that is malformed, past the protein end or on a non-target "
        "residue: 'error', or 'warn'/'skip' to drop it and record it in table.meta",
    )


class _Sites:
    """Turns (protein, marked positions) into rows; raises on bad marks or collects them."""

    #: meta key -> what the warning says about the dropped marks
    KINDS = {
        "bad_sites": "past the protein end",
        "off_target_sites": "not on a target residue",
        "malformed_sites": "not of the form '#position'",
    }

    def __init__(self, cfg: _ProteinConfig, context: ReadContext, window: int) -> None:
        self.cfg = cfg
        self.residues = context.residues or ""
        self.window = window
        self.on_bad_site = context.on_bad_site or cfg.on_bad_site
        self.rows = Rows(context.task)
        self.proteins: dict[str, str] = {}
        self.problems: dict[str, list[dict[str, object]]] = {k: [] for k in self.KINDS}
        self.listed: dict[str, int] = {}
        self._candidate = re.compile(f"[{self.residues}]")

    def problem(self, kind: str, message: str, path: Path, line: int, **info: object) -> None:
        """Raise (on_bad_site: error) or record a mark that cannot be used."""
        if self.on_bad_site == "error":
            raise DataError(
                f"{message}; set on_bad_site: warn to drop such marks and report them",
                path=path,
                line=line,
            )
        self.problems[kind].append({"origin": f"{path}:{line}", **info})

    def add(self, protein: str, seq: str, marked: list[int], split: str, path: Path, line: int) -> None:
        known = self.proteins.setdefault(protein, seq)
        if known != seq:
            raise DataError(
                f"protein {protein!r} appears again with a different sequence",
                path=path,
                line=line,
            )
        self.listed[split] = self.listed.get(split, 0) + len(marked)
        residues, n = self.residues, len(seq)
        positives: set[int] = set()
        for pos in marked:
            if pos > n:
                msg = f"site {pos} of {protein!r} lies beyond the protein end (length {n})"
                self.problem("bad_sites", msg, path, line, protein_id=protein, position=pos, length=n)
            elif seq[pos - 1] not in residues:
                msg = f"site {pos} of {protein!r} is {seq[pos - 1]!r}, not a target residue ({residues})"
                self.problem(
                    "off_target_sites",
                    msg,
                    path,
                    line,
                    protein_id=protein,
                    position=pos,
                    residue=seq[pos - 1],
                )
            else:
                positives.add(pos)
        origin, width = f"{path}:{line}", self.window
        candidates = [match.start() + 1 for match in self._candidate.finditer(seq)]
        for pos, window in zip(candidates, windows_at(seq, candidates, width), strict=True):
            self.rows.add(protein, pos, window, int(pos in positives), split, origin)

    def table(self) -> SiteTable:
        if self.on_bad_site == "warn":
            for kind, what in self.KINDS.items():
                store = self.problems[kind]
                if not store:
                    continue
                shown = "; ".join(
                    f"{d['origin']} {d['protein_id']} {d.get('position', d.get('token'))}" for d in store[:5]
                )
                more = f" (+{len(store) - 5} more)" if len(store) > 5 else ""
                warnings.warn(
                    f"dropped {len(store)} marked site(s) {what}: {shown}{more}",
                    UserWarning,
                    stacklevel=3,
                )
        meta: dict[str, object] = {**self.problems, "listed_sites": self.listed}
        return self.rows.table(self.proteins, meta)


#: K2 style: ``>sp|P0A901|<TAB>#37<TAB>#70`` (id, then '#position' tokens).
SITES_HEADER = r"(?:[A-Za-z]+\|)?(?P<id>[^|\s#]+)\|?(?P<sites>(?:\s.*)?)"
#: MusiteDeep style: ``>sp|P12345|NAME desc`` or ``>P12345 desc`` (id only).
ID_HEADER = r"(?:[A-Za-z]+\|)?(?P<id>[^|\s]+)(?:[|\s].*)?"


class ProteinSitesConfig(_ProteinConfig):
    header: str = Field(
        SITES_HEADER,
        description="regex with named groups id and sites (whitespace-separated '#pos' "
        "tokens), matched against the whole header",
    )

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        compile_header(value, required=("id", "sites"))
        return value


@register.reader("protein_sites")
class ProteinSites(Reader):
    """Whole proteins; the header lists 1-based positive positions after '#' (K2)."""

    Config = ProteinSitesConfig
    requires = ("residues",)
    cuts_windows = True
    default_window = 33

    @classmethod
    def sniff(cls, path: Path) -> int:
        """2 when the first header carries '#position' tokens (K2 style), else 0."""
        header = first_header(path)
        return 2 if header and any(site_token(t) for t in header.split()) else 0

    def read(self, context: ReadContext) -> SiteTable:
        cfg: ProteinSitesConfig = self.config  # type: ignore[assignment]
        pattern = compile_header(cfg.header, required=("id", "sites"))
        sites = _Sites(cfg, context, context.window or self.default_window or 33)
        for split, name in cfg.files.items():
            path = context.resolve(name)
            for rec in iter_fasta(path, PROTEIN_LETTERS):
                match = header_match(pattern, rec.header, path, rec.line)
                protein = match.group("id")
                marked = []
                for token in match.group("sites").split():
                    position = site_token(token)
                    if position is not None:
                        marked.append(position)
                        continue
                    msg = f"site {token!r} of {protein!r} is not '#' and a 1-based position"
                    sites.problem("malformed_sites", msg, path, rec.line, protein_id=protein, token=token)
                marked = sorted(set(marked))
                sites.add(protein, rec.sequence, marked, split, path, rec.line)
        return sites.table()


class MusiteFastaConfig(_ProteinConfig):
    header: str = Field(
        ID_HEADER, description="regex with a named group id, matched against the whole header"
    )

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        compile_header(value, required=("id",))
        return value


@register.reader("musite_fasta")
class MusiteFasta(Reader):
    """Whole proteins with '#' after each modified residue (MusiteDeep), e.g. ``MKS#LLK#``."""

    Config = MusiteFastaConfig
    requires = ("residues",)
    cuts_windows = True
    default_window = 33

    @classmethod
    def sniff(cls, path: Path) -> int:
        """1 for any FASTA file (sites marked by '#' in the sequence, or none marked)."""
        return 1 if first_header(path) is not None else 0

    def read(self, context: ReadContext) -> SiteTable:
        cfg: MusiteFastaConfig = self.config  # type: ignore[assignment]
        pattern = compile_header(cfg.header, required=("id",))
        sites = _Sites(cfg, context, context.window or self.default_window or 33)
        allowed = PROTEIN_LETTERS | {"#"}
        for split, name in cfg.files.items():
            path = context.resolve(name)
            for rec in iter_fasta(path, allowed):
                match = header_match(pattern, rec.header, path, rec.line)
                try:
                    seq, marked = parse_marks(rec.sequence)
                except MisplacedMark as exc:
                    raise DataError(
                        f"'#' at sequence index {exc.index} does not follow a residue",
                        path=path,
                        line=rec.line,
                    ) from None
                sites.add(match.group("id"), seq, marked, split, path, rec.line)
        return sites.table()
