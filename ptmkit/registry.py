"""Typed registries, one per plugin kind; names are looked up, never imported from user files.

Import-light (no torch): the CLI reads ``KINDS`` for ``--help``. The base classes a plugin is
checked against are imported only when a plugin registers.

Two ways to register, both bound to the distribution that provides the plugin:

- mark the class: ``@register.feature("onehot", aliases=("one_hot",))`` (see :data:`register`);
  ``hooks.build_registry`` finds the marked classes of an entry-point module and its submodules;
- or call a :class:`Registrar` from a ``@hookimpl def ptmkit_register(registry)`` hook.

An alias is an old name kept after a rename: looking it up returns the plugin under its new
name with a ``FutureWarning`` (once), so old recipes and packaged models keep working.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

from pydantic import BaseModel

from . import API_VERSION
from .errors import RegistryError

#: Plugin kinds and what each contract is, for listings and error messages.
KINDS: dict[str, str] = {
    "reader": "source files -> SiteTable",
    "feature": "SiteTable -> float tensor [N, W, D]",
    "fusion": "named inputs [N, W, D_i] -> one or more outputs",
    "backbone": "sequence encoder [N, W, D] -> [N, W, D']",
    "head": "pooling + classifier -> logits [N, tasks]",
    "loss": "(outputs, labels) -> scalar",
    "language_model": "token ids [N, L] -> hidden states [N, L, D] and vocabulary logits; ptmkit pretrain",
    "dataset": "a named collection of dataset presets: reader, files, reference numbers",
}
#: Kinds that are nodes of the model graph; they share one namespace so a node ``type`` is
#: never ambiguous.
MODULE_KINDS = ("fusion", "backbone", "head")
#: Class attribute holding a class's own registration mark (set by :data:`register`).
MARK = "__ptmkit_plugin__"

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class PluginSpec:
    kind: str
    name: str
    obj: type
    provider: str  # distribution that registered it
    version: str
    aliases: tuple[str, ...] = ()  # old names that still resolve to this plugin
    api: int = API_VERSION  # the plugin API its package was built for (1: readers take read(base))

    @property
    def doc(self) -> str:
        text = (self.obj.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""


@dataclass(frozen=True)
class Mark:
    """What a registration decorator records on a class: kind, name and old names."""

    kind: str
    name: str
    aliases: tuple[str, ...] = ()


def _names(kind: str, name: object, aliases: Iterable[str] | str) -> tuple[str, tuple[str, ...]]:
    """Validated ``(name, aliases)``; a TypeError/ValueError names what is wrong."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a {kind} plugin name must be a non-empty string, got {name!r}")
    if isinstance(aliases, str):
        raise TypeError(f"aliases of {kind} plugin {name!r} must be a tuple, not the string {aliases!r}")
    old = tuple(aliases)
    bad = [a for a in old if not isinstance(a, str) or not a.strip()]
    if bad:
        raise TypeError(f"aliases of {kind} plugin {name!r} must be non-empty strings, got {bad!r}")
    if name in old or len(set(old)) != len(old):
        raise ValueError(f"aliases of {kind} plugin {name!r} repeat a name: {old!r}")
    return name, old


def own_mark(obj: object) -> Mark | None:
    """The mark ``obj`` carries itself (a subclass of a marked class carries none)."""
    if not isinstance(obj, type):
        return None
    mark = vars(obj).get(MARK)
    return mark if isinstance(mark, Mark) else None


