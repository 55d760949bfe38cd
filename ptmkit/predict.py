"""Whole-protein scanning: FASTA in, a long site table (and optional plots) out, for many models.

Every residue of each model's target type in every protein is scored once. The FASTA is read
as a stream and scanned in protein batches of about ``batch_size`` candidate sites, so memory
stays bounded on proteome-sized inputs and rows are written as they are produced. Within a
batch, models that share a window width share the candidate rows, and each feature (by cache
key plus fitted-state digest) is encoded once for all of them.

Proteins are read as the protein readers read them (:mod:`ptmkit.fasta`, windows cut by
:func:`ptmkit.sitetable.windows_at`) and accepted with the same letters: the 20 standard amino
acids and the non-standard B, Z, J, U, O, X. So ``ptmkit predict`` and ``ptmkit evaluate`` (and
training) score the same candidate sites of a protein, with the same scores
(:func:`ptmkit.inference.infer`).

Proteins that cannot be scanned are never dropped silently: empty records, records with letters
outside that alphabet ('*', '-', digits ...), duplicate ids, badly placed '#' marks and proteins
shorter than a model's window each get a warning naming the file and the header line, and are
counted in the summary and listed in the sidecar JSON.
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__, distributed
from .alphabet import NONSTANDARD, PROTEIN_LETTERS, STANDARD
from .errors import DataError, PtmkitError
from .fasta import MisplacedMark, iter_records, parse_marks, site_token
from .featurize import encode_all, padding_mask
from .inference import Encoded, encode, infer
from .outputs import atomic_open, check_output, check_plot_dir, is_special, write_text
from .package import LoadedModel
from .sitetable import COLUMNS as TABLE_COLUMNS
from .sitetable import SiteTable, windows_at
from .textio import check_input, open_binary
from .thresholds import DEFAULT_RULE, RULES
from .units import own_windows

#: Columns of the output table, in order (``known`` is appended with ``--known-sites``).
COLUMNS = ["protein_id", "position", "residue", "ptm_type", "score", "call", "model"]
#: Per-protein warnings printed before the rest go to the sidecar JSON only.
MAX_WARNINGS = 20
#: UniProt ``sp|ACC|NAME ...`` -> ACC; otherwise the first word (up to '|', space or '#').
_ID = re.compile(r"(?:[A-Za-z]+\|)?(?P<id>[^|\s#]+)")
REASONS = {
    "empty": "empty sequence",
    "invalid-letter": "letter outside the protein alphabet",
    "too-short": "shorter than the window",
    "duplicate": "duplicate protein id",
    "malformed": "malformed record",
}


@dataclass(slots=True)
class Protein:
    protein_id: str
    sequence: str
    origin: str  # file:line of the header
    known: tuple[int, ...] = ()  # 1-based positions marked in the input ('#' or '#pos' headers)


@dataclass(slots=True)
class Skipped:
    protein_id: str
    origin: str
    reason: str  # a key of REASONS
    detail: str
    model: str | None = None  # set when only this model skipped the protein

    def message(self) -> str:
        who = f"not scanned by model {self.model}" if self.model else "skipped"
        return f"{self.origin}: protein {self.protein_id!r} {who}: {self.detail}"


# ---------------------------------------------------------------------------- reading
def count_records(path: Path) -> int | None:
    """Number of '>' header lines (a fast binary pass) for the progress bar's total."""
    if not path.is_file():
        return None  # a FIFO or /dev/stdin can be read only once: by read_fasta
    try:
        n, last = 0, b"\n"
        with open_binary(path) as fh:  # gzip by its magic bytes, as read_fasta reads it
            for block in iter(lambda: fh.read(1 << 22), b""):
                n += block.count(b"\n>") + (last == b"\n" and block[:1] == b">")
                last = block[-1:]
        return n
    except (OSError, EOFError, zlib.error, DataError):
        return None  # read_fasta reports the problem with its line


