"""Multi-task models: tasks in recipes, per-task splits, [N, T] heads read at each row's task,
per-task metrics, thresholds, packages, predict and evaluate (issue 14)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ptmkit import metrics
from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.compare import runs_table
from ptmkit.datasets import prepare_data
from ptmkit.errors import GraphError, PtmkitError, RecipeError
from ptmkit.evaluate import evaluate_model
from ptmkit.hooks import build_registry
from ptmkit.inference import encode, infer
from ptmkit.model_store import load_model
from ptmkit.predict import predict_file
from ptmkit.run import run
from ptmkit.sitetable import SiteTable, window_at
from ptmkit.trackers import MlflowTracker
from ptmkit.train import epoch_rows, epoch_size, task_weights

AMINO = "ACDEFGHILMNPQRSTVWY"


def _window(rng: random.Random, centre: str, width: int, positive: bool) -> str:
    """A random window with a learnable signal: positives carry W left of the centre."""
    half = width // 2
    left = [rng.choice(AMINO) for _ in range(half)]
    right = [rng.choice(AMINO) for _ in range(half)]
    if positive:
        left[-1] = "W"
    elif left[-1] == "W":
        left[-1] = "A"
    return "".join(left) + centre + "".join(right)


def _csv(path: Path, rng: random.Random, centre: str, width: int, n: int, prefix: str) -> None:
    rows = ["protein,sequence,label"]
    for i in range(n):
        label = i % 2
        rows.append(f"{prefix}{i},{_window(rng, centre, width, bool(label))},{label}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture
def two_tasks(tmp_path: Path) -> Path:
    """Task KA: K-centred windows of 9 with a published test file; task SB: S-centred windows of
    7 in one file without splits (carved 80/20 by the recipe's fractions)."""
    rng = random.Random(0)
    _csv(tmp_path / "ka_train.csv", rng, "K", 9, 160, "ka")
    _csv(tmp_path / "ka_test.csv", rng, "K", 9, 40, "kt")
    _csv(tmp_path / "sb_all.csv", rng, "S", 7, 200, "sb")
    recipe = {
        "name": "two-tasks",
        "data": {
            "tasks": {
                "KA": {
                    "source": {
                        "reader": "csv_sites",
                        "name": "ka",
                        "ptm": "acetylation",
                        "files": {"train": "ka_train.csv", "test": "ka_test.csv"},
                    }
                },
                "SB": {
                    "source": {
                        "reader": "csv_sites",
                        "name": "sb",
                        "ptm": "phosphorylation",
                        "files": {"unsplit": "sb_all.csv"},
                    }
                },
            },
            "window": 9,
            "split": {"valid": 0.2, "test": 0.2, "seed": 0},
        },
        "features": {"onehot": {"type": "onehot"}},
        "model": {
            "nodes": {
                "trunk": {
                    "type": "multiscale_cnn",
                    "inputs": ["onehot"],
                    "channels": 8,
                    "kernel_sizes": [1, 3],
                },
                "heads": {"type": "task_heads", "inputs": ["trunk"], "tasks": 2, "hidden": [16]},
            }
        },
        "losses": [{"type": "weighted_ce", "pos_weight": 1.0}],
        "train": {"epochs": 6, "batch_size": 32, "lr": 0.01, "task_weights": "size", "seed": 0},
        "tracking": {"experiment": "multitask", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _parse(raw: dict) -> recipes.Recipe:
    return recipes.parse(raw, build_registry())


# ------------------------------------------------------------------------------------ recipes


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_a_recipe_declares_tasks_and_the_filled_recipe_parses_to_itself(two_tasks: Path) -> None:
    recipe = recipes.load(two_tasks)
    assert list(recipe.tasks) == ["KA", "SB"] and recipe.source is None
    assert [s.task for s in recipe.tasks.values()] == ["KA", "SB"]
    assert recipe.train.early_stopping.monitor == "val/macro/ap"  # the default for tasks
    filled = recipe.filled()
    assert "source" not in filled["data"] and set(filled["data"]["tasks"]) == {"KA", "SB"}
    again = recipes.parse(filled, build_registry(), path=two_tasks)
    assert again.filled() == filled


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["data"].update(source="uniptms:T1"), "either data.source .* or data.tasks"),
        (lambda d: d["data"]["tasks"].update({"macro": d["data"]["tasks"]["KA"]}), "task name 'macro'"),
        (lambda d: d["data"]["tasks"].update({"a/b": d["data"]["tasks"]["KA"]}), "task name 'a/b'"),
        (lambda d: d["data"]["tasks"].update({"S+T": d["data"]["tasks"]["KA"]}), "task name 'S\\+T'"),
        (lambda d: d["data"].pop("window"), "data.tasks needs data.window"),
        (lambda d: d["data"]["split"].update(file="s.tsv.gz"), "data.tasks.<name>.split_file"),
        (
            lambda d: d["train"].update(early_stopping={"monitor": "val/KX/ap"}),
            "'val/KX/ap' names no task of this recipe; tasks: KA, SB",
        ),
    ],
)
def test_bad_task_declarations_are_refused_with_what_would_be_valid(two_tasks: Path, change, message) -> None:  # noqa: ANN001
    raw = _raw(two_tasks)
    change(raw)
    with pytest.raises(RecipeError, match=message):
        recipes.parse(raw, build_registry(), path=two_tasks)


