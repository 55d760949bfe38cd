"""The benchmark suite runner, end to end on real data with a real sqlite MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import floor, report
from benchmarks.memory import peak_mb, reset_peak
from benchmarks.suite import load_suite
from ptmkit import recipe as recipes
from ptmkit.datasets import prepare_data
from ptmkit.errors import PtmkitError

ROOT = Path(__file__).parents[1]


def _suite(path: Path, **extra: object) -> Path:
    text = {
        "name": "tiny",
        "experiment": "bench-test",
        "datasets": ["H1", "T1"],
        "seeds": [0, 1],
        "recipes": {"bilstm": str(ROOT / "experiments" / "base-bilstm.yaml")},
        "set": ["train.epochs=1"],
        "dataset_set": {"T1": ["train.epoch_windows=512"]},
        "floor": ["logreg"],
        "saved_splits": ["H1"],
        "leak_free": ["T1"],
        "workers": 2,
        **extra,
    }
    path.write_text(json.dumps(text))  # JSON is YAML
    return path


def _bench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"},
    )


@pytest.mark.slow
def test_suite_runs_tables_mlflow_and_check(workdir: Path, data_root: Path) -> None:
    suite = _suite(workdir / "tiny.yaml")
    out = workdir / "out"
    done = _bench(workdir, "--suite", str(suite), "--out", str(out), "--data-root", str(data_root))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.DataFrame(json.loads((out / "tiny.json").read_text())["rows"])
    full = rows[rows["scope"] == "test"]
    assert set(full["status"]) == {"FINISHED"}
    # 2 datasets x (2 seeds of bilstm + 1 floor model)
    assert sorted(full.groupby("dataset").size().tolist()) == [3, 3]
    assert full[["mcc", "auc", "ap"]].notna().all().all()
    assert (full[["train_s", "inference_s", "peak_mb"]] > 0).all().all()
    t1 = rows[(rows["dataset"] == "T1") & (rows["scope"] == "leak-free test")]
    assert len(t1) == 3 and set(t1["dropped"]) == {19}  # the 19 leaked windows, README defect
    # the split of H1 was saved once and reused by every model
    assert (workdir / "splits" / "H1.tsv.gz").is_file()
    assert set(full.loc[full["dataset"] == "H1", "valid"]) == {103}
    md = (out / "tiny.md").read_text()
    for text in (
        "| ptmkit | bilstm | this suite, 2 runs |",
        "| scikit-learn floor | logreg (logistic regression) |",
        "| paper | UniPTMs-mini |",
        "| paper | DOGpred (best single-type tool) |",
        "19 test rows whose window also occurs in training removed",
        "Where the time goes",
        "- Command: `python -m benchmarks.run --suite",
        "AMD" if "AMD" in md else "Machine:",
    ):
        assert text in md, text

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bench-test"])
    parent = runs[runs["tags.mlflow.runName"] == "suite tiny"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == 6  # every model, trained in two worker processes, nested under it
    assert set(children["tags.bench_model"]) == {"bilstm", "logreg"}
    assert parent["metrics.T1.bilstm.mcc"].iloc[0] == pytest.approx(
        full.loc[(full["dataset"] == "T1") & (full["model"] == "bilstm"), "mcc"].mean()
    )

    # a rerun of one dataset reproduces its rows (same seeds, same machine)
    again = _bench(
        workdir,
        "--suite",
        str(suite),
        "--out",
        str(out),
        "--data-root",
        str(data_root),
        "--datasets",
        "H1",
        "--check",
        str(out / "tiny.json"),
    )
    assert again.returncode == 0, again.stderr[-3000:]
    verdict = (out / "tiny-check.md").read_text()
    assert "| H1 | test | bilstm | mcc |" in verdict and "| no |" not in verdict

    # the report can be re-rendered from the results file alone
    (out / "tiny.md").unlink()
    rendered = _bench(workdir, "--suite", str(suite), "--out", str(out), "--render")
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert "### Summary: test MCC / AP" in (out / "tiny.md").read_text()


@pytest.mark.slow
def test_one_worker_runs_in_process(workdir: Path, data_root: Path) -> None:
    suite = _suite(workdir / "one.yaml", name="one", datasets=["H1"], seeds=[0], workers=1)
    out = workdir / "out"
    done = _bench(workdir, "--suite", str(suite), "--out", str(out), "--data-root", str(data_root))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "one.json").read_text())["rows"]
    assert [(r["model"], r["status"]) for r in rows] == [("bilstm", "FINISHED"), ("logreg", "FINISHED")]


def test_suite_errors_name_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(PtmkitError, match=r"tiny.yaml: datasets.0: .*got 'X9'"):
        load_suite(_suite(tmp_path / "tiny.yaml", datasets=["X9"]))
    with pytest.raises(PtmkitError, match=r"recipes.bilstm: file nope.yaml not found"):
        load_suite(_suite(tmp_path / "tiny.yaml", recipes={"bilstm": "nope.yaml"}))
    with pytest.raises(PtmkitError, match=r"unknown floor model\(s\) \['svm'\]"):
        load_suite(_suite(tmp_path / "tiny.yaml", floor=["svm"]))
    bad = load_suite(_suite(tmp_path / "tiny.yaml", set=["train.epochs=0"]))
    with pytest.raises(PtmkitError, match=r"(?s)recipe .bilstm. on H1: .*train.epochs"):
        bad.validate_all()


def test_per_recipe_budgets_apply_after_the_dataset_ones_and_name_known_labels(tmp_path: Path) -> None:
    path = _suite(
        tmp_path / "tiny.yaml",
        set=["train.epochs=3"],
        dataset_set={"H1": ["train.epochs=4"]},
        recipe_set={"bilstm": ["train.epochs=5"]},
        recipe_dataset_set={"bilstm": {"H1": ["train.epochs=6"]}},
    )
    loaded = load_suite(path)
    sets = [o for o in loaded.overrides("bilstm", "H1", 0) if o.startswith("train.epochs")]
    assert sets == ["train.epochs=3", "train.epochs=4", "train.epochs=5", "train.epochs=6"]
    assert loaded.recipe("bilstm", "H1", 0).train.epochs == 6  # the last word is the most specific
    with pytest.raises(PtmkitError, match=r"recipe_set: unknown recipe label\(s\) \['cnn'\]"):
        load_suite(_suite(tmp_path / "tiny.yaml", recipe_set={"cnn": ["train.epochs=2"]}))
    with pytest.raises(PtmkitError, match=r"recipe_dataset_set.bilstm: unknown dataset id\(s\) \['X1'\]"):
        load_suite(_suite(tmp_path / "tiny.yaml", recipe_dataset_set={"bilstm": {"X1": []}}))


def test_the_converge_suite_validates() -> None:
    loaded = load_suite(ROOT / "benchmarks" / "converge.yaml")
    assert set(loaded.suite.recipes) == {"uniptms-lite", "musitedeep-cnn", "bilstm"}
    assert loaded.suite.leak_free == ["T1", "C2"] and loaded.suite.saved_splits == ["K1", "C2"]
    loaded.validate_all()
    k1 = loaded.recipe("uniptms-lite", "K1", 0).train
    assert (k1.epochs, k1.epoch_windows, k1.balance) == (12, 2048, True)
    assert loaded.recipe("musitedeep-cnn", "K2", 0).train.budget.windows == 250000


def test_committed_suite_validates() -> None:
    loaded = load_suite(ROOT / "benchmarks" / "lite.yaml")
    assert loaded.suite.datasets == ["T1", "T2", "H1", "K1", "K2", "C1", "C2"]
    assert loaded.suite.seeds == [0, 1, 2]
    assert {"uniptms-lite", "uniptms-mini-lite", "bilstm"} <= set(loaded.suite.recipes)
    assert loaded.suite.saved_splits == ["K1", "C2"] and "T1" in loaded.suite.leak_free
    loaded.validate_all()


def test_floor_on_real_h1(data_root: Path) -> None:
    recipe = recipes.load(ROOT / "experiments" / "base-bilstm.yaml", ["data.source=uniptms:H1"])
    table, _ = prepare_data(recipe, data_root)
    x = floor.encode(table)
    assert x.shape == (len(table), 37 * 40)
    first_real = np.array([w[0] != "-" for w in table.windows])
    assert np.allclose(x[:, :20].sum(1)[first_real], 1)  # one-hot of position 1
    result = floor.run_floor(table, "logreg")
    assert 0 <= result.threshold <= 1
    assert result.test_scores.shape == ((table.frame["split"] == "test").sum(),)
    assert set(report.metric_row(result.test)) == set(report.METRICS)


def test_check_tolerance() -> None:
    committed = pd.DataFrame(
        [
            {"dataset": "T1", "scope": "test", "model": "m", "status": "FINISHED"}
            | dict.fromkeys(report.METRICS, v)
            for v in (0.60, 0.62, 0.64)
        ]
    )
    close = committed.copy()
    close[list(report.METRICS)] += 0.03
    far = committed.copy()
    far[list(report.METRICS)] += 0.2
    assert (report.check(close, committed)["within"] == "yes").all()
    assert (report.check(far, committed)["within"] == "no").all()


def test_peak_memory_resets() -> None:
    if not reset_peak():
        pytest.skip("no /proc/self/clear_refs here: the peak is process-wide")
    base = peak_mb()
    big = np.ones(40_000_000)  # 305 MiB, touched
    high = peak_mb()
    assert high > base + 290
    del big
    reset_peak()
    assert peak_mb() < high - 250


@pytest.mark.slow
def test_sigterm_ends_the_suite_and_its_workers_runs_killed(workdir: Path, data_root: Path) -> None:
    """Slurm's SIGTERM mid-suite: exit 143, the parent and every running model KILLED (none left
    RUNNING), no worker process left behind, no queued model started."""
    import os
    import signal
    import time

    from mlflow.tracking import MlflowClient

    suite = _suite(
        workdir / "long.yaml", name="long", datasets=["H1"], seeds=[0, 1, 2], set=["train.epochs=30"]
    )
    db = workdir / "mlflow.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--suite",
            str(suite),
            "--out",
            str(workdir / "out"),
            "--data-root",
            str(data_root),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
    )
    client = MlflowClient(f"sqlite:///{db}")
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a model is training in a worker
        time.sleep(1)
        exp = db.exists() and client.get_experiment_by_name("bench-test")
        if exp and any(
            r.info.status == "RUNNING" and "/bilstm/" in (r.info.run_name or "")
            for r in client.search_runs([exp.experiment_id])
        ):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("bench-test").experiment_id])
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses["suite long"] == "KILLED"
    killed = [r for r in runs if r.info.status == "KILLED" and r.info.run_name != "suite long"]
    assert killed and all("terminated by SIGTERM" in r.data.tags["ptmkit.error"] for r in killed)
    assert len(runs) < 1 + 3 + 1  # the queued models never started


def test_roofline_measures_peak_and_a_recipes_step(data_root: Path) -> None:
    """The roofline benchmark's parts on a tiny budget: a positive matmul rate, the BiLSTM's step
    with its counted FLOPs and both precisions, and a rendered table (speed itself is not tested)."""
    from benchmarks import roofline

    assert roofline.matmul_peak(torch.float32, size=64, repeats=1) > 0
    assert isinstance(roofline.bf16_supported(), bool)
    step = roofline.step_benchmark(
        roofline.RECIPES["bilstm"], "H1", 8, steps=1, warmup=0, data_root=data_root
    )
    assert step["parameters"] > 0 and step["windows_per_s_fp32"] > 0
    assert step["mflop_per_window"] > 0  # the head's linear layers are counted
    assert (step["bf16_speedup"] is None) == (step["bf16_error"] is not None)
    result = {
        "meta": {
            "command": "c",
            "machine": "m",
            "torch": "t",
            "threads": 1,
            "dataset": "H1",
            "batch": 8,
            "steps": 1,
            "warmup": 0,
            "bf16_native": False,
        },
        "peak": {"fp32": 100.0, "bf16": 30.0},
        "recipes": {"bilstm": step},
    }
    assert "| bilstm | " in roofline.render(result)