class ProteinChecker:
    """Turns raw records into ``Protein`` or ``Skipped`` (shared by the FASTA and DataFrame paths)."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def check(
        self, protein_id: str | None, parts: list[tuple[int, str]], origin: str, rest: str
    ) -> Protein | Skipped:
        """Validate one record; ``rest`` is the header after the id (where '#pos' marks may be)."""
        if not protein_id:
            return Skipped("?", origin, "malformed", "the header holds no protein id")
        if protein_id in self.seen:
            return Skipped(protein_id, origin, "duplicate", f"id already read at {self.seen[protein_id]}")
        self.seen[protein_id] = origin
        known = [p for p in map(site_token, rest.split()) if p is not None]
        seq = "".join("".join(p.split()) for _, p in parts).upper()
        try:  # MusiteDeep style: '#' right after each modified residue
            seq, marked = parse_marks(seq)
        except MisplacedMark as exc:
            return Skipped(protein_id, origin, "malformed", str(exc))
        known += marked
        if not seq:
            return Skipped(protein_id, origin, "empty", "the record has no sequence")
        if not PROTEIN_LETTERS.issuperset(seq):
            return Skipped(protein_id, origin, "invalid-letter", _bad_letter(parts))
        return Protein(protein_id, seq, origin, tuple(sorted(set(known))))


def _bad_letter(parts: list[tuple[int, str]]) -> str:
    residue = 0
    for line, text in parts:
        for char in "".join(text.split()).upper():
            if char == "#":
                continue
            residue += 1
            if char not in PROTEIN_LETTERS:
                where = f" (line {line})" if line else ""
                return (
                    f"letter {char!r} at residue {residue}{where} is not an amino acid; valid are the 20 "
                    f"standard amino acids {STANDARD} and non-standard {NONSTANDARD}"
                )
    return "letters outside the protein alphabet"  # pragma: no cover - called only when one exists


def read_fasta(path: Path) -> Iterator[Protein | Skipped]:
    """Stream a FASTA file (plain or gzip; wrapped lines, CRLF, blank lines and lowercase accepted)."""
    checker = ProteinChecker()
    # records via ptmkit.fasta (lines via ptmkit.textio: gzip by magic bytes; a directory or
    # non-UTF-8 bytes -> file:line), as the protein readers read them
    for record in iter_records(
        path,
        empty="no '>' header line found (is this a FASTA file?)",
        before_header="sequence line before any '>' header line (is this FASTA?)",
    ):
        header = record.header.strip()
        match = _ID.match(header)
        yield checker.check(
            match.group("id") if match else None,
            record.parts,
            f"{path}:{record.line}",
            header[match.end() if match else 0 :],
        )


# ---------------------------------------------------------------------------- scanning
def central(window: int, width: int) -> torch.Tensor:
    """bool [window]: the ``width`` positions around the centre (what a narrower task saw)."""
    offset = torch.arange(window) - window // 2
    return offset.abs() <= width // 2


@dataclass
class ScanModel:
    """A loaded model as used in one scan: its output label and the cut-off in force."""

    model: LoadedModel
    label: str
    rule: str
    #: the cut-off per task of ``model.tasks`` (one for a one-task model)
    thresholds: list[float]

    @property
    def threshold(self) -> float:
        """The cut-off of a one-task model (a multi-task model has one per task: ``thresholds``)."""
        return self.thresholds[0]

    def track(self, task: int) -> str:
        """The ``ptm_type`` of the rows of ``model.tasks[task]``: the PTM, or the task's name."""
        return self.model.tasks[task].name if self.model.multitask else self.model.ptm


def scan_models(
    models: list[LoadedModel], *, rule: str | None = None, threshold: float | None = None
) -> list[ScanModel]:
    """Labels (recipe names, numbered when two coincide) and thresholds of the models."""
    if threshold is not None and rule is not None:
        raise PtmkitError("give either a threshold rule or a threshold value, not both")
    if rule is not None and rule not in RULES:
        raise PtmkitError(f"unknown threshold rule {rule!r}; choose one of {', '.join(RULES)}")
    names = [m.name for m in models]
    out = []
    for i, m in enumerate(models):
        label = m.name if names.count(m.name) == 1 else f"{m.name}-{i + 1}"
        if threshold is not None:
            out.append(ScanModel(m, label, "user", [float(threshold)] * len(m.tasks)))
        else:
            chosen = rule or DEFAULT_RULE
            out.append(ScanModel(m, label, chosen, [t.threshold(chosen, m.ref) for t in m.tasks]))
    return out


