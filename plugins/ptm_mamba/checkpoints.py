"""Loading PTM-Mamba's released checkpoints (``best.ckpt``) without unpickling anything.

The published training script saves ``torch.save({"model": state_dict, "config": cfg})``. Its
``state_dict`` names are this plugin's (``model.py`` keeps them), plus six parameters per mixer
that the published Mamba creates for a second scan variant and never uses (``A_b_log``,
``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``D_b``); they are dropped here. The config there is
an OmegaConf object, which only pickle can rebuild: such a file is refused with one line
(``torch.load(weights_only=True)`` only). Re-saved with a plain-dict config (or none: every
size is read from the tensor shapes) it loads; docs/ptm-mamba.md gives the one-line conversion
to run once where you trust the file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ptmkit.errors import PtmkitError

from . import tokens
from .model import PtmMamba

#: Parameters of the published mixer that its "v1" bidirectional scan never reads.
UNUSED = re.compile(
    r"\.mixer\.(A_b_log|D_b|conv1d_b\.(weight|bias)|x_proj_b\.weight|dt_proj_b\.(weight|bias))$"
)
_LAYER = re.compile(r"^backbone\.(forward_layers|layers)\.(\d+)\.")


def _refusal(path: Path, exc: BaseException) -> PtmkitError:
    try:
        needs = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint at all
        needs = []
    what = f"unpickling {', '.join(needs[:4])}" if needs else "unpickling Python objects"
    return PtmkitError(
        f"{path}: refused: loading it needs {what} (weights-only loading only); re-save its weights and "
        "a plain config once where you trust the file (docs/ptm-mamba.md, released checkpoints)"
    )


def read(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's plain content (``torch.load(weights_only=True)``), or a one-line refusal.
    ``mmap``: map the tensors instead of reading them (to look at shapes only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PtmkitError(f"{path}: no such checkpoint file")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:  # mmap needs the zip format; older files are read whole
            if not (mmap and "mmap" in str(exc)):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except RuntimeError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise _refusal(path, exc) from None
        raise PtmkitError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PtmkitError(
            f"{path}: expected a dict ({{'model': state_dict, 'config': ...}}), got {type(data).__name__}"
        )
    return data


def infer_config(state: dict[str, torch.Tensor], where: str) -> PtmMamba.Config:
    """Every size of the model from its tensors' shapes."""

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise PtmkitError(f"{where}: no {key!r}: not a PTM-Mamba state dict")
        return state[key]

    vocab, d_model = need("backbone.embedding.weight").shape
    if vocab != len(tokens.VOCAB):
        raise PtmkitError(
            f"{where}: embedding has {vocab} rows; PTM-Mamba's vocabulary has {len(tokens.VOCAB)} tokens"
        )
    layers = {(m.group(1), int(m.group(2))) for k in state if (m := _LAYER.match(k))}
    bidirectional = any(kind == "forward_layers" for kind, _ in layers)
    prefix = "backbone.forward_layers.0.mixer." if bidirectional else "backbone.layers.0.mixer."
    inner, d_state = need(prefix + "A_log").shape
    d_conv = need(prefix + "conv1d.weight").shape[-1]
    dt_rank = need(prefix + "dt_proj.weight").shape[1]
    if inner % d_model:
        raise PtmkitError(f"{where}: inner width {inner} is not a multiple of d_model {d_model}")
    esm = state.get("esm_head.weight")
    if esm is not None and "backbone.gate.weight" not in state:
        raise PtmkitError(f"{where}: esm_head without backbone.gate: not a PTM-Mamba layout")
    return PtmMamba.Config(
        d_model=d_model,
        n_layer=len(layers),
        d_state=d_state,
        d_conv=d_conv,
        expand=inner // d_model,
        dt_rank=dt_rank,
        context_dim=None if esm is None else esm.shape[1],
        bidirectional=bidirectional,
    )


def _check_against(config: PtmMamba.Config, given: Any, where: str) -> None:
    """A plain config stored with the weights must agree with them (the published field names)."""
    if not isinstance(given, dict):
        return
    ssm = given.get("ssm_cfg") or {}
    expect = {
        "d_model": config.d_model,
        "n_layer": config.n_layer,
        "esm_embed_dim": config.context_dim,
        "d_state": config.d_state,
        "expand": config.expand,
        "d_conv": config.d_conv,
    }
    have = {
        **{k: given.get(k) for k in ("d_model", "n_layer", "esm_embed_dim")},
        **{k: ssm.get(k) for k in ("d_state", "expand", "d_conv")},
    }
    for key, value in have.items():
        # esm_embed_dim is in every published config, but only models with esm_head use it
        if value is None or (key == "esm_embed_dim" and config.context_dim is None):
            continue
        if value != expect[key]:
            raise PtmkitError(f"{where}: config says {key} {value}, the weights have {expect[key]}")
    kind = given.get("model_type")
    if kind is not None and (kind == "bidirectional_mamba") != config.bidirectional:
        raise PtmkitError(
            f"{where}: config says model_type {kind!r}, the weights are "
            f"{'bi' if config.bidirectional else 'uni'}directional"
        )
    if given.get("rms_norm") is False:
        raise PtmkitError(
            f"{where}: rms_norm: false (LayerNorm blocks) is not supported; PTM-Mamba uses RMSNorm"
        )


def load_released(path: str | Path) -> PtmMamba:
    """A released (or released-layout) PTM-Mamba checkpoint as a :class:`PtmMamba` in eval mode."""
    path = Path(path).expanduser()
    data = read(path)
    state = data.get("model", data)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PtmkitError(f"{path}: 'model' is not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP
    state = {k: v for k, v in state.items() if not UNUSED.search(k)}
    config = infer_config(state, str(path))
    _check_against(config, data.get("config"), str(path))
    model = PtmMamba(config)
    head = state.get("lm_head.weight")
    if head is not None and not torch.equal(head, state["backbone.embedding.weight"]):
        raise PtmkitError(f"{path}: lm_head.weight differs from the embedding; PTM-Mamba ties them")
    state.setdefault("lm_head.weight", state["backbone.embedding.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PtmkitError(
            f"{path}: weights do not fit PTM-Mamba (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    model.package_info = {"format": "ptm-mamba-release", "path": str(path)}  # type: ignore[attr-defined]
    return model.eval()


def load(spec: str | Path, *, tracking_uri: str | None = None) -> PtmMamba:
    """A ptmkit package (folder or run id) or a released checkpoint file, through
    ``ptmkit.language_models.load``; anything but a PTM-Mamba is refused."""
    from ptmkit import language_models

    model = language_models.load(spec, tracking_uri=tracking_uri, kind="ptm_mamba")
    if not isinstance(model, PtmMamba):
        raise PtmkitError(f"{spec}: a {type(model).__name__} package, not a PTM-Mamba")
    return model
