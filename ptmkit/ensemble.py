"""Ensemble packages: several trained models scored as one, their probabilities averaged.

Seeds of one recipe, or different recipes trained on the same data and split, disagree where
each is unsure; the mean of their probabilities is steadier than any one of them (MusiteDeep
averages bootstrap models the same way). An ensemble is a package folder like any other:
``predict`` and ``evaluate`` (and the MLflow pyfunc, given the folder as its artifact) load it
through :func:`ptmkit.package.read_package`, which hands this format to :func:`read_ensemble`.
(No command logs an ensemble to MLflow yet: it is a folder, its run id is its first member's.)

Folder layout: ``model.json`` (format ``ptmkit-ensemble/1``, the members, the thresholds and
the sha256 of every file) and ``members/<i>/``, each an untouched member package that is
verified and rebuilt by the ordinary loader. The thresholds are chosen on the validation split
the members share (they must have been trained on the same data with the same split), with the
same rules a run uses, never on test rows.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__, metrics, thresholds
from .errors import PtmkitError
from .outputs import atomic_dir, check_new_dir
from .package import FIXED_RULE, META, LoadedModel, _inside, package_root, read_package, sha256, verify_files

FORMAT = "ptmkit-ensemble/1"
MEMBERS = "members"
#: How the members' scores are combined (the one rule, named in model.json for readers).
COMBINE = "mean-probability"
#: Probabilities are clamped to [EPS, 1 - EPS] before the logit the graph interface returns.
EPS = 1e-7


class MeanProbability(nn.Module):
    """The members as one model: the mean of their sigmoid probabilities, returned as logits
    (so :func:`ptmkit.inference.infer`'s sigmoid gives that mean back). Each member reads its
    own features from the ensemble's feature dict under ``m<i>/<name>``."""

    def __init__(self, members: list[nn.Module], inputs: list[dict[str, str]]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.inputs = inputs

    def forward(
        self,
        features: dict[str, torch.Tensor],
        mask: torch.Tensor,
        task: torch.Tensor | None = None,
        sites: torch.Tensor | None = None,
        unit_task: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        probs = [
            torch.sigmoid(
                member({own: features[key] for own, key in names.items()}, mask, task, sites, unit_task)[
                    "logits"
                ]
            )
            for member, names in zip(self.members, self.inputs, strict=True)
        ]
        return {"logits": torch.logit(torch.stack(probs).mean(dim=0), eps=EPS)}

    @property
    def reads_task(self) -> bool:
        """Whether a member is conditioned on the task (then each task is scored in its own pass)."""
        return any(member.reads_task for member in self.members)


def member_key(i: int, name: str) -> str:
    return f"m{i}/{name}"


def combine(members: list[LoadedModel], meta: dict[str, Any], ref: str) -> LoadedModel:
    """One :class:`LoadedModel` whose model averages ``members`` (same window, residues, PTM)."""
    check_compatible(members)
    features, keys, inputs = {}, {}, []
    for i, m in enumerate(members):
        names = {}
        for name, feature in m.features.items():
            key = member_key(i, name)
            features[key] = feature
            keys[key] = m.feature_keys[name]  # members sharing an encoding compute it once (predict)
            names[name] = key
        inputs.append(names)
    model = MeanProbability([m.model for m in members], inputs)
    model.eval()
    return LoadedModel(
        ref=ref, meta=meta, recipe=members[0].recipe, features=features, model=model, feature_keys=keys
    )


def check_compatible(members: list[LoadedModel]) -> None:
    """Members must score the same candidates the same way: one window, residues and PTM, and
    (for thresholds chosen on a shared validation split) the same data section."""
    if len(members) < 2:
        raise PtmkitError(f"an ensemble needs at least 2 models, got {len(members)}")
    first = members[0]
    multi = [m.ref for m in members if m.multitask]
    if multi:
        raise PtmkitError(
            f"model {multi[0]} is a multi-task model; ensembles of multi-task models (thresholds per "
            "task on a shared validation split) are not supported yet"
        )
    whole = [m.ref for m in members if m.recipe.data.units is not None]
    if whole:
        raise PtmkitError(
            f"model {whole[0]} runs on whole proteins (data.unit: protein); an ensemble averages "
            "window models in one pass, so protein-mode members are not supported yet"
        )
    for m in members[1:]:
        for what, a, b in (
            ("window", first.window, m.window),
            ("residues", first.residues, m.residues),
            ("PTM", first.ptm, m.ptm),
        ):
            if a != b:
                raise PtmkitError(
                    f"model {m.ref} has {what} {b!r} but {first.ref} has {a!r}: an ensemble's members "
                    "score the same candidates"
                )
        if m.recipe.data.model_dump() != first.recipe.data.model_dump():
            raise PtmkitError(
                f"model {m.ref} was trained on other data or another split than {first.ref} "
                f"(data: {_data_line(m)} vs {_data_line(first)}); an ensemble's thresholds are "
                "chosen on the validation split its members share"
            )


def _data_line(m: LoadedModel) -> str:
    d = m.recipe.data.model_dump(exclude_defaults=True)
    return json.dumps(d, sort_keys=True, default=str)


@dataclass
class Built:
    """What :func:`build` wrote and measured (validation only)."""

    directory: Path
    model: LoadedModel
    #: label -> validation metrics at that model's own max-MCC threshold (members, then "ensemble")
    validation: dict[str, dict[str, float]]


def build(
    members: list[tuple[LoadedModel, Path]],
    out: Path,
    *,
    name: str | None = None,
    data_root: Path,
    progress: bool = False,
) -> Built:
    """Write an ensemble package of ``members`` (each a loaded model and its package folder) to
    ``out``; thresholds from the members' shared validation split (read from ``data_root``)."""
    from .datasets import prepare_data
    from .inference import encode, infer

    loaded = [m for m, _ in members]
    check_compatible(loaded)
    check_output(out, [folder for _, folder in members])
    table, _ = prepare_data(loaded[0].recipe, data_root)
    valid = table.subset((table.frame["split"] == "valid").to_numpy())
    if not len(valid) or len(set(valid.labels.tolist())) < 2:
        raise PtmkitError(
            f"the members' validation split has {len(valid)} rows and not both classes: no threshold "
            "can be chosen for the ensemble"
        )
    labels = valid.labels.astype(int)
    meta = {
        "format": FORMAT,
        "name": name or f"ensemble-{loaded[0].name}",
        "combine": COMBINE,
        "dataset": loaded[0].meta.get("dataset"),
        "ptm": loaded[0].ptm,
        "residues": loaded[0].residues,
        "window": loaded[0].window,
        # the members share their split; the first one's run holds it (evaluate --split rebuilds it)
        "run_id": loaded[0].meta.get("run_id"),
        "members": [],
        "ptmkit_version": __version__,
        "torch_version": torch.__version__,
    }
    combined = combine(loaded, meta, str(out))
    report: dict[str, dict[str, float]] = {}
    labelled = [*((f"member {i}: {m.name}", m) for i, m in enumerate(loaded)), ("ensemble", combined)]
    for label, model in labelled:
        scores = infer(model.model, encode(model.features, valid, progress=progress)).scores
        report[label] = metrics.evaluate(labels, scores, metrics.threshold_max_mcc(labels, scores))
    ensemble_scores = scores  # the last one scored: the ensemble
    meta["thresholds"] = {"default": float(FIXED_RULE), **thresholds.choose_all(labels, ensemble_scores)}
    meta["validation"] = {"rows": len(labels), "positives": int(labels.sum())}
    with atomic_dir(out) as tmp:
        files: dict[str, str] = {}
        for i, (m, folder) in enumerate(members):
            root = package_root(folder)
            dest = tmp / MEMBERS / str(i)
            dest.mkdir(parents=True)
            # the member's own files only (model.json and what it lists), never anything beside them
            for rel in [META, *(m.meta.get("files") or {})]:
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(_inside(root, rel), target)
            meta["members"].append(
                {"path": f"{MEMBERS}/{i}", "name": m.name, "ref": m.ref, "run_id": m.meta.get("run_id")}
            )
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[p.relative_to(tmp).as_posix()] = sha256(p)
        meta["files"] = files
        (tmp / META).write_text(json.dumps(meta, indent=2))
        # what was written is what loads: read back from disk before the folder appears
        written = json.loads((tmp / META).read_text())
        check = read_ensemble(tmp, written, str(out))
        again = infer(check.model, encode(check.features, valid)).scores
        if not np.allclose(again, ensemble_scores, atol=1e-6):
            raise PtmkitError(f"{out}: the written ensemble does not reproduce its validation scores")
    return Built(out, check, report)  # read from the files now at ``out``: no second rebuild


def check_output(out: Path, member_folders: list[Path]) -> None:
    """Refuse ``out`` up front: an existing non-empty folder, or a folder inside a member's
    package (copying that member would then copy the ensemble being written into itself)."""
    check_new_dir(out)
    where = out.resolve()
    for folder in member_folders:
        root = package_root(folder).resolve()
        if where == root or root in where.parents:
            raise PtmkitError(f"{out} lies inside the member package {folder}; write the ensemble elsewhere")


def read_ensemble(
    root: Path, meta: dict[str, Any], ref: str, *, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Rebuild an ensemble package: its own checksums, then every member by the package loader."""
    verify_files(root, meta.get("files") or {}, ref, "ensemble")
    entries = meta.get("members")
    if not isinstance(entries, list) or len(entries) < 2:
        raise PtmkitError(f"model {ref}: {META} lists no members (an ensemble has at least 2)")
    members = []
    for i, entry in enumerate(entries):
        rel = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        folder = (root / rel).resolve()
        if not rel or root.resolve() not in folder.parents:
            raise PtmkitError(f"model {ref}: member {i} has path {rel!r}, not a folder inside the ensemble")
        members.append(read_package(folder, f"{ref} member {i}", device=device))
    return combine(members, meta, ref)