class Scanner:
    """Scores protein batches with several models, sharing windows and feature encodings."""

    def __init__(self, models: list[ScanModel], batch_size: int = 2048) -> None:
        if not models:
            raise PtmkitError("no model to scan with")
        self.models = models
        self.batch_size = batch_size
        self.groups: dict[int, list[int]] = {}
        for i, m in enumerate(models):
            # a protein-mode model cuts its own units from the proteins: no window to fill
            self.groups.setdefault(1 if m.model.recipe.data.units else m.model.window, []).append(i)
        self.residues = {
            w: "".join(sorted({r for i in idx for r in models[i].model.residues}))
            for w, idx in self.groups.items()
        }
        self._pattern = {w: re.compile(f"[{res}]") for w, res in self.residues.items()}
        self.min_window = min(self.groups)
        self.encoded = 0  # feature encodings computed ...
        self.reused = 0  # ... and served from another model's encoding
        self.encode_seconds = 0.0
        self.model_seconds = 0.0

    def cost(self, protein: Protein) -> int:
        """Candidate rows this protein adds to a batch (over all window groups)."""
        return sum(sum(protein.sequence.count(r) for r in res) for res in self.residues.values())

    def skip_too_short(self, protein: Protein) -> Skipped | None:
        """A protein shorter than every model's window is skipped whole."""
        if len(protein.sequence) >= self.min_window:
            return None
        windows = sorted(self.groups)
        what = f"the window {windows[0]}" if len(windows) == 1 else f"every model's window ({windows})"
        return Skipped(
            protein.protein_id,
            protein.origin,
            "too-short",
            f"length {len(protein.sequence)} is shorter than {what}",
        )

    def scan(self, proteins: list[Protein]) -> tuple[pd.DataFrame, list[Skipped]]:
        """Rows for every (protein, model, candidate position), ordered protein, model, position."""
        frames: list[pd.DataFrame] = []
        skipped: list[Skipped] = []
        for width, indices in self.groups.items():
            eligible = []
            for k, p in enumerate(proteins):
                if len(p.sequence) < width:
                    for i in indices:
                        detail = f"length {len(p.sequence)} is shorter than its window {width}"
                        skipped.append(
                            Skipped(p.protein_id, p.origin, "too-short", detail, self.models[i].label)
                        )
                else:
                    eligible.append((k, p))
            table, index = self._rows(eligible, width)
            if not len(table):
                continue
            mask = padding_mask(table)
            residues = table.frame["residue"].to_numpy()
            cache: dict[str, torch.Tensor] = {}
            for i in indices:
                scan_model = self.models[i]
                model = scan_model.model
                keep = np.isin(residues, list(model.residues))
                if not keep.any():
                    continue
                rows = None if keep.all() else torch.from_numpy(np.nonzero(keep)[0])
                if model.recipe.data.units is not None:
                    t0 = time.perf_counter()
                    scores = self._score_units(model, table.subset(keep))
                    self.model_seconds += time.perf_counter() - t0
                    self.encoded += len(model.features)
                else:
                    tensors = {}
                    for name, feature in model.features.items():
                        key = model.feature_keys[name]
                        if key in cache:
                            self.reused += 1
                        else:
                            t0 = time.perf_counter()
                            cache[key] = encode_all({name: feature}, table, progress=False)[name]
                            self.encode_seconds += time.perf_counter() - t0
                            self.encoded += 1
                        tensors[name] = cache[key]
                    t0 = time.perf_counter()
                    scores = self._score(
                        model, tensors, mask if rows is None else mask[rows], rows, residues[keep]
                    )
                    self.model_seconds += time.perf_counter() - t0
                kept = table.frame.loc[keep, ["protein_id", "position", "residue"]].reset_index(drop=True)
                kept_residues, kept_protein = residues[keep], index[keep]
                for j, task in enumerate(model.tasks):
                    mine = np.isin(kept_residues, list(task.residues))
                    if not mine.any():
                        continue
                    part = kept[mine].reset_index(drop=True)
                    part["ptm_type"] = scan_model.track(j)
                    part["score"] = scores[j][mine].astype(np.float64)
                    part["call"] = (part["score"].to_numpy() >= scan_model.thresholds[j]).astype(np.int64)
                    part["model"] = scan_model.label
                    part["_protein"] = kept_protein[mine]
                    part["_model"] = i
                    part["_task"] = j
                    frames.append(part)
        if not frames:
            return pd.DataFrame(columns=[*COLUMNS, "_protein", "_model", "_task"]), skipped
        out = pd.concat(frames, ignore_index=True)
        order = ["_protein", "_model", "_task", "position"]
        out = out.sort_values(order, kind="mergesort").reset_index(drop=True)
        return out, skipped

    def _score(
        self,
        model: LoadedModel,
        tensors: dict[str, torch.Tensor],
        mask: torch.Tensor,
        rows: torch.Tensor | None,
        residues: np.ndarray,
    ) -> list[np.ndarray]:
        """Each task's scores of the rows (a view of this model's residues in the shared
        encodings: no copy of them). One pass scores every task at once ([n, T]); a task trained
        on narrower, padded fragments gets a pass with its windows masked to its own width. A
        task-conditioned model (per-task prompts) scores each task's residues in a pass of its
        own (NaN at the other rows, which that task does not score)."""
        widths: dict[int, list[int]] = {}
        for j, task in enumerate(model.tasks):
            widths.setdefault(model.trained_width(task), []).append(j)
        out: list[np.ndarray] = [np.empty(0)] * len(model.tasks)
        conditioned = model.model.reads_task  # per-task prompts: one pass per task
        for width, tasks in widths.items():
            keep = mask if width == model.window else mask & central(model.window, width)
            if conditioned:
                everything = torch.arange(len(keep)) if rows is None else rows
                for j in tasks:
                    sel = np.isin(residues, list(model.tasks[j].residues))
                    out[j] = np.full(len(keep), np.nan, dtype=np.float32)
                    if not sel.any():
                        continue
                    pick = torch.from_numpy(np.nonzero(sel)[0])
                    task = torch.full((len(pick),), j, dtype=torch.long)
                    rows_j = Encoded(tensors, keep[pick], index=everything[pick], task=task)
                    out[j][sel] = infer(model.model, rows_j, batch_size=self.batch_size).scores
                continue
            scores = infer(model.model, Encoded(tensors, keep, index=rows), batch_size=self.batch_size).scores
            scores = scores.reshape(len(scores), -1)
            for j in tasks:
                out[j] = scores[:, j]
        return out

    def _score_units(self, model: LoadedModel, rows: SiteTable) -> list[np.ndarray]:
        """Each task's scores of ``rows`` from a protein-mode model: one pass over the proteins'
        units scores every task read from whole proteins; a task trained on fragments
        (``windowed``) is read from its own windows, cut at its width and padded to the model's,
        as it was trained. (Feature time is counted in model time here: units are encoded per
        model.)"""
        units = model.recipe.data.units
        assert units is not None
        conditioned = model.model.reads_task  # per-task prompts: each task's rows on its own units
        # a group: (None: protein units, or a width: windows of it; a task index when conditioned)
        groups: dict[tuple[int | None, int | None], list[int]] = {}
        for j, task in enumerate(model.tasks):
            key = (model.trained_width(task) if task.windowed else None, j if conditioned else None)
            groups.setdefault(key, []).append(j)
        residues = rows.frame["residue"].to_numpy()
        names = [t.name for t in model.tasks]
        parts, windowed, spans = [], [], {}
        start = 0
        for (width, only), tasks in groups.items():
            keep = np.isin(residues, list({r for j in tasks for r in model.tasks[j].residues}))
            mine = np.nonzero(keep)[0]
            part = rows.subset(keep)
            if width is not None:
                part = own_windows(part, width, model.window)
            if only is not None:
                part = SiteTable(part.frame.assign(task=names[only]), part.proteins, part.meta)
            parts.append(part)
            windowed.append(np.full(len(part), width is not None))
            spans[width, only] = (start, mine)
            start += len(part)
        combined = parts[0]
        for more in parts[1:]:
            combined = combined.concat(more)
        encoded = encode(
            model.features,
            combined,
            tasks=names if conditioned else None,
            protein=units,
            windowed=np.concatenate(windowed),
            per_task=conditioned,
        )
        scores = infer(model.model, encoded).scores
        scores = scores.reshape(len(scores), -1)
        out: list[np.ndarray] = [np.empty(0)] * len(model.tasks)
        for key, tasks in groups.items():
            lo, mine = spans[key]
            for j in tasks:
                out[j] = np.full(len(rows), np.nan, dtype=np.float32)
                out[j][mine] = scores[lo : lo + len(mine), 0 if conditioned else j]
        return out

    def _rows(self, eligible: list[tuple[int, Protein]], width: int) -> tuple[SiteTable, np.ndarray]:
        """Candidate rows of one window group as a SiteTable (windows cut by ``windows_at``, as
        the protein readers cut them), and the batch index of each row's protein."""
        half = width // 2
        pattern = self._pattern[width]
        ids: list[str] = []
        positions: list[int] = []
        windows: list[str] = []
        origins: list[str] = []
        owner: list[int] = []
        for k, p in eligible:
            found = [hit.start() + 1 for hit in pattern.finditer(p.sequence)]
            if not found:
                continue
            windows += windows_at(p.sequence, found, width)
            positions += found
            ids += [p.protein_id] * len(found)
            origins += [p.origin] * len(found)
            owner += [k] * len(found)
        frame = pd.DataFrame(
            {
                "protein_id": ids,
                "position": pd.array(positions, dtype="Int64"),
                "residue": [w[half] for w in windows],
                "window": windows,
                "label": np.zeros(len(ids), dtype=np.int64),
                "task": "predict",
                "split": "unsplit",
                "origin": origins,
            },
            columns=TABLE_COLUMNS,
        )
        proteins = {p.protein_id: p.sequence for _, p in eligible}
        return SiteTable(frame, proteins), np.asarray(owner, dtype=np.int64)


