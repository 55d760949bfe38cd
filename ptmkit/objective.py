"""The training objective: the recipe's weighted losses, bound to the model graph's outputs."""

from __future__ import annotations

import difflib

from .errors import GraphError
from .graph import ModelGraph
from .plugin_api import Loss
from .recipe import Recipe


def build_losses(recipe: Recipe, model: ModelGraph) -> list[tuple[float, Loss]]:
    """Instantiate every loss, check the outputs it reads exist, and let it size its parameters."""
    if not recipe.losses:
        head = recipe.nodes[model.output]
        raise GraphError(
            f"{recipe.locations.get(('model', 'nodes', model.output), 'recipe')}: no losses given, and the "
            f"output node {model.output!r} ({head.spec.name}) declares no default loss; add "
            "losses: [{type: bce}] (ptmkit plugins list --kind loss)"
        )
    available = {"logits", *model.dims}
    if recipe.distill is not None:
        available.add("teacher")  # the teachers' logits of each row (ptmkit.distill)
    losses = []
    for use in recipe.losses:
        loss: Loss = use.build()
        for name in loss.required_outputs():
            if name == "teacher" and recipe.distill is None:
                raise GraphError(
                    f"{use.where}: loss {use.spec.name!r} reads the teachers' logits: name the teachers in a "
                    "`distill:` section (distill: {teachers: {task: run id or package folder}})"
                )
            if name not in available:
                close = difflib.get_close_matches(name, sorted(available), n=2, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise GraphError(
                    f"{use.where}: loss {use.spec.name!r} reads {name!r}, which the model does not "
                    f"produce.{hint} Outputs: {', '.join(sorted(available))}"
                )
        model.row_outputs.update(n for n in loss.required_outputs() if n not in ("logits", "teacher"))
        loss.bind({k: v for k, v in model.dims.items()})
        losses.append((use.weight, loss))
    return losses
