"""The first hour of a new user, as one real session: no URI set anywhere, two folders.

Train in one folder, then from another folder run ``ptmkit compare``, copy the id it shows and
hand it to ``predict``. Runs go to the per-user store (PTMKIT_HOME, pointed into tmp by
conftest), so the id found in one folder works in any other, and no folder gets a stray store.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from ptmkit.cli import main

ROOT = Path(__file__).parents[1]
FASTA = ">sp|P1|ONE\nMKHAAAHKKLLHAAGHHEEKAHAALLHKKAAGHEEHAAKLHGGHAAHKK\n"


@pytest.mark.slow
def test_compare_then_copy_the_id_then_predict_from_another_folder(tmp_path, monkeypatch, data_root, capsys):
    home, first, second = tmp_path / "home", tmp_path / "project", tmp_path / "elsewhere"
    for folder in (home, first, second):
        folder.mkdir()
    monkeypatch.setenv("PTMKIT_HOME", str(home))
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(tmp_path))
    monkeypatch.setenv("PTMKIT_DATA", str(data_root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    monkeypatch.chdir(first)
    quick = ["run", str(ROOT / "experiments/quickstart.yaml"), "--quiet"]
    for item in ("train.epochs=1", "train.threads=1", "model.nodes.encoder.hidden=4"):
        quick += ["--set", item]
    assert main(quick) == 0
    out = capsys.readouterr().out
    assert str(home / "mlflow.db") in out  # the run says where it went
    assert "workflowType=machine_learning" in out  # and how to open it in the training view

    monkeypatch.chdir(second)
    assert main(["compare", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == 1 and rows[0]["status"] == "FINISHED"
    assert str(home / "mlflow.db") in captured.err  # compare names the store it read
    run_id = rows[0]["run_id"]
    assert len(run_id) >= 8

    (second / "p.fasta").write_text(FASTA)
    assert main(["predict", run_id, "p.fasta", "-o", "sites.tsv", "--quiet"]) == 0
    sites = [line for line in (second / "sites.tsv").read_text().splitlines() if not line.startswith("#")]
    assert sites[0].startswith("protein_id\t") and len(sites) > 1
    assert main(["evaluate", run_id, "uniptms:H1", "--split", "test", "--quiet"]) == 0
    assert not (first / "mlflow.db").exists() and not (second / "mlflow.db").exists()


@pytest.mark.parametrize("argv", [["--version"], ["run", "--help"], ["predict", "--help"]])
def test_version_and_help_exit_zero(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert capsys.readouterr().out.strip()