def batches(
    records: Iterable[Protein | Skipped], scanner: Scanner, batch_size: int
) -> Iterator[tuple[list[Protein], list[Skipped]]]:
    """Group the stream into protein batches of about ``batch_size`` candidate rows each."""
    proteins: list[Protein] = []
    skipped: list[Skipped] = []
    budget = 0
    for record in records:
        if isinstance(record, Protein):
            short = scanner.skip_too_short(record)
            if short is not None:
                skipped.append(short)
                continue
            proteins.append(record)
            budget += scanner.cost(record)
        else:
            skipped.append(record)
        if budget >= batch_size:
            yield proteins, skipped
            proteins, skipped, budget = [], [], 0
    if proteins or skipped:
        yield proteins, skipped


# ---------------------------------------------------------------------------- output
@dataclass
class PredictSummary:
    """What a scan did: counts per skip reason, sites and calls per model, speed, outputs."""

    output: Path
    sidecar: Path | None
    models: list[dict[str, Any]]
    proteins_read: int = 0
    proteins_scanned: int = 0
    no_candidates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    partial: Counter[str] = field(default_factory=Counter)
    sites: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    known_marked: int = 0
    known_candidates: Counter[str] = field(default_factory=Counter)
    known_called: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    plots: list[str] = field(default_factory=list)
    plot_limit: int = 0
    plottable: int = 0
    feature_encodings: dict[str, Any] = field(default_factory=dict)

    @property
    def total_sites(self) -> int:
        return sum(self.sites.values())

    def render(self) -> str:
        n_skip = sum(self.skipped.values())
        rate = self.total_sites / max(self.seconds, 1e-9)
        lines = [
            f"scanned {self.proteins_scanned} of {self.proteins_read} proteins, {self.total_sites} sites in "
            f"{self.seconds:.1f} s ({self.proteins_scanned / max(self.seconds, 1e-9):.1f} proteins/s, "
            f"{rate:.0f} sites/s)"
        ]
        for m in self.models:
            label = m["label"]
            if "tasks" in m:  # a multi-task model: one threshold per task
                cuts = ", ".join(f"{t['name']} {t['threshold']:.4f}" for t in m["tasks"])
                at = f"{m['rule']} thresholds per task ({cuts})"
            else:
                at = f"{m['rule']} threshold {m['threshold']:.4f}"
            line = (
                f"  {label}: {m['ptm_type']} ({m['residues']}), {self.sites[label]} sites, "
                f"{self.calls[label]} called at {at}"
            )
            if self.known_candidates[label]:
                line += f"; known sites called {self.known_called[label]}/{self.known_candidates[label]}"
            lines.append(line)
        if n_skip:
            why = ", ".join(f"{n} {REASONS[r]}" for r, n in self.skipped.most_common())
            lines.append(f"skipped {n_skip} protein(s): {why} (each listed in {self.sidecar})")
        else:
            lines.append("skipped no protein")
        if self.partial:
            why = ", ".join(f"{n} by {label}" for label, n in self.partial.most_common())
            lines.append(f"not scanned by some models (shorter than their window): {why}")
        if self.no_candidates:
            lines.append(f"{self.no_candidates} protein(s) have no candidate residue of any model (no rows)")
        if self.plot_limit:
            lines.append(
                f"plotted {len(self.plots)} of {self.plottable} scanned protein(s) "
                f"(at most {self.plot_limit}: --plot-max)"
            )
        meta = self.sidecar or "none (the output is a special file)"
        lines.append(f"sites: {self.output}   metadata: {meta}")
        return "\n".join(lines)


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def _header_lines(models: list[ScanModel], fasta: str) -> list[str]:
    lines = []
    for m in models:
        meta = m.model
        for j, task in enumerate(meta.tasks):
            lines.append(
                f"# ptmkit predict: model={m.label}, ref={meta.ref}, ptm_type={m.track(j)}, "
                f"residues={task.residues}, window={meta.window}, rule={m.rule}, "
                f"threshold={m.thresholds[j]:.6f}"
            )
    lines.append(
        f"# ptmkit {__version__}: input={fasta}; position is 1-based; call = 1 when score >= threshold "
        "(on the unrounded score)"
    )
    return lines


