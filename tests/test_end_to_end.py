"""One short real run: H1 from the shared data, a real sqlite MLflow store, the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ptmkit.cli import main
from ptmkit.package import package_root

ROOT = Path(__file__).parents[1]


@pytest.fixture
def store(workdir):
    return f"sqlite:///{workdir / 'mlflow.db'}"


@pytest.mark.slow
def test_run_h1_records_everything_and_compare_lists_it(store, capsys):
    code = main(
        [
            "run",
            str(ROOT / "experiments/h1-bilstm.yaml"),
            "--quiet",
            "--set",
            "train.epochs=3",
            "--set",
            "model.nodes.encoder.hidden=16",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Test metrics" in out and "validation-max-MCC threshold" in out

    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("uniptms-baselines")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.nodes.encoder.hidden"] == "16"
    assert run.data.params["data.source"] == "uniptms:H1"
    assert run.data.params["data.n_test_pos"] == "52" and run.data.params["data.n_test_neg"] == "52"
    tags = run.data.tags
    assert tags["ptmkit.dataset"] == "uniptms:H1" and tags["ptmkit.residue"] == "H"
    assert tags["ptmkit.recipe_hash"] and tags["ptmkit.data_digest"] and tags["version.torch"]
    history = client.get_metric_history(run.info.run_id, "val/ap")
    assert [m.step for m in history] == [1, 2, 3]
    for key in (
        "test/mcc",
        "test/auc",
        "test/ap",
        "test/acc",
        "test/sen",
        "test/spec",
        "test/tuned_mcc",
        "test/sen_at_spec95",
        "threshold/val_max_mcc",
    ):
        assert key in run.data.metrics, key
    assert 0.5 < run.data.metrics["test/auc"] <= 1.0  # 3 epochs on H1 already learn something

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"recipe.yaml", "plots", "predictions", "data"} <= artifacts  # the model: a logged model
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/roc_pr.png",
        "plots/training.png",
    }
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predictions"))
    lines = (local / "test_predictions.csv").read_text().splitlines()
    assert lines[0].split(",")[-2:] == ["score", "call"] and len(lines) == 1 + 104
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model"))
    model_dir = package_root(downloaded)  # the package inside the pyfunc model
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["window"] == 37 and meta["thresholds"]["val_max_mcc"] == pytest.approx(
        run.data.metrics["threshold/val_max_mcc"]
    )
    import torch

    state = torch.load(model_dir / "weights.pt", weights_only=True)
    assert any(k.startswith("blocks.head") for k in state)

    assert main(["compare", "--format", "csv"]) == 0
    table = capsys.readouterr().out
    assert "h1-bilstm" in table and "uniptms:H1" in table and run.info.run_id[:8] in table
    assert main(["compare", "--tag", "ptmkit.dataset=uniptms:K1"]) == 1


def test_crashing_run_is_marked_failed(store, capsys):
    code = main(["run", str(ROOT / "experiments/quickstart.yaml"), "--quiet", "--set", "train.device=cuda"])
    err = capsys.readouterr().err
    assert code != 0 and "error" in err and "Traceback" not in err
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("quickstart")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert "ptmkit.error" in run.data.tags


@pytest.mark.slow
def test_cli_errors_are_one_message(store):
    bad = Path("bad.yaml")
    bad.write_text((ROOT / "experiments/quickstart.yaml").read_text().replace("type: bilstm", "type: bilstn"))
    proc = subprocess.run(
        [sys.executable, "-m", "ptmkit.cli", "validate", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Did you mean 'bilstm'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "ptmkit.cli", "--debug", "validate", str(bad)],
        capture_output=True,
        text=True,
    )
    assert "Traceback" in proc.stderr


def test_plugins_list_and_validate(store):
    proc = subprocess.run(["ptmkit", "plugins", "list"], capture_output=True, text=True, check=True)
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert ["feature", "onehot", "ptmkit", "0.1.0"] in [r[:4] for r in rows]
    kinds = {r[0] for r in rows}
    assert kinds == {"reader", "feature", "fusion", "backbone", "head", "loss", "dataset", "language_model"}
    proc = subprocess.run(
        ["ptmkit", "validate", str(ROOT / "experiments/quickstart.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "valid" in proc.stdout and "parameters:" in proc.stdout


@pytest.mark.slow
def test_ui_serves_the_local_store(store):
    import socket
    import time
    import urllib.request

    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("ui-check")
    with mlflow.start_run(run_name="visible-in-ui"):
        mlflow.log_metric("test/mcc", 0.5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["ptmkit", "ui", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                    data=b'{"max_results": 10}',
                    headers={"Content-Type": "application/json"},
                )
                body = urllib.request.urlopen(req, timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "ui-check" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)
