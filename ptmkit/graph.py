"""The model graph: named nodes wired by name, checked and dimension-inferred before any training.

Inputs name a feature, a node (its default ``out`` output) or ``node.output`` (one of several
named outputs). The graph must be acyclic, every node must feed the output node, and each
node's constructor sees the dims of its inputs, so a mismatch fails at build time with the
node's recipe location.
"""

from __future__ import annotations

import difflib
import warnings

import torch
from torch import nn

from .errors import GraphError
from .plugin_api import GraphModule
from .recipe import Key, PluginUse, Recipe

#: ``key path -> file:line`` of a recipe (``Recipe.locations``); empty for packaged recipes.
Locations = dict[Key, str]


def _split_ref(ref: str) -> tuple[str, str]:
    name, _, output = ref.partition(".")
    return name, output or "out"


def _at(locations: Locations | None, key: Key, label: str) -> str:
    """``file:line: label`` for the deepest located prefix of ``key``: a graph error then points
    at the recipe line to fix (the ``inputs:`` entry, the node), not only at a key path."""
    for n in range(len(key), 1, -1):
        where = (locations or {}).get(key[:n])
        if where:
            return f"{where}: {label}"
    return label


def _node_key(name: str, *rest: str | int) -> Key:
    return ("model", "nodes", name, *rest)


