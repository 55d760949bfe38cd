"""Distillation (MTPrompt-PTM's born-again multi-task): the ``distill`` loss, and a student run
whose teachers are real packaged runs, scored once through the evaluate path and logged."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from ptmkit_plugins.losses.distill import DistillLoss

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.errors import GraphError, RecipeError
from ptmkit.run import run
from ptmkit.trackers import MlflowTracker

AMINO = "ACDEFGHILMNPQRTVY"


def test_the_distill_loss_is_the_two_class_soft_cross_entropy_to_mixed_targets() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(6), torch.randn(6) * 3
    labels = torch.tensor([1.0, 0, 1, 0, 0, 1])
    loss = DistillLoss(DistillLoss.Config(temperature=2.0, weight=0.7))
    got = loss({"logits": student, "teacher": teacher}, labels)
    # MTPrompt-PTM's form: y = (1 - w) onehot + w softmax(z_t / T) over two classes, -sum y log_softmax(z_s)
    two = lambda z: torch.stack([torch.zeros_like(z), z], dim=1)  # noqa: E731 - a 2-way softmax of [0, z]
    y = 0.3 * F.one_hot(labels.long(), 2).float() + 0.7 * torch.softmax(two(teacher) / 2.0, dim=1)
    want = -(y * torch.log_softmax(two(student), dim=1)).sum(1).mean()
    assert torch.allclose(got, want, atol=1e-6)
    # a row without a teacher learns from its label alone
    partial = teacher.clone()
    partial[0] = float("nan")
    rows = F.binary_cross_entropy_with_logits(
        student, torch.where(torch.isnan(partial), labels, y[:, 1]), reduction="none"
    )
    assert torch.allclose(loss({"logits": student, "teacher": partial}, labels), rows.mean(), atol=1e-6)
    # teacher annealing: the teacher's share falls linearly to 0
    annealed = DistillLoss(DistillLoss.Config(weight=1.0, anneal_epochs=4))
    annealed.start_epoch(3, 10)
    assert annealed.share == pytest.approx(0.5)
    annealed.start_epoch(9, 10)
    assert annealed.share == 0.0
    hard = F.binary_cross_entropy_with_logits(student, labels)
    assert torch.allclose(annealed({"logits": student, "teacher": teacher}, labels), hard, atol=1e-6)


def _fasta(path: Path) -> None:
    rng = random.Random(0)
    lines = []
    for i in range(60):
        seq = [rng.choice(AMINO) for _ in range(rng.choice([40, 80]))]
        for j in range(3, len(seq), 6):
            seq[j] = "K"
            if rng.random() < 0.4:
                seq[j - 2] = "W"
        text = "".join(seq)
        lines += [
            f">sp|Q{i:04d}|P{i}",
            "".join(
                c + ("#" if c == "K" and j >= 2 and text[j - 2] == "W" else "") for j, c in enumerate(text)
            ),
        ]
    path.write_text("\n".join(lines) + "\n")


def _recipe(tmp_path: Path, name: str, window: int, **extra: object) -> dict:
    return {
        "name": name,
        "data": {
            "source": {
                "reader": "musite_fasta",
                "name": "synthetic-k",
                "ptm": "succinylation",
                "residues": "K",
                "files": {"unsplit": "k.fasta"},
            },
            "window": window,
            "split": {"valid": 0.2, "test": 0.2, "seed": 0, "group": "protein"},
        },
        "features": {"onehot": {"type": "onehot"}},
        "model": {
            "nodes": {
                "cnn": {"type": "cnn", "inputs": ["onehot"], "channels": 8, "kernel_sizes": [3]},
                "head": {"type": "mlp_head", "inputs": ["cnn"], "pool": "center", "hidden": [8]},
            }
        },
        "train": {"epochs": 3, "lr": 0.01, "seed": 0, "threads": 1},
        "tracking": {"experiment": "distill", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        **extra,
    }


def test_a_student_learns_from_a_packaged_teacher_scored_once_and_logged(tmp_path: Path) -> None:
    _fasta(tmp_path / "k.fasta")
    teacher_raw = _recipe(tmp_path, "teacher", 15)
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(teacher_raw))
    recipe = recipes.load(path)
    teacher = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    uri = recipe.tracking.uri

    # the student reads windows of 21: the teacher's rows are re-cut at its own 15 from the proteins
    student_raw = _recipe(
        tmp_path,
        "student",
        21,
        losses=[{"type": "distill", "temperature": 1.0, "weight": 1.0}],
        distill={"teachers": {"succinylation": teacher.run_id}},
    )
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(student_raw, sort_keys=False))
    recipe = recipes.load(path)
    assert recipe.filled()["distill"]["teachers"] == {"succinylation": teacher.run_id}
    student = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    logged = mlflow.MlflowClient(uri).get_run(student.run_id)
    assert logged.data.params["distill.teachers.succinylation"] == teacher.run_id
    assert logged.data.tags["ptmkit.teacher.succinylation.run_id"] == teacher.run_id
    logits = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{student.run_id}/distill/teacher_logits.csv",
            tracking_uri=uri,
            dst_path=str(tmp_path / "s"),
        )
    )
    assert set(logits["split"]) == {"train", "valid", "test"} and logits["teacher_logit"].notna().all()
    # they are the teacher's own scores of those sites (its test predictions, as its run wrote them)
    theirs = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{teacher.run_id}/predictions/test_predictions.csv",
            tracking_uri=uri,
            dst_path=str(tmp_path / "t"),
        )
    )
    merged = theirs.merge(logits, on=["protein_id", "position"])
    assert len(merged) == len(theirs)
    np.testing.assert_allclose(1 / (1 + np.exp(-merged["teacher_logit"])), merged["score"], atol=1e-5)
    assert np.isfinite(mlflow.MlflowClient(uri).get_run(student.run_id).data.metrics["test/ap"])


def test_distillation_is_refused_without_teachers_or_with_a_task_the_recipe_lacks(tmp_path: Path) -> None:
    raw = _recipe(tmp_path, "student", 15, losses=[{"type": "distill"}])
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(GraphError, match="name the teachers in a `distill:` section"):
        assemble(recipes.load(path))
    raw["distill"] = {"teachers": {"K": "somewhere"}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(
        RecipeError, match=r"student.yaml:\d+.*no task 'K' in this recipe; tasks: succinylation"
    ):
        recipes.load(path)


def test_one_multi_task_teacher_teaches_every_task_it_has(tmp_path: Path) -> None:
    rng = random.Random(1)
    k_lines, s_lines = [], []
    for i in range(50):
        seq = [rng.choice(AMINO) for _ in range(60)]
        for j in range(3, 60, 5):
            seq[j] = "KS"[(j // 5) % 2]
            if rng.random() < 0.4:
                seq[j - 2] = "W"
        text = "".join(seq)
        for residue, lines in (("K", k_lines), ("S", s_lines)):
            marks = "".join(
                c + ("#" if c == residue and text[j - 2] == "W" else "") for j, c in enumerate(text)
            )
            lines += [f">sp|Q{i:04d}|P{i}", marks]
    (tmp_path / "k.fasta").write_text("\n".join(k_lines) + "\n")
    (tmp_path / "s.fasta").write_text("\n".join(s_lines) + "\n")

    def source(residue: str) -> dict:
        return {
            "reader": "musite_fasta",
            "name": f"syn-{residue}",
            "ptm": residue,
            "residues": residue,
            "files": {"unsplit": f"{residue.lower()}.fasta"},
        }

    raw = _recipe(tmp_path, "teacher2", 15)
    del raw["data"]["source"]
    raw["data"]["tasks"] = {"K": {"source": source("K")}, "S": {"source": source("S")}}
    raw["model"]["nodes"]["head"] = {"type": "task_heads", "inputs": ["cnn"], "pool": "center", "tasks": 2}
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe = recipes.load(path)
    teacher = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)

    raw.update(name="student2", losses=[{"type": "distill"}], distill={"teachers": {"all": teacher.run_id}})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe = recipes.load(path)
    student = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    uri = recipe.tracking.uri
    tags = mlflow.MlflowClient(uri).get_run(student.run_id).data.tags
    assert tags["ptmkit.teacher.K.run_id"] == tags["ptmkit.teacher.S.run_id"] == teacher.run_id
    logits = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{student.run_id}/distill/teacher_logits.csv",
            tracking_uri=uri,
            dst_path=str(tmp_path / "s"),
        )
    )
    assert logits["teacher_logit"].notna().all() and set(logits["task"]) == {"K", "S"}
    theirs = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{teacher.run_id}/predictions/test_predictions.csv",
            tracking_uri=uri,
            dst_path=str(tmp_path / "t"),
        )
    )
    merged = theirs.merge(logits, on=["protein_id", "position", "task"])
    assert len(merged) == len(theirs)
    np.testing.assert_allclose(1 / (1 + np.exp(-merged["teacher_logit"])), merged["score"], atol=1e-5)