def test_task_options_need_tasks_and_the_head_must_give_one_logit_per_task(two_tasks: Path) -> None:
    single = {
        "data": {"source": "uniptms:H1"},
        "features": {"onehot": {"type": "onehot"}},
        "model": {"nodes": {"head": {"type": "mlp_head", "inputs": ["onehot"]}}},
        "train": {"task_weights": "size"},
    }
    with pytest.raises(RecipeError, match="train.task_weights needs data.tasks"):
        _parse(single)
    raw = _raw(two_tasks)
    raw["model"]["nodes"]["heads"]["tasks"] = 3
    with pytest.raises(
        GraphError, match=r"gives 3 logits per row, but the recipe has the 2 data.tasks \(KA, SB\)"
    ):
        assemble(recipes.parse(raw, build_registry(), path=two_tasks))


# --------------------------------------------------------------------------------------- data


def test_each_task_is_split_as_its_source_defines_and_fitted_to_the_common_window(two_tasks: Path) -> None:
    recipe = recipes.load(two_tasks)
    table, info = prepare_data(recipe, two_tasks.parent)
    frame = table.frame
    assert table.width == 9 and list(info.tasks) == ["KA", "SB"]
    ka, sb = frame[frame["task"] == "KA"], frame[frame["task"] == "SB"]
    # KA keeps its published test file; SB, which has none, is carved (not all made training)
    assert (ka.loc[ka["split"] == "test", "protein_id"].str.startswith("kt")).all()
    assert (ka["split"] == "test").sum() == 40
    assert (sb["split"] == "test").sum() == 40 and (sb["split"] == "valid").sum() > 0
    # SB's 7-wide windows are centred and padded to 9: the site stays at the centre
    assert sb["window"].str.len().eq(9).all() and sb["window"].str[4].eq("S").all()
    assert sb["window"].str[0].eq("-").all() and sb["window"].str[-1].eq("-").all()
    assert info.tasks["SB"].residues == "S" and info.tasks["KA"].ptm == "acetylation"


def test_task_residues_are_checked_like_data_residues_and_every_task_needs_all_splits(
    two_tasks: Path,
) -> None:
    raw = _raw(two_tasks)
    raw["data"]["tasks"]["SB"]["residues"] = "s"  # upper-cased once, at parse time
    recipe = recipes.parse(raw, build_registry(), path=two_tasks)
    table, _ = prepare_data(recipe, two_tasks.parent)
    assert set(table.frame.loc[table.frame["task"] == "SB", "residue"]) == {"S"}
    raw["data"]["tasks"]["SB"]["source"]["files"] = {"train": "sb_all.csv"}  # no test rows to carve
    with pytest.raises(
        PtmkitError, match=r"data.tasks.SB \(sb\): the test split needs both positive and negative"
    ):
        prepare_data(recipes.parse(raw, build_registry(), path=two_tasks), two_tasks.parent)


