"""The trainable ESM-2 node (MTPrompt-PTM's prompt-tuned language model): what it computes, which
parameters each tuning option trains, S-PLM-layout checkpoints, and per-task prompts end to end
(protein units cut per task; predict and evaluate score as the run did).

Every ESM-2 here is a tiny random one saved with ``save_pretrained`` and read by the real loader.
"""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from ptmkit_plugins.backbones.esm2_encoder import FAIR_LAYER_NAMES  # noqa: E402
from ptmkit_plugins.features.plm import Esm2  # noqa: E402

from ptmkit import recipe as recipes  # noqa: E402
from ptmkit.alphabet import encode_windows  # noqa: E402
from ptmkit.errors import GraphError, PtmkitError  # noqa: E402
from ptmkit.evaluate import evaluate_model  # noqa: E402
from ptmkit.model_store import load_model  # noqa: E402
from ptmkit.predict import predict_file  # noqa: E402
from ptmkit.run import run  # noqa: E402
from ptmkit.testing import build, save_tiny_esm2  # noqa: E402
from ptmkit.trackers import MlflowTracker  # noqa: E402

AMINO = "ACDEFGHILMNPQRTVY"  # no K, S or W: the test plants them


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_esm2(tmp_path_factory.mktemp("esm") / "esm2_tiny", hidden=16, layers=2)


