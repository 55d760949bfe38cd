"""Masked-language-model pretraining: ``ptmkit pretrain RECIPE``.

A pretraining recipe names a corpus (``data:``, exactly as a training recipe's: one source or
several tasks, each split as its source defines), a ``language_model`` plugin (``model:``), the
masking, the optimiser and a budget. The corpus is every protein (and every fragment that has
no protein) written in the model's tokens; a protein with any test row is held out entirely, one
with a validation row scores validation, and a training protein whose sequence also occurs among
the held-out ones is dropped (said in a warning), so test proteins stay unseen.

Batches are length-sorted under a padded-token budget; long sequences are cropped to a random
window each epoch. Every draw (batch order, crops, masks) comes from generators seeded by
``(seed, epoch)`` and ``(seed, step)``, so a resumed run continues exactly where it stopped. The
state (model, optimiser, step, position in the epoch, elapsed time, the MLflow run id) is
checkpointed atomically every ``train.checkpoint_every`` steps and when a signal stops the run;
``--resume`` continues the same MLflow run. The end writes a ``ptmkit-lm/1`` package
(``ptmkit.language_models``) and logs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from . import distributed, language_models, tracking
from .datasets import prepare_data
from .errors import PtmkitError, RecipeError
from .plugin_api import LanguageModel
from .recipe import (
    DataSection,
    Key,
    PluginUse,
    SourceUse,
    TrackingSection,
    _Locator,
    _plugin_use,
    _Strict,
    _validate_section,
    flatten,
    missing_distributions,
    parse_data,
    resolve_file,
)
from .registry import Registry
from .sitetable import SiteTable
from .trackers import MlflowTracker, NullTracker, Tracker
from .train import lr_factor, save_atomic

TOP_LEVEL = ("name", "requires", "data", "model", "context", "masking", "train", "tracking")
STATE = "state.pt"
#: ``train`` keys a resumed run may change (how long it runs, how often it logs), not what it learns.
BUDGET_KEYS = ("steps", "epochs", "minutes", "eval_every", "checkpoint_every", "log_every", "progress")


class MaskingSection(_Strict):
    rate: float = Field(0.15, gt=0, lt=1, description="fraction of maskable tokens masked at random")
    plain: float = Field(
        0.2,
        ge=0,
        le=1,
        description="probability that a batch gets random masking only; otherwise every token of the "
        "`always` groups is masked too (PTM-Mamba's code: 0.2; its paper describes the reverse, 0.8)",
    )
    always: list[str] = Field(
        default_factory=lambda: ["ptm"],
        description="token groups masked whole in the other batches (the model's token_groups)",
    )


class PretrainSection(_Strict):
    lr: float = Field(2e-4, gt=0, description="AdamW peak learning rate (PTM-Mamba: 2e-4)")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas (PTM-Mamba: 0.9, 0.98)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (PTM-Mamba: 0.01)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this (null: no clip)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warmup: constant, or cosine to min_lr over train.steps"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    min_lr: float = Field(0.0, ge=0, description="cosine floor")
    batch_tokens: int = Field(8192, ge=16, description="padded tokens per batch (sequences sorted by length)")
    max_length: int = Field(
        1024, ge=8, description="longest sequence in tokens; longer ones are cropped to a random window"
    )
    steps: int | None = Field(None, gt=0, description="stop after this many optimiser steps")
    epochs: int | None = Field(None, gt=0, description="stop after this many passes over the corpus")
    minutes: float | None = Field(
        None, gt=0, description="stop after this much training time (resumes add up)"
    )
    eval_every: int = Field(200, gt=0, description="validation every this many steps (and at the end)")
    checkpoint_every: int = Field(100, gt=0, description="checkpoint every this many steps (and on a signal)")
    log_every: int = Field(10, gt=0, description="log training loss every this many steps")
    seed: int = Field(0, description="seed of the weights, batch order, crops and masks")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's)")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: cuda, else mps, else cpu"
    )
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _budget(self) -> PretrainSection:
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise ValueError(
                "give a budget: train.steps, train.epochs and/or train.minutes (the first reached)"
            )
        if self.max_length > self.batch_tokens:
            raise ValueError(
                f"train.max_length ({self.max_length}) must fit train.batch_tokens ({self.batch_tokens})"
            )
        if self.schedule == "cosine" and self.steps is None:
            raise ValueError("schedule: cosine needs train.steps (the length it decays over)")
        return self


@dataclass
class PretrainRecipe:
    """A validated pretraining recipe (what ``prepare_data`` reads: data, source, tasks)."""

    name: str
    path: Path | None
    raw: dict[str, Any]
    data: DataSection
    model: PluginUse
    masking: MaskingSection
    train: PretrainSection
    tracking: TrackingSection
    locations: dict[Key, str]
    source: SourceUse | None = None
    tasks: dict[str, SourceUse] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)
    context: PluginUse | None = None  # the per-residue feature feeding the model's context branch

    def context_spec(self) -> dict[str, Any] | None:
        """The context feature as the mapping the package records (``type`` + its config)."""
        if self.context is None:
            return None
        return {"type": self.context.spec.name, **self.context.config.model_dump(mode="json")}

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def filled(self) -> dict[str, Any]:
        data = self.data.model_dump(mode="json")
        if self.source is not None:
            data["source"] = self.source.filled()
        for name, task in self.tasks.items():
            data["tasks"][name]["source"] = task.filled()
        for key in ("source", "tasks"):
            if data[key] is None:
                del data[key]
        del data["unit"], data["protein"]  # pretraining reads proteins whole, whatever the unit
        out: dict[str, Any] = {"name": self.name, "kind": "pretrain"}
        if self.requires:
            out["requires"] = list(self.requires)
        out.update(
            data=data,
            model={"type": self.model.spec.name, **self.model.config.model_dump(mode="json")},
        )
        if self.context is not None:
            out["context"] = self.context_spec()
        out.update(
            masking=self.masking.model_dump(mode="json"),
            train=self.train.model_dump(mode="json"),
            tracking=self.tracking.model_dump(mode="json"),
        )
        return out

    def digest(self) -> str:
        """Hash of what the run learns: the filled recipe without its budget and logging keys (a
        resumed run may be given more steps)."""
        filled = self.filled()
        for key in BUDGET_KEYS:
            filled["train"].pop(key, None)
        return hashlib.sha256(json.dumps(filled, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def flat(self) -> dict[str, str]:
        return flatten(self.filled())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.filled(), sort_keys=False)


def parse(
    raw: dict[str, Any],
    registry: Registry,
    *,
    path: Path | None = None,
    locations: dict[Key, str] | None = None,
) -> PretrainRecipe:
    """Validate a resolved pretraining recipe: the corpus's sources, the model plugin's config,
    masking groups against the model's token groups, the budget."""
    locate = _Locator(locations or {})
    unknown = [k for k in raw if k not in (*TOP_LEVEL, "kind")]
    if unknown:
        raise RecipeError(
            f"{locate((unknown[0],))}: unknown section {unknown[0]!r} for a pretraining recipe; "
            f"sections are {', '.join(TOP_LEVEL)}"
        )
    if raw.get("kind", "pretrain") != "pretrain":
        raise RecipeError(f"{locate(('kind',))}: kind {raw['kind']!r}; ptmkit pretrain reads kind: pretrain")
    locate.missing = missing_distributions(raw.get("requires"), locate)
    for section in ("data", "model"):
        if section not in raw:
            raise RecipeError(f"{path or 'recipe'}: missing section {section!r}")
    data, source, tasks = parse_data(raw["data"], registry, locate)
    model = _plugin_use(registry, "language_model", raw["model"], ("model",), locate, set())
    masking = _validate_section(MaskingSection, raw.get("masking"), ("masking",), locate)
    groups = model.spec.obj.token_groups()
    bad = [g for g in masking.always if g not in groups or g == "special"]
    if bad:
        have = ", ".join(g for g in groups if g != "special")
        raise RecipeError(
            f"{locate(('masking', 'always'))}: {bad[0]!r} is not a maskable token group of "
            f"{model.spec.name}; groups: {have}"
        )
    train = _validate_section(PretrainSection, raw.get("train"), ("train",), locate)
    tracking_ = _validate_section(TrackingSection, raw.get("tracking"), ("tracking",), locate)
    context = None
    if raw.get("context") is not None:
        context = _plugin_use(registry, "feature", raw["context"], ("context",), locate, set())
        model = _with_context_dim(model, context, locate)
    elif getattr(model.config, "context_dim", None):
        raise RecipeError(
            f"{locate(('model', 'context_dim'))}: a context branch of {model.config.context_dim} features "
            "needs the feature that feeds it: add a `context:` section (e.g. type: esm2, model: "
            "facebook/esm2_t33_650M_UR50D), or pretrain without the branch (context_dim: null)"
        )
    name = str(raw.get("name") or (path.stem if path else "pretrain"))
    return PretrainRecipe(
        name=name,
        path=path,
        raw=raw,
        data=data,
        model=model,
        masking=masking,
        train=train,
        tracking=tracking_,
        locations=locations or {},
        source=source,
        tasks=tasks,
        requires=list(raw.get("requires") or []),
        context=context,
    )


