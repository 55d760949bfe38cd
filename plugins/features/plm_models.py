"""Loading protein language models and running them on batches of sequences.

``transformers``, ``huggingface_hub`` and ``esm`` are imported here lazily, inside functions, so
ptmkit imports without the ``plm`` extra. A model that cannot be loaded raises one
:class:`ModelUnavailableError` that names everything that was tried (the local folder or file, the
Hugging Face cache, the hub, the revision, and whether the hub was unreachable / offline or the
path simply does not exist) and how to fix it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ptmkit.errors import PtmkitError


class ModelUnavailableError(PtmkitError):
    """The configured model could not be found or loaded."""


class FeatureUnavailableError(PtmkitError):
    """The feature is declared (recipes validate) but cannot be computed in this ptmkit."""


#: ESM-2 checkpoints by fair-esm name -> embedding size (the hub ids are ``facebook/<name>``).
ESM2_DIMS = {
    "esm2_t6_8M_UR50D": 320,
    "esm2_t12_35M_UR50D": 480,
    "esm2_t30_150M_UR50D": 640,
    "esm2_t33_650M_UR50D": 1280,
    "esm2_t36_3B_UR50D": 2560,
    "esm2_t48_15B_UR50D": 5120,
}
#: The released ESM-2 models' shapes (layers, attention heads; hidden size above): what a model
#: of that name is built with when only its structure is needed (``ptmkit validate`` offline).
ESM2_SHAPES = {
    "esm2_t6_8M_UR50D": (6, 20),
    "esm2_t12_35M_UR50D": (12, 20),
    "esm2_t30_150M_UR50D": (30, 20),
    "esm2_t33_650M_UR50D": (33, 20),
    "esm2_t36_3B_UR50D": (36, 40),
    "esm2_t48_15B_UR50D": (48, 40),
}
#: ESM-2's vocabulary, in id order (the vocab.txt of every facebook/esm2_* repository).
ESM2_TOKENS = ("<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>")
FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/"
_PROBE_TIMEOUT = 5.0
#: Phrases of transformers' "not in the local cache" errors.
_NOT_CACHED = ("couldn't find", "cannot find", "not found", "does not appear", "couldn't connect", "offline")


def require(module: str, plugin: str) -> ModuleType:
    """Import an optional dependency or fail with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PtmkitError(
            f"{plugin}: needs the optional package {module.split('.')[0]!r} ({exc}); "
            "install the extra with: pip install 'ptmkit[plm]'"
        ) from None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PtmkitError("device 'cuda' was requested but CUDA is not available; use device: auto or cpu")
    if name == "mps" and not has_mps:
        raise PtmkitError("device 'mps' was requested but MPS is not available; use device: auto or cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device, *, half_on_gpu: bool) -> torch.dtype:
    """``auto``: float16 on CUDA when ``half_on_gpu``, else float32. float16 needs a GPU."""
    if precision == "auto":
        return torch.float16 if (half_on_gpu and device.type == "cuda") else torch.float32
    if precision == "float16" and device.type == "cpu":
        raise PtmkitError(
            "precision float16 needs a GPU (cuda or mps); use precision: auto or float32 on cpu"
        )
    return torch.float16 if precision == "float16" else torch.float32


def select_layers(layers: str | Sequence[int], n_layers: int, plugin: str) -> list[int]:
    """Resolve the ``layers`` option to indices in 0..n_layers (0 = token embeddings, n_layers = the
    final output); negative indices count from the end (-1 = last)."""
    if layers == "last":
        return [n_layers]
    out = []
    for k in layers:
        if not -(n_layers + 1) <= k <= n_layers:
            raise PtmkitError(
                f"{plugin}: layer {k} does not exist; the model has layers 0..{n_layers} "
                f"(0 = embeddings, {n_layers} = last) or -1..-{n_layers + 1}"
            )
        out.append(k % (n_layers + 1))
    return out


# --------------------------------------------------------------------------- where is the model


@dataclass(frozen=True)
class ModelRef:
    """A configured model: a local folder/file (``path``) or a hub id."""

    plugin: str
    spec: str
    revision: str | None
    path: Path | None = None
    hub_id: str | None = None

    @property
    def revision_text(self) -> str:
        return self.revision or "default branch"


def _looks_like_path(spec: str) -> bool:
    return (
        os.path.isabs(spec)
        or spec.startswith(("./", "../", "~", ".\\", "$"))
        or "\\" in spec
        or spec.count("/") > 1
        or spec.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )


def _expand(spec: str) -> Path:
    return Path(os.path.expandvars(spec)).expanduser()


def locate(plugin: str, spec: str, revision: str | None, *, fix: str) -> ModelRef:
    """An existing local path, else a hub id; a path-like spec that does not exist is an error."""
    path = _expand(spec)
    if path.exists():
        return ModelRef(plugin, spec, revision, path=path.resolve())
    if _looks_like_path(spec):
        raise ModelUnavailableError(
            unavailable(
                plugin, spec, revision, [f"the local path {path.absolute()} (no such folder or file)"], fix
            )
        )
    return ModelRef(plugin, spec, revision, hub_id=spec)


def unavailable(plugin: str, spec: str, revision: str | None, tried: list[str], fix: str) -> str:
    rev = revision or "default branch"
    return f"{plugin}: cannot load model {spec!r} (revision: {rev}). Tried: {'; '.join(tried)}. Fix: {fix}"


def hf_fix(spec: str, revision: str | None) -> str:
    name = spec.rstrip("/").split("/")[-1] or "model"
    rev = f" --revision {revision}" if revision else ""
    if _looks_like_path(spec):
        return (
            "download the model on a machine with network (e.g. `hf download <org/name> "
            "--local-dir <folder>`), copy the folder here and point `model:` at it"
        )
    return (
        f"on a machine with network run `hf download {spec}{rev} --local-dir {name}` "
        f"(huggingface_hub's CLI; older versions: huggingface-cli download), copy the folder here "
        f"and set `model: /path/to/{name}` in the recipe"
    )


def fair_esm_fix(name: str) -> str:
    return (
        f"on a machine with network download {FAIR_ESM_URL}{name}.pt and "
        f"{FAIR_ESM_URL.replace('/models/', '/regression/')}{name}-contact-regression.pt, put both in "
        f"one folder here and set `model: /path/to/{name}.pt`"
    )


def offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"offline mode ({var}={os.environ[var]})"
    return None


def probe(url: str) -> str | None:
    """``None`` when a TCP connection to ``url``'s host can be opened, else the reason.

    Skipped (``None``) behind an HTTP(S) proxy, where a direct connection says nothing. This keeps
    a machine without network from waiting through the hub client's retries (20+ s) to say so.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    parts = urlparse(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc}"


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except Exception:  # pragma: no cover - huggingface_hub always has it
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _hub_failure(exc: BaseException, revision: str | None) -> str:
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    names = {type(x).__name__ for x in chain}
    if "GatedRepoError" in names:
        return "gated repository: accept its terms on the hub and log in with `hf auth login`"
    if "RepositoryNotFoundError" in names:
        return "no such repository on the hub (or it is private: log in with `hf auth login`)"
    if "RevisionNotFoundError" in names:
        return f"no revision {revision!r} in that repository"
    if "LocalEntryNotFoundError" in names or any(
        isinstance(x, ConnectionError | TimeoutError) for x in chain
    ):
        return "hub unreachable / offline"
    return f"loading failed: {_first_line(exc)}"


def load_hf(ref: ModelRef, load: Callable[[str, dict[str, Any]], Any], fix: str) -> Any:
    """Run ``load(source, kwargs)`` (tokenizer + model ``from_pretrained``) on a local folder, or on a
    hub id: first from the local Hugging Face cache only, then, when the hub is reachable, online."""
    if ref.path is not None:
        if not ref.path.is_dir():
            tried = [f"the local path {ref.path} (a file, but this plugin needs a model folder)"]
            raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix))
        try:
            return load(str(ref.path), {})
        except Exception as exc:
            tried = [f"the local folder {ref.path} (exists, but loading failed: {_first_line(exc)})"]
            raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix)) from exc
    assert ref.hub_id is not None
    tried = [f"the local folder {_expand(ref.spec).absolute()} (no such folder)"]
    kwargs: dict[str, Any] = {"revision": ref.revision} if ref.revision else {}
    try:
        return load(ref.hub_id, {**kwargs, "local_files_only": True})
    except Exception as exc:
        text = str(exc).lower()
        missing = any(m in text for m in _NOT_CACHED)
        state = "not there" if missing else f"there, but loading failed: {_first_line(exc)}"
        tried.append(f"the Hugging Face cache {_hub_cache()} ({state})")
    endpoint = _hub_endpoint()
    reason = offline_reason() or probe(endpoint)
    if reason:
        tried.append(f"the hub {endpoint} (hub unreachable / offline: {reason})")
        raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix))
    try:
        return load(ref.hub_id, kwargs)
    except Exception as exc:
        tried.append(f"the hub {endpoint} ({_hub_failure(exc, ref.revision)})")
        raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix)) from exc


def hub_cached_file(ref: ModelRef, filename: str) -> Path | None:
    """``filename`` of a hub model from the local Hugging Face cache (no network), if there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(ref.hub_id, filename, revision=ref.revision)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def hub_commit(ref: ModelRef) -> str | None:
    """The commit the local Hugging Face cache resolves ``ref`` to (snapshots/<commit>/...)."""
    found = hub_cached_file(ref, "config.json")
    return found.parent.name if found is not None else None


def model_config(ref: ModelRef, fix: str) -> dict[str, Any]:
    """``config.json`` of a local folder or hub model: folder, HF cache, then the hub if reachable."""
    if ref.path is not None:
        cfg = ref.path / "config.json"
        if not cfg.is_file():
            tried = [f"the local folder {ref.path} (no config.json in it)"]
            raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix))
        return json.loads(cfg.read_text())
    cached = hub_cached_file(ref, "config.json")
    if cached is not None:
        return json.loads(cached.read_text())
    tried = [
        f"the local folder {_expand(ref.spec).absolute()} (no such folder)",
        f"the Hugging Face cache {_hub_cache()} (no config.json for it)",
    ]
    endpoint = _hub_endpoint()
    reason = offline_reason() or probe(endpoint)
    if reason:
        tried.append(f"the hub {endpoint} (hub unreachable / offline: {reason})")
        raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix))
    hub = require("huggingface_hub", ref.plugin)
    try:
        return json.loads(
            Path(hub.hf_hub_download(ref.hub_id, "config.json", revision=ref.revision)).read_text()
        )
    except Exception as exc:
        tried.append(f"the hub {endpoint} ({_hub_failure(exc, ref.revision)})")
        raise ModelUnavailableError(unavailable(ref.plugin, ref.spec, ref.revision, tried, fix)) from exc


