"""A real sweep on H1: nested MLflow runs under one parent, the comparison table, a failing variant."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ptmkit import sweep as sweeps
from ptmkit.cli import main
from ptmkit.errors import RecipeError

ROOT = Path(__file__).parents[1]


def test_sweep_validates_every_variant_up_front(tmp_path):
    sweep = sweeps.load(ROOT / "experiments/sweeps/quickstart-backbones.yaml")
    assert list(sweep.recipes) == ["bilstm", "cnn", "no-backbone"]
    assert sweep.recipes["cnn"].nodes["encoder"].spec.name == "cnn"
    assert "encoder" not in sweep.recipes["no-backbone"].nodes
    assert all(r.tracking.experiment == "quickstart-sweeps" for r in sweep.recipes.values())
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"base: {ROOT / 'experiments/quickstart.yaml'}\nvariants:\n"
        "  ok: {}\n  broken: {set: [model.nodes.encoder.hiden=3]}\n"
    )
    with pytest.raises(RecipeError, match=r"(?s)variant 'broken'.*hiden"):
        sweeps.load(bad)


@pytest.mark.slow
def test_sweep_runs_nested_and_prints_the_table(workdir, capsys):
    sweep = workdir / "s.yaml"
    sweep.write_text(f"""\
name: mini
base: {ROOT / "experiments/quickstart.yaml"}
set: [train.epochs=2]
variants:
  bilstm: {{}}
  cnn:
    patch: {{model: {{nodes: {{encoder: {{type: cnn, inputs: [fused], channels: 8}}}}}}}}
  broken:
    set: [train.device=cuda]
""")
    code = main(["sweep", str(sweep), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1  # one variant failed
    assert "bilstm" in out and "cnn" in out and "FAILED" in out and "*" in out

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "mini"]
    children = {
        r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"bilstm", "cnn", "broken"}
    assert children["bilstm"].info.status == "FINISHED" and children["broken"].info.status == "FAILED"
    assert parent.data.tags["ptmkit.best_variant"] in {"bilstm", "cnn"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.md", "comparison.csv", "comparison.png", "sweep.yaml"} <= artifacts