def _with_context_dim(model: PluginUse, context: PluginUse, locate: _Locator) -> PluginUse:
    """The model use with ``context_dim`` filled from the context feature's size (or checked
    against it when the recipe gives one)."""
    if "context_dim" not in type(model.config).model_fields:
        raise RecipeError(
            f"{locate(('context',))}: {model.spec.name} has no context branch (no context_dim), so it "
            "takes no context feature"
        )
    if getattr(context.spec.obj, "stateful", False):
        raise RecipeError(
            f"{locate(('context', 'type'))}: {context.spec.name} learns state; a context cannot"
        )
    try:
        dim = context.build().dim
    except PtmkitError as exc:
        raise RecipeError(f"{locate(('context',))}: {exc}") from None
    given = model.config.context_dim
    if given is None:
        return replace(model, config=model.config.model_copy(update={"context_dim": dim}))
    if given != dim:
        raise RecipeError(
            f"{locate(('model', 'context_dim'))}: context_dim {given}, but the context feature "
            f"{context.spec.name} gives {dim} features per residue"
        )
    return model


def load(
    path: str | Path, overrides: list[str] | None = None, registry: Registry | None = None
) -> PretrainRecipe:
    """Load (``extends`` merged, ``--set`` applied) and validate a pretraining recipe file."""
    from .hooks import get_registry

    path = Path(path)
    data, locations = resolve_file(path, overrides)
    return parse(data, registry or get_registry(), path=path.resolve(), locations=locations)


