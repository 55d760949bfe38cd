"""Plugin discovery through pluggy and the ``ptmkit`` entry-point group.

Built-in plugins are registered through the very same entry point and hook as third-party ones,
so nothing is special about them. Each distribution is loaded and called on its own, so one that
raises (or registers a duplicate name) is reported by name and does not break the others.
"""

from __future__ import annotations

import functools
import importlib.metadata as md

import pluggy

from . import API_VERSION
from .registry import Registrar, Registry

GROUP = "ptmkit"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)


class PtmkitSpec:
    @hookspec
    def ptmkit_register(self, registry: Registrar) -> None:  # pragma: no cover - spec only
        """Register plugins: ``registry.feature("name", Class)``, ``registry.loss(...)``, ..."""


def _api_problem(module: object) -> str | None:
    wanted = getattr(module, "PTMKIT_API_VERSION", API_VERSION)
    if wanted != API_VERSION:
        return (
            f"built for ptmkit plugin API {wanted}, but this ptmkit provides API {API_VERSION}; "
            "upgrade the plugin package or ptmkit"
        )
    return None


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
        except Exception as exc:  # a broken plugin must not take the others down
            registry.broken[dist] = f"failed to load entry point {ep.name!r}: {exc}"
            continue
        impls = [i for i in pm.hook.ptmkit_register.get_hookimpls() if i.plugin is module]
        if not impls:  # the likeliest first mistake: a ptmkit_register without @hookimpl
            registry.broken[dist] = (
                f"entry point {ep.name!r} has no ptmkit_register hook implementation; "
                "decorate it with @ptmkit.hooks.hookimpl"
            )
            continue
        for impl in impls:
            registrar = Registrar(registry, dist, version)
            try:
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
