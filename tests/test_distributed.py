"""Distributed data-parallel training under torchrun (2 gloo processes on CPU): the same result
as one process with the same global batch, one MLflow run written by rank 0 only, the same
result twice for one seed, global batch statistics, and a raising rank failing the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ptmkit import distributed
from ptmkit import recipe as recipes
from ptmkit.run import run

HERE = Path(__file__).parent
ROOT = HERE.parent
#: Two processes sum the same per-row gradients in another order (float32): the epochs' losses
#: and the test scores agree to this (measured: 1e-7 on this recipe).
TOLERANCE = 1e-5

RECIPE = """\
name: ddp
data:
  source: uniptms:H1
features:
  onehot: {{type: onehot}}
model:
  nodes:
    cnn: {{type: cnn, inputs: [onehot], channels: 16, dropout: 0.0}}
    head: {{type: mlp_head, inputs: [cnn], pool: center, hidden: [8], dropout: 0.0}}
losses:
  - {{type: {loss}}}
train:
  epochs: 3
  batch_size: 32
  lr: 0.003
  seed: 0
tracking:
  uri: sqlite:///{db}
  experiment: ddp
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _scores(client: MlflowClient, run_id: str, tmp: Path) -> np.ndarray:
    path = client.download_artifacts(run_id, "predictions/test_predictions.csv", str(tmp))
    return pd.read_csv(path)["score"].to_numpy()


def test_shares_and_balanced_shares_in_one_process_and_many() -> None:
    one = distributed.World()
    assert not one.active and one.main and one.shard(5).tolist() == [0, 1, 2, 3, 4]
    assert one.sum([1.5, 2]) == [1.5, 2.0] and one.decide("x") == "x"
    two = [distributed.World(rank, 2, rank, "gloo") for rank in (0, 1)]
    assert [w.shard(5).tolist() for w in two] == [[0, 1, 2], [3, 4]]
    costs = [100, 1, 50, 50, 3, 98]
    shares = distributed.balanced_shares(costs, 2)
    assert sorted(i for s in shares for i in s) == list(range(len(costs)))
    assert shares == distributed.balanced_shares(costs, 2)  # every rank deals the same hands
    loads = [sum(costs[i] for i in s) for s in shares]
    assert abs(loads[0] - loads[1]) <= max(costs) and all(s == sorted(s) for s in shares)
    assert distributed.my_share(costs, one) == list(range(len(costs)))


@pytest.mark.slow
def test_two_processes_train_as_one_and_only_rank_0_records(workdir: Path) -> None:
    db = workdir / "mlflow.db"
    path = workdir / "ddp.yaml"
    path.write_text(RECIPE.format(loss="bce", db=db))
    single = run(recipes.load(path), data_root=Path(os.environ["PTMKIT_DATA"]), progress=False)

    results = [
        subprocess.run(
            [sys.executable, "-m", "ptmkit", "run", str(path), "--quiet", "--nproc", "2"],
            cwd=workdir,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        for _ in range(2)
    ]
    for done in results:
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("Test metrics") == 1  # rank 0 reports, rank 1 is silent

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("ddp")
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    assert len(runs) == 3  # one per job: rank 1 wrote nothing
    first, ddp, again = runs
    assert first.info.run_id == single.run_id and first.data.tags.get("ptmkit.world_size") is None
    for r in (ddp, again):
        assert r.info.status == "FINISHED"
        assert r.data.tags["ptmkit.world_size"] == "2" and r.data.tags["ptmkit.backend"] == "gloo"
        assert r.data.params["distributed.world_size"] == "2"
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"predictions", "plots", "data"}
    for key in ("train/loss", "val/loss", "val/ap"):
        one, two = _history(client, single.run_id, key), _history(client, ddp.info.run_id, key)
        assert len(one) == len(two) == 3
        assert np.allclose(one, two, rtol=0, atol=TOLERANCE), (key, one, two)
        assert _history(client, again.info.run_id, key) == two  # same seed, same world size: same run
    assert ddp.data.metrics["train/best_epoch"] == first.data.metrics["train/best_epoch"]
    assert ddp.data.metrics["train/windows_seen"] == first.data.metrics["train/windows_seen"]
    one, two = _scores(client, single.run_id, workdir), _scores(client, ddp.info.run_id, workdir / "d")
    assert np.abs(one - two).max() <= TOLERANCE


@pytest.mark.slow
def test_protein_units_are_shared_whole_and_train_as_one(workdir: Path) -> None:
    """Protein mode (K2's whole proteins in chunks): a batch's units are dealt to the ranks whole."""
    db = workdir / "mlflow.db"
    sets = [
        "train.epochs=2",
        "train.epoch_windows=2000",
        "train.threads=1",
        'model.nodes.trunk={"type": "cnn", "inputs": ["x"], "channels": 16, "dropout": 0.0}',
        'model.nodes.heads={"type": "mlp_head", "inputs": ["trunk"], "pool": "none", "hidden": [8],'
        ' "dropout": 0.0}',
        f"tracking.uri=sqlite:///{db}",
        "tracking.experiment=ddp-protein",
    ]
    recipe = ROOT / "experiments" / "k2-trunk-protein.yaml"
    single = run(recipes.load(recipe, sets), data_root=Path(os.environ["PTMKIT_DATA"]), progress=False)
    args = [a for s in sets for a in ("--set", s)]
    done = _torchrun(["-m", "ptmkit", "run", str(recipe), "--quiet", *args], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("ddp-protein").experiment_id])
    (ddp,) = [r for r in runs if r.info.run_id != single.run_id]
    for key in ("train/loss", "val/loss", "val/ap"):
        one, two = _history(client, single.run_id, key), _history(client, ddp.info.run_id, key)
        assert np.allclose(one, two, rtol=0, atol=TOLERANCE), (key, one, two)
    first = client.get_run(single.run_id).data.metrics
    assert ddp.data.metrics["train/windows_seen"] == first["train/windows_seen"]