# ---------------------------------------------------------------------------- corpus
@dataclass
class Corpus:
    """Token sequences by split (``train``, ``valid``, ``test``): ids and token tensors."""

    ids: dict[str, list[str]]
    tokens: dict[str, list[torch.Tensor]]
    dropped: int = 0  # training sequences dropped because a held-out protein has the same sequence

    def counts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for split, seqs in self.tokens.items():
            out[f"corpus/{split}/sequences"] = len(seqs)
            out[f"corpus/{split}/tokens"] = int(sum(len(t) for t in seqs))
        out["corpus/train/dropped_as_held_out"] = self.dropped
        return out


def protein_splits(table: SiteTable) -> dict[str, str]:
    """Each protein's (or fragment id's) corpus split: test if any of its rows is a test row,
    else valid if any is a validation row, else train."""
    order = {"test": 0, "valid": 1, "train": 2}
    frame = table.frame
    ranks = frame["split"].map(lambda s: order.get(str(s), 2))
    best = ranks.groupby(frame["protein_id"].astype(str)).min()
    names = {v: k for k, v in order.items()}
    return {pid: names[int(r)] for pid, r in best.items()}


def build_corpus(table: SiteTable, model: LanguageModel, ptms: dict[str, str] | None = None) -> Corpus:
    """The table's proteins and protein-less fragments as the model's token ids, by split."""
    splits = protein_splits(table)
    held_out = {table.proteins[p] for p, s in splits.items() if s != "train" and p in table.proteins}
    ids: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    toks: dict[str, list[torch.Tensor]] = {"train": [], "valid": [], "test": []}
    dropped = 0
    for pid, seq in model.sequences(table, ptms):
        split = splits.get(pid, "train")
        if split == "train" and table.proteins.get(pid) in held_out:
            dropped += 1
            continue
        ids[split].append(pid)
        toks[split].append(torch.tensor(seq, dtype=torch.long))
    if not toks["train"]:
        raise PtmkitError("the corpus has no training sequences (every protein is held out)")
    if dropped:
        warnings.warn(
            f"{dropped} training protein(s) have the sequence of a held-out (validation/test) protein "
            "of another source: left out of pretraining",
            stacklevel=2,
        )
    return Corpus(ids, toks, dropped)


def generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and ``parts`` (epoch, step): every draw reproducible."""
    key = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


def crop(seqs: list[torch.Tensor], max_length: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Sequences longer than ``max_length`` cut to a random window of that length."""
    out = []
    for t in seqs:
        if len(t) > max_length:
            start = int(torch.randint(0, len(t) - max_length + 1, (1,), generator=gen))
            t = t[start : start + max_length]
        out.append(t)
    return out


def token_batches(lengths: list[int], batch_tokens: int, gen: torch.Generator | None) -> list[list[int]]:
    """Indices grouped into batches of similar length, each at most ``batch_tokens`` padded
    tokens; shuffled (ties broken at random, batch order random) when ``gen`` is given."""
    order = (
        torch.randperm(len(lengths), generator=gen).tolist() if gen is not None else list(range(len(lengths)))
    )
    order.sort(key=lambda i: lengths[i])  # stable: equal lengths keep the random order
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if gen is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    return batches


def pad(seqs: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)


def group_masks(model: type[LanguageModel] | LanguageModel) -> dict[str, torch.Tensor]:
    """Each token group as a bool vector over the vocabulary."""
    size = len(model.vocab)
    out = {}
    for name, ids in model.token_groups().items():
        v = torch.zeros(size, dtype=torch.bool)
        v[list(ids)] = True
        out[name] = v
    return out


