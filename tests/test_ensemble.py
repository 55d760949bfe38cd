"""Ensemble packages on real runs: built from a store, loaded by every model command.

Three one-epoch quickstart models (H1) are trained once in a real sqlite store: seeds 0 and 1 of
the same recipe and split, and one on another split (which no ensemble may mix in).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ptmkit import metrics, thresholds
from ptmkit.cli import main
from ptmkit.datasets import prepare_data
from ptmkit.errors import PtmkitError
from ptmkit.inference import encode, infer
from ptmkit.model_store import load_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]
PROTEINS = ">P1 test\nMKHAYIAKQRHISFVKSHFSRQLEERLGLIEVQAPILSRHVGDGTQDNLSGAEKAVQVKVKALPDAQH\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    work = tmp_path_factory.mktemp("ensemble")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("PTMKIT_DATA", str(data_root))
    mp.setenv("PTMKIT_HOME", str(work))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = [str(ROOT / "experiments/quickstart.yaml"), "--quiet", "--set", "train.epochs=1"]
    base += ["--set", "train.threads=1", "--set", "model.nodes.encoder.hidden=8"]
    base += ["--set", "tracking.experiment=ensemble-tests"]
    for name, extra in [("s0", []), ("s1", ["train.seed=1"]), ("other", ["data.split.seed=1"])]:
        sets = [a for e in extra for a in ("--set", e)]
        assert main(["run", *base, "--set", f"tracking.run_name={name}", *sets]) == 0
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ensemble-tests")
    ids = {r.info.run_name: r.info.run_id for r in client.search_runs([exp.experiment_id])}
    (work / "p.fasta").write_text(PROTEINS)
    yield {"dir": work, "ids": ids, "root": data_root}
    mp.undo()


@pytest.fixture(scope="module")
def ensemble(runs):
    ids = runs["ids"]
    assert main(["ensemble", ids["s0"], ids["s1"], "-o", "ens", "--name", "h1-pair", "--quiet"]) == 0
    return runs["dir"] / "ens"


def test_the_ensemble_scores_the_mean_of_its_members_probabilities(runs, ensemble):
    members = [load_model(runs["ids"][n]) for n in ("s0", "s1")]
    model = load_model(ensemble)
    assert model.name == "h1-pair" and model.window == members[0].window and model.ptm == members[0].ptm
    table, _ = prepare_data(members[0].recipe, runs["root"])
    valid = table.subset((table.frame["split"] == "valid").to_numpy())
    each = [infer(m.model, encode(m.features, valid)).scores for m in members]
    mean = np.mean(each, axis=0)
    got = infer(model.model, encode(model.features, valid)).scores
    assert np.abs(got - mean).max() < 1e-6
    assert np.abs(each[0] - each[1]).max() > 1e-3  # two seeds do differ: the mean is not trivial
    # thresholds: every rule chosen on the shared validation split, on the ensemble's scores
    chosen = thresholds.choose_all(valid.labels.astype(int), got)
    for rule, value in chosen.items():
        assert model.threshold(rule) == pytest.approx(value, abs=1e-6)
    meta = json.loads((ensemble / "model.json").read_text())
    assert meta["format"] == "ptmkit-ensemble/1" and meta["combine"] == "mean-probability"
    assert [m["run_id"] for m in meta["members"]] == [runs["ids"]["s0"], runs["ids"]["s1"]]
    assert (ensemble / "members/0/weights.pt").is_file() and (ensemble / "members/1/model.json").is_file()


def test_build_prints_members_and_ensemble_on_validation(runs, tmp_path, capsys):
    ids = runs["ids"]
    out = tmp_path / "e"
    assert main(["ensemble", ids["s0"], ids["s1"], "-o", str(out), "--format", "csv", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "thresholds chosen on the members' shared validation split" in text
    lines = [line for line in text.splitlines()[2:]]  # after the summary line and the csv header
    assert [line.split(",")[0] for line in lines] == [
        "member 0: quickstart",
        "member 1: quickstart",
        "ensemble",
    ]


def test_predict_and_evaluate_take_an_ensemble_like_any_model(runs, ensemble, capsys):
    ids = runs["ids"]
    assert main(["predict", str(ensemble), "p.fasta", "-o", "ens.tsv", "--quiet"]) == 0
    assert main(["predict", ids["s0"], ids["s1"], "p.fasta", "-o", "both.tsv", "--quiet"]) == 0
    ens = pd.read_csv("ens.tsv", sep="\t", comment="#")
    both = pd.read_csv("both.tsv", sep="\t", comment="#")
    mean = both.groupby("position")["score"].mean()
    assert len(ens) == len(mean) > 0
    assert np.abs(ens.set_index("position")["score"] - mean).max() < 2e-6  # 6 decimals written
    assert (
        main(["evaluate", str(ensemble), "uniptms:H1", "--split", "test", "--json", "m.json", "--quiet"]) == 0
    )
    result = json.loads(Path("m.json").read_text())
    assert result["counts"]["sites"] > 0 and 0.0 <= result["metrics"]["auc"] <= 1.0
    # the test rows are the members' test split, scored with the ensemble's threshold
    model = load_model(ensemble)
    table, _ = prepare_data(model.recipe, runs["root"])
    test = table.subset((table.frame["split"] == "test").to_numpy())
    scores = infer(model.model, encode(model.features, test)).scores
    expected = metrics.evaluate(test.labels.astype(int), scores, model.threshold(thresholds.DEFAULT_RULE))
    assert result["metrics"]["auc"] == pytest.approx(expected["auc"], abs=1e-9)


def test_members_on_another_split_are_refused(runs, tmp_path, capsys):
    ids = runs["ids"]
    assert main(["ensemble", ids["s0"], ids["other"], "-o", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "was trained on other data or another split" in err and '"seed": 1' in err
    assert not (tmp_path / "x").exists()


def test_one_model_is_not_an_ensemble(runs, tmp_path, capsys):
    assert main(["ensemble", runs["ids"]["s0"], "-o", str(tmp_path / "x"), "--quiet"]) == 2
    assert "an ensemble needs at least 2 models, got 1" in capsys.readouterr().err


def test_an_existing_folder_is_never_overwritten(runs, ensemble, capsys):
    before = (ensemble / "model.json").read_bytes()
    ids = runs["ids"]
    assert main(["ensemble", ids["s1"], ids["s0"], "-o", str(ensemble), "--quiet"]) == 2
    assert "is a folder that is not empty" in capsys.readouterr().err
    assert (ensemble / "model.json").read_bytes() == before
    assert not [p for p in ensemble.parent.iterdir() if p.name.endswith(".partial")]


def test_a_changed_member_file_is_refused_at_load(ensemble, tmp_path):
    import shutil

    copy = tmp_path / "ens"
    shutil.copytree(ensemble, copy)
    weights = copy / "members/1/weights.pt"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(PtmkitError, match="members/1/weights.pt does not match the sha256"):
        load_model(copy)


def test_an_output_inside_a_member_package_is_refused_before_any_work(runs, tmp_path, capsys):
    import shutil

    member = tmp_path / "m0"
    shutil.copytree(_package_folder(runs, "s0"), member)
    args = ["ensemble", str(member), runs["ids"]["s1"], "-o", str(member / "ens"), "--quiet"]
    assert main(args) == 2
    assert "lies inside the member package" in capsys.readouterr().err
    assert not (member / "ens").exists() and not list(member.glob(".ens.*"))


def test_members_are_copied_file_by_file_and_the_folder_is_shared(runs, ensemble, tmp_path):
    import os
    import shutil

    member = tmp_path / "m1"
    shutil.copytree(_package_folder(runs, "s1"), member)
    (member / "notes.txt").write_text("not part of the package")
    out = tmp_path / "e2"
    assert main(["ensemble", runs["ids"]["s0"], str(member), "-o", str(out), "--quiet"]) == 0
    assert not (out / "members/1/notes.txt").exists()  # only model.json and the files it lists
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask  # not mkdtemp's private 0700


def _package_folder(runs, name: str) -> Path:
    """A local copy of a run's packaged model (the store's artifact folder)."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{runs['ids'][name]}/model", tracking_uri=f"sqlite:///{runs['dir'] / 'mlflow.db'}"
    )
    from ptmkit.package import package_root

    return package_root(Path(local))
