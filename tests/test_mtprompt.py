"""MTPrompt-PTM end to end at CPU size: ``experiments/mtprompt-lite.yaml`` on a tiny random ESM-2
saved locally (read by the real loader) and the real K2 and MusiteDeep proteins. The steps are:

1. task tokens from the positive training sites;
2. two single-task teachers, trained and registered;
3. the prompt-tuned multi-task student distilled from them;
4. predict scoring both tasks from whole proteins;
5. the published recipe's validation (trainable vs frozen counts, without its weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from ptmkit.cli import main  # noqa: E402
from ptmkit.testing import save_tiny_esm2  # noqa: E402

pytestmark = pytest.mark.slow  # trains teachers and a student end to end

ROOT = Path(__file__).resolve().parents[1]
LITE = ROOT / "experiments/mtprompt-lite.yaml"


def test_the_lite_mtprompt_trains_its_teachers_then_distils_the_prompted_student(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTMKIT_CACHE", str(tmp_path / "cache"))
    save_tiny_esm2(tmp_path / "esm2-tiny", hidden=16, layers=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    small = ["--set", f"tracking.uri={uri}", "--set", "train.epochs=1", "--set", "train.epoch_windows=600"]
    small += ["--data-root", str(data_root)]

    tokens = ["task-tokens", str(LITE), "--feature", "esm", "--length", "16"]
    assert main([*tokens, "-o", "mtprompt-lite-tokens.safetensors", "--data-root", str(data_root)]) == 0
    assert "task_tokens [2, 16, 16], tasks in recipe order (K2, ST)" in capsys.readouterr().out

    client = mlflow.MlflowClient(uri)
    for task, source in (("K2", "uniptms:K2"), ("ST", "musitedeep:ST")):
        one = [
            "--set",
            f"data.tasks={{{task}: {{source: '{source}'}}}}",
            "--set",
            "model.nodes.heads.tasks=1",
            "--set",
            "model.nodes.plm.prompts={length: 16, tasks: 1}",
            "--set",
            "losses=[{type: weighted_ce}]",
            "--set",
            "distill=null",
            "--set",
            f"name=mtprompt-lite-teacher-{task}",
        ]
        assert main(["run", str(LITE), *small, *one, "--quiet"]) == 0
        (run,) = client.search_runs(
            [client.get_experiment_by_name("mtprompt-lite").experiment_id],
            filter_string=f"tags.mlflow.runName = 'mtprompt-lite-teacher-{task}'",
        )
        assert (
            main(
                [
                    "register",
                    run.info.run_id,
                    f"mtprompt-lite-teacher-{task}",
                    "--alias",
                    "best",
                    "--uri",
                    uri,
                ]
            )
            == 0
        )

    assert main(["validate", str(LITE)]) == 0
    shown = capsys.readouterr().out
    assert "trainable" in shown and "frozen" in shown and "esm2_encoder" in shown

    assert main(["run", str(LITE), *small, "--quiet"]) == 0
    (student,) = client.search_runs(
        [client.get_experiment_by_name("mtprompt-lite").experiment_id],
        filter_string="tags.mlflow.runName = 'mtprompt-lite'",
    )
    assert student.info.status == "FINISHED"
    assert student.data.params["distill.teachers.K2"] == "models:/mtprompt-lite-teacher-K2@best"
    for task in ("K2", "ST"):
        assert 0 <= student.data.metrics[f"test/{task}/ap"] <= 1

    # predict: every task of a protein in one pass, from the whole protein
    fasta = tmp_path / "one.fasta"
    fasta.write_text(">P1\nMKSTAWKSLLKTPESKKTAYS\n")
    out = tmp_path / "sites.tsv"
    assert main(["predict", student.info.run_id, str(fasta), "-o", str(out), "--uri", uri, "--quiet"]) == 0
    sites = pd.read_csv(out, sep="\t", comment="#")
    assert set(sites["ptm_type"]) == {"K2", "ST"}
    assert sorted(sites.loc[sites["ptm_type"] == "K2", "position"]) == [2, 7, 11, 16, 17]
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["models"][0]["name"] == "mtprompt-lite"