def mask_tokens(
    ids: torch.Tensor,
    groups: dict[str, torch.Tensor],
    masking: MaskingSection,
    pad_id: int,
    mask_id: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, masked)``: ``masking.rate`` of the maskable tokens (not special, not padding)
    replaced by the mask token, and with probability ``1 - masking.plain`` every token of the
    ``always`` groups as well (PTM-Mamba's ``random_or_random_and_ptm_mask``)."""
    maskable = ~groups["special"][ids] & (ids != pad_id)
    masked = (torch.rand(ids.shape, generator=gen) < masking.rate) & maskable
    if float(torch.rand((), generator=gen)) >= masking.plain:
        for name in masking.always:
            masked |= groups[name][ids]
    return ids.masked_fill(masked, mask_id), masked


# ---------------------------------------------------------------------------- metrics
@dataclass
class Tally:
    """Masked-token loss and accuracy sums, overall and per token group."""

    loss: float = 0.0
    count: int = 0
    correct: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        groups: dict[str, torch.Tensor],
        loss: float | None = None,
    ) -> None:
        """``loss``: the batch's mean cross-entropy when the caller has it (the training step)."""
        if loss is None:
            loss = float(F.cross_entropy(logits.float(), targets))
        self.loss += loss * len(targets)
        self.count += len(targets)
        right = logits.argmax(-1) == targets
        for name, member in groups.items():
            if name == "special":
                continue
            sel = member[targets]
            self.correct[name] = self.correct.get(name, 0) + int(right[sel].sum())
            self.total[name] = self.total.get(name, 0) + int(sel.sum())
        self.correct["all"] = self.correct.get("all", 0) + int(right.sum())
        self.total["all"] = self.total.get("all", 0) + len(targets)

    def summed(self, groups: dict[str, torch.Tensor]) -> Tally:
        """This tally summed over the ranks of a torchrun job (itself in one process)."""
        world = distributed.world()
        if not world.active:
            return self
        names = [n for n in groups if n != "special"] + ["all"]
        values = [self.loss, self.count]
        values += [self.correct.get(n, 0) for n in names] + [self.total.get(n, 0) for n in names]
        got = world.sum(values)
        k = len(names)
        return Tally(
            got[0],
            round(got[1]),
            {n: round(v) for n, v in zip(names, got[2 : 2 + k], strict=True)},
            {n: round(v) for n, v in zip(names, got[2 + k :], strict=True)},
        )

    def metrics(self, prefix: str) -> dict[str, float]:
        if not self.count:
            return {}
        loss = self.loss / self.count
        out = {f"{prefix}/loss": loss, f"{prefix}/perplexity": math.exp(min(loss, 50.0))}
        for name, n in self.total.items():
            if n:
                out[f"{prefix}/acc/{name}"] = self.correct[name] / n
                out[f"{prefix}/masked/{name}"] = float(n)
        return out


def evaluate(
    model: LanguageModel,
    seqs: list[torch.Tensor],
    recipe: PretrainRecipe,
    groups: dict[str, torch.Tensor],
    device: torch.device,
    prefix: str = "val",
) -> dict[str, float]:
    """Masked-token loss, perplexity and accuracy per token group on ``seqs``, with masks drawn
    from a fixed seed (the same at every evaluation, so the curve compares like with like).
    Under torchrun the batches are dealt round the ranks (every rank draws every batch's masks,
    so they are the one-process masks) and the sums gathered."""
    cfg = recipe.train
    world = distributed.world()
    gen = generator(cfg.seed, -1)
    seqs = crop(seqs, cfg.max_length, gen)
    tally = Tally()
    was = model.training
    model.eval()
    with torch.inference_mode():
        for n, batch in enumerate(token_batches([len(t) for t in seqs], cfg.batch_tokens, None)):
            ids = pad([seqs[i] for i in batch], model.pad_id)
            inputs, masked = mask_tokens(ids, groups, recipe.masking, model.pad_id, model.mask_id, gen)
            if not masked.any() or n % world.size != world.rank:
                continue
            inputs = inputs.to(device)
            _, logits = model(inputs, language_models.context_batch(model, inputs))
            tally.add(logits[masked.to(device)].cpu(), ids[masked], groups)
    model.train(was)
    return tally.summed(groups).metrics(prefix)


# ---------------------------------------------------------------------------- the run
@dataclass
class State:
    """Where a run stands: what a checkpoint holds besides the weights and optimiser."""

    step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # batches of that epoch already trained
    tokens: int = 0  # real tokens trained on
    elapsed: float = 0.0  # training seconds, summed over resumes
    run_id: str = ""


@dataclass
class PretrainSummary:
    run_id: str
    experiment: str
    store: str
    steps: int
    epochs: float
    tokens: int
    seconds: float
    parameters: int
    metrics: dict[str, float]
    package: Path
    stopped_by: str
    counts: dict[str, float]
    #: this process's rank in a torchrun job: a rank other than 0 recorded nothing
    rank: int = 0


class CheckpointExists(PtmkitError):
    pass


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PtmkitError(
            f"{path}: not a readable ptmkit pretraining checkpoint ({tracking.first_line(exc)})"
        ) from None