def predict_file(
    models: list[LoadedModel],
    fasta: Path,
    output: Path,
    *,
    rule: str | None = None,
    threshold: float | None = None,
    plot_dir: Path | None = None,
    plot_max: int = 50,
    batch_size: int = 2048,
    known_sites: bool = False,
    progress: bool = True,
) -> PredictSummary:
    """Scan every protein of ``fasta`` with every model; write the TSV, its sidecar JSON, plots.

    Under torchrun (``ptmkit.distributed``) each rank scans a length-balanced share of the
    proteins into its own part beside ``output``; rank 0 then merges the parts into the one
    table a single process writes (rows in input order) and the sidecar, and removes the parts.
    """
    started = time.perf_counter()
    world = distributed.world()
    check_input(fasta)  # a directory or a missing FASTA is refused before any output is touched
    scan = scan_models(models, rule=rule, threshold=threshold)
    scanner = Scanner(scan, batch_size)
    output = check_output(output, "-o")
    if world.active and is_special(output):
        raise PtmkitError(
            f"-o {output}: under torchrun the output must be a file (each rank writes a part beside it)"
        )
    sidecar = None if is_special(output) else check_output(sidecar_path(output), "sidecar")
    summary = PredictSummary(
        output=output,
        sidecar=sidecar,
        models=[_model_info(m) for m in scan],
        plot_limit=plot_max if plot_dir else 0,
    )
    if plot_dir:
        check_plot_dir(plot_dir)
    columns = [*COLUMNS, *(["known"] if known_sites else [])]
    records, where = _my_records(fasta, world)
    skipped_all: list[dict[str, Any]] = []
    warned = 0
    bar = tqdm(
        total=count_records(fasta) if where is None else len(where),
        desc="scanning",
        unit="protein",
        disable=not progress or not world.main,
        smoothing=0.1,
    )
    target = part_path(output, world) if world.active else output
    plots_here = -(-plot_max // world.size)  # each rank draws its share of the plots
    try:
        with atomic_open(target, "w", newline="") as fh:
            if world.active:  # a part: the columns and each row's protein in input order
                fh.write("\t".join([*columns, ORDER]) + "\n")
            else:
                fh.write("\n".join(_header_lines(scan, str(fasta))) + "\n")
                fh.write("\t".join(columns) + "\n")
            for proteins, skipped in batches(records, scanner, batch_size):
                frame, more = scanner.scan(proteins)
                for item in skipped + more:
                    skipped_all.append(_skip_record(item, where))
                    if item.model:
                        summary.partial[item.model] += 1
                    else:
                        summary.skipped[item.reason] += 1
                    if warned < MAX_WARNINGS:
                        warnings.warn(item.message(), UserWarning, stacklevel=2)
                    elif warned == MAX_WARNINGS:
                        warnings.warn(
                            f"more proteins were skipped; all are listed in {summary.sidecar}",
                            UserWarning,
                            stacklevel=2,
                        )
                    warned += 1
                summary.proteins_read += len(proteins) + len(skipped)
                summary.proteins_scanned += len(proteins)
                _count(summary, proteins, frame)
                if known_sites:
                    frame["known"] = _known_column(proteins, frame)
                if len(frame):
                    written = columns
                    if where is not None:
                        frame[ORDER] = [where[proteins[k].origin] for k in frame["_protein"]]
                        written = [*columns, ORDER]
                    frame[written].to_csv(fh, sep="\t", header=False, index=False, float_format="%.6f")
                if plot_dir:
                    prefix = f"rank{world.rank}_" if world.active else ""
                    _plots(summary, proteins, frame, scan, plot_dir, plots_here, prefix)
                bar.update(len(proteins) + len(skipped))
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{summary.total_sites / elapsed:.0f} sites/s", refresh=False)
    finally:
        bar.close()
    summary.feature_encodings = {
        "computed": scanner.encoded,
        "shared": scanner.reused,
        "encode_seconds": round(scanner.encode_seconds, 3),
        "model_seconds": round(scanner.model_seconds, 3),
    }
    if world.active:
        write_text(
            target.with_suffix(".json"),
            json.dumps({"summary": _summary_counts(summary), "skipped": skipped_all}),
        )
        world.barrier()  # every part is written
        if world.main:
            summary, skipped_all = _merge_parts(summary, scan, fasta, columns, world)
        world.barrier()  # the merged table exists before any rank reports
    summary.seconds = time.perf_counter() - started
    if world.main:
        _write_sidecar(summary, fasta, skipped_all)
    return summary


#: The column of a rank's part that orders its rows among all ranks' (the protein's input index).
ORDER = "_order"
#: Counters of a summary that the ranks' parts add up.
_COUNTS = ("proteins_read", "proteins_scanned", "no_candidates", "known_marked", "plottable")
_COUNTERS = ("skipped", "partial", "sites", "calls", "known_candidates", "known_called")


def _my_records(
    fasta: Path, world: distributed.World
) -> tuple[Iterable[Protein | Skipped], dict[str, int] | None]:
    """This rank's records (all of them, streamed, in one process) and, under torchrun, each
    record's input index by its origin (file:line): the ranks share the proteins by length."""
    if not world.active:
        return read_fasta(fasta), None
    items = list(read_fasta(fasta))
    mine = distributed.my_share([len(x.sequence) if isinstance(x, Protein) else 0 for x in items], world)
    return [items[i] for i in mine], {items[i].origin: i for i in mine}


def part_path(output: Path, world: distributed.World) -> Path:
    """Where rank ``world.rank`` writes its part of ``output`` (beside it: shared by the ranks)."""
    return output.with_name(f".{output.name}.part{world.rank}-of-{world.size}.tsv")


def _summary_counts(summary: PredictSummary) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(summary, k) for k in _COUNTS}
    out.update({k: dict(getattr(summary, k)) for k in _COUNTERS})
    out["plots"] = summary.plots
    out["feature_encodings"] = summary.feature_encodings
    return out


