"""PTM-Mamba downstream: a cached per-residue feature and a fine-tunable graph node.

Both read the unmodified residues (a site predictor asks whether a residue is modified, so the
input never carries PTM tokens) written as PTM-Mamba tokens with ``<cls>``/``<eos>`` around each
protein or chunk, as in pretraining, and take the hidden states after the final norm (what the
published ``infer.py`` returns). The model is a ptmkit package (folder or MLflow run id, from
``ptmkit pretrain``) or a released checkpoint file (``checkpoints.load``).

The context branch (ESM-2 in the paper) reads what it read in pretraining: a package records its
context feature and the feature here runs it on the same residues (its embeddings cached as that
feature caches them); the node takes it as a second graph input. A released checkpoint records
none: give ``context:`` (the feature) or it reads zeros, as the published code does with
``use_esm=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from ptmkit_plugins.features.plm import PlmConfig, PlmFeature
from ptmkit_plugins.features.plm_models import Runner, files_fingerprint, folder_files, hide
from pydantic import Field, field_validator
from torch import nn

from ptmkit import language_models
from ptmkit.alphabet import NONSTANDARD, PAD_INDEX, STANDARD
from ptmkit.api import GraphModule, PluginConfig, register

from . import checkpoints, tokens

#: ptmkit letters PTM-Mamba's vocabulary lacks, read as X
TO_X = "".join(c for c in STANDARD + NONSTANDARD if c not in tokens.IDS)
PAD_ID = tokens.IDS["<pad>"]


class PtmMambaRunner(Runner):
    """A loaded PTM-Mamba: hidden states ``[len, d_model]`` per sequence, specials stripped."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.dtype = dtype
        self.hidden = model.hidden_dim
        self.n_layers = model.config.n_layer
        self.device = device

    def embed(self, seqs: list[str], hidden: list[np.ndarray] | None = None) -> list[np.ndarray]:
        rows = [self.model.residue_ids(s) for s in seqs]
        ids = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(r) for r, _ in rows], batch_first=True, padding_value=PAD_ID
        )
        leads = {lead for _, lead in rows}
        assert len(leads) <= 1, "PTM-Mamba writes every protein with the same leading tokens"
        hide(ids, hidden, leads.pop() if leads else 0, tokens.IDS["<mask>"], "ptm_mamba")
        ids = ids.to(self.device)
        context = language_models.context_batch(self.model, ids)
        with torch.inference_mode():
            hidden_states, _ = self.model(ids, None if context is None else context.to(self.dtype))
        h = hidden_states.float().cpu().numpy()
        return [h[i, lead : lead + len(s)] for i, ((_, lead), s) in enumerate(zip(rows, seqs, strict=True))]


def load_with_context(spec: str, tracking_uri: str | None, context: dict[str, Any] | None) -> nn.Module:
    """The model at ``spec`` with its context: ``context`` when given (it replaces a package's
    own), else what the package recorded."""
    model = checkpoints.load(spec, tracking_uri=tracking_uri)
    if context is not None:
        feature = language_models.build_context(context, where=f"ptm_mamba {spec}: context")
        language_models.attach_context(model, feature, context)
    return model


@register.feature("ptm_mamba")
class PtmMambaFeature(PlmFeature):
    """PTM-Mamba per-residue hidden states (a ptmkit package, run id or released checkpoint), D = d_model.

    Cached like the other language-model features (keyed by the weights' fingerprint); proteins
    longer than ``max_length`` residues run as overlapping chunks.
    """

    plugin: ClassVar[str] = "ptm_mamba"
    to_x: ClassVar[str] = TO_X

    class Config(PlmConfig):
        model: str = Field(
            description="a package folder or MLflow run id (ptmkit pretrain), or a released checkpoint file"
        )
        tracking_uri: str | None = Field(
            None, description="MLflow store of a run id (default: as ptmkit compare)"
        )
        max_length: int = Field(
            1022, ge=1, description="residues per pass (+ <cls>, <eos>); longer proteins are chunked"
        )
        layers: Literal["last"] = Field(
            "last", description="the hidden states after the final norm (PTM-Mamba's output)"
        )
        context: dict[str, Any] | None = Field(
            None,
            description="the feature feeding the context branch (type: esm2, ...); default: the one "
            "the package was pretrained with (a released checkpoint: none, zeros)",
        )

        @field_validator("revision")
        @classmethod
        def _no_revision(cls, value: str | None) -> str | None:
            if value is not None:
                raise ValueError("ptm_mamba models are files or runs, not hub repositories: no revision")
            return value

    config: Config

    def _declared_dim(self) -> int:
        """d_model from the package's config or the checkpoint's shapes (memory-mapped: the
        weights are read once, when the model is loaded)."""
        spec = self.config.model
        if Path(spec).expanduser().is_file():
            data = checkpoints.read(spec, mmap=True)
            return checkpoints.infer_config(data.get("model", data), spec).d_model
        folder = language_models.resolve(spec, tracking_uri=self.config.tracking_uri)
        return int(language_models.read_config(folder)["config"]["d_model"])

    def _source_id(self) -> str:
        spec = self.config.model
        path = Path(spec).expanduser()
        if path.is_file():
            return f"released:{files_fingerprint([path], self.config.weights_hash)}"
        if path.is_dir():
            return f"package:{files_fingerprint(folder_files(path), self.config.weights_hash)}"
        return f"run:{spec.removeprefix('runs:/').split('/')[0]}"  # a run's artifacts never change

    def _context(self) -> dict[str, Any] | None:
        """The context spec in force: the option, else the package's own (before any loading)."""
        if self.config.context is not None:
            return self.config.context
        spec = self.config.model
        if Path(spec).expanduser().is_file():
            return None
        folder = language_models.resolve(spec, tracking_uri=self.config.tracking_uri)
        return language_models.read_config(folder).get("context")

    def _extra_info(self) -> dict[str, Any]:
        spec = self._context()
        if spec is None:
            return {}  # keys of models without a context stay what they were
        feature = language_models.build_context(spec, where=f"ptm_mamba {self.config.model}: context")
        # the context's weights are part of what the embedding depends on
        source = feature._source_id() if isinstance(feature, PlmFeature) else feature.cache_key()
        return {"context": spec, "context_source": source}

    def _load(self, device: torch.device, dtype: torch.dtype) -> Runner:
        model = load_with_context(self.config.model, self.config.tracking_uri, self.config.context)
        return PtmMambaRunner(model, device, dtype)


