"""Protein language-model features: ESM-2, ProtT5, any Hugging Face encoder, and EMBER2 (declared only).

Each feature embeds whole proteins (whole-protein tables) or the window's own fragment and slices
every window from the result (``plm_context``); padding rows are zeros. Embeddings are computed in
length-sorted batches and kept in the on-disk cache (``ptmkit.embcache``), stored and returned at
float16 precision, so a value is the same whether it was just computed or read back. See docs/plm.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from ptmkit import embcache
from ptmkit.api import register
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.sitetable import SiteTable

from .plm_context import chunk_spans, plan_segments, stitch
from .plm_models import (
    ESM2_DIMS,
    FairEsmRunner,
    FeatureUnavailableError,
    HFRunner,
    ModelRef,
    Runner,
    config_dim,
    fair_esm_dim,
    files_fingerprint,
    folder_files,
    hf_fix,
    hub_commit,
    load_fair_esm,
    load_hf,
    locate,
    locate_fair_esm,
    model_config,
    require,
    resolve_device,
    resolve_precision,
)

_F16_MAX = float(np.finfo(np.float16).max)


class PlmConfig(PluginConfig):
    """Options shared by every language-model feature."""

    model: str = Field(description="Hub id (org/name) or local folder of the model")
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit); default branch if unset"
    )
    layers: Literal["last"] | list[int] = Field(
        "last",
        description="'last' or layer indices to average (0 = token embeddings, L = last, -1 = last)",
    )
    device: Literal["cpu", "cuda", "mps", "auto"] = Field(
        "auto", description="auto: cuda, else mps, else cpu"
    )
    precision: Literal["auto", "float32", "float16"] = Field(
        "auto", description="Model precision; float16 needs a GPU"
    )
    batch_tokens: int = Field(4096, ge=1, description="Tokens per batch (sequences sorted by length)")
    max_length: int = Field(
        1022, ge=1, description="Longest sequence the model takes; longer ones are chunked"
    )
    overlap: int = Field(256, ge=0, description="Residues shared by neighbouring chunks of a long protein")
    cache: bool = Field(True, description="Keep embeddings in the on-disk cache")
    cache_dir: str | None = Field(None, description="Cache root (default: $PTMKIT_CACHE or the user cache)")
    weights_hash: Literal["stat", "content"] = Field(
        "stat", description="Fingerprint of local weights: file sizes+mtimes (fast) or sha256 of the bytes"
    )
    progress: bool = Field(True, description="Show a progress bar (residues/s) while embedding")

    @model_validator(mode="after")
    def _check(self) -> PlmConfig:
        if self.overlap >= self.max_length:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than max_length ({self.max_length})")
        if self.layers != "last" and not self.layers:
            raise ValueError("layers: give 'last' or a non-empty list of layer indices")
        return self


class PlmFeature(Feature):
    """Shared machinery: sequence plan, cache, batching, chunking, progress. Subclasses load models."""

    plugin: ClassVar[str] = "plm"
    #: Letters replaced by X before the model sees them.
    to_x: ClassVar[str] = ""
    half_on_gpu: ClassVar[bool] = False
    config: PlmConfig

    def __init__(self, config: PlmConfig) -> None:
        super().__init__(config)
        self._dim: int | None = None
        self._runner: Runner | None = None
        self._source: str | None = None
        self._store: embcache.EmbeddingCache | None = None

    # -- subclass hooks
    def _declared_dim(self) -> int:
        raise NotImplementedError

    def _load(self, device: torch.device, dtype: torch.dtype) -> Runner:
        raise NotImplementedError

    def _source_id(self) -> str:
        """Identity of the weights for the cache key (local fingerprint or hub id@commit)."""
        raise NotImplementedError

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # -- Feature API
    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._declared_dim()
        return self._dim

    def encode(self, table: SiteTable) -> torch.Tensor:
        out = np.zeros((len(table), table.width, self.dim), dtype=np.float32)
        by_seq: dict[str, list] = {}
        for seg in plan_segments(table):
            by_seq.setdefault(seg.seq, []).append(seg)
        # fill rows as each sequence arrives, so only one protein's embedding is held at a time
        for seq, emb in self.iter_embeddings(list(by_seq)):
            for s in by_seq[seq]:
                out[s.row, s.win_start : s.win_start + s.length] = emb[s.seq_start : s.seq_start + s.length]
        return torch.from_numpy(out)

    # -- embedding
    def _device(self) -> tuple[torch.device, torch.dtype]:
        device = resolve_device(self.config.device)
        return device, resolve_precision(self.config.precision, device, half_on_gpu=self.half_on_gpu)

    def runner(self) -> Runner:
        """The loaded model (loaded on first use; a fully cached run never loads it)."""
        if self._runner is None:
            device, dtype = self._device()
            runner = self._load(device, dtype)
            if runner.hidden != self.dim:
                raise FeatureUnavailableError(
                    f"{self.plugin}: model {self.config.model!r} has hidden size {runner.hidden}, "
                    f"but the feature declared dim {self.dim}"
                )
            self._runner = runner
        return self._runner

    def cache_store(self) -> embcache.EmbeddingCache:
        if self._store is None:
            if self._source is None:
                self._source = self._source_id()
            _, dtype = self._device()
            info = {
                "plugin": self.plugin,
                "plugin_version": self.version,
                "model": self.config.model,
                "revision": self.config.revision,
                "source": self._source,
                "layers": self.config.layers,
                "precision": str(dtype).removeprefix("torch."),
                **self._extra_info(),
            }
            self._store = embcache.EmbeddingCache(embcache.cache_root(self.config.cache_dir), info)
        return self._store

    def prepare(self, seq: str) -> str:
        return seq.translate(str.maketrans(self.to_x, "X" * len(self.to_x))) if self.to_x else seq

    def _salt(self, seq: str) -> str:
        c = self.config
        return f"chunks:{c.max_length}:{c.overlap}" if len(seq) > c.max_length else ""

    def embed_sequences(self, seqs: list[str]) -> dict[str, np.ndarray]:
        """float16 [len, dim] per sequence, from the cache or the model (then stored)."""
        return dict(self.iter_embeddings(seqs))

    def iter_embeddings(self, seqs: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(seq, float16 [len, dim])`` for every sequence: cache hits first, then computed
        ones as they complete (each stored in the cache)."""
        groups: dict[str, list[str]] = {}
        for s in dict.fromkeys(seqs):
            groups.setdefault(self.prepare(s), []).append(s)
        store = self.cache_store() if self.config.cache else None
        todo = []
        for p, originals in groups.items():
            hit = store.get(embcache.sequence_key(p, self._salt(p))) if store is not None else None
            if hit is None:
                todo.append(p)
                continue
            for s in originals:
                yield s, hit
        for p, emb in self._compute(todo):
            if store is not None:
                emb = store.put(embcache.sequence_key(p, self._salt(p)), emb)
            else:
                emb = np.clip(emb, -_F16_MAX, _F16_MAX).astype(np.float16)
            for s in groups[p]:
                yield s, emb

    def fill_cache(self, sequences: Sequence[str]) -> tuple[int, int] | None:
        """Embed the sequences the cache lacks (or holds corrupt) and store them."""
        if not self.config.cache:
            return None
        store = self.cache_store()
        prepared = list(dict.fromkeys(self.prepare(s) for s in sequences))
        todo = [p for p in prepared if store.get(embcache.sequence_key(p, self._salt(p))) is None]
        for p, emb in self._compute(todo):
            store.put(embcache.sequence_key(p, self._salt(p)), emb)
        return len(todo), len(prepared) - len(todo)

    def context(self, sequences: Sequence[str], hidden: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Whole-sequence embeddings with the hidden residues given as the model's mask token
        (computed each time: masks differ per batch); sequences without hidden residues come from
        the cache like any embedding. float16 values either way, as the feature gives them."""
        seqs = [self.prepare(s) for s in sequences]
        masks = [np.asarray(h, dtype=bool) for h in hidden]
        out: list[np.ndarray | None] = [None] * len(seqs)
        plain = [i for i, m in enumerate(masks) if not m.any()]
        if plain:
            got = self.embed_sequences([seqs[i] for i in plain])
            for i in plain:
                out[i] = got[seqs[i]]
        masked = [i for i, m in enumerate(masks) if m.any()]
        for k, emb in self._run([seqs[i] for i in masked], [masks[i] for i in masked], progress=False):
            out[masked[k]] = np.clip(emb, -_F16_MAX, _F16_MAX).astype(np.float16)
        return [o.astype(np.float32) for o in out]  # type: ignore[union-attr]

    def _compute(self, seqs: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        """Run the model on ``seqs``: ``(seq, float32 embedding)`` as each one completes."""
        for i, emb in self._run(seqs):
            yield seqs[i], emb

    def _run(
        self, seqs: list[str], hidden: list[np.ndarray] | None = None, *, progress: bool | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Chunk long sequences, batch chunks by length (longest first), and yield each
        sequence's index and stitched float32 embedding as soon as its last chunk is done
        (``hidden``: per sequence, the residues given as the model's mask token)."""
        if not seqs:
            return
        c = self.config
        runner = self.runner()
        spans = [chunk_spans(len(s), c.max_length, c.overlap) for s in seqs]
        jobs = [(i, k, a, b) for i, sp in enumerate(spans) for k, (a, b) in enumerate(sp)]
        jobs.sort(key=lambda j: j[3] - j[2], reverse=True)
        parts: dict[int, dict[int, np.ndarray]] = {}
        total = sum(b - a for _, _, a, b in jobs)
        desc = f"{self.plugin} embeddings"
        show = c.progress if progress is None else progress
        with tqdm(total=total, unit="res", unit_scale=True, desc=desc, disable=not show, leave=False) as bar:
            start = 0
            while start < len(jobs):
                longest = jobs[start][3] - jobs[start][2] + 2  # + special tokens
                size = max(1, c.batch_tokens // longest)
                batch = jobs[start : start + size]
                pieces = [seqs[i][a:b] for i, _, a, b in batch]
                if hidden is None:
                    outs = runner.embed(pieces)
                else:
                    outs = runner.embed(pieces, [hidden[i][a:b] for i, _, a, b in batch])
                bar.update(sum(b - a for _, _, a, b in batch))
                start += size
                for (i, k, _, _), o in zip(batch, outs, strict=True):
                    got = parts.setdefault(i, {})
                    got[k] = o
                    if len(got) == len(spans[i]):
                        del parts[i]
                        yield i, stitch(len(seqs[i]), spans[i], [got[j] for j in range(len(got))])


# ------------------------------------------------------------------------------------ plugins


def _hf_source(ref: ModelRef, feature: PlmFeature) -> str:
    if ref.path is not None:
        return f"local:{files_fingerprint(folder_files(ref.path), feature.config.weights_hash)}"
    commit = hub_commit(ref)
    if commit is None:  # not cached yet: loading downloads it, then the commit is known
        feature.runner()
        commit = hub_commit(ref) or ref.revision or "main"
    return f"hub:{ref.hub_id}@{commit}"


@register.feature("esm2")
class Esm2(PlmFeature):
    """ESM-2 per-residue embeddings (transformers ``EsmModel`` or a fair-esm ``.pt``), D = hidden size.

    ``backend: transformers`` takes a hub id (``facebook/esm2_t33_650M_UR50D``) or a local folder
    saved with ``save_pretrained``; ``backend: fair-esm`` takes a ``esm2_*.pt`` checkpoint with its
    ``-contact-regression.pt`` beside it (or a fair-esm model name already in the torch hub cache).
    Both give the same output for the same weights. ``layers`` averages hidden states with
    fair-esm's numbering (0 = token embeddings, L = final layer-normed output).
    """

    plugin = "esm2"

    class Config(PlmConfig):
        model: str = Field(
            "facebook/esm2_t33_650M_UR50D", description="Hub id, local folder or .pt checkpoint"
        )
        backend: Literal["transformers", "fair-esm"] = Field("transformers", description="Loader to use")
        trust_checkpoint: bool = Field(
            False, description="fair-esm: allow full unpickling if torch's safe loader refuses the .pt"
        )

    config: Config

    def _ref(self) -> ModelRef:
        c = self.config
        return locate(self.plugin, c.model, c.revision, fix=hf_fix(c.model, c.revision))

    def _declared_dim(self) -> int:
        c = self.config
        if c.backend == "fair-esm":
            return fair_esm_dim(self.plugin, c.model)
        ref = self._ref()
        if ref.hub_id is not None:
            name = ref.hub_id.split("/")[-1]
            if ref.hub_id == f"facebook/{name}" and name in ESM2_DIMS:
                return ESM2_DIMS[name]
        return config_dim(model_config(ref, hf_fix(c.model, c.revision)), ("hidden_size",))

    def _source_id(self) -> str:
        c = self.config
        if c.backend == "fair-esm":
            path, name = locate_fair_esm(self.plugin, c.model)
            if path is None or not Path(os.path.expandvars(c.model)).expanduser().is_file():
                return f"fair-esm:{name}"  # an official release by name (torch hub cache or download)
            files = [path, path.with_name(f"{path.stem}-contact-regression.pt")]
            return f"local:{files_fingerprint(files, c.weights_hash)}"
        return _hf_source(self._ref(), self)

    def _extra_info(self) -> dict[str, Any]:
        return {"backend": self.config.backend}

    def _load(self, device: torch.device, dtype: torch.dtype) -> Runner:
        c = self.config
        if c.backend == "fair-esm":
            model, alphabet = load_fair_esm(self.plugin, c.model, trust_checkpoint=c.trust_checkpoint)
            return FairEsmRunner(self.plugin, model, alphabet, layers=c.layers, device=device, dtype=dtype)
        transformers = require("transformers", self.plugin)

        def load(source: str, kw: dict[str, Any]) -> tuple[Any, Any]:
            tok = transformers.AutoTokenizer.from_pretrained(source, **kw)
            model = transformers.EsmModel.from_pretrained(source, add_pooling_layer=False, dtype=dtype, **kw)
            return model, tok

        model, tok = load_hf(self._ref(), load, hf_fix(c.model, c.revision))
        return HFRunner(
            self.plugin,
            model,
            tok,
            tokenize="esm",
            lead=1,
            trail=1,
            layers=c.layers,
            device=device,
            dtype=dtype,
        )


#: ProtT5 encoders on the hub and their size.
PROTT5_DIMS = {
    "Rostlab/prot_t5_xl_half_uniref50-enc": 1024,
    "Rostlab/prot_t5_xl_uniref50": 1024,
    "Rostlab/prot_t5_xl_bfd": 1024,
    "Rostlab/prot_t5_xxl_uniref50": 1024,
    "Rostlab/prot_t5_xxl_bfd": 1024,
}


@register.feature("prott5")
class ProtT5(PlmFeature):
    """ProtT5 per-residue embeddings (transformers ``T5EncoderModel`` + ``T5Tokenizer``), D = 1024.

    Residues are given space-separated, U/Z/O/B become X (as ProtTrans does), the trailing </s> is
    dropped. Half precision on CUDA (``precision: auto``), float32 on CPU.
    """

    plugin = "prott5"
    to_x = "UZOB"
    half_on_gpu = True

    class Config(PlmConfig):
        model: str = Field("Rostlab/prot_t5_xl_half_uniref50-enc", description="Hub id or local folder")
        max_length: int = Field(
            4000, ge=1, description="Longest sequence embedded at once; longer are chunked"
        )

    config: Config

    def _ref(self) -> ModelRef:
        c = self.config
        return locate(self.plugin, c.model, c.revision, fix=hf_fix(c.model, c.revision))

    def _declared_dim(self) -> int:
        ref = self._ref()
        if ref.hub_id in PROTT5_DIMS:
            return PROTT5_DIMS[ref.hub_id]
        return config_dim(model_config(ref, hf_fix(self.config.model, self.config.revision)), ("d_model",))

    def _source_id(self) -> str:
        return _hf_source(self._ref(), self)

    def _load(self, device: torch.device, dtype: torch.dtype) -> Runner:
        c = self.config
        transformers = require("transformers", self.plugin)

        def load(source: str, kw: dict[str, Any]) -> tuple[Any, Any]:
            tok = transformers.T5Tokenizer.from_pretrained(source, do_lower_case=False, **kw)
            model = transformers.T5EncoderModel.from_pretrained(source, dtype=dtype, **kw)
            return model, tok

        model, tok = load_hf(self._ref(), load, hf_fix(c.model, c.revision))
        return HFRunner(
            self.plugin,
            model,
            tok,
            tokenize="spaced",
            lead=0,
            trail=1,
            layers=c.layers,
            device=device,
            dtype=dtype,
        )


@register.feature("hf_encoder")
class HFEncoder(PlmFeature):
    """Any Hugging Face protein encoder declared by config (ProtBERT, Ankh, ...), D from its config.

    ``model_class`` names the transformers class (``AutoModel``, ``BertModel``, ``T5EncoderModel``
    for Ankh/ProtT5-style encoders); ``tokenizer`` says how residues are written (``spaced``:
    ``"M K T"``, ``plain``: ``"MKT"``, ``words``: one word per residue); ``strip_leading`` and
    ``strip_trailing`` say how many special tokens surround the residues.
    """

    plugin = "hf_encoder"

    class Config(PlmConfig):
        model: str = Field(description="Hub id or local folder")
        model_class: str = Field("AutoModel", description="transformers class that loads the encoder")
        tokenizer: Literal["spaced", "plain", "words"] = Field(
            "spaced", description="How residues are written"
        )
        strip_leading: int = Field(1, ge=0, description="Special tokens before the residues (e.g. [CLS])")
        strip_trailing: int = Field(
            1, ge=0, description="Special tokens after the residues (e.g. [SEP], </s>)"
        )
        to_x: str = Field("", description="Letters replaced by X first (ProtTrans models: 'UZOB')")
        dim: int | None = Field(None, ge=1, description="Embedding size; default: read from config.json")

    config: Config

    @property
    def to_x(self) -> str:  # type: ignore[override]
        return self.config.to_x

    def _ref(self) -> ModelRef:
        c = self.config
        return locate(self.plugin, c.model, c.revision, fix=hf_fix(c.model, c.revision))

    def _declared_dim(self) -> int:
        if self.config.dim is not None:
            return self.config.dim
        return config_dim(model_config(self._ref(), hf_fix(self.config.model, self.config.revision)))

    def _source_id(self) -> str:
        return _hf_source(self._ref(), self)

    def _extra_info(self) -> dict[str, Any]:
        c = self.config
        return {
            "model_class": c.model_class,
            "tokenizer": c.tokenizer,
            "strip": [c.strip_leading, c.strip_trailing],
            "to_x": c.to_x,
        }

    def _load(self, device: torch.device, dtype: torch.dtype) -> Runner:
        c = self.config
        transformers = require("transformers", self.plugin)
        cls = getattr(transformers, c.model_class, None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            raise FeatureUnavailableError(f"{self.plugin}: transformers has no model class {c.model_class!r}")

        def load(source: str, kw: dict[str, Any]) -> tuple[Any, Any]:
            tok = transformers.AutoTokenizer.from_pretrained(source, **kw)
            model = cls.from_pretrained(source, dtype=dtype, **kw)
            return model, tok

        model, tok = load_hf(self._ref(), load, hf_fix(c.model, c.revision))
        return HFRunner(
            self.plugin,
            model,
            tok,
            tokenize=c.tokenizer,
            lead=c.strip_leading,
            trail=c.strip_trailing,
            layers=c.layers,
            device=device,
            dtype=dtype,
        )


@register.feature("ember2")
class Ember2(Feature):
    """EMBER2 structural embeddings: declared so recipes validate, not computable in ptmkit yet.

    EMBER2 (Weissenow, Heinzinger & Rost 2022) predicts inter-residue distograms from ProtT5
    attention maps with a 2D dilated ResNet whose blocks are 128 channels wide; it publishes no
    per-residue vector, so ``dim`` defaults to that width (128) and can be set to match whatever
    pooling a recipe expects. ``encode`` always raises: it needs the EMBER2 weights and ProtT5.
    """

    class Config(PluginConfig):
        dim: int = Field(128, ge=1, description="Declared size (EMBER2's ResNet block width by default)")

    config: Config

    @property
    def dim(self) -> int:
        return self.config.dim

    def encode(self, table: SiteTable) -> torch.Tensor:
        raise FeatureUnavailableError(
            "ember2: EMBER2 structural embeddings need the EMBER2 weights and ProtT5; they are not "
            "available in ptmkit yet. Remove the ember2 feature from the recipe or precompute the "
            "embeddings outside ptmkit."
        )


__all__ = ["Ember2", "Esm2", "HFEncoder", "PlmFeature", "ProtT5"]
