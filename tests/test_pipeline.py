"""One pipeline: sources resolved and checked at parse time, one assembly step, filled recipes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from ptmkit import catalog, cli
from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.datasets import read_source
from ptmkit.errors import RecipeError
from ptmkit.evaluate import guess_reader
from ptmkit.hooks import build_registry, get_registry
from ptmkit.plugin_api import PluginConfig, ReadContext, Reader
from ptmkit.registry import Registrar
from ptmkit.sitetable import SiteTable, window_at

EXPERIMENTS = Path(__file__).parents[1] / "experiments"

RECIPE = """\
name: mapping
data:
  source:
    reader: {reader}
    files: {{train: train.csv}}
    {extra}
features:
  onehot: {{type: onehot}}
model:
  nodes:
    head: {{type: mlp_head, inputs: [onehot], pool: center}}
"""


def write_recipe(tmp_path: Path, reader: str = "csv_sites", extra: str = "name: toy") -> Path:
    (tmp_path / "train.csv").write_text("protein,sequence,label\nP1,AAKAA,1\nP2,AAKAC,0\n")
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(reader=reader, extra=extra))
    return path


def validate(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = cli.main(["validate", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_misspelled_reader_fails_validate_with_its_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = write_recipe(tmp_path, reader="csv_site")
    code, _, err = validate(path, capsys)
    assert code == 2
    assert f"{path}:4: data.source.reader: unknown reader plugin 'csv_site'" in err
    assert "Did you mean 'csv_sites'" in err


def test_unknown_reader_key_fails_validate_with_its_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = write_recipe(tmp_path, extra="delimeter: ';'")
    code, _, err = validate(path, capsys)
    assert code == 2
    assert f"{path}:6: data.source.delimeter: unknown key for 'csv_sites'" in err
    assert "delimiter" in err  # the valid keys are listed


def test_bad_reader_value_and_missing_residues_fail_validate(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = write_recipe(tmp_path, extra="delimiter: ';;'")
    code, _, err = validate(path, capsys)
    assert code == 2 and f"{path}:6: data.source.delimiter: Value error" in err
    path = write_recipe(tmp_path, reader="protein_sites")
    code, _, err = validate(path, capsys)
    assert code == 2 and "needs residues" in err and f"{path}:3: data.source" in err
    path = write_recipe(tmp_path, extra="window: 4")
    code, _, err = validate(path, capsys)
    assert code == 2 and f"{path}:6: data.source.window: window must be a positive odd width" in err


def test_unknown_preset_fails_validate_with_its_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "r.yaml"
    path.write_text(
        RECIPE.format(reader="x", extra="").replace(
            "  source:\n    reader: x\n    files: {train: train.csv}\n    \n", "  source: uniptms:Z9\n"
        )
    )
    code, _, err = validate(path, capsys)
    assert code == 2 and f"{path}:3: data.source: unknown dataset 'uniptms:Z9'" in err


def test_validate_prints_the_source_and_the_filled_recipe(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    code, out, _ = validate(write_recipe(tmp_path), capsys, "--filled")
    assert code == 0
    assert "data: toy read by csv_sites" in out
    filled = yaml.safe_load(out.split("what runs log and package):\n", 1)[1])
    assert filled["data"]["source"]["delimiter"] == ","  # a reader default, written out
    assert filled["losses"] == [{"type": "bce", "weight": 1.0, "input": "logits"}]  # the head's default


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_filled_recipe_is_a_fixed_point(path: Path) -> None:
    """Parsing a filled recipe gives the same filled recipe and hash: what a package holds
    rebuilds the very recipe that was run."""
    from ptmkit import pretrain

    kind = pretrain if "kind: pretrain" in path.read_text() else recipes
    recipe = kind.load(path)
    filled = recipe.filled()
    again = kind.parse(yaml.safe_load(recipe.to_yaml()), get_registry())
    assert again.filled() == filled
    assert again.digest() == recipe.digest()


def test_defaults_spelled_out_hash_equal(tmp_path: Path) -> None:
    short = recipes.load(write_recipe(tmp_path))
    path = write_recipe(tmp_path, extra="name: toy\n    delimiter: ','")
    spelled = recipes.load(path)
    assert short.digest() == spelled.digest()
    assert short.raw != spelled.raw


def test_assemble_builds_features_graph_losses_in_order() -> None:
    recipe = recipes.load(EXPERIMENTS / "quickstart.yaml")
    built = assemble(recipe)
    assert list(built.features) == ["onehot", "blosum62", "eaac"]
    assert built.graph.output == "head"
    assert [type(loss).__name__ for _, loss in built.losses] == ["BCELoss"]
    assert built.parameters == sum(p.numel() for p in built.graph.parameters()) > 0


def test_preset_is_a_reader_use_with_context(data_root: Path) -> None:
    source = recipes.parse_source("uniptms:K2", get_registry())
    assert source.reader.spec.name == "protein_sites"
    assert (source.residues, source.window, source.ptm) == ("K", 33, "succinylation")
    assert "residues" not in source.reader.config.model_dump()  # context, not reader config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K2's published bad site
        table, info = read_source(source, base_dir=Path("."), data_root=data_root, window=15)
    assert info.window == table.width == 15
    assert set(table.frame["residue"]) == {"K"}
    assert source.filled() == "uniptms:K2"
    assert catalog.get("uniptms:k2") is source.preset


def test_reader_reads_through_its_context(tmp_path: Path) -> None:
    (tmp_path / "p.fasta").write_text(">sp|P1|\t#2\nMKAKS\n")
    cls = get_registry().get("reader", "protein_sites").obj
    reader = cls(cls.Config(files={"test": "p.fasta"}))
    table = reader.read(ReadContext(base=tmp_path, task="succ", residues="K", window=3))
    assert table.frame[["position", "window", "label", "task"]].values.tolist() == [
        [2, "MKA", 1, "succ"],
        [4, "AKS", 0, "succ"],
    ]


def test_evaluate_guesses_the_reader_by_sniffing(tmp_path: Path) -> None:
    marked = tmp_path / "k2.fasta"
    marked.write_text(">sp|P1|\t#2\nMKAK\n")
    musite = tmp_path / "m.fasta"
    musite.write_text(">P1\nMK#AK\n")
    table = tmp_path / "t.csv"
    table.write_text("a,b\n")
    assert guess_reader(marked) == "protein_sites"
    assert guess_reader(musite) == "musite_fasta"
    with pytest.raises(Exception, match="no reader recognises"):
        guess_reader(table)


def test_recipe_without_losses_uses_the_heads_default(tmp_path: Path) -> None:
    recipe = recipes.load(write_recipe(tmp_path))
    assert [u.spec.name for u in recipe.losses] == ["bce"]


def test_source_keys_are_not_reader_config(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, extra="name: toy\n    ptm: phospho\n    residues: K")
    recipe = recipes.load(path)
    assert (recipe.source.ptm, recipe.source.task, recipe.source.residues) == ("phospho", "phospho", "K")
    with pytest.raises(RecipeError, match="residues must be letters"):
        recipes.load(write_recipe(tmp_path, extra="residues: K1"))


def test_unknown_nested_key_lists_the_nested_sections_keys(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = write_recipe(tmp_path).with_name("n.yaml")
    text = write_recipe(tmp_path).read_text()
    path.write_text(
        text.replace("data:\n", "data:\n  split: {vlaid: 0.2}\n")
        + "train:\n  early_stopping: {monitr: val/ap}\n"
    )
    code, _, err = validate(path, capsys)
    assert code == 2 and f"{path}:3: data.split.vlaid: unknown key; valid keys: valid, test, seed" in err
    path.write_text(text + "train:\n  early_stopping: {monitr: val/ap}\n")
    code, _, err = validate(path, capsys)
    assert (
        code == 2 and "train.early_stopping.monitr: unknown key; valid keys: monitor, mode, min_delta" in err
    )


class _OldConfig(PluginConfig):
    file: str
    residues: str
    task: str = "ptm"
    window: int = 5


class _OldReader(Reader):
    """A reader as plugin API 1 packages wrote them: read(base), magic residues/task/window fields."""

    Config = _OldConfig

    def read(self, base):  # noqa: ANN001, ANN201 - the API 1 signature
        cfg = self.config
        seq = (Path(base) / cfg.file).read_text().strip()
        records = [
            {
                "protein_id": "P1",
                "position": i + 1,
                "residue": aa,
                "window": window_at(seq, i + 1, cfg.window),
                "label": int(i == 2),
                "task": cfg.task,
                "split": "unsplit",
                "origin": f"{cfg.file}:1",
            }
            for i, aa in enumerate(seq)
            if aa in cfg.residues
        ]
        return SiteTable.from_records(records)


def test_a_plugin_api_1_reader_still_gets_its_fields_filled(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("MAKAAKAAS\n")
    registry = build_registry()
    Registrar(registry, "ptmkit-old-reader", "0.1", api=1).reader("old_reader", _OldReader)
    raw = {"reader": "old_reader", "file": "p.txt", "residues": "K", "ptm": "succ"}
    source = recipes.parse_source(raw, registry)
    table, info = read_source(source, base_dir=tmp_path, data_root=tmp_path, window=3)
    assert table.frame[["position", "window", "task"]].values.tolist() == [
        [3, "AKA", "succ"],
        [6, "AKA", "succ"],
    ]
    assert info.window == 3 and info.residues == "K"


def test_a_package_loads_where_its_training_reader_is_missing(tmp_path: Path) -> None:
    """Scoring never reads the training data: a recipe whose reader is not installed still parses
    for package loading (its source left unresolved), and strictly otherwise."""
    raw = yaml.safe_load(RECIPE.format(reader="reader_from_elsewhere", extra="name: toy"))
    with pytest.raises(RecipeError, match="unknown reader plugin 'reader_from_elsewhere'"):
        recipes.parse(raw, get_registry())
    recipe = recipes.parse(raw, get_registry(), lenient_source=True)
    assert recipe.source is None
    assert recipe.filled()["data"]["source"]["reader"] == "reader_from_elsewhere"
    assert assemble(recipe, losses=False).graph.output == "head"


def test_a_collection_name_alone_asks_for_one_of_its_datasets() -> None:
    with pytest.raises(
        RecipeError, match="'uniptms' is a dataset collection; name one of its datasets: uniptms:T1"
    ):
        recipes.parse_source("uniptms", get_registry())


def test_empty_data_residues_means_no_filter(tmp_path: Path) -> None:
    path = write_recipe(tmp_path)
    path.write_text(path.read_text().replace("data:\n", 'data:\n  residues: ""\n'))
    assert recipes.load(path).data.residues is None


def test_making_the_pyfunc_class_prints_no_mlflow_advice() -> None:
    """MLflow inspects predict's type hints when the class is made; an unresolvable hint printed
    'Add type hints to the predict method' on every run that logged a model."""
    import subprocess
    import sys

    code = "import ptmkit.serving as s; s.PtmkitPyfunc"
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "type hint" not in done.stderr.lower()
