"""Sharded scanning under torchrun (2 gloo processes on CPU): ``ptmkit predict`` writes the
table one process writes, and ``ptmkit cache fill`` leaves a cache that one process then reads
without running the language model."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ptmkit.cli import main
from ptmkit.model_store import load_model
from ptmkit.predict import predict_file
from ptmkit.testing import save_tiny_esm2

AA = "ACDEFGHIKLMNPQRSTVWY"
pytestmark = pytest.mark.slow  # trainings and torchrun jobs


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _ptmkit(args: list[str], cwd: Path, *, nproc: int = 1) -> subprocess.CompletedProcess:
    """``python -m ptmkit ARGS``, or under ``torchrun`` with ``nproc`` processes; must succeed."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command = [*(launch if nproc > 1 else [sys.executable]), "-m", "ptmkit", *args]
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def scan_env(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, Path | str]:
    """A tiny-ESM-2 + one-hot H1 model trained once, and 23 proteins of very unequal lengths
    (one of them too short for the model's window: a skipped record)."""
    work = tmp_path_factory.mktemp("ddp-scan")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("PTMKIT_DATA", str(data_root))
    mp.setenv("PTMKIT_HOME", str(work))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    esm = save_tiny_esm2(work / "esm2_tiny")
    recipe = work / "esm.yaml"
    recipe.write_text(f"""\
name: h1-tiny-esm2
data: {{source: "uniptms:H1"}}
features:
  esm: {{type: esm2, model: "{esm}", cache_dir: "{work / "cache"}", progress: false}}
  onehot: {{type: onehot}}
model:
  nodes:
    x: {{type: concat, inputs: [esm, onehot]}}
    head: {{type: mlp_head, inputs: [x], pool: center, hidden: [8]}}
train: {{epochs: 1, threads: 1}}
tracking: {{experiment: scan}}
""")
    assert main(["run", str(recipe), "--quiet"]) == 0
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (trained,) = client.search_runs([client.get_experiment_by_name("scan").experiment_id])
    rng = random.Random(0)
    lengths = [rng.choice([60, 90, 150, 400, 900]) for _ in range(22)] + [12]
    fasta = work / "proteins.fasta"
    fasta.write_text(
        "".join(
            f">P{i:03d} test\n{''.join(rng.choice(AA) for _ in range(n))}\n" for i, n in enumerate(lengths)
        )
    )
    yield {
        "work": work,
        "recipe": recipe,
        "fasta": fasta,
        "run": trained.info.run_id,
        "cache": work / "cache",
    }
    mp.undo()


def test_sharded_cache_fill_is_read_by_one_process_without_recomputing(scan_env: dict) -> None:
    work, fasta, recipe = scan_env["work"], scan_env["fasta"], scan_env["recipe"]
    done = _ptmkit(["cache", "fill", str(recipe), str(fasta), "--quiet"], work, nproc=2)
    assert done.stdout.count("23 proteins (23 distinct sequences) by 2 processes") == 1  # rank 0 reports
    assert "esm: 23 embedded now, 0 already cached" in done.stdout
    assert "keep no cache (nothing to fill): onehot" in done.stdout

    again = _ptmkit(["cache", "fill", str(recipe), str(fasta), "--quiet"], work)
    assert "esm: 0 embedded now, 23 already cached" in again.stdout

    # one process scanning the proteins reads every embedding and never loads the model
    model = load_model(scan_env["run"], tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    predict_file([model], fasta, work / "one.tsv", progress=False)
    assert model.features["esm"]._runner is None


def test_sharded_predict_writes_the_table_of_one_process(scan_env: dict) -> None:
    work, fasta, run_id = scan_env["work"], scan_env["fasta"], scan_env["run"]
    uri = f"sqlite:///{work / 'mlflow.db'}"
    _ptmkit(["predict", run_id, str(fasta), "-o", "single.tsv", "--uri", uri, "--quiet"], work)
    sharded_args = ["predict", run_id, str(fasta), "-o", "sharded.tsv", "--uri", uri, "--quiet"]
    done = _ptmkit(sharded_args, work, nproc=2)
    assert done.stdout.count("sites") >= 1 and "error" not in done.stderr.lower()

    single, sharded = work / "single.tsv", work / "sharded.tsv"
    a = pd.read_csv(single, sep="\t", comment="#", dtype={"protein_id": str})
    b = pd.read_csv(sharded, sep="\t", comment="#", dtype={"protein_id": str})
    assert len(a) > 300 and list(a.columns) == list(b.columns)
    assert a["protein_id"].nunique() == 22  # the 12-residue protein is skipped, by either
    same = [c for c in a.columns if c != "score"]
    pd.testing.assert_frame_equal(a[same], b[same])  # the same rows in the same order
    assert np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max() <= 1e-6
    header = [line for line in single.read_text().splitlines() if line.startswith("#")]
    assert header == [line for line in sharded.read_text().splitlines() if line.startswith("#")]
    assert not list(work.glob(".sharded.tsv.part*"))  # the ranks' parts are merged and removed

    sa = json.loads((work / "single.tsv.json").read_text())
    sb = json.loads((work / "sharded.tsv.json").read_text())
    for key in ("proteins", "sites", "calls"):
        assert sa[key] == sb[key], key
    assert [s["protein_id"] for s in sa["skipped"]] == [s["protein_id"] for s in sb["skipped"]] == ["P022"]