def pretrain(
    recipe: PretrainRecipe,
    *,
    data_root: Path,
    out: Path,
    resume: bool = False,
    restart: bool = False,
    tracker: Tracker | None = None,
) -> PretrainSummary:
    """Pretrain ``recipe``'s language model on its corpus; checkpoints and the package go to
    ``out``. An existing checkpoint is continued with ``resume`` or discarded with ``restart``;
    without either it is an error (so nobody overwrites a day of pretraining by accident).

    Under torchrun (``ptmkit.distributed``) every rank draws the same batches and masks and
    trains on its share of each batch's sequences (DDP; each rank's loss weighted by its share
    of the masked tokens, so a step is the one-process step); rank 0 alone records, checkpoints
    and packages, and ``out`` must be a folder every rank can read (resume reads it)."""
    with distributed.joined(recipe.train.device):
        return _pretrain(
            recipe, data_root=data_root, out=out, resume=resume, restart=restart, tracker=tracker
        )


def _pretrain(
    recipe: PretrainRecipe,
    *,
    data_root: Path,
    out: Path,
    resume: bool,
    restart: bool,
    tracker: Tracker | None,
) -> PretrainSummary:
    cfg = recipe.train
    world = distributed.world()
    out = Path(out)
    state_path = out / STATE
    saved: dict[str, Any] | None = None
    if state_path.exists():
        if restart:
            world.barrier()  # every rank has seen it before rank 0 removes it
            if world.main:
                state_path.unlink(missing_ok=True)
        elif not resume:
            raise CheckpointExists(
                f"{state_path} holds a checkpoint; --resume continues it, --restart starts over "
                "(or give another --out)"
            )
        else:
            saved = _load_state(state_path)
            if saved.get("digest") != recipe.digest():
                raise PtmkitError(
                    f"{state_path} was written by a different recipe (digest {saved.get('digest')} vs "
                    f"{recipe.digest()}; only train.{', train.'.join(BUDGET_KEYS)} may change on resume)"
                )
    elif resume:
        raise PtmkitError(f"--resume: no checkpoint at {state_path}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = distributed.local_device(cfg.device)  # pick_device, and a rank's own GPU under torchrun
    torch.manual_seed(cfg.seed)
    model: LanguageModel = recipe.model.build().to(device)
    if recipe.context is not None:
        context = recipe.context.build()
        context.context(["M"], [np.zeros(1, dtype=bool)])  # loaded now: a missing model fails first
        language_models.attach_context(model, context, recipe.context_spec())
    groups = group_masks(model)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, eps=cfg.eps
    )
    state = State()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = State(**saved["state"])

    table, info = prepare_data(recipe, data_root)
    ptms = {name: task.ptm for name, task in info.tasks.items()} or None
    corpus = build_corpus(table, model, ptms)
    if not world.main:
        tracker = NullTracker()
    elif tracker is None:
        tracker = MlflowTracker(recipe.tracking, resume_run_id=state.run_id or None)
    parameters = sum(p.numel() for p in model.parameters())

    def checkpoint() -> None:
        if not world.main:
            return
        with tracking.deferred_signals():
            save_atomic(
                {
                    "format": "ptmkit-pretrain/1",
                    "digest": recipe.digest(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "state": vars(state).copy(),
                },
                state_path,
            )

    with tracker.start(recipe.tracking.run_name or recipe.name):
        state.run_id = tracker.run_id
        if saved is None:
            tracker.set_tags(
                {"ptmkit.kind": "pretrain", "ptmkit.recipe_digest": recipe.digest(), **recipe.tracking.tags}
            )
            tracker.log_params(tracking.clip_params(recipe.flat()))
            tracker.log_params({"model.parameters": str(parameters), "data.name": info.name})
            tracker.log_text(json.dumps(corpus.counts(), indent=2), "corpus.json")
            tracker.log_metrics(corpus.counts(), step=0)
        else:
            tracker.set_tags({"ptmkit.resumed_at_step": str(state.step)})
        if world.active:
            tracker.set_tags({"ptmkit.world_size": str(world.size), "ptmkit.backend": world.backend})
        stopped_by = _train(recipe, model, optimizer, corpus, groups, state, tracker, device, checkpoint)
        tracker.phase("the final validation")
        final = (
            evaluate(model, corpus.tokens["valid"], recipe, groups, device) if corpus.tokens["valid"] else {}
        )
        tracker.log_metrics(final, step=state.step)
        checkpoint()
        tracker.phase("writing the package")
        epochs = state.epoch + state.batch / max(1, _batches_in_epoch(recipe, corpus, state.epoch))
        package = out / language_models.ARTIFACT
        if world.main:
            package = language_models.save(
                model.cpu(),
                out / language_models.ARTIFACT,
                name=recipe.model.spec.name,
                info={
                    "recipe": recipe.filled(),
                    "recipe_digest": recipe.digest(),
                    "steps": state.step,
                    "tokens": state.tokens,
                    "epochs": round(epochs, 3),
                    "run_id": tracker.run_id,
                    "validation": final,
                    "held_out": {s: corpus.ids[s] for s in ("valid", "test")},
                },
            )
        tracker.log_artifact(package)  # as language_model/ at the run's artifact root
        tracker.log_metrics({"time/train_s": state.elapsed, "train/epochs": epochs}, step=state.step)
    return PretrainSummary(
        run_id=tracker.run_id,
        experiment=tracker.experiment,
        store=tracker.store,
        steps=state.step,
        epochs=epochs,
        tokens=state.tokens,
        seconds=state.elapsed,
        parameters=parameters,
        metrics=final,
        package=package,
        stopped_by=stopped_by,
        counts=corpus.counts(),
        rank=world.rank,
    )


def _epoch_batches(
    recipe: PretrainRecipe, corpus: Corpus, epoch: int
) -> tuple[list[torch.Tensor], list[list[int]]]:
    gen = generator(recipe.train.seed, epoch)
    seqs = crop(corpus.tokens["train"], recipe.train.max_length, gen)
    return seqs, token_batches([len(t) for t in seqs], recipe.train.batch_tokens, gen)


def _batches_in_epoch(recipe: PretrainRecipe, corpus: Corpus, epoch: int) -> int:
    return len(_epoch_batches(recipe, corpus, epoch)[1])


def _planned(recipe: PretrainRecipe, corpus: Corpus) -> int | None:
    cfg = recipe.train
    totals = []
    if cfg.steps:
        totals.append(cfg.steps)
    if cfg.epochs:
        totals.append(cfg.epochs * _batches_in_epoch(recipe, corpus, 0))
    return min(totals) if totals else None


def _share(
    ids: torch.Tensor, inputs: torch.Tensor, masked: torch.Tensor, world: distributed.World
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
    """This rank's rows of a batch (ids, inputs, masks) and its loss weight: its share of the
    batch's masked tokens times the world size, so DDP's average over ranks is the one-process
    mean over all masked tokens. In one process: the batch itself, weight None. A rank left
    without a row (fewer sequences than ranks) runs the first one at weight 0: it must still join
    the step's gradient average."""
    if not world.active:
        return ids, inputs, masked, None
    rows = world.part(torch.arange(len(ids)))
    if not len(rows):
        return ids[:1], inputs[:1], torch.zeros_like(masked[:1]), 0.0
    here = masked[rows]
    return ids[rows], inputs[rows], here, float(here.sum()) * world.size / float(masked.sum())


def _train(
    recipe: PretrainRecipe,
    model: LanguageModel,
    optimizer: torch.optim.Optimizer,
    corpus: Corpus,
    groups: dict[str, torch.Tensor],
    state: State,
    tracker: Tracker,
    device: torch.device,
    checkpoint: Any,
) -> str:
    """The step loop; returns what stopped it (steps, epochs, minutes). A signal checkpoints
    the last finished step before it unwinds (the run then ends KILLED)."""
    cfg = recipe.train
    world = distributed.world()
    forward = distributed.wrap(model, device)
    planned = _planned(recipe, corpus)
    show = cfg.progress and world.main
    bar = tqdm(total=planned, initial=state.step, disable=not show, unit="step", dynamic_ncols=True)
    tally, window_tokens, window_start = Tally(), 0, time.perf_counter()
    model.train()
    try:
        while True:
            if cfg.epochs is not None and state.epoch >= cfg.epochs:
                return "epochs"
            seqs, batches = _epoch_batches(recipe, corpus, state.epoch)
            for index in range(state.batch, len(batches)):
                if cfg.steps is not None and state.step >= cfg.steps:
                    return "steps"
                if cfg.minutes is not None and world.decide(state.elapsed >= cfg.minutes * 60):
                    return "minutes"
                tracker.phase(f"step {state.step + 1} (epoch {state.epoch + 1})")
                t0 = time.perf_counter()
                ids = pad([seqs[i] for i in batches[index]], model.pad_id)
                real = int((ids != model.pad_id).sum())
                inputs, masked = mask_tokens(
                    ids,
                    groups,
                    recipe.masking,
                    model.pad_id,
                    model.mask_id,
                    generator(cfg.seed, state.epoch, state.step),
                )
                for g in optimizer.param_groups:
                    g["lr"] = cfg.lr * lr_factor(
                        state.step, cfg.warmup_steps, cfg.steps or 0, cfg.schedule, cfg.min_lr / cfg.lr
                    )
                if masked.any():
                    mine, inputs, masked, weight = _share(ids, inputs, masked, world)
                    inputs = inputs.to(device)
                    _, logits = forward(inputs, language_models.context_batch(model, inputs))
                    picked = logits[masked.to(device)]
                    targets = mine[masked].to(device)
                    optimizer.zero_grad(set_to_none=True)
                    if len(targets):
                        loss = F.cross_entropy(picked.float(), targets)
                        with torch.no_grad():
                            tally.add(picked.detach().cpu(), targets.cpu(), groups, float(loss))
                    else:  # no masked token in this rank's share: it still joins the step
                        loss = logits.sum() * 0.0
                    (loss if weight is None else loss * weight).backward()
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                else:
                    loss = None
                with tracking.deferred_signals():  # the step and its bookkeeping land together
                    if loss is not None:
                        optimizer.step()
                    state.step += 1
                    state.batch = index + 1
                    state.tokens += real
                    state.elapsed += time.perf_counter() - t0
                window_tokens += real
                bar.update(1)
                if state.step % cfg.log_every == 0:
                    summed = tally.summed(groups)  # every rank joins, even one without a masked token
                if state.step % cfg.log_every == 0 and summed.count:
                    seconds = time.perf_counter() - window_start
                    row = summed.metrics("train") | {
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "train/tokens_per_s": window_tokens / max(seconds, 1e-9),
                        "train/tokens": state.tokens,
                    }
                    tracker.log_metrics(row, step=state.step)
                    bar.set_postfix(loss=f"{row['train/loss']:.3f}", tok_s=f"{row['train/tokens_per_s']:.0f}")
                    tally, window_tokens, window_start = Tally(), 0, time.perf_counter()
                if state.step % cfg.eval_every == 0 and corpus.tokens["valid"]:
                    tracker.phase(f"validation at step {state.step}")
                    tracker.log_metrics(
                        evaluate(model, corpus.tokens["valid"], recipe, groups, device), step=state.step
                    )
                    tracker.beat()
                if state.step % cfg.checkpoint_every == 0:
                    checkpoint()
            with tracking.deferred_signals():
                state.epoch += 1
                state.batch = 0
    except BaseException:
        with contextlib.suppress(Exception):
            checkpoint()  # the last finished step: --resume continues from it
        raise
    finally:
        bar.close()


__all__ = [
    "Corpus",
    "MaskingSection",
    "PretrainRecipe",
    "PretrainSection",
    "PretrainSummary",
    "build_corpus",
    "load",
    "mask_tokens",
    "parse",
    "pretrain",
    "token_batches",
]
