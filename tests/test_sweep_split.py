"""A sweep split into per-variant jobs (a cluster's job array) against a real ``mlflow server`` on
127.0.0.1: ``--start`` makes the parent, each ``--only VARIANT`` job runs in its own process,
``ptmkit sweep report`` rebuilds the table, the same table as the sweep run whole."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # real mlflow servers and trainings

ROOT = Path(__file__).parents[1]
CLI = "import sys; from ptmkit.cli import main; sys.exit(main())"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend, served artifacts) on a free local port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start (exit {proc.poll()})")
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cli(args: list[str], cwd: Path, uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


SWEEP = """\
name: split-mini
base: {base}
set: [train.epochs=2, train.threads=1]
experiment: split
variants:
  bilstm: {{}}
  cnn:
    patch: {{model: {{nodes: {{encoder: {{type: cnn, inputs: [fused], channels: 8}}}}}}}}
"""


def test_a_split_sweep_against_a_tracking_server_gives_the_table_of_the_whole_sweep(
    workdir: Path, server: str
) -> None:
    sweep = workdir / "s.yaml"
    sweep.write_text(SWEEP.format(base=ROOT / "experiments/quickstart.yaml"))
    listed = _cli(["sweep", str(sweep), "--list"], workdir, server)
    assert listed.returncode == 0 and listed.stdout.split() == ["bilstm", "cnn"]

    started = _cli(["sweep", str(sweep), "--start", "--sweep-id", "array-1"], workdir, server)
    assert started.returncode == 0, started.stderr
    parent = started.stdout.split()[0]
    again = _cli(["sweep", str(sweep), "--start", "--sweep-id", "array-1"], workdir, server)
    assert again.returncode != 0 and "already has a parent run" in again.stderr
    # the jobs of the array: one process per variant, found by the sweep id, here two at once
    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLI,
                "sweep",
                str(sweep),
                "--only",
                name,
                "--sweep-id",
                "array-1",
                "--quiet",
            ],
            cwd=workdir,
            env={**os.environ, "MLFLOW_TRACKING_URI": server},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("cnn", "bilstm")
    ]
    for job in jobs:
        out, err = job.communicate(timeout=900)
        assert job.returncode == 0, err
    early = _cli(["sweep", "report", str(sweep), "--parent-run", parent], workdir, server)
    assert early.returncode == 0, early.stderr
    client = MlflowClient(server)
    done = client.get_run(parent)
    assert done.info.status == "FINISHED" and done.data.tags["ptmkit.best_variant"] in {"bilstm", "cnn"}
    split_table = pd.read_csv(client.download_artifacts(parent, "comparison.csv", str(workdir)))

    whole = _cli(["sweep", str(sweep), "--quiet"], workdir, server)
    assert whole.returncode == 0, whole.stderr
    runs = client.search_runs([client.get_experiment_by_name("split").experiment_id])
    (whole_parent,) = [r for r in runs if r.info.run_name == "split-mini" and r.info.run_id != parent]
    (workdir / "whole").mkdir()
    whole_table = pd.read_csv(
        client.download_artifacts(whole_parent.info.run_id, "comparison.csv", str(workdir / "whole"))
    )
    timing = ["epoch_s", "run_id"]  # what differs between two runs of the same variant
    pd.testing.assert_frame_equal(split_table.drop(columns=timing), whole_table.drop(columns=timing))
    assert done.data.tags["ptmkit.best_variant"] == whole_parent.data.tags["ptmkit.best_variant"]


def test_a_split_sweep_refuses_an_unknown_variant_a_missing_parent_and_an_early_report(
    workdir: Path, server: str
) -> None:
    sweep = workdir / "s.yaml"
    sweep.write_text(SWEEP.format(base=ROOT / "experiments/quickstart.yaml"))
    missing = _cli(["sweep", str(sweep), "--only", "cnn", "--sweep-id", "nope"], workdir, server)
    assert missing.returncode != 0 and "--start --sweep-id nope" in missing.stderr
    parent = _cli(["sweep", str(sweep), "--start"], workdir, server).stdout.split()[0]
    unknown = _cli(["sweep", str(sweep), "--only", "gru", "--parent-run", parent], workdir, server)
    assert unknown.returncode != 0 and "no such variant; variants: bilstm, cnn" in unknown.stderr
    early = _cli(["sweep", "report", str(sweep), "--parent-run", parent], workdir, server)
    assert early.returncode != 0 and "variants not finished yet: bilstm, cnn" in early.stderr
    partial = _cli(["sweep", "report", str(sweep), "--parent-run", parent, "--partial"], workdir, server)
    assert partial.returncode == 1 and "MISSING" in partial.stdout
    assert MlflowClient(server).get_run(parent).info.status == "FAILED"


def test_a_split_parent_is_alive_while_its_variants_are(workdir: Path) -> None:
    from ptmkit import sweep as sweeps
    from ptmkit import tracking

    sweep_file = workdir / "s.yaml"
    sweep_file.write_text(SWEEP.format(base=ROOT / "experiments/quickstart.yaml"))
    sweep = sweeps.load(sweep_file)
    parent = sweeps.start_parent(sweep)
    uri = sweeps.store_of(sweep)
    client = MlflowClient(uri)
    child = client.create_run(client.get_run(parent).info.experiment_id, tags={"mlflow.parentRunId": parent})
    later = time.time() + 3600  # an hour on: the parent's own start and heartbeat are old
    client.set_tag(child.info.run_id, tracking.HEARTBEAT_TAG, f"{later - 10:.0f}")  # the variant beats on
    stale = {s.run_id for s in tracking.stale_runs(uri, older_than=60, now=later)}
    assert parent not in stale
    client.set_tag(child.info.run_id, tracking.HEARTBEAT_TAG, f"{later - 600:.0f}")  # the variant went quiet
    stale = {s.run_id for s in tracking.stale_runs(uri, older_than=60, now=later)}
    assert parent in stale and child.info.run_id in stale
