"""On-disk cache of per-sequence arrays: a service for any feature plugin (exported by ptmkit.api).

A feature whose per-residue output for a protein is expensive and depends only on the sequence
(a protein language model, a structure or profile predictor) keeps one float16 ``[L, D]`` array
per (model description, sequence) here, so it is computed once per machine. The built-in
language-model features use it; ``ptmkit cache info`` and ``ptmkit cache clear`` manage it::

    store = EmbeddingCache(cache_root(self.config.cache_dir), {"plugin": "mine", "model": name, ...})
    key = sequence_key(sequence)
    array = store.get(key)  # None on a miss (or a corrupt entry, which is then deleted)
    if array is None:
        array = store.put(key, compute(sequence))

The description must name everything the arrays depend on (plugin and its version, model,
weights, options): its hash names the folder, so a change never reads old entries. Its
``plugin`` and ``model`` are what ``cache info`` shows and ``cache clear --model`` matches.
Layout under the cache root::

    <root>/<slug>-<model_key>/model.json            what the key stands for (plugin, model, revision,
                                                    weights fingerprint, layers, precision)
    <root>/<slug>-<model_key>/<k[:2]>/<k>.json      sidecar: shape, dtype, sha256 of the array's bytes
    <root>/<slug>-<model_key>/<k[:2]>/<k>.npy       float16 [L, D]; ``np.load(path, mmap_mode="r")``

``model_key`` is a hash of the model description (so a new revision, other weights, another layer
choice or precision never reads old entries) and ``k`` the sha256 of the sequence (plus the chunking
rule for sequences longer than the model's limit, whose embedding depends on it).

Writes are atomic: each file goes to a temporary file in the same folder and is moved into place
with ``os.replace``, sidecar first, array last, so a reader sees either no entry or a whole one.
Reads are verified: a missing sidecar, a truncated or unparsable file, a shape/dtype that differs
from the sidecar or a checksum mismatch is reported with a :class:`CacheWarning`, the entry is
deleted and the caller recomputes it; a bad entry never crashes a run.

The root is the feature's ``cache_dir``, else ``$PTMKIT_CACHE``, else the user cache folder
(``platformdirs.user_cache_path("ptmkit") / "embeddings"``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import platformdirs

#: Environment variable naming the cache root.
CACHE_ENV = "PTMKIT_CACHE"
#: Storage dtype of every entry.
DTYPE = np.dtype("float16")
_F16_MAX = float(np.finfo(np.float16).max)
_MODEL_FILE = "model.json"


class CacheWarning(UserWarning):
    """A cache entry was unreadable or corrupt and is being recomputed."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$PTMKIT_CACHE``, else the user cache folder."""
    if cache_dir:
        return Path(os.path.expandvars(str(cache_dir))).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_cache_path("ptmkit") / "embeddings"


def model_key(info: dict[str, object]) -> str:
    """Stable 16-hex key of a model description (sorted JSON, sha256)."""
    payload = json.dumps(info, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sequence_key(sequence: str, salt: str = "") -> str:
    """sha256 of the sequence (and of ``salt``, e.g. the chunking rule, when it changes the output)."""
    return hashlib.sha256(f"{sequence}|{salt}".encode() if salt else sequence.encode()).hexdigest()


def _slug(text: str) -> str:
    name = Path(str(text).rstrip("/\\")).name or str(text)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:48] or "model"