def _windows(*windows: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    index = torch.from_numpy(encode_windows(list(windows)).astype("float32")).unsqueeze(-1)
    return [index], index[..., 0] != 21


def test_the_frozen_node_computes_what_the_esm2_feature_embeds_and_trains_nothing(esm_dir: Path) -> None:
    node = build("esm2_encoder", [1], model=str(esm_dir))
    inputs, mask = _windows("---MKSLWAKT", "AKLLWPESKTE")
    out = node(inputs, mask)
    feature = Esm2(Esm2.Config(model=str(esm_dir), cache=False, progress=False, device="cpu"))
    want = feature.runner().embed(["MKSLWAKT", "AKLLWPESKTE"])
    assert torch.allclose(out[0, 3:], torch.from_numpy(want[0]), atol=1e-5)  # <cls>/<eos> at the real ends
    assert torch.allclose(out[1], torch.from_numpy(want[1]), atol=1e-5)
    assert not out[0, :3].any()  # padding gives zeros
    assert not [n for n, p in node.named_parameters() if p.requires_grad]


def _step(node: torch.nn.Module, task: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One AdamW step of node + a linear head on a real loss; the parameters before it."""
    torch.manual_seed(0)
    head = torch.nn.Linear(node.output_dims["out"], 1)
    node.add_module("test_head", head)  # part of the node's parameters, as a graph's head would be
    before = {n: p.detach().clone() for n, p in node.named_parameters()}
    params = [p for p in node.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=0.05)
    inputs, mask = _windows("MKSLWAKTTAE", "AKLLWPESKTE")
    kwargs = {} if task is None else {"task": task}
    out = node(inputs, mask, **kwargs)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        head(out[:, 5]).squeeze(-1), torch.tensor([1.0, 0])
    )
    loss.backward()
    optimiser.step()
    return before


def _changed(node: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in node.named_parameters() if not torch.equal(p.detach(), before[n])}


def test_only_the_chosen_parts_receive_gradients_and_change(esm_dir: Path) -> None:
    # prompts (with frozen adapters): no ESM-2 or adapter parameter changes
    node = build(
        "esm2_encoder", [1], model=str(esm_dir), prompts={"length": 4}, adapters={"layers": 2, "hidden": 8}
    )
    changed = _changed(node, before := _step(node))
    assert "prompt" in changed and {n.split(".")[0] for n in changed} == {"prompt", "test_head"}
    assert any(n.startswith("adapters.") for n in before) and any(n.startswith("esm.") for n in before)
    # LoRA: only the LoRA matrices and the head
    node = build("esm2_encoder", [1], model=str(esm_dir), lora={"r": 2, "alpha": 8})
    changed = _changed(node, _step(node))
    lora = {n for n in changed if "lora_" in n}
    assert lora and changed == lora | {"test_head.weight", "test_head.bias"}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} >= {"query", "key", "value"}
    # the last layer: its parameters and the final layer norm, not layer 0 or the embeddings
    node = build("esm2_encoder", [1], model=str(esm_dir), train_layers=1)
    changed = _changed(node, _step(node))
    assert any(".layer.1." in n for n in changed) and any("emb_layer_norm_after" in n for n in changed)
    assert not any(".layer.0." in n or "embeddings" in n for n in changed)
    # trainable adapters start as the identity and then learn
    plain = build("esm2_encoder", [1], model=str(esm_dir))
    node = build("esm2_encoder", [1], model=str(esm_dir), adapters={"layers": 1, "train": True})
    inputs, mask = _windows("MKSLWAKTTAE")
    assert torch.allclose(node(inputs, mask), plain(inputs, mask), atol=1e-6)
    changed = _changed(node, _step(node))
    assert any(n.startswith("adapters.1_") for n in changed) and not any(
        n.startswith("esm.") for n in changed
    )


def test_an_splm_layout_checkpoint_loads_body_and_adapters_and_a_pickled_one_is_refused(
    esm_dir: Path, tmp_path: Path
) -> None:
    other = save_tiny_esm2(tmp_path / "other", hidden=16, layers=2, seed=7)
    hf = transformers.EsmModel.from_pretrained(other, add_pooling_layer=False).state_dict()
    parts = {hf_name: fair for fair, hf_name in FAIR_LAYER_NAMES.items()}
    fair = {"esm2.embed_tokens.weight": hf["embeddings.word_embeddings.weight"]}
    for key, value in hf.items():
        if key.startswith("encoder.layer."):
            _, _, i, rest = key.split(".", 3)
            part, kind = rest.rsplit(".", 1)
            fair[f"esm2.layers.{i}.{parts[part]}.{kind}"] = value
        elif key.startswith("encoder.emb_layer_norm_after."):
            fair["esm2." + key.removeprefix("encoder.")] = value
    adapter = {"weight": torch.full((16,), 0.5), "bias": torch.zeros(16)}
    for j in (0, 1):
        for k, v in adapter.items():
            fair[f"esm2.layers.1.adapter_layer_dict.adapter_0.{j}.module.3.{k}"] = v
    ckpt = tmp_path / "splm.pth"
    torch.save({"state_dict1": fair}, ckpt)

    node = build("esm2_encoder", [1], model=str(esm_dir), checkpoint=str(ckpt), adapters={"layers": 1})
    loaded = node.esm.state_dict()
    body = [k for k in hf if k.startswith(("embeddings.word_embeddings", "encoder."))]
    assert len(body) == len(fair) - 4 and all(torch.equal(loaded[k], hf[k]) for k in body)
    assert torch.equal(node.adapters["1_0"].module[3].weight, adapter["weight"])
    with pytest.raises(ValueError, match="configure `adapters:`"):
        build("esm2_encoder", [1], model=str(esm_dir), checkpoint=str(ckpt))
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict1": fair, "args": argparse_namespace()}, pickled)
    with pytest.raises(ValueError, match="never unpickles"):
        build("esm2_encoder", [1], model=str(esm_dir), checkpoint=str(pickled), adapters={"layers": 1})


def argparse_namespace() -> object:
    import argparse

    return argparse.Namespace(lr=1e-6)


def test_per_task_prompts_condition_each_unit_on_its_task(esm_dir: Path, tmp_path: Path) -> None:
    node = build("esm2_encoder", [1], model=str(esm_dir), prompts={"length": 3, "tasks": 2, "init_std": 1.0})
    assert node.task_count == 2
    inputs, mask = _windows("MKSLWAKTTAE", "MKSLWAKTTAE")
    out = node(inputs, mask, task=torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert torch.allclose(node(inputs, mask, task=torch.tensor([1, 1]))[0], out[1], atol=1e-6)
    # a deeper prompt layer overwrites the prompt positions before layer 1, and trains
    deep = build(
        "esm2_encoder",
        [1],
        model=str(esm_dir),
        prompts={"length": 3, "tasks": 2, "init_std": 1.0, "layers": [0, 1]},
    )
    with torch.no_grad():
        deep.prompt.copy_(node.prompt)
    assert not torch.allclose(deep(inputs, mask, task=torch.tensor([0, 1])), out, atol=1e-4)
    changed = _changed(deep, _step(deep, task=torch.tensor([0, 1])))
    assert "deep_prompts.1" in changed and not any(n.startswith("esm.") for n in changed)
    with pytest.raises(ValueError, match="0 among them"):
        build("esm2_encoder", [1], model=str(esm_dir), prompts={"length": 3, "layers": [1]})
    # task tokens from a file: [tasks, length, hidden]
    from safetensors.torch import save_file

    save_file({"task_tokens": torch.randn(2, 3, 16)}, str(tmp_path / "tokens.safetensors"))
    node = build(
        "esm2_encoder",
        [1],
        model=str(esm_dir),
        prompts={"length": 3, "tasks": 2, "init": "file", "file": str(tmp_path / "tokens.safetensors")},
    )
    assert node.prompt.shape == (2, 3, 16)
    with pytest.raises(ValueError, match=r"task tokens of shape \(2, 3, 16\); the prompts need \[2, 4, 16\]"):
        build(
            "esm2_encoder",
            [1],
            model=str(esm_dir),
            prompts={"length": 4, "tasks": 2, "init": "file", "file": str(tmp_path / "tokens.safetensors")},
        )


def _fastas(folder: Path) -> None:
    """The same proteins twice: K sites marked in k.fasta, S sites in s.fasta (a K or S with a W
    two residues before it is modified), so every protein holds rows of both tasks."""
    rng = random.Random(0)
    k_lines, s_lines = [], []
    for i in range(24):
        length = rng.choice([40, 90, 200])
        seq = [rng.choice(AMINO) for _ in range(length)]
        for j in range(3, length, 5):
            seq[j] = "KS"[(j // 5) % 2]
            if rng.random() < 0.4:
                seq[j - 2] = "W"
        text = "".join(seq)
        for residue, lines in (("K", k_lines), ("S", s_lines)):
            marked = "".join(
                c + ("#" if c == residue and j >= 2 and text[j - 2] == "W" else "")
                for j, c in enumerate(text)
            )
            lines += [f">sp|Q{i:04d}|P{i}", marked]
    (folder / "k.fasta").write_text("\n".join(k_lines) + "\n")
    (folder / "s.fasta").write_text("\n".join(s_lines) + "\n")


@pytest.mark.parametrize("unit", ["protein", "window"])
def test_a_prompt_tuned_multi_task_model_trains_predicts_and_evaluates_as_it_scored(
    esm_dir: Path, tmp_path: Path, unit: str
) -> None:
    _fastas(tmp_path)

    def source(residue: str) -> dict:
        return {
            "reader": "musite_fasta",
            "name": f"synthetic-{residue}",
            "ptm": residue,
            "residues": residue,
            "files": {"unsplit": f"{residue.lower()}.fasta"},
        }

    raw = {
        "name": "prompted",
        "data": {
            "tasks": {"K": {"source": source("K")}, "S": {"source": source("S")}},
            "window": 15,
            "split": {"valid": 0.2, "test": 0.25, "seed": 0, "group": "protein"},
            "unit": unit,
            **(
                {"protein": {"chunk": 101, "overlap": 20, "batch_residues": 1024}}
                if unit == "protein"
                else {}
            ),
        },
        "features": {"ids": {"type": "residue_ids"}},
        "model": {
            "nodes": {
                "plm": {
                    "type": "esm2_encoder",
                    "inputs": ["ids"],
                    "model": str(esm_dir),
                    "prompts": {"length": 4, "tasks": 2},
                },
                "heads": {
                    "type": "task_heads",
                    "inputs": ["plm"],
                    "tasks": 2,
                    "hidden": [8],
                    "pool": "none" if unit == "protein" else "center",
                },
            }
        },
        "train": {"epochs": 2, "lr": 0.01, "seed": 0, "threads": 1},
        "tracking": {"experiment": "prompted", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "prompted.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    wrong = {**raw, "model": {"nodes": {**raw["model"]["nodes"]}}}
    wrong["model"]["nodes"]["plm"] = {**raw["model"]["nodes"]["plm"], "prompts": {"length": 4, "tasks": 3}}
    with pytest.raises(GraphError, match="conditioned on 3 tasks, but the recipe has 2"):
        from ptmkit.assembly import assemble
        from ptmkit.hooks import build_registry

        assemble(recipes.parse(wrong, build_registry(), path=path))

    recipe = recipes.load(path)
    summary = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    uri = recipe.tracking.uri
    model = load_model(summary.run_id, tracking_uri=uri)
    assert model.model.reads_task
    test_rows = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{summary.run_id}/predictions/test_predictions.csv",
            tracking_uri=uri,
            dst_path=str(tmp_path / "dl"),
        )
    )
    assert set(test_rows["task"]) == {"K", "S"}
    fasta = tmp_path / "test.fasta"
    records = []
    for rec in (tmp_path / "k.fasta").read_text().split(">")[1:]:
        header, seq = rec.split("\n", 1)
        if header.split("|")[1] in set(test_rows["protein_id"]):
            records.append(f">{header.split('|')[1]}\n{seq.replace('#', '')}")
    fasta.write_text("".join(records))
    out = tmp_path / "sites.tsv"
    predict_file([model], fasta, out, progress=False)
    sites = pd.read_csv(out, sep="\t", comment="#").rename(columns={"ptm_type": "task"})
    merged = test_rows.merge(sites, on=["protein_id", "position", "task"], suffixes=("_run", "_predict"))
    assert len(merged) == len(test_rows)
    np.testing.assert_allclose(merged["score_run"], merged["score_predict"], atol=2e-6)
    # every test protein holds rows of both tasks: each read on its own task's units
    assert (test_rows.groupby("protein_id")["task"].nunique() == 2).all()

    logged = mlflow.MlflowClient(uri).get_run(summary.run_id).data.metrics
    marked = tmp_path / "k_test.fasta"
    marked.write_text(
        "".join(
            f">{rec}"
            for rec in (tmp_path / "k.fasta").read_text().split(">")[1:]
            if rec.split("|")[1] in set(test_rows["protein_id"])
        )
    )
    result = evaluate_model(model, str(marked), reader="musite_fasta", data_root=tmp_path, task="K")
    assert result.report["ap"] == pytest.approx(logged["test/K/ap"], abs=1e-6)


def test_refusals_name_what_is_wrong(esm_dir: Path) -> None:
    with pytest.raises(ValueError, match="train_layers 5: the model has 2 layers"):
        build("esm2_encoder", [1], model=str(esm_dir), train_layers=5)
    with pytest.raises(ValueError, match="residue_ids feature"):
        build("esm2_encoder", [20], model=str(esm_dir))
    with pytest.raises(PtmkitError, match="cannot load model"):
        build("esm2_encoder", [1], model=str(esm_dir.parent / "missing"))
