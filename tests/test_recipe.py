from pathlib import Path

import pytest

from ptmkit import recipe as recipes
from ptmkit.errors import RecipeError

EXPERIMENTS = Path(__file__).parents[1] / "experiments"

BASE = """\
name: base
data:
  source: uniptms:H1
features:
  onehot: {type: onehot}
  blosum: {type: blosum62}
model:
  nodes:
    x: {type: concat, inputs: [onehot, blosum]}
    enc: {type: bilstm, inputs: [x], hidden: 16}
    head: {type: mlp_head, inputs: [enc], pool: center}
losses:
  - {type: focal, gamma: 2.0}
train:
  epochs: 3
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path):
    if "kind: pretrain" in path.read_text():
        from ptmkit import pretrain

        with pytest.raises(RecipeError, match="run it with ptmkit pretrain"):
            recipes.load(path)
        assert pretrain.load(path).model.spec.kind == "language_model"
        return
    recipe = recipes.load(path)
    assert recipe.nodes and recipe.features


def test_extends_merges_and_type_swap_replaces_the_whole_node(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(
        tmp_path,
        "child.yaml",
        """\
extends: base.yaml
name: child
model:
  nodes:
    enc: {type: cnn, inputs: [x], channels: 8}
train:
  lr: 0.01
""",
    )
    recipe = recipes.load(child)
    assert recipe.name == "child"
    assert recipe.nodes["enc"].spec.name == "cnn"
    assert "hidden" not in recipe.raw["model"]["nodes"]["enc"]  # not inherited from bilstm
    assert recipe.train.epochs == 3 and recipe.train.lr == 0.01
    assert recipe.nodes["head"].spec.name == "mlp_head"


def test_null_deletes_a_key(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(
        tmp_path,
        "child.yaml",
        "extends: base.yaml\nfeatures:\n  blosum: null\n"
        "model:\n  nodes:\n    x: {type: concat, inputs: [onehot]}\n",
    )
    recipe = recipes.load(child)
    assert list(recipe.features) == ["onehot"]


def test_set_overrides_parse_yaml_values_and_index_lists(tmp_path):
    path = write(tmp_path, "r.yaml", BASE)
    recipe = recipes.load(
        path,
        ["train.epochs=7", "model.nodes.enc.hidden=24", "losses.0.gamma=1.5", "data.split.seed=3"],
    )
    assert recipe.train.epochs == 7
    assert recipe.nodes["enc"].config.hidden == 24
    assert recipe.losses[0].config.gamma == 1.5
    assert recipe.data.split.seed == 3


def test_wrong_type_names_file_line_path_and_value(tmp_path):
    path = write(tmp_path, "r.yaml", BASE.replace("hidden: 16", "hidden: sixteen"))
    with pytest.raises(RecipeError) as err:
        recipes.load(path)
    text = str(err.value)
    assert f"{path.resolve()}:10" in text
    assert "model.nodes.enc.hidden" in text and "'sixteen'" in text


def test_wrong_type_from_set_names_the_override(tmp_path):
    path = write(tmp_path, "r.yaml", BASE)
    with pytest.raises(RecipeError, match=r"--set train.epochs=many: train.epochs.*'many'"):
        recipes.load(path, ["train.epochs=many"])


def test_misspelled_plugin_suggests_the_right_name(tmp_path):
    path = write(tmp_path, "r.yaml", BASE.replace("type: bilstm", "type: bilsmt"))
    with pytest.raises(RecipeError) as err:
        recipes.load(path)
    text = str(err.value)
    assert "model.nodes.enc.type" in text and "'bilsmt'" in text and "Did you mean 'bilstm'" in text
    assert ":10" in text


def test_unknown_plugin_key_lists_valid_keys(tmp_path):
    path = write(tmp_path, "r.yaml", BASE.replace("hidden: 16", "hiden: 16"))
    with pytest.raises(
        RecipeError, match=r"model.nodes.enc.hiden: unknown key for 'bilstm'; valid keys: .*hidden"
    ):
        recipes.load(path)


def test_unknown_section_and_train_key(tmp_path):
    with pytest.raises(RecipeError, match="unknown section 'trian'"):
        recipes.load(write(tmp_path, "a.yaml", BASE + "trian: {}\n"))
    with pytest.raises(RecipeError, match=r"train.epoch: unknown key; valid keys: .*epochs"):
        recipes.load(write(tmp_path, "b.yaml", BASE.replace("epochs: 3", "epoch: 3")))


def test_bad_yaml_and_empty_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+: not valid YAML"):
        recipes.load(write(tmp_path, "bad.yaml", "data: [unclosed\n"))
    with pytest.raises(RecipeError, match="empty"):
        recipes.load(write(tmp_path, "empty.yaml", ""))
    with pytest.raises(RecipeError, match="not found"):
        recipes.load(tmp_path / "nope.yaml")


def test_extends_cycle_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends itself"):
        recipes.load(tmp_path / "a.yaml")


def test_digest_and_flat_params(tmp_path):
    path = write(tmp_path, "r.yaml", BASE)
    a, b = recipes.load(path), recipes.load(path, ["train.epochs=4"])
    assert a.digest() != b.digest()
    flat = a.flat()
    assert flat["model.nodes.enc.hidden"] == "16"
    assert flat["losses.0.type"] == "focal"
    assert flat["model.nodes.x.inputs"] == '["onehot", "blosum"]'


def test_requires_names_the_missing_plugin_package(tmp_path):
    text = BASE.replace("name: base\n", "name: base\nrequires: [ptmkit-no-such-plugin-pkg]\n")
    path = write(tmp_path, "r.yaml", text.replace("type: bilstm", "type: fancy_lstm"))
    with pytest.raises(RecipeError) as err:
        recipes.load(path)
    assert "unknown model node type 'fancy_lstm'" in str(err.value)
    assert "requires ptmkit-no-such-plugin-pkg, not installed here" in str(err.value)
    ok = write(tmp_path, "ok.yaml", BASE.replace("name: base\n", "name: base\nrequires: [ptmkit]\n"))
    assert recipes.load(ok).raw["requires"] == ["ptmkit"]
