from pathlib import Path

import pytest
import torch

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.errors import GraphError
from ptmkit.graph import ModelGraph, used_features

FEATURES = """\
name: g
data: {source: uniptms:H1}
features:
  onehot: {type: onehot}
  blosum: {type: blosum62}
  eaac: {type: eaac}
model:
"""


def graph(tmp_path: Path, model: str) -> ModelGraph:
    path = tmp_path / "g.yaml"
    path.write_text(FEATURES + model)
    return assemble(recipes.load(path), losses=False).graph


def test_dims_are_inferred_through_the_graph(tmp_path):
    g = graph(
        tmp_path,
        """\
  nodes:
    x: {type: concat, inputs: [onehot, blosum, eaac]}
    enc: {type: bilstm, inputs: [x], hidden: 8}
    head: {type: mlp_head, inputs: [enc], hidden: [4]}
""",
    )
    assert g.dims["x"] == 60 and g.dims["enc"] == 16 and g.dims["head"] == 1
    assert g.order == ["x", "enc", "head"]
    feats = {k: torch.randn(3, 7, d) for k, d in [("onehot", 20), ("blosum", 20), ("eaac", 20)]}
    out = g(feats, torch.ones(3, 7, dtype=torch.bool))
    assert out["logits"].shape == (3,)
    assert out["head.embedding"].shape == (3, 4)


def test_unknown_output_name_is_reported(tmp_path):
    with pytest.raises(GraphError, match=r"'enc' has no output 'nope'"):
        graph(
            tmp_path,
            """\
  nodes:
    enc: {type: bilstm, inputs: [onehot], hidden: 8}
    head: {type: mlp_head, inputs: [enc.nope]}
""",
        )


def test_missing_input_suggests(tmp_path):
    with pytest.raises(
        GraphError, match=r"model.nodes.enc.inputs\[0\]: 'onehto' is neither.*Did you mean 'onehot'"
    ):
        graph(
            tmp_path,
            """\
  nodes:
    enc: {type: bilstm, inputs: [onehto]}
    head: {type: mlp_head, inputs: [enc]}
""",
        )


def test_cycle_is_reported_with_its_path(tmp_path):
    with pytest.raises(GraphError, match=r"cycle a -> b -> a|cycle b -> a -> b"):
        graph(
            tmp_path,
            """\
  nodes:
    a: {type: add, inputs: [onehot, b]}
    b: {type: bilstm, inputs: [a], hidden: 10}
    head: {type: mlp_head, inputs: [b]}
""",
        )


def test_unused_node_is_an_error(tmp_path):
    with pytest.raises(GraphError, match=r"'spare' do not feed the output node 'head'"):
        graph(
            tmp_path,
            """\
  nodes:
    enc: {type: bilstm, inputs: [onehot]}
    spare: {type: bilstm, inputs: [blosum]}
    head: {type: mlp_head, inputs: [enc]}
  output: head
""",
        )


def test_ambiguous_output_asks_for_model_output(tmp_path):
    with pytest.raises(GraphError, match="cannot tell the output node"):
        graph(
            tmp_path,
            """\
  nodes:
    h1: {type: mlp_head, inputs: [onehot]}
    h2: {type: mlp_head, inputs: [blosum]}
""",
        )


def test_dimension_mismatch_names_node_and_dims(tmp_path):
    with pytest.raises(GraphError, match=r"model.nodes.s: add with input dims \[20, 16\]"):
        graph(
            tmp_path,
            """\
  nodes:
    enc: {type: bilstm, inputs: [onehot], hidden: 8}
    s: {type: add, inputs: [blosum, enc]}
    head: {type: mlp_head, inputs: [s]}
""",
        )


def test_wrong_number_of_inputs(tmp_path):
    with pytest.raises(GraphError, match=r"model.nodes.enc.inputs: 'bilstm' takes exactly 1 input"):
        graph(
            tmp_path,
            """\
  nodes:
    enc: {type: bilstm, inputs: [onehot, blosum]}
    head: {type: mlp_head, inputs: [enc]}
""",
        )


def test_unused_feature_is_not_computed(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(FEATURES + "  nodes:\n    head: {type: mlp_head, inputs: [onehot]}\n")
    assert used_features(recipes.load(path)) == ["onehot"]


def test_loss_reading_a_missing_output_is_reported(tmp_path):
    from ptmkit.objective import build_losses

    path = tmp_path / "g.yaml"
    path.write_text(
        FEATURES + "  nodes:\n    head: {type: mlp_head, inputs: [onehot]}\n"
        "losses:\n  - {type: bce, input: head.embeddings}\n"
    )
    recipe = recipes.load(path)
    model = ModelGraph(recipe, {"onehot": 20})
    with pytest.raises(
        GraphError, match=r"losses.0: loss 'bce' reads 'head.embeddings'.*Did you mean 'head.embedding'"
    ):
        build_losses(recipe, model)