def test_a_package_whose_task_reader_is_missing_still_builds_its_model(two_tasks: Path) -> None:
    raw = _raw(two_tasks)
    raw["data"]["tasks"]["SB"]["source"]["reader"] = "not_installed_here"
    recipe = recipes.parse(raw, build_registry(), path=two_tasks, lenient_source=True)
    assert recipe.tasks == {} and list(recipe.data.tasks or {}) == ["KA", "SB"]
    assert assemble(recipe, losses=False).graph.tasks == 2


# -------------------------------------------------------------------------------------- model


def test_each_row_is_scored_and_trained_by_its_own_tasks_logit(two_tasks: Path) -> None:
    recipe = recipes.load(two_tasks)
    assembly = assemble(recipe)
    table, _ = prepare_data(recipe, two_tasks.parent)
    rows = encode(assembly.features, table, tasks=list(recipe.tasks))
    batch = rows.batch(torch.arange(16), torch.device("cpu"))
    graph = assembly.graph.eval()
    out = graph(batch.features, batch.mask, batch.task)
    assert out["task_logits"].shape == (16, 2) and out["logits"].shape == (16,)
    picked = out["task_logits"][torch.arange(16), batch.task]
    torch.testing.assert_close(out["logits"], picked)
    # without a task index the model gives every task's logit (predict's one pass)
    assert graph(batch.features, batch.mask)["logits"].shape == (16, 2)
    # the loss reaches only the task columns of the rows in the batch
    graph.train()
    only_ka = rows.rows(torch.nonzero(rows.task == 0).flatten()[:8]).batch(
        torch.arange(8), torch.device("cpu")
    )
    out = graph(only_ka.features, only_ka.mask, only_ka.task)
    out["logits"].sum().backward()
    grad = graph.blocks["heads"].classifier.weight.grad
    assert grad[0].abs().sum() > 0 and torch.equal(grad[1], torch.zeros_like(grad[1]))


def test_task_balanced_epochs_give_every_task_the_same_share() -> None:
    tasks = torch.tensor([0] * 90 + [1] * 10)
    labels = torch.tensor([i % 2 for i in range(100)], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    order = epoch_rows(100, None, g, None, tasks)
    assert len(order) == epoch_size(100, None, None, tasks) == 100
    assert torch.bincount(tasks[order]).tolist() == [50, 50]  # task 1's 10 rows repeat 5 times
    order = epoch_rows(100, 40, g, labels, tasks)
    assert len(order) == epoch_size(100, 40, labels, tasks) == 40
    for t in (0, 1):
        mine = labels[order][tasks[order] == t]
        assert len(mine) == 20 and int(mine.sum()) == 10  # class-balanced within each task


def test_size_task_weights_follow_the_power_law_with_mean_one(two_tasks: Path) -> None:
    cfg = recipes.load(two_tasks).train
    weights = task_weights(cfg, torch.tensor([0] * 1000 + [1] * 10), 2)
    assert weights is not None
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    torch.testing.assert_close(weights[1] / weights[0], torch.tensor(100.0**0.25))
    uniform = cfg.model_copy(update={"task_weights": "uniform"})
    assert task_weights(uniform, torch.tensor([0, 1]), 2) is None


def test_binary_losses_weight_each_row_by_its_task() -> None:
    cls = build_registry().get("loss", "bce").obj
    loss = cls(cls.Config())
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.0])
    weight = torch.tensor([0.5, 2.0, 0.5])
    per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    got = loss({"logits": logits, "row_weight": weight}, labels)
    torch.testing.assert_close(got, (per_row * weight).mean())
    torch.testing.assert_close(loss({"logits": logits}, labels), per_row.mean())