def check_inputs(nodes: dict[str, PluginUse], features: set[str], locations: Locations | None = None) -> None:
    """Every input names a feature or a node, and no node shadows a feature (checked first: an
    unknown input otherwise surfaces as a confusing "cannot tell the output node")."""
    for name, use in nodes.items():
        if name in features:
            raise GraphError(
                _at(
                    locations,
                    _node_key(name),
                    f"{use.where}: node name {name!r} is also a feature name; rename one",
                )
            )
        for i, ref in enumerate(use.inputs):
            target, _ = _split_ref(ref)
            if target not in nodes and target not in features:
                known = sorted(features | set(nodes))
                close = difflib.get_close_matches(target, known, n=2, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise GraphError(
                    _at(
                        locations,
                        _node_key(name, "inputs", i),
                        f"{use.where}.inputs[{i}]: {ref!r} is neither a feature nor a node.{hint} "
                        f"Features: {', '.join(sorted(features))}; nodes: {', '.join(nodes)}",
                    )
                )


def topological_order(
    nodes: dict[str, PluginUse], features: set[str], locations: Locations | None = None
) -> list[str]:
    """Order nodes so every input comes first; report unknown inputs and cycles precisely."""
    check_inputs(nodes, features, locations)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def edge(reader: str, read: str) -> Key:
        """Key of the first input of ``reader`` that names node ``read``."""
        i = next(i for i, ref in enumerate(nodes[reader].inputs) if _split_ref(ref)[0] == read)
        return _node_key(reader, "inputs", i)

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = stack[stack.index(name) :] + [name]
            edges = [edge(a, b) for a, b in zip(cycle, cycle[1:], strict=False)]
            # located at a --set override in the cycle if there is one (what the user just changed),
            # else at the input that closes it (the last edge walked)
            overridden = [k for k in edges if _at(locations, k, "").startswith("--set")]
            pick = overridden[0] if overridden else edges[-1]
            raise GraphError(_at(locations, pick, f"model.nodes: cycle {' -> '.join(cycle)}"))
        state[name] = 1
        for ref in nodes[name].inputs:
            target, _ = _split_ref(ref)
            if target in nodes:
                visit(target, stack + [name])
        state[name] = 2
        order.append(name)

    for name in nodes:
        visit(name, [])
    return order


def _ancestors(name: str, nodes: dict[str, PluginUse]) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in nodes:
            todo.extend(_split_ref(r)[0] for r in nodes[current].inputs)
    return seen


def output_node(recipe: Recipe) -> str:
    """The node whose ``out`` is the logits: ``model.output`` or the single node nobody reads."""
    check_inputs(recipe.nodes, set(recipe.features), recipe.locations)
    if recipe.output is not None:
        if recipe.output not in recipe.nodes:
            raise GraphError(
                _at(
                    recipe.locations,
                    ("model", "output"),
                    f"model.output: {recipe.output!r} is not a node; nodes: {', '.join(recipe.nodes)}",
                )
            )
        return recipe.output
    used = {_split_ref(r)[0] for use in recipe.nodes.values() for r in use.inputs}
    sinks = [n for n in recipe.nodes if n not in used]
    if not sinks:  # every node is read by another: there is a cycle, report it precisely
        topological_order(recipe.nodes, set(recipe.features), recipe.locations)
    if len(sinks) != 1:
        raise GraphError(
            _at(
                recipe.locations,
                ("model", "nodes"),
                f"model: cannot tell the output node; nodes read by no other node: {', '.join(sinks)}. "
                "Set model.output to the head node (or remove the unused nodes)",
            )
        )
    return sinks[0]


def used_features(recipe: Recipe) -> list[str]:
    """Features the output depends on, in recipe order (unused ones are not computed)."""
    needed = _ancestors(output_node(recipe), recipe.nodes)
    return [f for f in recipe.features if f in needed]


class ModelGraph(nn.Module):
    """The composed model: runs the nodes in order and returns every named output."""

    def __init__(self, recipe: Recipe, feature_dims: dict[str, int]) -> None:
        super().__init__()
        nodes = recipe.nodes
        where = recipe.locations
        self.order = topological_order(nodes, set(recipe.features), where)
        self.output = output_node(recipe)
        needed = _ancestors(self.output, nodes)
        unused = [n for n in nodes if n not in needed]
        if unused:
            raise GraphError(
                _at(
                    where,
                    _node_key(unused[0]),
                    f"model.nodes: node(s) {', '.join(map(repr, unused))} do not feed the output node "
                    f"{self.output!r}; remove them or wire them in",
                )
            )
        unused_features = [f for f in recipe.features if f not in needed]
        if unused_features:
            warnings.warn(
                f"features {', '.join(unused_features)} are declared but unused; they are not computed",
                stacklevel=2,
            )
        self.inputs = {name: list(nodes[name].inputs) for name in self.order}
        self.dims: dict[str, int] = {f: d for f, d in feature_dims.items() if f in needed}
        self.feature_dims = dict(self.dims)
        #: outputs besides the output node's that protein mode reads at each row's residue (the
        #: losses' inputs: ``ptmkit.objective.build_losses`` adds them)
        self.row_outputs: set[str] = set()
        self.blocks = nn.ModuleDict()
        for name in self.order:
            use = nodes[name]
            lo, hi = use.spec.obj.n_inputs
            n = len(use.inputs)
            if n < lo or (hi is not None and n > hi):
                want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
                raise GraphError(
                    _at(
                        where,
                        _node_key(name, "inputs"),
                        f"{use.where}.inputs: {use.spec.name!r} takes {want} input(s), got {n}",
                    )
                )
            in_dims = []
            for i, ref in enumerate(use.inputs):
                if ref not in self.dims:
                    target, out = _split_ref(ref)
                    outs = [k for k in self.dims if k.startswith(f"{target}.")]
                    raise GraphError(
                        _at(
                            where,
                            _node_key(name, "inputs", i),
                            f"{use.where}.inputs[{i}]: {target!r} has no output {out!r}; "
                            f"outputs: {', '.join(o.split('.', 1)[1] for o in outs) or 'out'}",
                        )
                    )
                in_dims.append(self.dims[ref])
            try:
                block: GraphModule = use.build(in_dims)
            except (ValueError, TypeError) as exc:
                problem = f"{use.where}: {use.spec.name} with input dims {in_dims}: {exc}"
                raise GraphError(_at(where, _node_key(name), problem)) from None
            if "out" not in block.output_dims:
                problem = f"{use.where}: plugin {use.spec.name!r} declares no 'out' output"
                raise GraphError(_at(where, _node_key(name), problem))
            for out, dim in block.output_dims.items():
                self.dims[f"{name}.{out}"] = dim
            self.dims[name] = block.output_dims["out"]
            self.blocks[name] = block
        self.tasks = self.dims[self.output]
        names = list(recipe.data.tasks or {})  # (not recipe.tasks: a package may load without its readers)
        expected = len(names) or 1
        for name, block in self.blocks.items():
            count = getattr(block, "task_count", None)
            if count and count != expected:
                problem = (
                    f"{nodes[name].where}: {nodes[name].spec.name} is conditioned on {count} tasks, but the "
                    f"recipe has {expected} ({', '.join(names) or 'one task'}); give it as many"
                )
                raise GraphError(_at(where, _node_key(name), problem))
        if self.tasks != expected:
            what = f"the {expected} data.tasks ({', '.join(names)})" if names else "one task"
            hint = "tasks" if names else "tasks: 1 (or declare data.tasks)"
            problem = (
                f"{nodes[self.output].where}: the output node {self.output!r} gives {self.tasks} logits "
                f"per row, but the recipe has {what}; set its {hint}"
            )
            raise GraphError(_at(where, _node_key(self.output), problem))
        if recipe.data.unit == "protein" and not self.per_residue():
            problem = (
                f"{nodes[self.output].where}: data.unit: protein scores every residue of a protein in one "
                f"pass, but the output node {self.output!r} gives one vector per protein; give it a "
                "per-residue output [P, L, tasks] (e.g. pool: none on mlp_head / task_heads)"
            )
            raise GraphError(_at(where, _node_key(self.output), problem))

    @torch.no_grad()
    def per_residue(self) -> bool:
        """Whether the output node scores every residue ([B, L, T]), found by one pass over two
        9-residue inputs of zeros (the graph's mode restored after)."""
        was = self.training
        self.eval()
        try:
            features = {f: torch.zeros(2, 9, d) for f, d in self.feature_dims.items()}
            values = self._run(features, torch.ones(2, 9, dtype=torch.bool), None)
        finally:
            self.train(was)
        return values[self.output].dim() == 3

    def forward(
        self,
        features: dict[str, torch.Tensor],
        mask: torch.Tensor,
        task: torch.Tensor | None = None,
        sites: torch.Tensor | None = None,
        unit_task: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every node's outputs, plus ``logits``: [N] (one output, or each row's own task's logit
        when ``task``, long [N], is given for an [N, T] output; all T are ``task_logits``).

        A per-residue output node ([B, L, T], e.g. a head with ``pool: none``) is read at each
        row's residue: ``sites`` (long [N, 2]: unit in the batch, column; protein mode), else the
        centre of each window. Its other outputs (e.g. ``embedding``) are read there too, and in
        protein mode so are the per-residue tensors the losses read (``row_outputs``), so the
        losses see one row per site in both modes. Task-conditioned nodes get each unit's task:
        ``unit_task`` (protein mode, units cut per task), else the row's ``task``."""
        values = self._run(features, mask, task, unit_task if sites is not None else task)
        per_residue = values[self.output].dim() == 3
        mine = [k for k in values if k.startswith(f"{self.output}.")] + [self.output] if per_residue else []
        if sites is not None:  # protein mode: the output node's and the losses' inputs, per row
            if not per_residue:
                raise GraphError(
                    f"data.unit: protein: the output node {self.output!r} gave "
                    f"{tuple(values[self.output].shape)}; it must score every residue, [P, L, tasks]"
                )
            for key in {*mine, *self.row_outputs}:
                tensor = values.get(key)
                if tensor is not None and tensor.dim() >= 3 and tensor.shape[:2] == mask.shape:
                    values[key] = tensor[sites[:, 0], sites[:, 1]]
        elif per_residue:  # per residue in window mode: read each centre
            for key in mine:
                tensor = values[key]
                if tensor.dim() == 3:
                    values[key] = tensor[:, tensor.shape[1] // 2]
        logits = values[self.output]
        if task is not None and logits.dim() == 2 and logits.shape[-1] > 1:
            values["task_logits"] = logits
            values["logits"] = logits.gather(1, task.unsqueeze(1)).squeeze(1)
        else:
            values["logits"] = logits.squeeze(-1) if logits.dim() == 2 and logits.shape[-1] == 1 else logits
        return values

    @property
    def reads_task(self) -> bool:
        """Whether a node is conditioned on the task (then protein units are cut per task)."""
        return any(getattr(b, "task_count", None) for b in self.blocks.values())

    def _run(
        self,
        features: dict[str, torch.Tensor],
        mask: torch.Tensor,
        task: torch.Tensor | None,
        unit_task: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = dict(features)
        values["mask"] = mask
        if task is not None:
            values["task"] = task
        for name in self.order:
            block = self.blocks[name]
            args = [values[ref] for ref in self.inputs[name]]
            conditioned = getattr(block, "task_count", None)
            result = block(args, mask, task=unit_task) if conditioned else block(args, mask)
            if isinstance(result, torch.Tensor):
                result = {"out": result}
            for out, tensor in result.items():
                values[f"{name}.{out}"] = tensor
            values[name] = result["out"]
        return values

    def describe(self) -> list[tuple[str, str, list[str], int]]:
        """(node, plugin, inputs, output dim) rows, for ``ptmkit recipe show``-style summaries."""
        return [(n, type(self.blocks[n]).__name__, self.inputs[n], self.dims[n]) for n in self.order]