def config_dim(
    cfg: dict[str, Any], keys: Sequence[str] = ("hidden_size", "d_model", "dim", "embed_dim")
) -> int:
    for key in keys:
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    raise PtmkitError(f"config.json has none of {list(keys)}: set `dim:` in the feature config")


# ------------------------------------------------------------------------------ fingerprints

_CONTENT_HASHES: dict[tuple[str, int, int], str] = {}


def files_fingerprint(paths: Sequence[Path], mode: str) -> str:
    """Hash identifying local model files.

    ``stat`` (default): name, size and modification time of every file - instant, and changes
    whenever a file is rewritten (a copy that does not keep mtimes, ``cp -p``/``rsync -t`` do, is
    computed afresh once). ``content``: name, size and sha256 of the bytes - survives copies, costs
    one read of the weights per process (memoised).
    """
    h = hashlib.sha256(mode.encode())
    for p in sorted(paths, key=lambda x: x.name):
        st = p.stat()
        h.update(f"|{p.name}|{st.st_size}|".encode())
        if mode == "stat":
            h.update(str(st.st_mtime_ns).encode())
        else:
            memo = (str(p), st.st_size, st.st_mtime_ns)
            if memo not in _CONTENT_HASHES:
                fh = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        fh.update(block)
                _CONTENT_HASHES[memo] = fh.hexdigest()
            h.update(_CONTENT_HASHES[memo].encode())
    return h.hexdigest()[:16]


def folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


# ----------------------------------------------------------------------------------- runners


class Runner:
    """A loaded model: ``embed(seqs)`` -> one float32 array [len(seq), hidden] per sequence."""

    model: torch.nn.Module
    n_layers: int
    hidden: int

    def embed(self, seqs: list[str], hidden: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """``hidden`` (bool per residue, optional) marks residues given as the mask token."""
        raise NotImplementedError  # pragma: no cover - abstract


def hide(
    ids: torch.Tensor, hidden: list[np.ndarray] | None, lead: int, mask_id: int | None, plugin: str
) -> None:
    """Write ``mask_id`` over the hidden residues of padded token rows whose residues start at
    ``lead`` (in place); a model without a mask token cannot hide any."""
    if hidden is None or not any(h.any() for h in hidden):
        return
    if mask_id is None:
        raise PtmkitError(
            f"{plugin}: the model has no mask token, so it cannot conceal residues from a context"
        )
    for b, h in enumerate(hidden):
        where = np.flatnonzero(h)
        ids[b, lead + torch.as_tensor(where, dtype=torch.long)] = mask_id


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class HFRunner(Runner):
    """A transformers encoder. ``tokenize`` is ``"esm"`` (residues looked up in the vocabulary,
    <cls> ... <eos>), ``"spaced"`` (``"M K T"``), ``"plain"`` (``"MKT"``) or ``"words"`` (one word per
    residue); ``lead``/``trail`` special tokens are dropped from the output."""

    def __init__(
        self,
        plugin: str,
        model: Any,
        tokenizer: Any,
        *,
        tokenize: str,
        lead: int,
        trail: int,
        layers: str | Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        cfg = model.config
        self.plugin = plugin
        self.n_layers = int(
            getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None) or cfg.n_layer
        )
        self.hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None))
        self.layers = select_layers(layers, self.n_layers, plugin)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.tokenize, self.lead, self.trail = tokenize, lead, trail
        self.device = device

    def _inputs(self, seqs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        if self.tokenize == "esm":
            rows = [[tok.cls_token_id, *tok.convert_tokens_to_ids(list(s)), tok.eos_token_id] for s in seqs]
            return _pad(rows, tok.pad_token_id)
        if self.tokenize == "words":
            enc = tok([list(s) for s in seqs], is_split_into_words=True, padding=True, return_tensors="pt")
        else:
            texts = [" ".join(s) for s in seqs] if self.tokenize == "spaced" else list(seqs)
            enc = tok(texts, padding=True, return_tensors="pt")
        mask = enc["attention_mask"]
        counts = mask.sum(1).tolist()
        for s, n in zip(seqs, counts, strict=True):
            if n != len(s) + self.lead + self.trail:
                raise PtmkitError(
                    f"{self.plugin}: the tokenizer made {n} tokens of a {len(s)}-residue sequence, expected "
                    f"{len(s)} + {self.lead} leading + {self.trail} trailing special tokens; check the "
                    "`tokenizer`, `strip_leading` and `strip_trailing` options"
                )
        if self.lead and tok.padding_side == "left":  # pragma: no cover - protein tokenizers pad right
            raise PtmkitError(f"{self.plugin}: left-padding tokenizers are not supported")
        return enc["input_ids"], mask

    def embed(self, seqs: list[str], hidden: list[np.ndarray] | None = None) -> list[np.ndarray]:
        ids, mask = self._inputs(seqs)
        hide(ids, hidden, self.lead, getattr(self.tokenizer, "mask_token_id", None), self.plugin)
        need_hidden = self.layers != [self.n_layers]
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                output_hidden_states=need_hidden,
            )
            if not need_hidden:
                h = out.last_hidden_state
            else:
                hs = out.hidden_states
                if len(hs) != self.n_layers + 1:  # pragma: no cover - transformers contract
                    raise PtmkitError(
                        f"{self.plugin}: expected {self.n_layers + 1} hidden states, got {len(hs)}"
                    )
                h = torch.stack(
                    [out.last_hidden_state if k == self.n_layers else hs[k] for k in self.layers]
                ).mean(0)
            h = h.float().cpu().numpy()
        return [h[b, self.lead : self.lead + len(s)] for b, s in enumerate(seqs)]


