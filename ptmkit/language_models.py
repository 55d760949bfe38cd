"""Packaged language models (``ptmkit-lm/1``): a folder of ``config.json`` + ``model.safetensors``.

What ``ptmkit pretrain`` writes and what features and scanners load. No pickle anywhere: the
weights are safetensors, the config is JSON naming the registered ``language_model`` plugin and
its validated config, so a package can be opened from anyone without running their code.
``load`` also takes an MLflow run id (``runs:/<id>`` or the bare id) whose run logged a package.

A model with a context branch (PTM-Mamba's ESM-2 input) records the feature that fed it in
pretraining (``"context": {"type": ..., ...}``); ``load`` rebuilds it, so every later use (the
feature, zero-shot scanning) reads the same context through :func:`context_batch`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import PtmkitError
from .plugin_api import Feature, LanguageModel

FORMAT = "ptmkit-lm/1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
#: Artifact folder of a pretraining run that holds its package.
ARTIFACT = "language_model"


def save(model: LanguageModel, folder: Path, *, name: str, info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a package at ``folder`` (replaced whole, atomically: a crash leaves the
    old package or the new one, never half of either). ``name`` is its plugin name."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # a package is shared like any output folder, not private as mkdtemp makes it
        save_model(model, str(tmp / WEIGHTS))  # tied weights are stored once
        meta = {
            "format": FORMAT,
            "type": name,
            "config": model.config.model_dump(mode="json"),
            "vocab": list(model.vocab),
            "parameters": sum(p.numel() for p in model.parameters()),
            **({"context": model.context_spec} if model.context_feature is not None else {}),
            **(info or {}),
        }
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    """The package's ``config.json``, checked for its format."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise PtmkitError(f"{folder}: not a ptmkit language-model package (no {CONFIG})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PtmkitError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        have = meta.get("format") if isinstance(meta, dict) else None
        raise PtmkitError(f"{path}: format {have!r}, expected {FORMAT!r}")
    return meta


def resolve(spec: str | Path, *, tracking_uri: str | None = None) -> Path:
    """A package folder from a path, or from a run id whose run logged one (downloaded)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PtmkitError(f"{path}: a language-model package is a folder ({CONFIG} + {WEIGHTS})")
        return path
    text = str(spec)
    run_id = text.removeprefix("runs:/").split("/", 1)[0]
    if not (run_id.isalnum() and len(run_id) == 32):
        raise PtmkitError(f"{spec}: no such folder, and not an MLflow run id (32 hex digits or runs:/<id>)")
    import mlflow

    from . import tracking
    from .model_store import quiet_mlflow

    uri = tracking.open_store(tracking.tracking_uri(tracking_uri), create=False)
    try:
        with quiet_mlflow():
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=ARTIFACT, tracking_uri=uri
            )
    except Exception as exc:  # an unknown run or a run without a package
        raise PtmkitError(
            f"run {run_id}: no {ARTIFACT}/ package in {uri} ({tracking.first_line(exc)})"
        ) from None
    return Path(local)


def is_language_model(spec: str, *, tracking_uri: str | None = None) -> bool:
    """True for a package folder, a checkpoint file, or a run tagged as a pretraining run."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return (path / CONFIG).is_file() and json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    if path.is_file():
        return path.suffix in (".ckpt", ".pt", ".pth", ".bin")
    run_id = str(spec).removeprefix("runs:/").split("/", 1)[0]
    if not (run_id.isalnum() and len(run_id) == 32):
        return False
    from mlflow.tracking import MlflowClient

    from . import tracking

    try:
        run = MlflowClient(tracking.open_store(tracking.tracking_uri(tracking_uri), create=False)).get_run(
            run_id
        )
    except Exception:  # noqa: BLE001 - not a run here: not a language model either
        return False
    return run.data.tags.get("ptmkit.kind") == "pretrain"