def _checksum(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class EmbeddingCache:
    """Entries of one model description under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str], info: dict[str, object]) -> None:
        self.root = Path(root)
        self.info = dict(info)
        self.key = model_key(self.info)
        label = self.info.get("model", self.info.get("plugin", "model"))
        self.dir = self.root / f"{_slug(str(label))}-{self.key}"

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str, *, mmap: bool = False) -> np.ndarray | None:
        """The verified float16 array, or ``None`` on a miss or a corrupt entry.

        Read into memory by default (a memory map holds a file descriptor open, and a fragment
        dataset has one entry per fragment); ``mmap=True`` returns the ``np.memmap``.
        """
        npy = self.path(key)
        if not npy.exists():
            return None
        side = npy.with_suffix(".json")
        try:
            meta = json.loads(side.read_text())
            array = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
            problem = None
            if list(array.shape) != list(meta["shape"]):
                problem = f"shape {list(array.shape)} but the sidecar says {meta['shape']}"
            elif array.dtype != np.dtype(meta["dtype"]):
                problem = f"dtype {array.dtype} but the sidecar says {meta['dtype']}"
            elif _checksum(array) != meta["sha256"]:
                problem = "checksum mismatch"
        except FileNotFoundError:
            problem = "sidecar missing (interrupted write?)"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"unreadable: {exc}"
        if problem is not None:
            warnings.warn(
                f"corrupt embedding cache entry {npy} ({problem}); recomputing it", CacheWarning, stacklevel=2
            )
            self.discard(key)
            return None
        return array

    def put(self, key: str, array: np.ndarray) -> np.ndarray:
        """Store ``array`` as float16 (clipped to the float16 range); return what was stored."""
        data = np.ascontiguousarray(
            np.clip(np.asarray(array, dtype=np.float32), -_F16_MAX, _F16_MAX).astype(DTYPE)
        )
        npy = self.path(key)
        self._describe()
        npy.parent.mkdir(parents=True, exist_ok=True)
        meta = {"shape": list(data.shape), "dtype": str(data.dtype), "sha256": _checksum(data)}
        _atomic_write(npy.with_suffix(".json"), lambda fh: fh.write(json.dumps(meta).encode()))
        _atomic_write(npy, lambda fh: np.save(fh, data, allow_pickle=False))
        return data

    def discard(self, key: str) -> None:
        npy = self.path(key)
        for p in (npy, npy.with_suffix(".json")):
            with contextlib.suppress(OSError):
                p.unlink()

    def _describe(self) -> None:
        """Write ``model.json`` if it is not there (also after a ``cache_clear`` by another process)."""
        target = self.dir / _MODEL_FILE
        if not target.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            info = {**self.info, "key": self.key, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            text = json.dumps(info, indent=2, sort_keys=True, default=str)
            _atomic_write(target, lambda fh: fh.write(text.encode()))


def _model_dirs(root: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    if not root.is_dir():
        return
    for sub in sorted(root.iterdir()):
        desc = sub / _MODEL_FILE
        if sub.is_dir() and desc.is_file():
            try:
                info = json.loads(desc.read_text())
            except (OSError, ValueError):
                info = {}
            yield sub, info if isinstance(info, dict) else {}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def cache_info(root: str | os.PathLike[str] | None = None) -> str:
    """A short report: the root, then one line per model with its entries and size, then totals."""
    base = cache_root(root)
    lines = []
    total_entries = total_bytes = n_models = 0
    for sub, info in _model_dirs(base):
        files = [p for p in sub.rglob("*") if p.is_file()]
        entries = sum(1 for p in files if p.suffix == ".npy")
        size = sum(p.stat().st_size for p in files)
        n_models += 1
        total_entries += entries
        total_bytes += size
        what = f"{info.get('plugin', '?')} {info.get('model', '?')}"
        details = ", ".join(
            f"{k}={info[k]}"
            for k in ("revision", "backend", "layers", "precision")
            if info.get(k) is not None
        )
        lines.append(f"  {sub.name}: {what} ({details}) - {entries} entries, {_size(size)}")
    head = f"embedding cache {base}: {n_models} models, {total_entries} entries, {_size(total_bytes)}"
    return "\n".join([head, *lines])


def cache_clear(root: str | os.PathLike[str] | None = None, model: str | None = None) -> int:
    """Delete cached embeddings; returns the number of files removed.

    ``model=None`` clears every model; otherwise only folders whose model id/path equals ``model``
    or matches it as a glob (``"facebook/esm2*"``), or whose folder name does. Only folders that
    hold a ``model.json`` are touched, so pointing the root at the wrong place deletes nothing else.
    """
    base = cache_root(root)
    removed = 0
    for sub, info in _model_dirs(base):
        name = str(info.get("model", ""))
        if model is not None and not (
            model == name or fnmatch(name, model) or fnmatch(sub.name, model) or model == sub.name
        ):
            continue
        removed += sum(1 for p in sub.rglob("*") if p.is_file())
        shutil.rmtree(sub, ignore_errors=True)
    return removed