def test_by_task_reports_each_task_and_their_mean() -> None:
    labels = np.array([1, 0, 1, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.4, 0.6, 0.8, 0.7])
    task = np.array([0, 0, 1, 1, 2, 2])
    out = metrics.by_task(metrics.at_threshold, labels, scores, task, ["a", "b", "c"], [0.5, 0.5, 0.5])
    assert out["a/ap"] == 1.0 and out["b/ap"] == 0.5
    assert np.isnan(out["c/ap"])  # one class only: no ranking metric, left out of the mean
    assert out["macro/ap"] == pytest.approx(0.75)
    assert out["macro/acc"] == pytest.approx(np.mean([out["a/acc"], out["b/acc"], out["c/acc"]]))


# --------------------------------------------------------------------- run, package, predict


def test_a_multi_task_run_logs_per_task_metrics_a_table_and_a_package_that_predicts_every_task(
    two_tasks: Path, tmp_path: Path
) -> None:
    recipe = recipes.load(two_tasks)
    uri = recipe.tracking.uri
    summary = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    assert summary.tasks == ["KA", "SB"]
    metrics_logged = mlflow.MlflowClient(uri).get_run(summary.run_id).data.metrics
    for name in ("KA", "SB", "macro"):
        for metric in ("mcc", "tuned_mcc", "auc", "ap"):
            assert f"test/{name}/{metric}" in metrics_logged
    assert metrics_logged["test/macro/ap"] == pytest.approx(
        (metrics_logged["test/KA/ap"] + metrics_logged["test/SB/ap"]) / 2
    )
    assert "val/macro/ap" in metrics_logged and "threshold/SB/val_max_mcc" in metrics_logged
    assert metrics_logged["test/KA/ap"] > 0.8  # the planted signal is learnt per task
    table_file = mlflow.artifacts.download_artifacts(
        f"runs:/{summary.run_id}/metrics/metrics_by_task.csv", tracking_uri=uri, dst_path=str(tmp_path / "dl")
    )
    per_task = pd.read_csv(table_file, index_col="task")
    assert list(per_task.index) == ["KA", "SB", "macro"]
    assert per_task.loc["SB", "ap"] == pytest.approx(metrics_logged["test/SB/ap"])
    assert per_task.loc["KA", "n_test"] == 40

    compared = runs_table(uri, metrics=["ap"], tasks=True)  # ptmkit compare --tasks
    assert list(compared.columns[-5:]) == ["test/ap", "test/KA/ap", "test/SB/ap", "test/macro/ap", "differs"]
    assert compared["test/SB/ap"].iloc[0] == pytest.approx(metrics_logged["test/SB/ap"])

    model = load_model(summary.run_id, tracking_uri=uri)
    assert model.multitask and model.meta["format"] == "ptmkit-model/3"
    assert [(t.name, t.residues) for t in model.tasks] == [("KA", "K"), ("SB", "S")]
    with pytest.raises(PtmkitError, match="2 tasks, each with its own thresholds"):
        model.threshold("val_max_mcc")

    fasta = tmp_path / "p.fasta"
    fasta.write_text(">P1\nMKAAWKSTSGWSLLK\n>P2\nGSSKQRT\n")
    out = tmp_path / "sites.tsv"
    predict_file([model], fasta, out, progress=False)
    sites = pd.read_csv(out, sep="\t", comment="#")
    p1 = sites[sites["protein_id"] == "P1"]
    assert sorted(p1.loc[p1["ptm_type"] == "KA", "position"]) == [2, 6, 15]
    assert sorted(p1.loc[p1["ptm_type"] == "SB", "position"]) == [7, 9, 12]
    assert set(sites["ptm_type"]) == {"KA", "SB"}
    cuts = {
        t["name"]: t["threshold"] for t in json.loads(Path(f"{out}.json").read_text())["models"][0]["tasks"]
    }
    sb = sites[sites["ptm_type"] == "SB"]
    assert ((sb["score"] >= cuts["SB"]).astype(int) == sb["call"]).all()
    # SB trained on 7-wide fragments padded to 9: predict scores its residues as training saw
    # them (masked to 7), which is the score of the padded 7-wide window
    assert [t.width for t in model.tasks] == [None, 7]
    padded = SiteTable.from_records(
        [
            {
                "protein_id": "P1",
                "position": p,
                "residue": "S",
                "window": window_at("MKAAWKSTSGWSLLK", p, 7),
                "label": 0,
                "task": "SB",
                "split": "test",
                "origin": "x:1",
            }
            for p in (7, 9, 12)
        ]
    ).fit_width(9)
    names = [t.name for t in model.tasks]
    want = infer(model.model, encode(model.features, padded, tasks=names)).scores
    got = p1.loc[p1["ptm_type"] == "SB"].sort_values("position")["score"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # the run's data/splits.tsv.gz gives a task its split back (the file holds every task's rows)
    splits = mlflow.artifacts.download_artifacts(
        f"runs:/{summary.run_id}/data/splits.tsv.gz", tracking_uri=uri, dst_path=str(tmp_path / "sp")
    )
    raw = _raw(two_tasks)
    raw["data"]["tasks"]["SB"]["split_file"] = splits
    again, _ = prepare_data(recipes.parse(raw, build_registry(), path=two_tasks), two_tasks.parent)
    first, _ = prepare_data(recipe, two_tasks.parent)
    assert again.frame["split"].tolist() == first.frame["split"].tolist()

    # evaluate: the run's own test rows of a task give the run's metrics for that task
    result = evaluate_model(
        model, str(tmp_path / "ka_test.csv"), reader="csv_sites", data_root=tmp_path, task="KA"
    )
    assert result.task == "KA" and result.counts["sites"] == 40
    assert result.report["ap"] == pytest.approx(metrics_logged["test/KA/ap"], abs=1e-6)
    assert result.report["tuned_mcc"] == pytest.approx(metrics_logged["test/KA/tuned_mcc"], abs=1e-6)
    with pytest.raises(PtmkitError, match="say which one .* is scored as with --task"):
        evaluate_model(model, str(tmp_path / "ka_test.csv"), reader="csv_sites", data_root=tmp_path)


def test_the_data_check_of_a_multi_task_recipe_checks_task_by_task(two_tasks: Path) -> None:
    from ptmkit.datacheck import check_recipe

    raw = _raw(two_tasks)
    raw["data"]["tasks"]["KA2"] = raw["data"]["tasks"]["KA"]  # the same file as a second task (T1/T2)
    raw["model"]["nodes"]["heads"]["tasks"] = 3
    report = check_recipe(recipes.parse(raw, build_registry(), path=two_tasks), data_root=two_tasks.parent)
    titles = [s.title for s in report.sections]
    assert any(t.startswith("KA: Duplicate windows") for t in titles)
    assert any(t.startswith("SB: Duplicate windows") for t in titles)
    # one task's windows in another task are no duplicate, conflict or leak
    assert not any("duplicate" in d or "overlap" in d for d in report.defects), report.defects


def test_ptmkit_run_prints_a_row_per_task_and_warns_per_task_on_small_validation(
    two_tasks: Path, capsys
) -> None:  # noqa: ANN001
    from ptmkit import cli

    assert cli.main(["run", str(two_tasks), "--quiet", "--set", "train.epochs=2"]) == 0
    out, err = capsys.readouterr()
    for row in ("KA (its validation-max-MCC threshold)", "SB (its validation-max-MCC threshold)"):
        assert row in out
    assert "mean over tasks (macro)" in out and "all rows pooled" in out
    # each task's threshold is chosen on its own validation rows: the warning names the task
    assert "warning: task KA: the validation split is small" in err
    assert "warning: task SB: the validation split is small" in err