def _merge_parts(
    summary: PredictSummary, scan: list[ScanModel], fasta: Path, columns: list[str], world: distributed.World
) -> tuple[PredictSummary, list[dict[str, Any]]]:
    """Rank 0: every rank's part into the output (rows in input order, as one process writes
    them; values kept as written), their counts into one summary; the parts removed."""
    parts = [part_path(summary.output, distributed.World(r, world.size)) for r in range(world.size)]
    frames = [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False) for p in parts]
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.iloc[np.argsort(merged[ORDER].astype(np.int64).to_numpy(), kind="stable")]
    skipped: list[dict[str, Any]] = []
    out = PredictSummary(summary.output, summary.sidecar, summary.models, plot_limit=summary.plot_limit)
    encodings: Counter[str] = Counter()
    for p in parts:
        data = json.loads(p.with_suffix(".json").read_text())
        counts = data["summary"]
        for k in _COUNTS:
            setattr(out, k, getattr(out, k) + counts[k])
        for k in _COUNTERS:
            getattr(out, k).update(counts[k])
        out.plots.extend(counts["plots"])
        encodings.update(counts["feature_encodings"])
        skipped.extend(data["skipped"])
    out.feature_encodings = {k: round(v, 3) if isinstance(v, float) else v for k, v in encodings.items()}
    skipped.sort(key=lambda item: item.pop(ORDER))
    with atomic_open(summary.output, "w", newline="") as fh:
        fh.write("\n".join(_header_lines(scan, str(fasta))) + "\n")
        merged[columns].to_csv(fh, sep="\t", index=False)
    for p in parts:
        p.unlink()
        p.with_suffix(".json").unlink()
    return out, skipped