class FairEsmRunner(Runner):
    """A fair-esm ESM-2 model: <cls> residues <eos>, representations from ``repr_layers``."""

    def __init__(
        self,
        plugin: str,
        model: Any,
        alphabet: Any,
        *,
        layers: str | Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.plugin = plugin
        self.n_layers = int(model.num_layers)
        self.hidden = int(model.embed_dim)
        self.layers = select_layers(layers, self.n_layers, plugin)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.alphabet = alphabet
        self.device = device

    def embed(self, seqs: list[str], hidden: list[np.ndarray] | None = None) -> list[np.ndarray]:
        a = self.alphabet
        rows = [[a.cls_idx, *(a.get_idx(c) for c in s), a.eos_idx] for s in seqs]
        ids, _ = _pad(rows, a.padding_idx)
        hide(ids, hidden, 1, a.mask_idx, self.plugin)
        with torch.inference_mode():
            reps = self.model(ids.to(self.device), repr_layers=self.layers)["representations"]
            h = torch.stack([reps[k] for k in self.layers]).mean(0).float().cpu().numpy()
        return [h[b, 1 : 1 + len(s)] for b, s in enumerate(seqs)]


# ------------------------------------------------------------------------------------ fair-esm


def _regression_path(path: Path) -> Path:
    return Path(str(path.with_suffix("")) + "-contact-regression.pt")


def locate_fair_esm(plugin: str, spec: str) -> tuple[Path | None, str]:
    """(local checkpoint or None, fair-esm model name). A name that is neither a file nor in the
    torch hub cache is returned with ``None`` so the loader can try the download."""
    path = _expand(spec)
    name = re.sub(r"\.pt$", "", spec.rstrip("/").split("/")[-1])
    if path.is_dir():
        tried = [f"the local path {path} (a folder; the fair-esm backend needs the .pt checkpoint file)"]
        raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(name)))
    if path.is_file():
        found = path.resolve()
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pt"
        if cached.is_file():
            found = cached
        elif _looks_like_path(spec):
            tried = [f"the local path {path.absolute()} (no such file)"]
            raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(name)))
        else:
            return None, name
    if not found.stem.startswith("esm2"):
        raise ModelUnavailableError(
            f"{plugin}: {found} is not named esm2_*.pt: fair-esm picks the ESM-2 architecture from the file "
            "name, so keep the original name (e.g. esm2_t33_650M_UR50D.pt)"
        )
    if not _regression_path(found).is_file():
        tried = [
            f"the checkpoint {found} (found, but not {_regression_path(found).name} beside it, "
            "which fair-esm's loader reads)"
        ]
        raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(found.stem)))
    return found, found.stem


