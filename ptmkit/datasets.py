"""Turning a recipe's data source (catalogue name or reader mapping) into a SiteTable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from pydantic import ValidationError

from . import catalog
from .errors import PtmkitError, RecipeError
from .hooks import get_registry
from .sitetable import SiteTable
from .splits import apply_split_file, assign_splits, dedupe_splits, warn_label_conflicts

if TYPE_CHECKING:
    from .recipe import Recipe

#: Environment variable naming the data root (the folder that holds ``uniptms/``).
DATA_ENV = "PTMKIT_DATA"


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """Data root: the explicit argument, else ``$PTMKIT_DATA``, else the user cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_cache_path("ptmkit") / "data"


@dataclass
class DatasetInfo:
    """What is known about a loaded source beyond its rows (the paper's numbers if any)."""

    name: str
    ptm: str
    residues: str
    window: int
    paper: dict | None = None


def load_source(
    source: str | Mapping[str, object],
    *,
    base_dir: Path,
    data_root: Path,
    window: int | None = None,
    task: str | None = None,
    on_bad_site: str | None = None,
    where: str = "data.source",
) -> tuple[SiteTable, DatasetInfo]:
    """Read a catalogue dataset (``"uniptms:H1"``) or a reader mapping into a SiteTable.

    A mapping may carry ``name:`` (the dataset tag, see :func:`source_name`), ``ptm:`` and
    ``residues:`` besides the reader's own config.

    ``window`` is passed to readers that cut windows themselves and centre-crops the others.
    ``task`` overrides the task column (default: the PTM name). ``on_bad_site`` overrides that
    option for readers that have it (the data check uses ``"warn"`` to report, not fail).
    ``where`` is the recipe key path used in configuration errors.
    """
    if isinstance(source, str):
        if not catalog.is_catalog_name(source):
            raise RecipeError(
                f"{where}: {source!r} is not a catalogue name (like 'uniptms:H1'); give a "
                "catalogue name or a mapping with a 'reader' key"
            )
        entry = catalog.get(source)
        base = Path(data_root) / catalog.COLLECTION
        _require_files(entry, base, data_root)
        settings: dict[str, object] = dict(entry.config)
        reader_name, name, ptm, residues = entry.reader, entry.name, entry.ptm, entry.residues
        paper: dict | None = entry.paper()
    elif isinstance(source, Mapping):
        settings = dict(source)
        reader_name = settings.pop("reader", None)
        if not isinstance(reader_name, str):
            raise RecipeError(f"{where}.reader: Field required (the name of a reader plugin)")
        ptm = str(settings.pop("ptm", settings.get("task", "ptm")))
        residues = str(settings.pop("residues", "") or "")
        name = source_name(reader_name, settings.pop("name", None), settings, where)
        base, paper = Path(base_dir), None
    else:
        raise RecipeError(f"{where}: expected a catalogue name or a mapping, got {source!r}")

    spec = get_registry().get("reader", reader_name)
    fields = spec.obj.Config.model_fields
    crop = None
    if "residues" in fields and residues:
        settings.setdefault("residues", residues)
    if "task" in fields:
        settings["task"] = task or settings.get("task") or ptm
    if "window" in fields:
        if window is not None:
            settings["window"] = window
    elif "window" in settings:  # a mapping may ask fragment readers for a crop
        crop = settings.pop("window")
    if on_bad_site is not None and "on_bad_site" in fields:
        settings["on_bad_site"] = on_bad_site
    try:
        config = spec.obj.Config(**settings)
    except ValidationError as exc:
        raise RecipeError(_format_validation(exc, where)) from None

    table = spec.obj(config).read(base)
    if task and "task" not in fields:
        table.frame["task"] = task
    table = _apply_window(table, window if window is not None else crop, name)
    if not residues:
        residues = "".join(sorted(set(table.frame["residue"].unique())))
    info = DatasetInfo(name=name, ptm=ptm, residues=residues, window=table.width, paper=paper)
    return table, info


def source_name(reader: str, name: object, settings: Mapping[str, object], where: str) -> str:
    """The dataset tag of a reader mapping: its ``name:``, else ``reader:<stem of its first file>``.

    Runs are tagged and compared by this name, so two file sources read by one reader must not
    both be called ``csv_sites``.
    """
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise RecipeError(f"{where}.name: expected a non-empty dataset name (got {name!r})")
        return name.strip()
    files = settings.get("files")
    first = next(iter(files.values()), None) if isinstance(files, Mapping) and files else None
    first = first if first is not None else settings.get("positive")
    if not isinstance(first, str | Path):
        return reader
    stem = Path(first).name.removesuffix(".gz")
    return f"{reader}:{Path(stem).stem or stem}"


def _require_files(entry: catalog.Dataset, base: Path, data_root: Path) -> None:
    for rel in entry.files:
        if not (base / rel).is_file():
            raise PtmkitError(
                f"{entry.name}: file {base / rel} is missing. Run `ptmkit data fetch "
                f"{entry.name}` to download it, or point PTMKIT_DATA / --data-root at a folder "
                f"holding {catalog.COLLECTION}/{rel} (data root now: {data_root})"
            )


def _apply_window(table: SiteTable, window: object, name: str) -> SiteTable:
    """Centre-crop fragment windows; a wider window than the file holds cannot be made up."""
    if window is None or not len(table):
        return table
    if not isinstance(window, int) or isinstance(window, bool) or window < 1 or window % 2 == 0:
        raise PtmkitError(f"window must be an odd positive width, got {window!r}")
    if window > table.width:
        raise PtmkitError(
            f"{name}: window {window} is wider than the {table.width}-residue fragments the "
            f"files hold; choose a window of at most {table.width}"
        )
    return table.crop(window)


def _format_validation(exc: ValidationError, where: str) -> str:
    """``data.source.files: Field required; ...`` from a pydantic error."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (where, *err["loc"]))
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def prepare_data(recipe: Recipe, data_root: Path) -> tuple[SiteTable, DatasetInfo]:
    """Read the source, filter residues, assign seeded stratified splits (or a saved split file).

    ``data.split.group``/``dedupe`` and windows labelled both ways in training rows are reported
    as warnings (the CLI prints them as ``warning: ...``), never silently.
    """
    data = recipe.data
    table, info = load_source(data.source, base_dir=recipe.base_dir, data_root=data_root, window=data.window)
    if data.residues:
        keep = table.frame["residue"].isin(list(data.residues)).to_numpy()
        table = table.subset(keep)
        if not len(table):
            raise PtmkitError(f"data.residues={data.residues!r} keeps no site of {info.name}")
    split = data.split
    if split.file:
        table = apply_split_file(table, (recipe.base_dir / split.file).resolve(), dedupe=split.dedupe)
    else:
        table = assign_splits(table, valid=split.valid, test=split.test, seed=split.seed, group=split.group)
    if split.dedupe:
        table = dedupe_splits(table)
    warn_label_conflicts(table)
    return table, info