def _model_info(m: ScanModel) -> dict[str, Any]:
    meta = m.model.meta
    return {
        "label": m.label,
        "ref": m.model.ref,
        "run_id": meta.get("run_id"),
        "name": m.model.name,
        "dataset": meta.get("dataset"),
        "ptm_type": m.model.ptm,
        "residues": m.model.residues,
        "window": m.model.window,
        "rule": m.rule,
        **(
            {
                "tasks": [
                    {**t.to_json(), "threshold": cut}
                    for t, cut in zip(m.model.tasks, m.thresholds, strict=True)
                ]
            }
            if m.model.multitask
            else {"threshold": m.threshold, "thresholds": m.model.thresholds}
        ),
    }


def _skip_record(item: Skipped, where: dict[str, int] | None = None) -> dict[str, Any]:
    """The sidecar's entry for ``item`` (under torchrun also its record's input index)."""
    out: dict[str, Any] = {
        "protein_id": item.protein_id,
        "origin": item.origin,
        "reason": item.reason,
        "detail": item.detail,
        "model": item.model,
    }
    if where is not None:
        out[ORDER] = where[item.origin]
    return out


def _known_column(proteins: list[Protein], frame: pd.DataFrame) -> np.ndarray:
    if not len(frame):
        return np.zeros(0, dtype=np.int64)
    known = [set(p.known) for p in proteins]
    return np.fromiter(
        (pos in known[k] for k, pos in zip(frame["_protein"], frame["position"], strict=True)),
        dtype=np.int64,
        count=len(frame),
    )


def _count(summary: PredictSummary, proteins: list[Protein], frame: pd.DataFrame) -> None:
    with_rows = set(frame["_protein"].tolist()) if len(frame) else set()
    summary.no_candidates += sum(1 for k in range(len(proteins)) if k not in with_rows)
    if len(frame):
        summary.sites.update(frame["model"].value_counts().to_dict())
        summary.calls.update(frame.loc[frame["call"] == 1, "model"].value_counts().to_dict())
    marked = sum(len(p.known) for p in proteins)
    summary.known_marked += marked
    if marked and len(frame):
        known = _known_column(proteins, frame).astype(bool)
        summary.known_candidates.update(frame.loc[known, "model"].value_counts().to_dict())
        summary.known_called.update(frame.loc[known & (frame["call"] == 1), "model"].value_counts().to_dict())


def _write_sidecar(summary: PredictSummary, fasta: Path, skipped: list[dict[str, Any]]) -> None:
    data = {
        "tool": f"ptmkit {__version__} predict",
        "input": str(fasta),
        "output": str(summary.output),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith(("ptmkit", "cli.py")) else None,
        "columns": COLUMNS,
        "position": "1-based",
        "call": "1 when score >= threshold",
        "models": summary.models,
        "proteins": {
            "read": summary.proteins_read,
            "scanned": summary.proteins_scanned,
            "skipped": dict(summary.skipped),
            "without_candidates": summary.no_candidates,
            "not_scanned_by_model": dict(summary.partial),
        },
        "sites": dict(summary.sites),
        "calls": dict(summary.calls),
        "known_sites": {
            "marked": summary.known_marked,
            "candidates": dict(summary.known_candidates),
            "called": dict(summary.known_called),
        },
        "seconds": round(summary.seconds, 3),
        "sites_per_second": round(summary.total_sites / max(summary.seconds, 1e-9), 1),
        "feature_encodings": summary.feature_encodings,
        "plots": summary.plots,
        "plot_max": summary.plot_limit,
        "skipped": skipped,
    }
    if summary.sidecar is not None:  # none beside a special file such as /dev/null
        write_text(summary.sidecar, json.dumps(data, indent=2))