def load(
    spec: str | Path, *, tracking_uri: str | None = None, registry: Any = None, kind: str | None = None
) -> LanguageModel:
    """The language model at ``spec``, in eval mode on the CPU: a package folder, a run id whose
    run logged one, or a checkpoint file in a plugin's own published layout (``kind`` names the
    plugin; needed only when several are installed)."""
    from safetensors.torch import load_model

    from .hooks import get_registry

    registry = registry or get_registry()
    path = Path(spec).expanduser()
    if path.is_file():
        names = [kind] if kind else registry.names("language_model")
        if len(names) != 1:
            raise PtmkitError(
                f"{path}: a checkpoint file; say which language model reads it "
                f"(installed: {', '.join(names)})"
            )
        return registry.get("language_model", names[0]).obj.load_file(path).eval()
    folder = resolve(spec, tracking_uri=tracking_uri)
    meta = read_config(folder)
    spec_ = registry.get("language_model", str(meta.get("type")))
    config = spec_.obj.Config.model_validate(meta.get("config") or {})
    model = spec_.obj(config)
    if list(model.vocab) != list(meta.get("vocab") or []):
        raise PtmkitError(
            f"{folder}: the package's vocabulary differs from {spec_.name}'s ({len(meta.get('vocab') or [])} "
            f"vs {len(model.vocab)} tokens); it was written by another version of the plugin"
        )
    missing, unexpected = load_model(model, str(folder / WEIGHTS), strict=False)
    if missing or unexpected:
        raise PtmkitError(
            f"{folder / WEIGHTS}: weights do not fit {spec_.name} with this config (missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    model.package_info = meta  # type: ignore[attr-defined]
    if meta.get("context"):
        where = f"{folder / CONFIG}: context"
        attach_context(model, build_context(meta["context"], registry, where=where), meta["context"])
    return model.eval()


# ---------------------------------------------------------------------------- context branch
def build_context(spec: dict[str, Any], registry: Any = None, *, where: str = "context") -> Feature:
    """The feature a ``{"type": name, **config}`` mapping names (a package's recorded context,
    or a ``context:`` option), validated by its plugin's config."""
    from pydantic import ValidationError

    from .hooks import get_registry

    registry = registry or get_registry()
    if not isinstance(spec, dict) or "type" not in spec:
        raise PtmkitError(f"{where}: give a feature as a mapping with `type` (e.g. type: esm2), got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "type"}
    plugin = registry.get("feature", str(spec["type"]))
    try:
        config = plugin.obj.Config.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "type"
        raise PtmkitError(f"{where}: {plugin.name}.{key}: {err['msg']}") from None
    return plugin.obj(config)


def attach_context(
    model: LanguageModel, feature: Feature | None, spec: dict[str, Any] | None = None
) -> LanguageModel:
    """Make ``feature`` (built from ``spec``, the ``{"type": ..., **config}`` a package records)
    the model's context. Its size must be the branch's ``context_dim``; a feature that learns
    state cannot serve (nothing would fit it)."""
    if feature is None:
        model.context_feature, model.context_spec = None, None
        return model
    name = (spec or {}).get("type", type(feature).__name__)
    want = model.context_dim
    if not want:
        raise PtmkitError(
            f"{type(model).__name__} has no context branch (context_dim null): it takes no context feature"
        )
    if getattr(feature, "stateful", False):
        raise PtmkitError(f"{name}: a feature that learns state cannot be a context")
    if spec is None:
        raise PtmkitError(f"{name}: give the context's spec ({{'type': ..., **config}}) to record it")
    if feature.dim != want:
        raise PtmkitError(
            f"context feature {name} gives {feature.dim} features per residue; "
            f"the model's context branch takes context_dim {want}"
        )
    model.context_feature, model.context_spec = feature, dict(spec)
    return model


def context_batch(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor | None:
    """The context ``[N, L, context_dim]`` (float32, on ``ids``' device) of a batch of token ids:
    the model's context feature run on each sequence's residues with the hidden ones concealed
    (``LanguageModel.context_view``); zeros at tokens that are not residues. None without a
    context feature (a gated model then reads zeros)."""
    feature = model.context_feature
    if feature is None:
        return None
    views = [model.context_view(row) for row in ids.detach().cpu().tolist()]
    rows = [b for b, v in enumerate(views) if v[0]]
    vectors = feature.context(
        [views[b][0] for b in rows], [np.asarray(views[b][2], dtype=bool) for b in rows]
    )
    out = torch.zeros((*ids.shape, feature.dim), dtype=torch.float32)
    for b, vec in zip(rows, vectors, strict=True):
        out[b, views[b][1]] = torch.as_tensor(np.asarray(vec, dtype=np.float32))
    return out.to(ids.device)


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