class Register:
    """Registration decorators: ``@register.feature("name", aliases=("old_name",))``.

    The decorator only marks the class (it returns the class unchanged); the plugin is
    registered when ptmkit loads the package's entry point, under that distribution's name and
    version, with the same checks as an explicit ``Registrar`` call. ``register(kind, name)``
    is the generic form of the per-kind methods.
    """

    def __call__(self, kind: str, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        name, old = _names(kind, name, aliases)
        mark = Mark(kind, name, old)

        def decorate(cls: T) -> T:
            if not isinstance(cls, type):
                raise TypeError(f"@register.{kind}({name!r}) decorates a class, not {cls!r}")
            existing = own_mark(cls)
            if existing is not None:
                raise TypeError(
                    f"{cls.__qualname__} is already marked as {existing.kind} plugin {existing.name!r}; "
                    f"give the old name as an alias instead of registering it twice"
                )
            setattr(cls, MARK, mark)
            return cls

        return decorate

    def reader(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("reader", name, aliases=aliases)

    def feature(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("feature", name, aliases=aliases)

    def fusion(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("fusion", name, aliases=aliases)

    def backbone(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("backbone", name, aliases=aliases)

    def head(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("head", name, aliases=aliases)

    def loss(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("loss", name, aliases=aliases)

    def dataset(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("dataset", name, aliases=aliases)

    def language_model(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        return self("language_model", name, aliases=aliases)


#: The registration decorators (exported as ``ptmkit.api.register``).
register = Register()


def _base(kind: str) -> type | None:
    """The class every plugin of ``kind`` must subclass (``None``: not checked)."""
    from . import plugin_api as api

    if kind == "dataset":
        try:
            from .catalog import Collection
        except ImportError:
            return None
        return Collection
    graph = api.GraphModule
    return {
        "reader": api.Reader,
        "feature": api.Feature,
        "fusion": graph,
        "backbone": graph,
        "head": api.Head,
        "loss": api.Loss,
        "language_model": api.LanguageModel,
    }[kind]


def _qualified(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}" if isinstance(obj, type) else repr(obj)


def check_plugin(kind: str, name: str, obj: object, where: str, api: int = API_VERSION) -> None:
    """Refuse an object that cannot work as a ``kind`` plugin, naming provider, plugin and class.

    ``where`` is "distribution version". Packages built for plugin API 1 (``api=1``) get a
    ``DeprecationWarning`` instead of a refusal for what API 2 added: a head that subclasses
    ``GraphModule`` but not ``Head``, a stateful feature without both state methods.
    """
    from . import plugin_api

    label = f"{where}: {kind} plugin {name!r}"
    if not isinstance(obj, type):
        raise RegistryError(f"{label} is {obj!r}, not a class; register the plugin class itself")
    base = _base(kind)
    if base is not None and not issubclass(obj, base):
        legacy_head = kind == "head" and issubclass(obj, plugin_api.GraphModule)
        if not (legacy_head and api < 2):
            raise RegistryError(
                f"{label} is {_qualified(obj)}, which does not subclass ptmkit.api.{base.__qualname__}; "
                f"every {kind} plugin must"
                + (" (packages built for plugin API 1 may subclass GraphModule)" if legacy_head else "")
            )
        warnings.warn(
            f"{label} ({_qualified(obj)}) subclasses GraphModule but not ptmkit.api.Head; accepted "
            "for plugin API 1, subclass Head when moving to API 2",
            DeprecationWarning,
            stacklevel=2,
        )
    config = getattr(obj, "Config", None)
    if not (isinstance(config, type) and issubclass(config, plugin_api.PluginConfig)):
        message = (
            f"{label} ({_qualified(obj)}) has Config {config!r}, which does not derive from "
            "ptmkit.api.PluginConfig (the pydantic model that refuses unknown recipe keys)"
        )
        if api >= 2 or not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise RegistryError(message)
        warnings.warn(message + "; accepted for plugin API 1", DeprecationWarning, stacklevel=2)
    if kind == "feature" and obj.stateful:
        Feature = plugin_api.Feature
        missing = [m for m in ("export_state", "import_state") if getattr(obj, m) is getattr(Feature, m)]
        if missing:
            message = (
                f"{label} ({_qualified(obj)}) is stateful but does not implement {' and '.join(missing)}; "
                "a packaged model could not restore what fit() learned"
            )
            if api >= 2:
                raise RegistryError(message)
            warnings.warn(message, DeprecationWarning, stacklevel=2)


class Registry:
    """All registered plugins, by kind and name (aliases resolve to their plugin)."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, PluginSpec]] = {k: {} for k in KINDS}
        self._aliases: dict[str, dict[str, PluginSpec]] = {k: {} for k in KINDS}
        self._warned: set[tuple[str, str]] = set()
        #: Distributions whose registration failed: name -> message. They do not break others.
        self.broken: dict[str, str] = {}

    @staticmethod
    def _namespace(kind: str) -> tuple[str, ...]:
        """Kinds whose names must differ from a ``kind`` plugin's names."""
        return MODULE_KINDS if kind in MODULE_KINDS else (kind,)

    @staticmethod
    def _kinds(kind: str) -> tuple[str, ...]:
        """Kinds a lookup of ``kind`` searches (``"module"``: every graph node kind)."""
        return MODULE_KINDS if kind == "module" else (kind,)

    def _holder(self, kinds: tuple[str, ...], key: str) -> PluginSpec | None:
        for k in kinds:
            found = self._specs[k].get(key) or self._aliases[k].get(key)
            if found is not None:
                return found
        return None

    def add(self, spec: PluginSpec) -> bool:
        """Add ``spec``; False when this very plugin is already there (registered twice by its
        own distribution, e.g. marked and called from its hook). A name or alias that another
        plugin of the namespace holds is refused, naming both providers."""
        if spec.kind not in KINDS:
            raise RegistryError(
                f"{spec.provider} registers {spec.name!r} as unknown kind {spec.kind!r}; "
                f"kinds are {', '.join(KINDS)}"
            )
        kinds = self._namespace(spec.kind)
        if self._specs[spec.kind].get(spec.name) == spec:
            return False
        for key in (spec.name, *spec.aliases):
            old = self._holder(kinds, key)
            if old is not None:
                was = f"as {old.kind}" if key == old.name else f"as {old.kind}, alias of {old.name!r}"
                new = "" if key == spec.name else f" (alias of {spec.name!r})"
                raise RegistryError(
                    f"duplicate {spec.kind} plugin {key!r}: registered by "
                    f"{old.provider} {old.version} ({was}) and by "
                    f"{spec.provider} {spec.version}{new}"
                )
        self._specs[spec.kind][spec.name] = spec
        for alias in spec.aliases:
            self._aliases[spec.kind][alias] = spec
        return True

    def remove(self, spec: PluginSpec) -> None:
        if self._specs[spec.kind].get(spec.name) is spec:
            del self._specs[spec.kind][spec.name]
        for alias in spec.aliases:
            if self._aliases[spec.kind].get(alias) is spec:
                del self._aliases[spec.kind][alias]

    def get(self, kind: str, name: str) -> PluginSpec:
        """The plugin called ``name`` (``kind="module"``: any graph node kind). An alias returns
        the renamed plugin, with a FutureWarning the first time."""
        kinds = self._kinds(kind)
        for k in kinds:
            if name in self._specs[k]:
                return self._specs[k][name]
        for k in kinds:
            spec = self._aliases[k].get(name)
            if spec is not None:
                if (k, name) not in self._warned:
                    self._warned.add((k, name))
                    warnings.warn(
                        f"{k} plugin {name!r} is deprecated, renamed to {spec.name!r} "
                        f"({spec.provider} {spec.version}); write {spec.name!r} in recipes",
                        FutureWarning,
                        stacklevel=2,
                    )
                return spec
        available = sorted(n for k in kinds for n in self._specs[k])
        # an old name close to the typo suggests the plugin's current name
        canonical = {n: n for n in available}
        canonical |= {a: s.name for k in kinds for a, s in self._aliases[k].items()}
        matches = difflib.get_close_matches(name, canonical, n=3, cutoff=0.5)
        close = dict.fromkeys(canonical[c] for c in matches)
        label = "model node type" if kind == "module" else f"{kind} plugin"
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        broken = ""
        if self.broken:
            broken = " (some plugin packages failed to load: " + ", ".join(self.broken) + ")"
        raise RegistryError(
            f"unknown {label} {name!r}.{hint} Available: {', '.join(available) or 'none'}. "
            f"If it comes from a plugin package, is that package installed?{broken}"
        )

    def names(self, kind: str, pattern: str | None = None) -> list[str]:
        """Sorted plugin names of ``kind`` (``"module"``: every graph node kind), optionally only
        those matching the shell-style ``pattern`` (``"esm*"``, case-insensitive)."""
        found = sorted(n for k in self._kinds(kind) for n in self._specs[k])
        if pattern is None:
            return found
        return [n for n in found if fnmatchcase(n.lower(), pattern.lower())]

    def __iter__(self) -> Iterator[PluginSpec]:
        for kind in KINDS:
            yield from (self._specs[kind][n] for n in sorted(self._specs[kind]))


class Registrar:
    """What registers a distribution's plugins (the ``ptmkit_register`` hook receives one).

    ``api`` is the plugin API the distribution declares; it only decides whether what API 2
    added is enforced or, for API 1 packages, warned about (see :func:`check_plugin`).
    """

    def __init__(self, registry: Registry, provider: str, version: str, *, api: int = API_VERSION) -> None:
        self._registry = registry
        self.provider = provider
        self.version = version
        self.api = api
        self.added: list[PluginSpec] = []

    def add(self, kind: str, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        """Check ``obj`` against the kind's base class and register it (with its old names)."""
        try:
            name, old = _names(kind, name, aliases)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"{self.provider} {self.version}: {exc}") from None
        check_plugin(kind, name, obj, f"{self.provider} {self.version}", self.api)
        spec = PluginSpec(kind, name, obj, self.provider, self.version, old, self.api)
        if self._registry.add(spec):
            self.added.append(spec)

    def reader(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("reader", name, obj, aliases=aliases)

    def feature(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("feature", name, obj, aliases=aliases)

    def fusion(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("fusion", name, obj, aliases=aliases)

    def backbone(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("backbone", name, obj, aliases=aliases)

    def head(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("head", name, obj, aliases=aliases)

    def loss(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("loss", name, obj, aliases=aliases)

    def dataset(self, name: str, obj: type, *, aliases: Iterable[str] = ()) -> None:
        self.add("dataset", name, obj, aliases=aliases)
