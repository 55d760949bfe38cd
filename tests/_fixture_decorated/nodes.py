"""Submodule of the decorated fixture package: a head, and a deeper submodule with a loss."""

from ptmkit.api import Head, register

from . import deep  # noqa: F401 - imported for its plugins


@register.head("deco_head")
class DecoHead(Head):
    """Mean over real residues of the first channel, as logits [N, 1]."""

    default_loss = "deco_loss"

    def __init__(self, config, in_dims):  # noqa: ANN001
        super().__init__(config, in_dims)
        self.output_dims = {"out": 1}

    def forward(self, inputs, mask):  # noqa: ANN001, ANN201
        x = inputs[0][..., :1] * mask.unsqueeze(-1)
        return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
