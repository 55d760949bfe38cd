"""UniPTMs as declared compositions: the recipes, the ablation sweeps, real runs on H1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ptmkit import recipe as recipes
from ptmkit import safeyaml
from ptmkit import sweep as sweeps
from ptmkit.assembly import assemble
from ptmkit.cli import main
from ptmkit.graph import ModelGraph

ROOT = Path(__file__).parents[1]
SWEEPS = sorted((ROOT / "experiments/sweeps").glob("*.yaml"))


def graph(name: str) -> ModelGraph:
    return assemble(recipes.load(ROOT / f"experiments/{name}.yaml")).graph


def test_paper_composition_has_the_published_parts_and_dims():
    recipe = recipes.load(ROOT / "experiments/uniptms.yaml")
    types = {n: u.spec.name for n, u in recipe.nodes.items()}
    assert list(recipe.features) == ["prott5", "esm2", "ember2", "pseaac", "blosum62", "aaindex"]
    assert types["master"] == "bgca" and types["slave"] == "ldfn" and types["macp"] == "macp"
    assert types["mid1"] == types["mid2"] == "bhgfn" and types["late"] == "hdwf"
    assert (types["enc1"], types["enc2"]) == ("bilstm", "mamba")
    assert [u.spec.name for u in recipe.losses] == ["focal", "hcl"]
    g = graph("uniptms")
    assert g.dims["prott5"] == 1024 and g.dims["esm2"] == 1280  # section 2.2
    assert g.dims["ember2_p"] == g.dims["pseaac_p"] == 256
    assert g.dims["blosum_p"] == g.dims["aaindex_p"] == 512
    assert g.inputs["mid1"] == ["master", "macp.shallow"] and g.inputs["late"] == ["enc2", "macp.deep"]


def test_lite_keeps_the_graph_and_mini_is_lighter():
    paper, lite, mini = graph("uniptms"), graph("uniptms-lite"), graph("uniptms-mini-lite")
    shape = {n: type(b).__name__ for n, b in paper.blocks.items() if n not in {"ember2_p"}}
    lite_shape = {n: type(b).__name__ for n, b in lite.blocks.items()}
    for node in ("master", "slave", "macp", "mid1", "mid2", "enc1", "enc2", "late", "head"):
        assert lite_shape[node] == shape[node], node
    assert type(mini.blocks["slave"]).__name__ != "LDFN"  # section 4: no LDFN
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(mini) < count(lite) / 2 < count(paper)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_variant_validates(path):
    sweep = sweeps.load(path)
    assert len(sweep.recipes) >= 3
    for recipe in sweep.recipes.values():
        assert assemble(recipe).losses


def test_ablation_tables_have_the_papers_rows():
    names = {p.stem: list(sweeps.load(p).recipes) for p in SWEEPS}
    assert len(names["table7-master-slave"]) == 6
    assert len(names["table8-stage-ablation"]) == 8
    assert len(names["table9-backbones"]) == 6
    assert names["table10-losses"] == ["hcl-focal", "hcl-wce", "infonce-focal", "infonce-wce", "focal", "wce"]


@pytest.mark.slow
def test_uniptms_lite_trains_end_to_end_on_h1(workdir, capsys):
    code = main(
        [
            "run",
            str(ROOT / "experiments/uniptms-lite.yaml"),
            "--quiet",
            "--set",
            "data.source=uniptms:H1",
            "--set",
            "train.epochs=1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("uniptms").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.nodes.enc2.type"] == "mamba"
    assert int(run.data.params["model.parameters"]) > 1_000_000
    assert "test/ap" in run.data.metrics


@pytest.mark.slow
def test_loss_ablation_sweep_runs_two_variants_nested_on_real_data(workdir, capsys):
    """Two of the shipped Table 10 variants (HCL + focal as declared, InfoNCE + weighted CE: every
    loss of the table but plain focal/WCE alone), as written in the sweep file, on H1 for one epoch."""
    shipped = safeyaml.load((ROOT / "experiments/sweeps/table10-losses.yaml").read_text())
    picked = ("hcl-focal", "infonce-wce")
    spec = {
        **shipped,
        "base": str(ROOT / "experiments/uniptms-lite.yaml"),
        "variants": {name: shipped["variants"][name] for name in picked},
    }
    (workdir / "losses.yaml").write_text(json.dumps(spec))  # JSON is YAML
    argv = ["sweep", "losses.yaml", "--quiet", "--set", "data.source=uniptms:H1", "--set", "train.epochs=1"]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    table = [line for line in out.splitlines() if line.split() and line.split()[0] in picked]
    assert [line.split()[0] for line in table] == list(picked)  # one table row per variant
    assert all("FINISHED" in line for line in table)

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("uniptms-ablations").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "table10-losses"]
    children = {
        r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == set(picked) and len(runs) == 3
    assert all(r.info.status == "FINISHED" for r in children.values()), out
    assert parent.data.tags["ptmkit.best_variant"] in picked
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.md", "comparison.csv", "sweep.yaml"} <= artifacts


def test_paper_recipe_says_why_it_cannot_train_here(workdir, capsys):
    code = main(["run", str(ROOT / "experiments/uniptms.yaml"), "--quiet", "--set", "data.source=uniptms:H1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "prot_t5" in err or "ProtT5" in err or "prott5" in err
