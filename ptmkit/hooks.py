"""Plugin discovery through pluggy and the ``ptmkit`` entry-point group.

An entry point names a module. ptmkit registers the classes marked with the registration
decorators (``@ptmkit.api.register.feature("name")``) found in that module and in the submodules
of its package that it imports, then calls its ``ptmkit_register`` hook if it has one. Built-in
plugins come through the very same entry point, so nothing is special about them. Each
distribution is loaded and registered on its own, so one that raises (or registers a duplicate
name) is reported by name, rolled back, and does not break the others.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
from types import ModuleType

import pluggy

from . import API_VERSION, SUPPORTED_API_VERSIONS
from .registry import Mark, Registrar, Registry, own_mark

GROUP = "ptmkit"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)


class PtmkitSpec:
    @hookspec
    def ptmkit_register(self, registry: Registrar) -> None:  # pragma: no cover - spec only
        """Register plugins: ``registry.feature("name", Class, aliases=(...))``, ``registry.loss(...)``..."""


def _api_problem(module: object) -> str | None:
    wanted = getattr(module, "PTMKIT_API_VERSION", API_VERSION)
    if wanted not in SUPPORTED_API_VERSIONS or isinstance(wanted, bool):
        older = ", ".join(str(v) for v in SUPPORTED_API_VERSIONS if v != API_VERSION)
        return (
            f"built for ptmkit plugin API {wanted if isinstance(wanted, int) else repr(wanted)}, but this "
            f"ptmkit provides API {API_VERSION}"
            + (f" (and still loads API {older})" if older else "")
            + "; upgrade the plugin package or ptmkit"
        )
    return None


def marked_plugins(root: object) -> list[tuple[Mark, type]]:
    """The classes marked for registration in module ``root`` and, recursively, in the submodules
    of its top-level package reachable through its globals, in the order found.

    A class counts only where it carries its own mark (never through a subclass) and only if it
    is defined in that package: a plugin class imported from another distribution is that
    distribution's to register.
    """
    if not isinstance(root, ModuleType):
        return []
    top = root.__name__.partition(".")[0]

    def ours(name: str) -> bool:
        return name == top or name.startswith(f"{top}.")

    found: list[tuple[Mark, type]] = []
    seen: set[int] = set()
    visited = {root.__name__}
    queue = [root]
    while queue:
        module = queue.pop(0)
        for value in list(vars(module).values()):
            if isinstance(value, ModuleType):
                if ours(value.__name__) and value.__name__ not in visited:
                    visited.add(value.__name__)
                    queue.append(value)
                continue
            mark = own_mark(value)
            if mark is not None and id(value) not in seen and ours(getattr(value, "__module__", "")):
                seen.add(id(value))
                found.append((mark, value))
    return found


def build_registry(entry_points: list[md.EntryPoint] | None = None) -> Registry:
    """Load every ``ptmkit`` entry point and let each register its plugins."""
    registry = Registry()
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(PtmkitSpec)
    eps = md.entry_points(group=GROUP) if entry_points is None else entry_points

    # ptmkit's own plugins first, so a clash is always blamed on the newcomer
    def order(ep: md.EntryPoint) -> tuple[bool, str, str]:
        dist = ep.dist.name if ep.dist else ""
        return (dist != "ptmkit", dist, ep.name)

    for ep in sorted(eps, key=order):
        dist = ep.dist.name if ep.dist else ep.name
        version = ep.dist.version if ep.dist else "?"
        try:
            module = ep.load()
            problem = _api_problem(module)
            if problem:
                registry.broken[dist] = problem
                continue
            pm.register(module, name=f"{dist}:{ep.name}")
            marked = marked_plugins(module)
        except Exception as exc:  # a broken plugin must not take the others down
            registry.broken[dist] = f"failed to load entry point {ep.name!r}: {exc}"
            continue
        impls = [i for i in pm.hook.ptmkit_register.get_hookimpls() if i.plugin is module]
        if not impls and hasattr(module, "ptmkit_register"):  # the likeliest mistake: no @hookimpl
            registry.broken[dist] = (
                f"entry point {ep.name!r} has no ptmkit_register hook implementation; "
                "decorate it with @ptmkit.hooks.hookimpl (also exported as ptmkit.api.hookimpl)"
            )
            continue
        if not impls and not marked:
            registry.broken[dist] = (
                f"entry point {ep.name!r} registers nothing: mark plugin classes with "
                "@ptmkit.api.register.<kind>(name) in that module or a submodule it imports, "
                "or give it a @ptmkit.api.hookimpl ptmkit_register(registry) hook"
            )
            continue
        # a package that declares no version predates the declaration: held to API 1 (lenient)
        registrar = Registrar(registry, dist, version, api=getattr(module, "PTMKIT_API_VERSION", 1))
        try:
            for mark, cls in marked:
                registrar.add(mark.kind, mark.name, cls, aliases=mark.aliases)
            for impl in impls:
                impl.function(registry=registrar)
        except Exception as exc:
            # roll back what this distribution registered before it failed
            for spec in registrar.added:
                registry.remove(spec)
            registry.broken[dist] = f"registration failed: {exc}"
    return registry


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, built once on first use."""
    return build_registry()
