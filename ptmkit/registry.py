"""Typed registries, one per plugin kind; names are looked up, never imported from user files."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import RegistryError

#: Plugin kinds and what each contract is, for listings and error messages.
KINDS: dict[str, str] = {
    "reader": "source files -> SiteTable",
    "feature": "SiteTable -> float tensor [N, W, D]",
    "fusion": "named inputs [N, W, D_i] -> one or more outputs",
    "backbone": "sequence encoder [N, W, D] -> [N, W, D']",
    "head": "pooling + classifier -> logits [N, tasks]",
    "loss": "(outputs, labels) -> scalar",
}
#: Kinds that are nodes of the model graph; they share one namespace so a node ``type`` is
#: never ambiguous.
MODULE_KINDS = ("fusion", "backbone", "head")


@dataclass(frozen=True)
class PluginSpec:
    kind: str
    name: str
    obj: type
    provider: str  # distribution that registered it
    version: str

    @property
    def doc(self) -> str:
        text = (self.obj.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""


class Registry:
    """All registered plugins, by kind and name."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, PluginSpec]] = {k: {} for k in KINDS}
        #: Distributions whose registration failed: name -> message. They do not break others.
        self.broken: dict[str, str] = {}

    def add(self, spec: PluginSpec) -> None:
        if spec.kind not in KINDS:
            raise RegistryError(
                f"{spec.provider} registers {spec.name!r} as unknown kind {spec.kind!r}; "
                f"kinds are {', '.join(KINDS)}"
            )
        kinds = MODULE_KINDS if spec.kind in MODULE_KINDS else (spec.kind,)
        for kind in kinds:
            old = self._specs[kind].get(spec.name)
            if old is not None:
                raise RegistryError(
                    f"duplicate {spec.kind} plugin {spec.name!r}: registered by "
                    f"{old.provider} {old.version} (as {old.kind}) and by "
                    f"{spec.provider} {spec.version}"
                )
        self._specs[spec.kind][spec.name] = spec

    def remove(self, spec: PluginSpec) -> None:
        if self._specs[spec.kind].get(spec.name) is spec:
            del self._specs[spec.kind][spec.name]

    def get(self, kind: str, name: str) -> PluginSpec:
        kinds = MODULE_KINDS if kind == "module" else (kind,)
        for k in kinds:
            if name in self._specs[k]:
                return self._specs[k][name]
        available = sorted(n for k in kinds for n in self._specs[k])
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        label = "model node type" if kind == "module" else f"{kind} plugin"
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        broken = ""
        if self.broken:
            broken = " (some plugin packages failed to load: " + ", ".join(self.broken) + ")"
        raise RegistryError(
            f"unknown {label} {name!r}.{hint} Available: {', '.join(available) or 'none'}. "
            f"If it comes from a plugin package, is that package installed?{broken}"
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self._specs[kind])

    def __iter__(self) -> Iterator[PluginSpec]:
        for kind in KINDS:
            yield from (self._specs[kind][n] for n in sorted(self._specs[kind]))


class Registrar:
    """What a plugin's ``ptmkit_register`` hook receives: registers under its distribution."""

    def __init__(self, registry: Registry, provider: str, version: str) -> None:
        self._registry = registry
        self.provider = provider
        self.version = version
        self.added: list[PluginSpec] = []

    def _add(self, kind: str, name: str, obj: type) -> None:
        spec = PluginSpec(kind, name, obj, self.provider, self.version)
        self._registry.add(spec)
        self.added.append(spec)

    def reader(self, name: str, obj: type) -> None:
        self._add("reader", name, obj)

    def feature(self, name: str, obj: type) -> None:
        self._add("feature", name, obj)

    def fusion(self, name: str, obj: type) -> None:
        self._add("fusion", name, obj)

    def backbone(self, name: str, obj: type) -> None:
        self._add("backbone", name, obj)

    def head(self, name: str, obj: type) -> None:
        self._add("head", name, obj)

    def loss(self, name: str, obj: type) -> None:
        self._add("loss", name, obj)
