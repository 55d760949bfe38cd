"""Base classes a plugin implements, one per kind (plugin API version 2).

Plugin authors import them from :mod:`ptmkit.api`, the one public module; this module is where
they are defined. Every plugin class has a ``Config``: a pydantic model (types, defaults,
one-line field docs) that the recipe section of that plugin is validated against, so a wrong key
or type fails before any work starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict
from torch import nn

from .errors import PtmkitError
from .sitetable import SiteTable, windows_at


def _positive_odd(value: int) -> int:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"must be a positive odd number (for a same-length, centred output), got {value}")
    return value


#: A positive odd integer (kernel widths, sub-windows) for plugin configs: ``k: OddInt = 3``.
OddInt = Annotated[int, AfterValidator(_positive_odd)]


_STRUCTURE_ONLY: ContextVar[bool] = ContextVar("ptmkit_structure_only", default=False)


@contextlib.contextmanager
def structure_only_build() -> Iterator[None]:
    """Build graphs only to describe them (``ptmkit validate``): see :func:`structure_only`."""
    token = _STRUCTURE_ONLY.set(True)
    try:
        yield
    finally:
        _STRUCTURE_ONLY.reset(token)


def structure_only() -> bool:
    """True while a graph is built only to be described. A node whose weights are not available
    here may then build its architecture without them (random or meta tensors), and set
    ``self.unloaded`` to a line saying what is missing, instead of failing."""
    return _STRUCTURE_ONLY.get()


class PluginConfig(BaseModel):
    """Base of every plugin config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ReadContext:
    """What the core tells a reader, explicitly, instead of filling magic config fields.

    ``base``: the folder relative file paths resolve against (the recipe's folder, or a dataset
    collection's folder under the data root). ``task``: the PTM name written to the task column.
    ``residues``: the target residue letters (readers of whole proteins make every such residue a
    candidate; ``None`` when the recipe names none). ``window``: the window width asked for
    (readers that cut windows use it; pre-cut windows are centre-cropped by the core).
    ``on_bad_site``: ``"warn"`` when the caller (the data check) wants malformed marks reported
    rather than fatal; ``None`` keeps the reader's own setting.
    """

    base: Path
    task: str = "ptm"
    residues: str | None = None
    window: int | None = None
    on_bad_site: str | None = None

    def resolve(self, path: str | Path) -> Path:
        """``path`` as given when absolute (``~`` expanded), else relative to ``base``."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base / p


class Reader(ABC):
    """Turns source files into a SiteTable. Strict: malformed input raises DataError(file, line).

    Class attributes tell the core what the reader needs, so a recipe is checked at validation:
    ``requires`` names context fields it cannot work without (``("residues",)`` for readers of
    whole proteins); ``cuts_windows`` is True when the reader cuts windows itself (it honours
    ``context.window``, defaulting to ``default_window``); otherwise the core crops pre-cut windows.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    requires: ClassVar[tuple[str, ...]] = ()
    cuts_windows: ClassVar[bool] = False
    default_window: ClassVar[int | None] = None

    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    @abstractmethod
    def read(self, context: ReadContext) -> SiteTable:
        """Read the configured files; relative paths resolve with ``context.resolve``."""

    @classmethod
    def sniff(cls, path: Path) -> int:
        """How surely ``path`` is in this reader's format: 0 not at all, higher more specifically
        (``ptmkit evaluate FILE`` without ``--reader`` uses the reader scoring highest)."""
        return 0


