"""Reading a recipe's data source (a dataset preset or a reader mapping) into a split SiteTable."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from .errors import PtmkitError, RecipeError
from .hooks import get_registry
from .plugin_api import ReadContext
from .sitetable import PROTEIN_IDS, SiteTable
from .splits import apply_split_file, assign_splits, dedupe_splits, warn_label_conflicts
from .units import windowed_tasks

if TYPE_CHECKING:
    from .catalog import Dataset
    from .recipe import Recipe, SourceUse

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
    #: per task, in recipe order, for a ``data.tasks`` recipe (empty otherwise)
    tasks: dict[str, DatasetInfo] = field(default_factory=dict)


def load_source(
    source: str | Mapping[str, object],
    *,
    base_dir: Path,
    data_root: Path,
    window: int | None = None,
    on_bad_site: str | None = None,
    where: str = "data.source",
) -> tuple[SiteTable, DatasetInfo]:
    """Resolve a preset name or reader mapping (as a recipe would) and read it: see
    :func:`read_source`. For sources that do not come from a recipe file (the command line)."""
    from .recipe import parse_source

    prefix = tuple(where.split("."))
    use = parse_source(dict(source) if isinstance(source, Mapping) else source, get_registry(), prefix=prefix)
    return read_source(use, base_dir=base_dir, data_root=data_root, window=window, on_bad_site=on_bad_site)


def read_source(
    source: SourceUse,
    *,
    base_dir: Path,
    data_root: Path,
    window: int | None = None,
    residues: str | None = None,
    on_bad_site: str | None = None,
) -> tuple[SiteTable, DatasetInfo]:
    """Read a resolved source into a SiteTable through its reader plugin.

    The reader gets an explicit :class:`ReadContext`: files relative to ``base_dir`` (a preset's
    to ``<data_root>/<collection>``), the task, the target residues (the source's, else
    ``residues``), and the window (``window``, else the source's). Readers that do not cut
    windows themselves are centre-cropped to it. ``on_bad_site="warn"`` asks readers of marked
    proteins to report bad marks instead of failing (the data check).
    """
    preset = source.preset
    if preset is not None:
        base = Path(data_root) / preset.collection
        _require_files(preset, base, data_root)
    else:
        base = Path(base_dir)
    reader = source.reader.spec.obj
    api1 = source.reader.spec.api < 2
    # an API 1 reader with a window field cuts windows itself, as ptmkit then filled that field
    cuts = reader.cuts_windows or (api1 and "window" in reader.Config.model_fields)
    want = window if window is not None else source.window
    context = ReadContext(
        base=base,
        task=source.task,
        residues=source.residues or residues or None,
        window=want if cuts else None,
        on_bad_site=on_bad_site,
    )
    table = _read_api1(source, context) if api1 else source.reader.build().read(context)
    if not cuts:
        table = _apply_window(table, want, source.name)
    found = source.residues or "".join(sorted(set(table.frame["residue"].unique())))
    paper = preset.paper() if preset is not None else None
    info = DatasetInfo(name=source.name, ptm=source.ptm, residues=found, window=table.width, paper=paper)
    return table, info


def _read_api1(source: SourceUse, context: ReadContext) -> SiteTable:
    """A reader of a plugin API 1 package: ``read(base)``, and the context given as the config
    fields of those names it declares (``residues``, ``task``, ``window``, ``on_bad_site``), as
    ptmkit filled them before ``ReadContext`` existed."""
    fields = source.reader.spec.obj.Config.model_fields
    wanted = {
        "residues": context.residues,
        "task": context.task,
        "window": context.window,
        "on_bad_site": context.on_bad_site,
    }
    settings = source.reader.config.model_dump()
    explicit = source.reader.config.model_fields_set
    for key, value in wanted.items():
        if key in fields and value is not None and (key not in explicit or key in ("window", "on_bad_site")):
            settings[key] = value
    config = source.reader.spec.obj.Config(**settings)
    return source.reader.spec.obj(config).read(context.base)


def source_name(reader: str, name: object, settings: Mapping[str, object], where: str) -> str:
    """The dataset tag of a reader mapping: its ``name:``, else ``reader:<stem of its first file>``.

    Runs are tagged and compared by this name, so two file sources read by one reader must not
    both be called ``csv_sites``.
    """
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise RecipeError(f"{where}: expected a non-empty dataset name (got {name!r})")
        return name.strip()
    files = settings.get("files")
    first = next(iter(files.values()), None) if isinstance(files, Mapping) and files else None
    first = first if first is not None else settings.get("positive")
    if not isinstance(first, str | Path):
        return reader
    stem = Path(first).name.removesuffix(".gz")
    return f"{reader}:{Path(stem).stem or stem}"


def _require_files(entry: Dataset, base: Path, data_root: Path) -> None:
    for rel in entry.files:
        if not (base / rel).is_file():
            raise PtmkitError(
                f"{entry.name}: file {base / rel} is missing. Run `ptmkit data fetch "
                f"{entry.name}` to download it, or point PTMKIT_DATA / --data-root at a folder "
                f"holding {entry.collection}/{rel} (data root now: {data_root})"
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


def prepare_data(recipe: Recipe, data_root: Path) -> tuple[SiteTable, DatasetInfo]:
    """Read the source, filter residues, assign seeded stratified splits (or a saved split file).

    ``data.split.group``/``dedupe`` and windows labelled both ways in training rows are reported
    as warnings (the CLI prints them as ``warning: ...``), never silently.

    With ``data.tasks`` every task is read, filtered and split on its own (as its source defines:
    a published test set stays, an unsplit source is carved with the recipe's fractions and
    seed), fitted to the common ``data.window`` (narrower fragments centred and padded) and the
    tasks are stacked in recipe order; ``DatasetInfo.tasks`` then holds each task's info.
    """
    data = recipe.data
    if recipe.tasks:
        tables, infos = [], {}
        for name, source in recipe.tasks.items():
            task = (data.tasks or {})[name]
            split_file = (recipe.base_dir / task.split_file).resolve() if task.split_file else None
            residues = task.residues if task.residues is not None else data.residues
            try:
                table, info = _prepare_source(source, recipe, data_root, residues, split_file, fit=True)
            except PtmkitError as exc:  # say which task: every task is read and split on its own
                raise PtmkitError(f"data.tasks.{name} ({source.name}): {exc}") from None
            present = set(table.frame["split"])
            if not {"train", "valid", "test"} <= present:
                have = ", ".join(f"{k} {v}" for k, v in table.frame["split"].value_counts().items())
                raise PtmkitError(
                    f"data.tasks.{name}: every task needs training, validation and test rows (its "
                    f"thresholds and metrics are its own); {info.name} has {have}"
                )
            tables.append(table)
            infos[name] = info
        table = tables[0]
        for more in tables[1:]:
            table = table.concat(more)
        # a flag every task's reader must agree on (fragment ids are no proteins)
        table.meta[PROTEIN_IDS] = all(t.meta.get(PROTEIN_IDS, True) for t in tables)
        residues = "".join(sorted(set("".join(i.residues for i in infos.values()))))
        names = ", ".join(infos)
        ptms = ", ".join(sorted({i.ptm for i in infos.values()}))
        info = DatasetInfo(name=f"tasks:{names}", ptm=ptms, residues=residues, window=table.width)
        return _check_units(recipe, table), replace(info, tasks=infos)
    if recipe.source is None:
        raise PtmkitError(f"recipe {recipe.name!r} has no resolved source (use ptmkit.recipe.parse)")
    split_file = (recipe.base_dir / data.split.file).resolve() if data.split.file else None
    table, info = _prepare_source(recipe.source, recipe, data_root, data.residues, split_file, fit=False)
    return _check_units(recipe, table), info


def _check_units(recipe: Recipe, table: SiteTable) -> SiteTable:
    """Protein mode needs whole proteins: refused when no row has one; a task of fragments stays
    on its windows (said as a warning)."""
    if recipe.data.units is None:
        return table
    windowed = windowed_tasks(table)
    names = list(recipe.tasks) or [recipe.source.name if recipe.source else "the source"]
    if len(windowed) == len(table.frame["task"].unique()):
        raise PtmkitError(
            f"data.unit: protein runs the model on whole proteins, but {', '.join(names)} hold(s) "
            "fragments only (no protein sequences with site positions); use data.unit: window, or a "
            "source of whole proteins (e.g. the protein_sites or musite_fasta readers)"
        )
    if windowed:
        warnings.warn(
            f"data.unit: protein: task(s) {', '.join(map(str, windowed))} hold fragments, not whole "
            "proteins: they are read from their own windows (in training and in predict)",
            stacklevel=2,
        )
    return table


def _prepare_source(
    source: SourceUse,
    recipe: Recipe,
    data_root: Path,
    residues: str | None,
    split_file: Path | None,
    *,
    fit: bool,
) -> tuple[SiteTable, DatasetInfo]:
    """One source (or task) read, residue-filtered and split; ``fit``: to ``data.window`` by
    cropping or padding (a task of a multi-task recipe), else by cropping only."""
    data = recipe.data
    cuts = source.reader.spec.obj.cuts_windows
    table, info = read_source(
        source,
        base_dir=recipe.base_dir,
        data_root=data_root,
        window=data.window if (cuts or not fit) else None,
        residues=residues,
    )
    if fit and data.window is not None:
        # info.window stays the task's own width (at most the common one): predict masks a
        # padded task's windows to it, as training saw them
        info = replace(info, window=min(table.width, data.window) if len(table) else data.window)
        table = table.fit_width(data.window)
    if residues:
        keep = table.frame["residue"].isin(list(residues)).to_numpy()
        table = table.subset(keep)
        if not len(table):
            where = f"data.tasks.{source.task}.residues" if fit else "data.residues"
            raise PtmkitError(f"{where}={residues!r} keeps no site of {info.name}")
        info = replace(info, residues=residues)  # what the model is trained on, and scans for
    split = data.split
    if split_file is not None:
        table = apply_split_file(table, split_file, dedupe=split.dedupe, task=source.task if fit else None)
    else:
        table = assign_splits(table, valid=split.valid, test=split.test, seed=split.seed, group=split.group)
    if split.dedupe:
        table = dedupe_splits(table)
    warn_label_conflicts(table)
    return table, info