# ---------------------------------------------------------------------------- plots
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "protein"


def _plots(
    summary: PredictSummary,
    proteins: list[Protein],
    frame: pd.DataFrame,
    scan: list[ScanModel],
    plot_dir: Path,
    plot_max: int,
    prefix: str = "",
) -> None:
    summary.plottable += len(proteins)
    groups = dict(tuple(frame.groupby("_protein", sort=False))) if len(frame) else {}
    for k, protein in enumerate(proteins):
        if len(summary.plots) >= plot_max:
            return
        rows = groups.get(k)
        if rows is None:
            continue
        path = plot_dir / f"{prefix}{len(summary.plots) + 1:04d}_{_safe_name(protein.protein_id)}.png"
        plot_protein(protein, rows, scan, path)
        summary.plots.append(str(path))


def plot_protein(protein: Protein, rows: pd.DataFrame, scan: list[ScanModel], path: Path) -> Path:
    """Score along the sequence, one panel per model and task: threshold line, calls, known
    sites marked.

    The layout follows the UniPTMs case-study figure: stems at every candidate residue, the
    cut-off as a dashed line, and the sites the input annotates as red triangles on top.
    """
    from .plots import plt, save_figure  # pyplot with the Agg backend (no display needed)

    used = [
        (i, j)
        for i, m in enumerate(scan)
        for j in range(len(m.model.tasks))
        if ((rows["_model"] == i) & (rows["_task"] == j)).any()
    ]
    length = len(protein.sequence)
    fig, axes = plt.subplots(
        len(used),
        1,
        figsize=(min(16, max(9, length / 60)), 1.2 + 2.0 * len(used)),
        sharex=True,
        squeeze=False,
    )
    known = np.asarray(protein.known, dtype=int)
    for ax, (i, j) in zip(axes[:, 0], used, strict=True):
        m, cut = scan[i], scan[i].thresholds[j]
        part = rows[(rows["_model"] == i) & (rows["_task"] == j)]
        pos = part["position"].to_numpy(dtype=int)
        score = part["score"].to_numpy(dtype=float)
        called = score >= cut
        ax.vlines(pos, 0, score, color="tab:blue", lw=0.8, alpha=0.7)
        ax.scatter(pos[~called], score[~called], s=10, facecolors="white", edgecolors="tab:blue", zorder=3)
        ax.scatter(
            pos[called], score[called], s=16, color="tab:orange", zorder=4, label=f"called ({called.sum()})"
        )
        ax.axhline(cut, ls="--", color="grey", lw=1, label=f"{m.rule} threshold {cut:.3f}")
        mine = known[np.isin(known, pos)] if len(known) else known
        if len(mine):
            ax.scatter(
                mine,
                np.full(len(mine), 1.05),
                marker="v",
                s=28,
                color="crimson",
                zorder=5,
                label="known site",
            )
            for x in mine:
                ax.axvline(x, color="crimson", lw=0.6, alpha=0.35)
        ax.set_ylim(0, 1.12)
        ax.set_xlim(0, length + 1)
        ax.set_ylabel(f"{m.label}\n{m.track(j)} ({m.model.tasks[j].residues})", fontsize=8)
        ax.grid(alpha=0.25)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel("residue position")
    fig.suptitle(f"{protein.protein_id} ({length} aa)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


# ---------------------------------------------------------------------------- in-memory use
def predict_frame(
    models: list[LoadedModel],
    proteins: pd.DataFrame,
    *,
    rule: str | None = DEFAULT_RULE,
    threshold: float | None = None,
    batch_size: int = 2048,
) -> pd.DataFrame:
    """The long site table for a DataFrame of ``sequence`` (+ optional ``protein_id``) rows.

    Used by the MLflow pyfunc flavour; skipped proteins are reported as warnings.
    """
    if "sequence" not in proteins.columns:
        raise PtmkitError(f"input needs a 'sequence' column; got {list(proteins.columns)}")
    ids = (
        proteins["protein_id"] if "protein_id" in proteins.columns else pd.Series(range(1, len(proteins) + 1))
    )
    checker = ProteinChecker()
    records = [
        checker.check(str(pid), [(0, str(seq) if isinstance(seq, str) else "")], f"input row {n}", "")
        for n, (pid, seq) in enumerate(zip(ids, proteins["sequence"], strict=True), 1)
    ]
    scan = scan_models(models, rule=None if threshold is not None else rule, threshold=threshold)
    scanner = Scanner(scan, batch_size)
    frames = []
    for batch, skipped in batches(records, scanner, batch_size):
        frame, more = scanner.scan(batch)
        for item in skipped + more:
            warnings.warn(item.message(), UserWarning, stacklevel=2)
        frames.append(frame[COLUMNS])
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out["position"] = out["position"].astype("int64")
    return out