class Feature(ABC):
    """Per-residue encoding of windows: ``encode(table)`` -> float32 tensor [N, W, dim].

    Padding positions (``-``) must encode to zeros so that they carry no signal.
    Bump ``version`` whenever the output for the same config changes: it is part of the cache key.

    Fitted state is declared, so a packaged model predicts with exactly what training learned: a
    feature whose ``fit`` learns something implements ``export_state``/``import_state`` (which
    makes ``stateful`` True on its own) or sets ``stateful = True`` explicitly. A feature that
    overrides ``fit`` without declaring state is packaged as "unsaved" and refused at load;
    ``stateful = False`` says its ``fit`` learns nothing a prediction needs (it only checks).
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    version: ClassVar[str] = "1"
    #: True: ``fit`` learns state carried by export/import_state; False: none; None: not declared
    #: (inferred True for a class that overrides ``export_state``).
    stateful: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.stateful is None and cls.export_state is not Feature.export_state:
            cls.stateful = True

    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    @property
    @abstractmethod
    def dim(self) -> int:
        """Size D of the last axis."""

    def fit(self, train: SiteTable) -> None:  # noqa: B027 - optional hook
        """Learn state from training rows only (most features have none)."""

    def export_state(self) -> dict[str, object] | None:
        """What ``fit`` learned: JSON values and numpy arrays (or tensors), never objects that
        would need pickle. ``None`` (the default) for a stateless feature."""
        return None

    def import_state(self, state: dict[str, object]) -> None:
        """Restore what ``export_state`` returned (arrays come back as numpy arrays)."""
        cls = type(self)
        raise PtmkitError(
            f"feature plugin {cls.__module__}.{cls.__qualname__}: the package holds fitted state but "
            "the plugin does not implement import_state(); add it (see docs/plugins.md, learned state)"
        )

    @abstractmethod
    def encode(self, table: SiteTable) -> torch.Tensor:
        """Encode every row of ``table`` to [N, W, dim] float32."""

    def fill_cache(self, sequences: Sequence[str]) -> tuple[int, int] | None:
        """Compute and store in the feature's on-disk cache what ``encode`` reads for these whole
        proteins (``ptmkit cache fill``); returns (computed, already cached). ``None`` (the
        default): the feature keeps no cache, nothing to fill."""
        return None

    def context(self, sequences: Sequence[str], hidden: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float32 ``[len, dim]`` per whole sequence with the ``hidden`` positions (bool per
        residue) concealed: what a language model's context branch reads (PTM-Mamba's ESM-2
        input, where masked and modified residues are hidden). Language-model features override
        it to write their mask token; this default writes ``X`` (an unknown residue) there and
        encodes each sequence as one window that covers it."""
        out = []
        for i, (seq, hide) in enumerate(zip(sequences, hidden, strict=True)):
            letters = np.frombuffer(seq.encode("ascii"), dtype="S1").copy()
            letters[np.asarray(hide, dtype=bool)] = b"X"
            text = letters.tobytes().decode("ascii")
            width = len(text) | 1
            centre = (len(text) + 1) // 2
            table = SiteTable.from_records(
                [
                    {
                        "protein_id": f"context{i}",
                        "position": centre,
                        "residue": text[centre - 1],
                        "window": windows_at(text, (centre,), width)[0],
                        "label": 0,
                        "task": "context",
                        "split": "unsplit",
                        "origin": "context",
                    }
                ]
            )
            first = width // 2 - (centre - 1)  # the window column of the first residue
            out.append(self.encode(table)[0, first : first + len(text)].numpy())
        return out

    def cache_key(self) -> str:
        """name + params + version: equal keys promise equal outputs."""
        payload = json.dumps(
            {
                "cls": f"{type(self).__module__}.{type(self).__qualname__}",
                "version": self.version,
                "config": self.config.model_dump(mode="json"),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class GraphModule(nn.Module):
    """A node of the model graph (fusion, backbone or head).

    Constructed with its config and the dims of its inputs (in the order the recipe lists them);
    raises ``ValueError`` when those dims cannot work (the core reports it with the node's
    location). ``output_dims`` maps each output name to its size; ``"out"`` is the default output
    that a bare node reference picks. ``forward(inputs, mask)`` gets the input tensors [N, W, D_i]
    and a bool mask [N, W] (True at real residues, False at padding) and returns a tensor for a
    single output or a dict of named tensors. A node conditioned on the task (``task_count``) also
    gets ``task=``.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    #: (minimum, maximum) number of inputs; ``None`` for no maximum.
    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: PluginConfig, in_dims: list[int]) -> None:
        super().__init__()
        self.config = config
        self.in_dims = list(in_dims)
        self.output_dims: dict[str, int] = {}
        #: tasks the node is conditioned on (per-task prompts): set it to that number and
        #: ``forward`` gets ``task=`` (long [B], each unit's task index; None for one task). The
        #: graph checks it against ``data.tasks``; in protein mode each unit then holds one task.
        self.task_count: int | None = None

    @abstractmethod
    def forward(
        self, inputs: list[torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor | dict[str, torch.Tensor]: ...


class Head(GraphModule):
    """The output node of a model graph: pools [N, W, D] to one vector per example and classifies.

    ``forward`` returns the logits [N, tasks] (as ``"out"``; a dict may add outputs such as an
    ``"embedding"`` [N, D'] for auxiliary losses). ``default_loss`` names the loss plugin that a
    recipe without ``losses:`` trains with.
    """

    default_loss: ClassVar[str] = "bce"


class Loss(nn.Module):
    """A training objective: ``forward(outputs, labels)`` -> scalar tensor.

    ``outputs`` holds ``"logits"`` ([N] for one task), ``"mask"`` (bool [N, W], True at real
    residues, for pooling per-residue outputs) and every graph node output under its reference
    (``"node"`` or ``"node.output"``). ``labels`` is float [N] of 0/1.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig) -> None:
        super().__init__()
        self.config = config

    def required_outputs(self) -> list[str]:
        """Entries of ``outputs`` this loss reads; the core checks them against the graph."""
        name = getattr(self.config, "input", "logits")
        return [name] if isinstance(name, str) else list(name)

    def bind(self, dims: dict[str, int]) -> None:  # noqa: B027 - optional hook
        """Called once with the size of every graph output (``"node.output" -> D``) before the
        optimiser is made, so a loss can create parameters (projections) of the right size."""

    def setup(self, train_labels: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Called once with the training labels (e.g. to derive class weights)."""

    def start_epoch(self, epoch: int, total: int) -> None:  # noqa: B027 - optional hook
        """Called before each epoch (1-based) of ``total``: for schedules such as HCL's lambda(t)."""

    @abstractmethod
    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor: ...


class LanguageModel(nn.Module):
    """A masked protein language model over its own token vocabulary, pretrained by
    ``ptmkit pretrain`` and read by features and scanners.

    ``vocab`` lists its tokens by id; ``pad_id`` and ``mask_id`` index it. ``sequences`` writes a
    SiteTable's proteins (and fragments) as token ids, special tokens included, so that the core
    builds a corpus from any reader without knowing the vocabulary. ``token_groups`` names sets of
    ids: masking never picks ``"special"``; every other group can be masked whole
    (``masking.always``) and gets its own masked-token accuracy. ``forward(ids, context)`` returns
    hidden states ``[N, L, D]`` and logits ``[N, L, V]``; ``context`` ``[N, L, context_dim]`` is an
    optional per-token input (PTM-Mamba's ESM-2 branch), computed from ``context_feature`` by
    ``language_models.context_batch``. Padding (``pad_id``) is never read.
    """

    Config: ClassVar[type[PluginConfig]] = PluginConfig
    vocab: ClassVar[tuple[str, ...]] = ()
    pad_id: ClassVar[int] = 0
    mask_id: ClassVar[int] = 0
    #: The feature that feeds the context branch (set by ``ptmkit pretrain`` and the package
    #: loader, ``language_models.attach_context``); None: the branch reads zeros.
    context_feature: Feature | None = None
    context_spec: dict[str, object] | None = None

    def __init__(self, config: PluginConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def hidden_dim(self) -> int:
        """Size of the hidden states ``forward`` returns."""
        raise NotImplementedError

    @property
    def context_dim(self) -> int | None:
        """Features per token of the optional ``context`` input (None: the model takes none)."""
        return None

    @abstractmethod
    def sequences(self, table: SiteTable, ptms: dict[str, str] | None = None) -> list[tuple[str, list[int]]]:
        """``(protein or fragment id, token ids)`` of every protein of ``table`` (its labelled
        positives written as the model's modified-residue tokens; ``ptms`` maps a multi-task
        table's task names to PTM names) and of every fragment that has no protein."""

    @classmethod
    @abstractmethod
    def token_groups(cls) -> dict[str, list[int]]:
        """Named sets of token ids; ``"special"`` (never masked) is required."""

    @abstractmethod
    def forward(
        self, ids: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    # -- what zero-shot scanning (``ptmkit ptm-scan``) and the features need; optional
    def context_view(self, ids: Sequence[int]) -> tuple[str, list[int], list[bool]]:
        """What a context feature reads of a token sequence: the residue letters, the index of
        each one's token, and whether it is hidden (masked, or a modified residue whose token
        the language model is asked about). Needed by models with a context branch."""
        raise NotImplementedError(f"{type(self).__name__} has no context branch")

    def residue_ids(self, sequence: str) -> tuple[list[int], int]:
        """An unmodified protein's token ids and the index of its first residue in them."""
        raise NotImplementedError(f"{type(self).__name__} cannot write plain residue sequences")

    @classmethod
    def ptm_tokens(cls) -> dict[str, str]:
        """Modified-residue token -> the residue letter it modifies (empty: no PTM tokens)."""
        return {}

    @classmethod
    def ptm_token(cls, ptm: str, residue: str) -> str:
        """The token of a source's PTM type on ``residue`` (an error naming the mapping if none)."""
        raise NotImplementedError(f"{cls.__name__} has no PTM tokens")

    @classmethod
    def load_file(cls, path: Path) -> LanguageModel:
        """A checkpoint file in the model's own published layout (not a ptmkit package)."""
        raise NotImplementedError(f"{cls.__name__} reads ptmkit packages only, not {path}")
