"""The one way ptmkit reads YAML a user wrote: safe tags only, aliases bounded.

``yaml.safe_load`` runs no code, but it still expands anchors and aliases: ten anchors, each
aliasing the previous one nine times, is a 1 KB file that stands for 10^9 nodes ("billion
laughs"). Loading shares the objects, so the bomb goes off later, in whatever walks the data
(location tracking, deep copies, merges, flattening into MLflow params). Here the composed node
graph is measured first — its size with every alias expanded, counted with memoisation so the
count itself is cheap — and a document over :data:`MAX_NODES` is refused with one line, before
anything walks it. Recursive aliases (``&a [*a]``) are refused too.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import PtmkitError

#: Largest document, counted as nodes with every alias expanded. The biggest recipe in
#: experiments/ expands to a few hundred nodes; a sweep with dozens of variants to a few thousand.
MAX_NODES = 100_000


class YamlError(PtmkitError):
    """A YAML text that is not valid YAML (the message is located)."""


class YamlTooLarge(YamlError):
    """A YAML text refused for its shape: an alias bomb, a recursive alias, too deep a nesting."""


def _expanded_size(root: yaml.Node, where: str) -> int:
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise YamlTooLarge(
                f"{where}:{node.start_mark.line + 1}: recursive YAML alias (an anchor that "
                "contains itself); write the value out instead"
            )
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
        on_path.discard(key)
        sizes[key] = total
        return total

    return size(root)


def compose(text: str, where: str = "<string>") -> yaml.Node | None:
    """Compose ``text`` into a node graph, refusing alias bombs; ``where`` names it in errors."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise YamlError(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise YamlTooLarge(f"{where}: the YAML is nested too deeply to be a recipe or sweep") from None
    finally:
        loader.dispose()
    if node is not None:
        try:
            total = _expanded_size(node, where)
        except RecursionError:
            raise YamlTooLarge(f"{where}: the YAML is nested too deeply to be a recipe or sweep") from None
        if total > MAX_NODES:
            raise YamlTooLarge(
                f"{where}: the YAML expands to {total:,} values through its anchors and aliases "
                f"(at most {MAX_NODES:,} are accepted; an alias bomb?); write the values out instead"
            )
    return node


def construct(node: yaml.Node | None) -> Any:
    """Python data from a node :func:`compose` accepted (safe tags only)."""
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load(text: str, where: str = "<string>") -> Any:
    """``yaml.safe_load`` with bounded aliases and located, one-line errors."""
    node = compose(text, where)
    try:
        return construct(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise YamlError(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