def _torch_load_args(path: Path) -> Any:
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # not a zip checkpoint: no mmap
            return torch.load(str(path), map_location="cpu", weights_only=True)


def fair_esm_dim(plugin: str, spec: str) -> int:
    path, name = locate_fair_esm(plugin, spec)
    if name in ESM2_DIMS:
        return ESM2_DIMS[name]
    if path is None:
        tried = [
            f"the local path {_expand(spec).absolute()} (no such file)",
            f"the torch hub cache {Path(torch.hub.get_dir()) / 'checkpoints'} (no {name}.pt)",
        ]
        raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(name)))
    try:
        data = _torch_load_args(path)
        return int(data["cfg"]["model"].encoder_embed_dim)
    except Exception as exc:
        raise ModelUnavailableError(
            f"{plugin}: cannot read the embedding size from {path} ({_first_line(exc)}); is it an ESM-2 "
            "checkpoint saved by fair-esm?"
        ) from exc


def load_fair_esm(plugin: str, spec: str, *, trust_checkpoint: bool) -> tuple[Any, Any]:
    """``esm.pretrained.load_model_and_alphabet_local`` on the checkpoint (``argparse.Namespace``
    allowed by torch's safe unpickler); a bare name not in the torch hub cache is downloaded with
    ``load_model_and_alphabet_hub`` when the download site is reachable."""
    esm = require("esm", plugin)
    require("esm.pretrained", plugin)
    path, name = locate_fair_esm(plugin, spec)
    if path is None:
        tried = [
            f"the local path {_expand(spec).absolute()} (no such file)",
            f"the torch hub cache {Path(torch.hub.get_dir()) / 'checkpoints'} (no {name}.pt)",
        ]
        reason = offline_reason() or probe(FAIR_ESM_URL)
        if reason:
            tried.append(f"the fair-esm download site (hub unreachable / offline: {reason})")
            raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(name)))
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                return esm.pretrained.load_model_and_alphabet_hub(name)
        except Exception as exc:
            tried.append(f"the fair-esm download site ({_first_line(exc)})")
            raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(name))) from exc
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return esm.pretrained.load_model_and_alphabet_local(str(path))
    except Exception as exc:
        text = str(exc).lower()
        if "weights_only" in text or "unpickl" in text:
            if trust_checkpoint:
                model_data = torch.load(str(path), map_location="cpu", weights_only=False)
                regression = torch.load(str(_regression_path(path)), map_location="cpu", weights_only=False)
                return esm.pretrained.load_model_and_alphabet_core(path.stem, model_data, regression)
            raise ModelUnavailableError(
                f"{plugin}: torch's safe loader refused {path} ({_first_line(exc)}); if you trust the file, "
                "set `trust_checkpoint: true` to load it with full unpickling"
            ) from exc
        tried = [f"the checkpoint {path} (exists, but loading failed: {_first_line(exc)})"]
        raise ModelUnavailableError(unavailable(plugin, spec, None, tried, fair_esm_fix(path.stem))) from exc


def esm2_config(*, hidden: int, layers: int, heads: int) -> Any:
    """A transformers ``EsmConfig`` of an ESM-2 of this shape (rotary positions, token dropout,
    ESM's 33-token vocabulary), as the released models are configured."""
    transformers = require("transformers", "esm2")
    return transformers.EsmConfig(
        vocab_size=len(ESM2_TOKENS),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=1026,
        position_embedding_type="rotary",
        pad_token_id=ESM2_TOKENS.index("<pad>"),
        mask_token_id=ESM2_TOKENS.index("<mask>"),
        token_dropout=True,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-5,
    )