@pytest.mark.slow
def test_batch_statistics_are_the_global_batch_s() -> None:
    done = _torchrun([str(HERE / "ddp" / "batchnorm.py")], HERE)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.count("statistics match") == 2


@pytest.mark.slow
def test_a_raising_rank_fails_the_run_with_that_rank_s_error(workdir: Path) -> None:
    db = workdir / "mlflow.db"
    path = workdir / "fault.yaml"
    path.write_text(RECIPE.format(loss="rank_fault", db=db))  # raises on rank 1 at epoch 2
    done = _torchrun([str(HERE / "ddp" / "fault.py"), "run", str(path), "--quiet"], workdir)
    assert done.returncode != 0
    assert "error: rank 1 of 2: RuntimeError: injected failure on rank 1 at epoch 2" in done.stderr
    client = MlflowClient(f"sqlite:///{db}")
    (failed,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert failed.info.status == "FAILED"
    error = failed.data.tags["ptmkit.error"]
    assert error.startswith("rank 1 of 2 on ") and "injected failure on rank 1 at epoch 2" in error
    assert "during epoch 2 of 3" in error  # what rank 0 was doing when it learnt of it
    assert len(_history(client, failed.info.run_id, "val/loss")) == 1  # epoch 1 was logged


@pytest.mark.slow
def test_nproc_refuses_nonsense_before_starting_anything(workdir: Path) -> None:
    path = workdir / "ddp.yaml"
    path.write_text(RECIPE.format(loss="bce", db=workdir / "mlflow.db"))
    done = subprocess.run(
        [sys.executable, "-m", "ptmkit", "run", str(path), "--nproc", "0"],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--nproc 0: give the number of processes" in done.stderr
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.slow
def test_two_process_pretraining_follows_the_one_process_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_ptm_mamba import RECIPE as LM_RECIPE
    from test_ptm_mamba import _corpus

    from ptmkit.cli import main

    _corpus(tmp_path / "proteins.fasta")
    (tmp_path / "lm.yaml").write_text(LM_RECIPE)
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "lm.yaml", "--out", "one", "--quiet"]) == 0
    second = ["--set", "tracking.experiment=lm2"]
    done = _torchrun(["-m", "ptmkit", "pretrain", "lm.yaml", "--out", "two", "--quiet", *second], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("24 steps") == 1  # rank 0 reports
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (one,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    (two,) = client.search_runs([client.get_experiment_by_name("lm2").experiment_id])  # rank 0's only
    assert two.info.status == "FINISHED" and two.data.tags["ptmkit.world_size"] == "2"
    for key in ("train/loss", "train/acc/all", "val/loss", "val/acc/ptm", "train/tokens"):
        a, b = _history(client, one.info.run_id, key), _history(client, two.info.run_id, key)
        assert len(a) == len(b) >= 3, key
        assert np.allclose(a, b, rtol=0, atol=1e-4), (key, a, b)
    assert (tmp_path / "two" / "language_model").is_dir()


def test_commands_that_do_not_share_their_work_refuse_under_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ptmkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["sweep", "missing.yaml"]) == 2
    err = capsys.readouterr().err
    assert "error: rank 1 of 2: ptmkit sweep does not run under torchrun (WORLD_SIZE=2)" in err
    assert "run, pretrain, predict, cache fill" in err
    assert main(["cache", "info"]) == 2 and "ptmkit cache info does not run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_signal_to_the_job_ends_the_run_killed_not_failed(workdir: Path) -> None:
    db = workdir / "mlflow.db"
    path = workdir / "long.yaml"
    path.write_text(RECIPE.format(loss="bce", db=db).replace("epochs: 3", "epochs: 500\n  patience: 1000"))
    command = [sys.executable, "-m", "ptmkit", "run", str(path), "--quiet", "--nproc", "2"]
    job = subprocess.Popen(
        command, cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        client = MlflowClient(f"sqlite:///{db}")
        while time.monotonic() < deadline:  # wait until rank 0 has logged an epoch
            time.sleep(1)
            experiment = db.exists() and client.get_experiment_by_name("ddp")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and client.get_metric_history(runs[0].info.run_id, "val/loss"):
                break
        else:
            pytest.fail("the job logged no epoch")
        job.send_signal(signal.SIGTERM)  # to torchrun itself: --nproc became it (exec)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    (killed,) = client.search_runs([experiment.experiment_id])
    assert killed.info.status == "KILLED", killed.data.tags.get("ptmkit.error")
    assert killed.data.tags["ptmkit.error"].startswith("terminated by SIGTERM during epoch")