@register.backbone("ptm_mamba_encoder")
class PtmMambaEncoder(GraphModule):
    """A PTM-Mamba inside the model graph, fine-tuned with the predictor: residue ids -> hidden states.

    Its input is the ``residue_ids`` feature (each window's or protein unit's residues, as
    ptmkit's alphabet indices). The model is loaded from ``model`` when the graph is built (a
    package folder, run id or released checkpoint); ``train_layers`` chooses what trains: ``all``,
    ``none`` (frozen: a feature, without the cache), or the last k bidirectional layers (plus
    the final norm). Windows and units are read without ``<cls>``/``<eos>``. A model with a
    context branch takes its context feature as the second input (``inputs: [ids, esm2]``, the
    feature it was pretrained with); without one the branch reads zeros, which a package
    pretrained with a context refuses.
    """

    class Config(PluginConfig):
        model: str = Field(description="a package folder or MLflow run id, or a released checkpoint file")
        tracking_uri: str | None = Field(None, description="MLflow store of a run id")
        train_layers: Literal["all", "none"] | int = Field(
            "all", description="'all', 'none' (frozen) or the number of last layers that train"
        )

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 2)

    def __init__(self, config: PtmMambaEncoder.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if self.in_dims[0] != 1:
            raise ValueError(
                "ptm_mamba_encoder reads the residue_ids feature (dim 1) first, got inputs of dims "
                f"{self.in_dims}"
            )
        self.lm = checkpoints.load(config.model, tracking_uri=config.tracking_uri)
        want = self.lm.context_dim
        if len(self.in_dims) == 2 and self.in_dims[1] != want:
            raise ValueError(
                f"the second input is the context branch's feature: {want or 'no'} features per residue "
                f"(context_dim), got {self.in_dims[1]}"
                + ("" if want else "; this model has no context branch: give residue_ids alone")
            )
        if len(self.in_dims) == 1 and self.lm.context_spec is not None:
            spec = ", ".join(f"{k}: {v}" for k, v in self.lm.context_spec.items())
            raise ValueError(
                f"{config.model} was pretrained with a context ({spec}): give that feature as the "
                "node's second input (inputs: [residue_ids, <that feature>])"
            )
        n = self.lm.config.n_layer
        k = config.train_layers
        if isinstance(k, int) and not 0 <= k <= n:
            raise ValueError(f"train_layers {k}: the model has {n} layers")
        trainable = n if k == "all" else 0 if k == "none" else k
        for p in self.lm.parameters():
            p.requires_grad_(trainable == n)
        if 0 < trainable < n:
            bb = self.lm.backbone
            stacks = (
                [bb.forward_layers, bb.backward_layers, bb.hidden_fc]
                if self.lm.config.bidirectional
                else [bb.layers]
            )
            for stack in stacks:
                for layer in list(stack)[n - trainable :]:
                    layer.requires_grad_(True)
            bb.norm_f.requires_grad_(True)
        # ptmkit alphabet index (0-19 standard, 20 any other letter, 21 padding) -> token id
        table = torch.tensor([tokens.IDS[c] for c in STANDARD] + [tokens.IDS["X"], PAD_ID], dtype=torch.long)
        assert len(table) == PAD_INDEX + 1
        self.register_buffer("to_token", table, persistent=False)
        self.output_dims = {"out": self.lm.hidden_dim}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        index = inputs[0]
        ids = self.to_token[index[..., 0].round().long()]
        ids = ids.masked_fill(~mask, PAD_ID)
        context = inputs[1] * mask.unsqueeze(-1).to(inputs[1].dtype) if len(inputs) == 2 else None
        hidden, _ = self.lm(ids, context)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)
