"""A trainable ESM-2 inside the model graph, tuned as MTPrompt-PTM tunes it (prompts, adapters, LoRA).

The node owns a transformers ``EsmModel``, loaded like the ``esm2`` feature (a hub id or a local
``save_pretrained`` folder), and reads the ``residue_ids`` feature. Each window or protein unit
is written ``<cls> residues <eos>``; padding is masked out of attention. What trains is chosen
part by part, and everything else is frozen (``requires_grad`` off, so the optimiser never
sees it):

- ``train_layers``: ``none`` (the frozen body, MTPrompt-PTM's default), ``all``, or the last k
  layers with the final layer norm.
- ``prompts``: prefix soft prompts. ``length`` vectors per task sit in front of ``<cls>`` after
  the token embeddings (and after ESM's token-dropout rescaling), and are removed after the
  final layer norm. The padding mask is extended; rotary positions run over prompt + sequence,
  as MTPrompt-PTM's code does. With ``tasks: N`` each unit reads its own task's set (the graph
  passes the task; protein units are then cut per task). A prompt set starts random
  (N(0, ``init_std``)) or from a file of task tokens (``ptmkit task-tokens`` computes them).
- ``adapters``: two residual adapters in each of the last ``layers`` layers, ``x + LN(W2 relu(W1
  x))``. One follows the attention output projection and one the feed-forward output, before the
  residual add (S-PLM's ``ResMLP``). The LayerNorm's scale starts at zero, so a fresh adapter is
  the identity; a checkpoint (S-PLM) gives them their values. Frozen unless ``train: true``.
- ``lora``: LoRA on the attention projections through the ``peft`` library (r 2, alpha 8,
  dropout 0.05 in MTPrompt-PTM), only the LoRA matrices trainable.
- ``checkpoint``: a state dict loaded on top (``torch.load(weights_only=True)``): S-PLM's
  ``state_dict1`` (fair-esm names under ``esm2.``, adapters included) or an ``EsmModel``
  state dict.

Memory on long proteins is bounded by the units: ``data.protein.chunk`` residues per pass.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from ptmkit_plugins.features.plm_models import (
    ESM2_DIMS,
    ESM2_SHAPES,
    ESM2_TOKENS,
    ModelUnavailableError,
    esm2_config,
    hf_fix,
    load_hf,
    locate,
    require,
)
from pydantic import Field, model_validator
from torch import nn

from ptmkit.alphabet import PAD_INDEX, STANDARD
from ptmkit.api import GraphModule, PluginConfig, register, structure_only


class PromptOptions(PluginConfig):
    length: int = Field(500, gt=0, description="prompt vectors per task (MTPrompt-PTM: 500)")
    tasks: int = Field(1, gt=0, description="prompt sets: 1 shared, or one per task (as many as data.tasks)")
    init: Literal["random", "file"] = Field("random", description="random N(0, init_std), or from `file`")
    init_std: float = Field(0.02, gt=0, description="std of a random prompt")
    file: str | None = Field(
        None, description="task tokens [tasks, length, hidden] (safetensors `task_tokens`, or .npy)"
    )
    layers: list[int] = Field(
        default_factory=lambda: [0],
        description="where prompt vectors enter: 0 = in front of the input (MTPrompt-PTM: [0]); a "
        "deeper k overwrites the prompt positions before layer k with vectors of their own",
    )

    @model_validator(mode="after")
    def _file(self) -> PromptOptions:
        if (self.init == "file") != (self.file is not None):
            raise ValueError("prompts: init: file needs `file` (and `file` needs init: file)")
        if 0 not in self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise ValueError(f"prompts.layers {self.layers}: distinct layer indices, 0 among them")
        return self


class AdapterOptions(PluginConfig):
    layers: int = Field(12, gt=0, description="adapters in the last this many layers (MTPrompt-PTM: 12)")
    hidden: int | None = Field(None, gt=0, description="bottleneck width (default: hidden size / 2)")
    train: bool = Field(False, description="train them (MTPrompt-PTM keeps S-PLM's adapters frozen)")


class LoraOptions(PluginConfig):
    r: int = Field(2, gt=0, description="LoRA rank (MTPrompt-PTM: 2)")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha (MTPrompt-PTM: 8)")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (MTPrompt-PTM: 0.05)")
    targets: Literal["attention", "attention+ffn"] = Field(
        "attention",
        description="attention: q, k, v and output projections (MTPrompt-PTM); +ffn: also both FFN",
    )


#: peft target patterns (module names inside EsmModel)
LORA_TARGETS = {
    "attention": r".*\.attention\.(self\.(query|key|value)|output\.dense)",
    "attention+ffn": (
        r".*\.(attention\.(self\.(query|key|value)|output\.dense)|intermediate\.dense|\d+\.output\.dense)"
    ),
}


class ResidualAdapter(nn.Module):
    """``x + LN(up(relu(down(x))))``; the LayerNorm scale starts at zero (the identity)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.module = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.LayerNorm(dim)
        )
        nn.init.zeros_(self.module[3].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.module(x)


def _reprompt(node: Esm2Encoder, key: str, _module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """Forward pre-hook of a deeper prompt layer: its prompt positions get that layer's vectors."""
    prompts = node.deep_prompts[key][node._chosen]
    hidden = args[0] if args else kwargs["hidden_states"]
    replaced = torch.cat([prompts.to(hidden.dtype), hidden[:, prompts.shape[1] :]], 1)
    return ((replaced, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": replaced})


def _adapt(
    adapters: nn.ModuleDict, key: str, _module: nn.Module, _inputs: Any, out: torch.Tensor
) -> torch.Tensor:
    """Forward hook: a projection's output through its residual adapter."""
    return adapters[key](out)


#: fair-esm parameter names (S-PLM's) -> transformers EsmModel's, per layer part
FAIR_LAYER_NAMES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "LayerNorm",
}
_ADAPTER = re.compile(
    r"^layers\.(\d+)\.adapter_layer(?:_dict\.adapter_0)?\.([01])\.module\.(\d)\.(weight|bias)$"
)


def hf_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's tensors as ``(EsmModel state, adapter state)``: fair-esm names (S-PLM's,
    under an optional ``esm2.`` prefix) mapped to transformers', S-PLM adapters to this node's
    ``adapters.{layer}_{0|1}``; transformers names pass through."""
    body: dict[str, torch.Tensor] = {}
    adapters: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key.removeprefix("module.").removeprefix("esm2.").removeprefix("esm.")
        if m := _ADAPTER.match(k):
            adapters[f"{m[1]}_{m[2]}.module.{m[3]}.{m[4]}"] = value
            continue
        if k.startswith(("embeddings.", "encoder.")):
            body[k] = value
        elif k == "embed_tokens.weight":
            body["embeddings.word_embeddings.weight"] = value
        elif k.startswith("emb_layer_norm_after."):
            body["encoder." + k] = value
        elif m := re.match(r"^layers\.(\d+)\.(.+)\.(weight|bias)$", k):
            part = FAIR_LAYER_NAMES.get(m[2])
            if part is not None:
                body[f"encoder.layer.{m[1]}.{part}.{m[3]}"] = value
    return body, adapters


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, weights only (never unpickling objects): S-PLM's
    ``state_dict1``, a ``model_state_dict``/``state_dict``/``model`` entry, or a plain state dict."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or pickled-object file
        raise ValueError(
            f"{path}: not readable as weights only ({str(exc).splitlines()[0][:200]}); "
            "ptmkit never unpickles checkpoints"
        ) from None
    for key in ("state_dict1", "model_state_dict", "state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: no state dict of tensors in it")
    return data


def load_task_tokens(path: Path, tasks: int, length: int, hidden: int) -> torch.Tensor:
    """``[tasks, length, hidden]`` task tokens from a safetensors (``task_tokens``) or .npy file."""
    if not path.is_file():
        raise ValueError(
            f"prompts.file {path}: no such file (`ptmkit task-tokens RECIPE --feature NAME -o {path}`)"
        )
    if path.suffix == ".npy":
        import numpy as np

        tensor = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        from safetensors.torch import load_file

        data = load_file(str(path))
        if "task_tokens" not in data:
            raise ValueError(f"{path}: no `task_tokens` tensor (has {', '.join(data) or 'none'})")
        tensor = data["task_tokens"]
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tuple(tensor.shape) != (tasks, length, hidden):
        raise ValueError(
            f"{path}: task tokens of shape {tuple(tensor.shape)}; the prompts need "
            f"[{tasks}, {length}, {hidden}] (prompts.tasks, prompts.length, the model's hidden size)"
        )
    return tensor.float()


@register.backbone("esm2_encoder")
class Esm2Encoder(GraphModule):
    """ESM-2 fine-tuned or prompt-tuned inside the graph: residue ids -> per-residue hidden states."""

    class Config(PluginConfig):
        model: str = Field(
            "facebook/esm2_t33_650M_UR50D", description="hub id or local save_pretrained folder"
        )
        revision: str | None = Field(None, description="hub revision")
        checkpoint: str | None = Field(
            None, description="weights loaded on top (S-PLM's .pth, or an EsmModel state dict); weights only"
        )
        train_layers: Literal["all", "none"] | int = Field(
            "none", description="'none' (frozen body), 'all', or the last k layers (+ final layer norm)"
        )
        prompts: PromptOptions | None = Field(
            None, description="prefix soft prompts (MTPrompt-PTM: 500, per task)"
        )
        adapters: AdapterOptions | None = Field(
            None, description="residual adapters (S-PLM's, MTPrompt-PTM: 12)"
        )
        lora: LoraOptions | None = Field(None, description="LoRA through peft (off in MTPrompt-PTM)")

    n_inputs: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, config: Esm2Encoder.Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if self.in_dims != [1]:
            raise ValueError(
                f"esm2_encoder reads the residue_ids feature (dim 1), got inputs of dims {self.in_dims}"
            )
        self.esm, tokenizer, self.unloaded = _load_esm(config)
        cfg = self.esm.config
        hidden, n = int(cfg.hidden_size), int(cfg.num_hidden_layers)
        self.hidden, self.n_layers = hidden, n
        # ptmkit alphabet index (0-19 standard, 20 any other letter, 21 padding) -> ESM token id
        vocab = tokenizer.get_vocab()
        table = [vocab[c] for c in STANDARD] + [vocab["X"], tokenizer.pad_token_id]
        assert len(table) == PAD_INDEX + 1
        self.register_buffer("to_token", torch.tensor(table, dtype=torch.long), persistent=False)
        self.cls_id, self.eos_id, self.pad_id = (
            tokenizer.cls_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )

        checkpoint = None
        if config.checkpoint is not None:
            path = Path(config.checkpoint).expanduser()
            if self._describe_only(path, "checkpoint"):
                pass
            else:
                checkpoint = (path, *hf_names(read_checkpoint(path)))
                self._load_body(*checkpoint[:2])
        if config.lora is not None:  # before the adapters: they follow the LoRA-wrapped projections
            peft = require("peft", "esm2_encoder")
            lora = peft.LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                target_modules=LORA_TARGETS[config.lora.targets],
            )
            self.esm = peft.inject_adapter_in_model(lora, self.esm)
        self.adapters = nn.ModuleDict()
        if config.adapters is not None:
            a = config.adapters
            if a.layers > n:
                raise ValueError(f"adapters.layers {a.layers}: the model has {n} layers")
            for i in range(n - a.layers, n):
                for j, path_ in enumerate(("attention.output.dense", "output.dense")):
                    adapter = ResidualAdapter(hidden, a.hidden or hidden // 2)
                    self.adapters[f"{i}_{j}"] = adapter
                    target = self.esm.encoder.layer[i].get_submodule(path_)
                    # a partial, not a closure: a deep copy of the node then calls its own adapters
                    target.register_forward_hook(functools.partial(_adapt, self.adapters, f"{i}_{j}"))
        if checkpoint is not None and checkpoint[2]:
            self._load_adapters(checkpoint[0], checkpoint[2])

        self.prompt: nn.Parameter | None = None
        if config.prompts is not None:
            p = config.prompts
            if p.init == "file" and not self._describe_only(Path(str(p.file)).expanduser(), "prompts.file"):
                init = load_task_tokens(Path(str(p.file)).expanduser(), p.tasks, p.length, hidden)
            else:
                init = torch.randn(p.tasks, p.length, hidden) * p.init_std
            self.prompt = nn.Parameter(init)
            self.task_count = p.tasks if p.tasks > 1 else None
            deeper = sorted(k for k in p.layers if k)
            if deeper and deeper[-1] >= n:
                raise ValueError(f"prompts.layers {p.layers}: the model has layers 0-{n - 1}")
            self.deep_prompts = nn.ParameterDict(
                {str(k): nn.Parameter(torch.randn(p.tasks, p.length, hidden) * p.init_std) for k in deeper}
            )
            for k in deeper:  # a partial (as the adapters): a deep copy calls its own prompts
                layer = self.esm.encoder.layer[k]
                layer.register_forward_pre_hook(functools.partial(_reprompt, self, str(k)), with_kwargs=True)
        self._freeze(config)
        self.output_dims = {"out": hidden}

    def _describe_only(self, path: Path, key: str) -> bool:
        """Whether ``path`` is skipped because the graph is only described (``ptmkit validate``)
        and the weights or the file are not here; the reason joins ``unloaded``."""
        if not structure_only() or (path.exists() and self.unloaded is None):
            return False
        why = f"{key} {path} not read" + ("" if path.exists() else " (no such file here)")
        self.unloaded = f"{self.unloaded}; {why}" if self.unloaded else why
        return True

    def _load_body(self, path: Path, body: dict[str, torch.Tensor]) -> None:
        if not body:
            raise ValueError(
                f"{path}: none of its tensors is an ESM-2 weight (fair-esm or transformers names)"
            )
        have = self.esm.state_dict()
        missing = sorted(set(body) - set(have))
        if missing:
            raise ValueError(f"{path}: weights this ESM-2 does not have: {missing[:3]}")
        for key, value in body.items():
            if have[key].shape != value.shape:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(value.shape)}, the model {tuple(have[key].shape)}"
                )
        self.esm.load_state_dict(body, strict=False)

    def _load_adapters(self, path: Path, adapters: dict[str, torch.Tensor]) -> None:
        if not self.adapters:
            raise ValueError(f"{path} holds adapters: configure `adapters:` (S-PLM: layers 12) to load them")
        unknown = sorted({k.split(".")[0] for k in adapters} - set(self.adapters))
        if unknown:
            raise ValueError(f"{path}: adapters of layers the config has none in: {unknown[:3]}")
        self.adapters.load_state_dict(adapters, strict=False)

    def _freeze(self, config: Esm2Encoder.Config) -> None:
        """Only the chosen parts train: the body per ``train_layers``, adapters if ``train``,
        LoRA matrices and prompts always."""
        n, k = self.n_layers, config.train_layers
        if isinstance(k, int) and not 0 <= k <= n:
            raise ValueError(f"train_layers {k}: the model has {n} layers")
        for p in self.esm.parameters():
            p.requires_grad_(k == "all")
        if isinstance(k, int) and k > 0:
            for layer in list(self.esm.encoder.layer)[n - k :]:
                layer.requires_grad_(True)
            self.esm.encoder.emb_layer_norm_after.requires_grad_(True)
        for name, p in self.esm.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
        self.adapters.requires_grad_(bool(config.adapters and config.adapters.train))

    def forward(
        self, inputs: list[torch.Tensor], mask: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        index = inputs[0][..., 0].round().long()
        b, w = index.shape
        if self.unloaded is not None:  # built to be described (ptmkit validate): shapes only
            return torch.zeros(b, w, self.hidden, device=index.device)
        ids = self.to_token[index].masked_fill(~mask, self.pad_id)
        full = torch.full((b, w + 2), self.pad_id, dtype=torch.long, device=ids.device)
        full[:, 1 : w + 1] = ids
        attend = torch.zeros((b, w + 2), dtype=torch.long, device=ids.device)
        attend[:, 1 : w + 1] = mask.long()
        has = mask.any(1)
        first = mask.float().argmax(1)  # real residues are contiguous: <cls> before, <eos> after
        last = w - 1 - mask.flip(1).float().argmax(1)
        rows = torch.nonzero(has).squeeze(1)
        full[rows, first[rows]] = self.cls_id
        full[rows, last[rows] + 2] = self.eos_id
        attend[rows, first[rows]] = 1
        attend[rows, last[rows] + 2] = 1
        embedded = self.esm.embeddings(input_ids=full, attention_mask=attend)
        lead = 0
        if self.prompt is not None:
            chosen = torch.zeros(b, dtype=torch.long, device=ids.device) if task is None else task
            if self.prompt.shape[0] == 1:
                chosen = torch.zeros_like(chosen)
            self._chosen = chosen  # the deeper layers' prompts (_reprompt) read the same sets
            prefix = self.prompt[chosen].to(embedded.dtype)
            embedded = torch.cat([prefix, embedded], dim=1)
            attend = torch.cat(
                [torch.ones(b, prefix.shape[1], dtype=attend.dtype, device=attend.device), attend], 1
            )
            lead = prefix.shape[1]
        out = self.esm(inputs_embeds=embedded, attention_mask=attend).last_hidden_state
        hidden = out[:, lead + 1 : lead + 1 + w]
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)


class _Vocab:
    """ESM-2's tokenizer ids, for a model built from its architecture alone."""

    cls_token_id, pad_token_id, eos_token_id = (ESM2_TOKENS.index(t) for t in ("<cls>", "<pad>", "<eos>"))

    def get_vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(ESM2_TOKENS)}


def _load_esm(config: Esm2Encoder.Config) -> tuple[Any, Any, str | None]:
    """The model and tokenizer; under ``ptmkit validate`` (``structure_only``) a released ESM-2
    whose weights are not here is built from its known shape on the meta device (no memory, no
    weights), with the reason as the third value."""
    transformers = require("transformers", "esm2_encoder")

    def load(source: str, kw: dict[str, Any]) -> tuple[Any, Any]:
        model = transformers.EsmModel.from_pretrained(source, add_pooling_layer=False, **kw)
        return model, transformers.AutoTokenizer.from_pretrained(source, **kw)

    fix = hf_fix(config.model, config.revision)
    try:
        model, tokenizer = load_hf(locate("esm2_encoder", config.model, config.revision, fix=fix), load, fix)
    except ModelUnavailableError as exc:
        name = config.model.rstrip("/").split("/")[-1]
        if not structure_only() or name not in ESM2_SHAPES:
            raise
        layers, heads = ESM2_SHAPES[name]
        with torch.device("meta"):
            model = transformers.EsmModel(
                esm2_config(hidden=ESM2_DIMS[name], layers=layers, heads=heads), add_pooling_layer=False
            )
        return model, _Vocab(), f"{config.model}: weights not available here ({str(exc).split('. Fix:')[0]})"
    return model, tokenizer, None
