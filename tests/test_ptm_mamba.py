"""PTM-Mamba: the model, released-layout checkpoints, masking, batching and ``ptmkit pretrain``
(real runs on a synthetic corpus of whole proteins, a real sqlite MLflow store, a real SIGINT)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from ptmkit_plugins.ptm_mamba import checkpoints, tokens
from ptmkit_plugins.ptm_mamba.model import PtmMamba

from ptmkit import language_models
from ptmkit.cli import main
from ptmkit.errors import PtmkitError
from ptmkit.pretrain import MaskingSection, generator, group_masks, mask_tokens, token_batches

AMINO = "ACDEFGHIKLMNPQRSTVWY"
CLI = "import sys; from ptmkit.cli import main; sys.exit(main())"


def _tiny(**kw: object) -> PtmMamba:
    torch.manual_seed(0)
    return PtmMamba(PtmMamba.Config(d_model=16, n_layer=2, **kw)).eval()


def test_a_padded_protein_scores_as_it_does_alone_in_both_directions() -> None:
    model = _tiny()
    alone = torch.tensor([tokens.encode("MKSLL<Phosphoserine>AWK")])
    padded = torch.cat([alone, torch.full((1, 5), tokens.IDS["<pad>"])], dim=1)
    other = torch.tensor([tokens.encode("MKTTAWKLLLLLLL")])
    batch = torch.cat([padded, other], dim=0)
    h_alone, l_alone = model(alone)
    h_batch, l_batch = model(batch)
    assert torch.allclose(h_alone[0], h_batch[0, : alone.shape[1]], atol=1e-5)
    assert torch.allclose(l_alone[0], l_batch[0, : alone.shape[1]], atol=1e-5)
    # the backward direction is real: a residue's state depends on what follows it
    changed = torch.tensor([tokens.encode("MKSLL<Phosphoserine>AWR")])
    assert not torch.allclose(model(changed)[0][0, 0], h_alone[0, 0], atol=1e-6)
    assert model.lm_head.weight is model.backbone.embedding.weight


def test_the_context_branch_is_gated_per_token_and_absent_without_a_context_dim() -> None:
    plain = _tiny()
    assert plain.backbone.gate is None and plain.esm_head is None
    with pytest.raises(ValueError, match="no context branch"):
        plain(torch.tensor([[8, 9]]), torch.zeros(1, 2, 4))
    gated = _tiny(context_dim=12)
    assert gated.backbone.gate.weight.shape == (1, 32) and gated.esm_head.weight.shape == (16, 12)
    ids = torch.tensor([tokens.encode("MKSLLK")])
    a = gated(ids, torch.zeros(1, 6, 12))[0]
    b = gated(ids, torch.randn(1, 6, 12))[0]
    assert not torch.allclose(a, b)


def _released_state(model: PtmMamba) -> dict[str, torch.Tensor]:
    """The model's weights in the published layout: plus the unused second-scan parameters the
    published mixer creates in every block."""
    cfg = model.config
    inner, rank = cfg.expand * cfg.d_model, model.backbone.forward_layers[0].mixer.dt_rank
    state = dict(model.state_dict())
    for key in [k for k in state if k.endswith(".mixer.A_log")]:
        pre = key.removesuffix("A_log")
        state |= {
            pre + "A_b_log": torch.zeros(inner, cfg.d_state),
            pre + "D_b": torch.ones(inner),
            pre + "conv1d_b.weight": torch.zeros(inner, 1, cfg.d_conv),
            pre + "conv1d_b.bias": torch.zeros(inner),
            pre + "x_proj_b.weight": torch.zeros(rank + 2 * cfg.d_state, inner),
            pre + "dt_proj_b.weight": torch.zeros(inner, rank),
            pre + "dt_proj_b.bias": torch.zeros(inner),
        }
    return state


PUBLISHED_CONFIG = {
    "model_type": "bidirectional_mamba",
    "d_model": 16,
    "n_layer": 2,
    "vocab_size": 59,
    "ssm_cfg": {},
    "rms_norm": True,
    "residual_in_fp32": True,
    "fused_add_norm": True,
    "esm_embed_dim": 12,
    "pretrained_checkpoint": None,
}


@dataclasses.dataclass
class _PickledConfig:  # stands in for the OmegaConf object the published script stores
    d_model: int = 16


def test_a_released_layout_checkpoint_loads_through_the_real_loader_and_a_pickled_one_is_refused(
    tmp_path: Path,
) -> None:
    model = _tiny(context_dim=12)
    path = tmp_path / "best.ckpt"
    torch.save({"model": _released_state(model), "config": PUBLISHED_CONFIG}, path)
    loaded = checkpoints.load(path)
    assert loaded.config.d_model == 16 and loaded.config.n_layer == 2 and loaded.config.context_dim == 12
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight
    ids = torch.tensor([tokens.encode("MKS<Phosphoserine>LLAWK")])
    context = torch.randn(1, ids.shape[1], 12)
    assert torch.equal(model(ids, context)[1], loaded(ids, context)[1])

    # a config that disagrees with the weights is refused, naming the field
    torch.save({"model": _released_state(model), "config": {**PUBLISHED_CONFIG, "n_layer": 24}}, path)
    with pytest.raises(PtmkitError, match="n_layer 24, the weights have 2"):
        checkpoints.load(path)
    # a bare state dict (no config) loads from the shapes alone
    torch.save(_released_state(model), path)
    assert checkpoints.load(path).config.context_dim == 12

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"model": _released_state(model), "config": _PickledConfig()}, pickled)
    with pytest.raises(PtmkitError) as refused:
        checkpoints.load(pickled)
    message = str(refused.value)
    assert "refused" in message and "_PickledConfig" in message and "\n" not in message


def test_masking_never_picks_specials_or_padding_and_masks_every_ptm_token_in_ptm_batches() -> None:
    groups = group_masks(PtmMamba)
    ids = torch.tensor(
        [[tokens.IDS["<cls>"], *tokens.encode("MKSL<Phosphoserine>" * 40), tokens.IDS["<eos>"], 1, 1]]
    )
    ptm = groups["ptm"][ids]
    special = groups["special"][ids]
    seen_plain = seen_ptm = False
    for step in range(40):
        cfg = MaskingSection(rate=0.15, plain=0.5)
        inputs, masked = mask_tokens(ids, groups, cfg, 1, 7, generator(0, 0, step))
        assert not masked[special].any()
        assert torch.equal(inputs[masked], torch.full((int(masked.sum()),), 7))
        assert torch.equal(inputs[~masked], ids[~masked])
        if masked[ptm].all():
            seen_ptm = True
        else:
            seen_plain = True
            frac = masked[~special].float().mean().item()
            assert 0.05 < frac < 0.3
    assert seen_plain and seen_ptm
    again = mask_tokens(ids, groups, MaskingSection(), 1, 7, generator(0, 0, 3))
    assert torch.equal(again[1], mask_tokens(ids, groups, MaskingSection(), 1, 7, generator(0, 0, 3))[1])


def test_token_batches_sort_by_length_under_the_budget_and_hold_every_sequence_once() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 300) for _ in range(200)]
    batches = token_batches(lengths, 1024, generator(0, 1))
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(max(lengths[i] for i in b) * len(b) <= 1024 for b in batches)
    assert batches != token_batches(lengths, 1024, generator(0, 2))  # each epoch its own order
    assert batches == token_batches(lengths, 1024, generator(0, 1))


# ---------------------------------------------------------------------------- ptmkit pretrain
def _corpus(path: Path, n: int = 60) -> None:
    """Whole proteins whose K two residues after a W are succinylated (a learnable motif)."""
    rng = random.Random(0)
    lines = []
    for i in range(n):
        seq = [rng.choice(AMINO) for _ in range(rng.choice([30, 60, 150]))]
        marked = []
        for j, c in enumerate(seq):
            marked.append(c + ("#" if c == "K" and j >= 2 and seq[j - 2] == "W" else ""))
        lines += [f">sp|Q{i:05d}|P{i}", "".join(marked)]
    path.write_text("\n".join(lines) + "\n")


RECIPE = """\
name: lm-tiny
kind: pretrain
data:
  source: {reader: musite_fasta, name: synthetic, ptm: succinylation, residues: K,
           files: {unsplit: proteins.fasta}}
  window: 15
  split: {valid: 0.2, test: 0.2, seed: 0, group: protein}
model: {type: ptm_mamba, d_model: 16, n_layer: 1}
train:
  batch_tokens: 512
  max_length: 128
  steps: 24
  eval_every: 8
  checkpoint_every: 4
  log_every: 4
  threads: 1
  progress: false
tracking: {uri: "sqlite:///mlflow.db", experiment: lm}
"""


@pytest.fixture
def lm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _corpus(tmp_path / "proteins.fasta")
    (tmp_path / "lm.yaml").write_text(RECIPE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pretrain_logs_to_mlflow_writes_a_package_and_holds_test_proteins_out(
    lm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "lm.yaml", "--out", "out"]) == 0
    printed = capsys.readouterr().out
    assert "24 steps" in printed and "perplexity" in printed
    client = MlflowClient(f"sqlite:///{lm_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["ptmkit.kind"] == "pretrain"
    history = client.get_metric_history(run.info.run_id, "val/perplexity")
    assert [m.step for m in history] == [8, 16, 24, 24]
    assert history[-1].value < history[0].value  # it learns
    for key in (
        "val/acc/ptm",
        "val/acc/residue",
        "train/loss",
        "train/tokens_per_s",
        "corpus/test/sequences",
    ):
        assert key in run.data.metrics, key
    assert run.data.params["model.type"] == "ptm_mamba"

    model = language_models.load("out/language_model")
    meta = model.package_info
    assert meta["steps"] == 24 and meta["run_id"] == run.info.run_id
    assert isinstance(model, PtmMamba) and model.config.d_model == 16
    # the same package through the run id, as the feature and ptm-scan take it
    assert (
        language_models.load(run.info.run_id, tracking_uri="sqlite:///mlflow.db").package_info["steps"] == 24
    )
    held_out = meta["held_out"]["test"]
    assert held_out and not set(held_out) & set(meta["held_out"]["valid"])
    # an existing checkpoint is never overwritten by accident
    assert main(["pretrain", "lm.yaml", "--out", "out"]) == 2
    assert "--resume continues it, --restart starts over" in capsys.readouterr().err


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PTMKIT_HOME=str(home), PTMKIT_CEILING_DIRS=str(home), PTMKIT_HEARTBEAT_S="0.5")
    return env


@pytest.mark.slow
def test_pretrain_resumes_after_sigint_in_the_same_run_and_ends_where_an_uninterrupted_run_ends(
    lm_dir: Path,
) -> None:
    steps = ["--set", "train.steps=40"]
    env = _env(lm_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "pretrain", "lm.yaml", "--out", "cut", *steps],
        cwd=lm_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = lm_dir / "cut" / "state.pt"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    stopped_at = torch.load(state, weights_only=True)["state"]["step"]
    assert 0 < stopped_at < 40

    client = MlflowClient(f"sqlite:///{lm_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    assert run.info.status == "KILLED"

    resumed = subprocess.run(
        [sys.executable, "-c", CLI, "pretrain", "lm.yaml", "--out", "cut", "--resume", *steps],
        cwd=lm_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = subprocess.run(
        [sys.executable, "-c", CLI, "pretrain", "lm.yaml", "--out", "whole", *steps],
        cwd=lm_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]

    runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("lm").experiment_id])}
    assert len(runs) == 2 and runs[run.info.run_id].info.status == "FINISHED"  # the same run, continued
    assert runs[run.info.run_id].data.tags["ptmkit.resumed_at_step"] == str(stopped_at)
    a = language_models.load(lm_dir / "cut" / "language_model")
    b = language_models.load(lm_dir / "whole" / "language_model")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name  # the draws are seeded by epoch and step: resuming changes nothing
    assert json.loads((lm_dir / "cut" / "language_model" / "config.json").read_text())["steps"] == 40


def test_a_pretraining_recipe_is_validated_at_its_line(lm_dir: Path) -> None:
    from ptmkit import pretrain
    from ptmkit.errors import RecipeError

    text = RECIPE.replace(
        "model: {type: ptm_mamba, d_model: 16, n_layer: 1}", "model: {type: ptm_mamba, d_modle: 16}"
    )
    (lm_dir / "bad.yaml").write_text(text)
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+.*d_modle"):
        pretrain.load(lm_dir / "bad.yaml")
    (lm_dir / "bad.yaml").write_text(RECIPE + "masking: {always: [sugar]}\n")
    with pytest.raises(
        RecipeError, match="'sugar' is not a maskable token group of ptm_mamba; groups: residue, ptm"
    ):
        pretrain.load(lm_dir / "bad.yaml")
    (lm_dir / "bad.yaml").write_text(RECIPE.replace("  steps: 24\n", ""))
    with pytest.raises(RecipeError, match="give a budget"):
        pretrain.load(lm_dir / "bad.yaml")


# ---------------------------------------------------------------------------- downstream
def test_zero_shot_groups_masks_apart_and_scores_exactly_what_a_masked_forward_gives() -> None:
    from ptmkit import zero_shot

    groups = zero_shot._groups([1, 3, 10, 12, 40], 8)
    assert sorted(p for g in groups for p in g) == [1, 3, 10, 12, 40]
    assert all(b - a >= 8 for g in groups for a, b in zip(g, g[1:], strict=False))
    assert zero_shot._groups([5, 6], 0) == [[5], [6]]

    model = _tiny()
    protein = "MKSLLSTTKAWKSTRE" * 8
    frame = zero_shot.scan(model, {"P1": protein}, residues="S", tokens=["<Phosphoserine>"])
    assert list(frame["position"]) == [i + 1 for i, c in enumerate(protein) if c == "S"]
    ids, lead = model.residue_ids(protein)
    at = frame["position"].iloc[2] - 1
    ids[lead + at] = model.mask_id
    with torch.no_grad():
        direct = torch.softmax(model(torch.tensor([ids]))[1][0, lead + at], -1)[tokens.IDS["<Phosphoserine>"]]
    assert frame["probability"].iloc[2] == pytest.approx(float(direct), rel=1e-5)
    # a residue read from its chunk (context shorter than the protein) sees that chunk only
    chunked = zero_shot.scan(model, {"P1": protein}, residues="S", tokens=["<Phosphoserine>"], context=40)
    assert len(chunked) == len(frame) and not chunked["probability"].equals(frame["probability"])


def _pretrained(lm_dir: Path) -> Path:
    assert (
        main(["pretrain", "lm.yaml", "--out", "out", "--set", "train.steps=8", "--set", "train.eval_every=8"])
        == 0
    )
    return lm_dir / "out" / "language_model"


def test_ptm_scan_and_zero_shot_evaluate_read_a_pretrained_package(
    lm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    package = _pretrained(lm_dir)
    assert (
        main(["ptm-scan", str(package), "proteins.fasta", "-o", "scan.tsv", "--residues", "K", "--quiet"])
        == 0
    )
    scan = pd.read_csv("scan.tsv", sep="\t", comment="#")
    assert set(scan["residue"]) == {"K"}
    assert set(scan["ptm_token"]) == {t for t, r in tokens.TOKEN_RESIDUE.items() if r == "K"}
    succ = scan[scan["ptm_token"] == "<N6-succinyllysine>"]
    assert succ["known"].sum() > 0 and ((succ["probability"] > 0) & (succ["probability"] < 1)).all()

    capsys.readouterr()
    assert (
        main(
            ["evaluate", str(package), "proteins.fasta", "--split", "test", "--json", "zs.json", "--quiet"]
            + ["--ptm", "succinylation", "--residues", "K"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "pretraining held-out proteins" in printed
    result = json.loads(Path("zs.json").read_text())
    held = json.loads((package / "config.json").read_text())["held_out"]["test"]
    assert 0 <= result["metrics"]["auc"] <= 1 and list(result["by_token"]) == ["<N6-succinyllysine>"]
    counted = result["metrics"]["sites"]
    fasta = Path("proteins.fasta").read_text().split(">")[1:]
    expect = sum(rec.split("\n", 1)[1].count("K") for rec in fasta if rec.split("|")[1] in held)
    assert counted == expect  # exactly the K sites of the proteins pretraining held out as test


def test_the_ptm_mamba_feature_and_node_predict_sites_in_a_real_run(lm_dir: Path) -> None:
    import yaml
    from ptmkit_plugins.ptm_mamba.feature import PtmMambaFeature

    from ptmkit import recipe as recipes
    from ptmkit.assembly import assemble

    package = _pretrained(lm_dir)
    feature = PtmMambaFeature(PtmMambaFeature.Config(model=str(package), cache_dir=str(lm_dir / "cache")))
    lm = language_models.load(package)
    protein = "MKSLLWAKTTAAAKWLKPE"
    emb = feature.embed_sequences([protein])[protein]
    ids, lead = lm.residue_ids(protein)
    with torch.no_grad():
        hidden = lm(torch.tensor([ids]))[0][0, lead : lead + len(protein)]
    assert feature.dim == 16 and emb.shape == (len(protein), 16)
    assert torch.allclose(torch.from_numpy(emb.astype("float32")), hidden, atol=2e-3)  # float16 cache
    assert list((lm_dir / "cache").rglob("*.npy")), "embeddings are cached"

    site = {
        "name": "k-site",
        "data": yaml.safe_load(RECIPE)["data"],
        "features": {
            "lm": {"type": "ptm_mamba", "model": str(package), "progress": False},
            "ids": {"type": "residue_ids"},
        },
        "model": {
            "nodes": {
                "tuned": {
                    "type": "ptm_mamba_encoder",
                    "inputs": ["ids"],
                    "model": str(package),
                    "train_layers": 0,
                },
                "x": {"type": "concat", "inputs": ["lm", "tuned"]},
                "head": {"type": "mlp_head", "inputs": ["x"], "pool": "center", "hidden": [8]},
            }
        },
        "train": {"epochs": 2, "batch_size": 32, "threads": 1},
        "tracking": {"uri": "sqlite:///mlflow.db", "experiment": "sites"},
    }
    Path("site.yaml").write_text(yaml.safe_dump(site))
    recipe = recipes.load("site.yaml")
    graph = assemble(recipe).graph
    frozen = [n for n, p in graph.named_parameters() if n.startswith("blocks.tuned.") and not p.requires_grad]
    assert frozen and not [
        n for n, p in graph.named_parameters() if n.startswith("blocks.tuned.") and p.requires_grad
    ]
    assert main(["run", "site.yaml", "--quiet"]) == 0


def test_the_musitedeep_preset_holds_its_counts_and_the_lite_recipes_validate(data_root: Path) -> None:
    from ptmkit import catalog
    from ptmkit import pretrain as pretraining
    from ptmkit import recipe as recipes
    from ptmkit.datasets import load_source

    table, info = load_source("musitedeep:ST", base_dir=Path("."), data_root=data_root)
    assert (int(table.labels.sum()), int(len(table) - table.labels.sum())) == catalog.get("ST").counts[
        "unsplit"
    ]
    assert len(table.proteins) == 2476 and info.ptm == "phosphorylation"
    root = Path(__file__).parents[1] / "experiments"
    lite = pretraining.load(root / "ptm-mamba-lite.yaml")
    assert list(lite.tasks) == ["K2", "ST"] and lite.model.spec.name == "ptm_mamba"
    assert lite.train.minutes == 30 and lite.masking.always == ["ptm"]
    site = recipes.load(root / "k2-ptm-mamba.yaml")
    assert list(site.features) == ["lm"] and site.features["lm"].spec.name == "ptm_mamba"


def test_the_encoder_node_trains_only_its_last_layers_when_told(tmp_path: Path) -> None:
    from ptmkit_plugins.ptm_mamba.feature import PtmMambaEncoder

    model = _tiny()
    package = language_models.save(model, tmp_path / "lm", name="ptm_mamba")
    node = PtmMambaEncoder(PtmMambaEncoder.Config(model=str(package), train_layers=1), [1])
    before = {n: p.detach().clone() for n, p in node.named_parameters()}
    optimiser = torch.optim.AdamW([p for p in node.parameters() if p.requires_grad], lr=0.01)
    ids = torch.randint(0, 20, (4, 11, 1)).float()
    mask = torch.ones(4, 11, dtype=torch.bool)
    mask[0, 8:] = False
    node([ids], mask).pow(2).mean().backward()
    optimiser.step()
    changed = {n for n, p in node.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(
        ".forward_layers.1." in n or ".backward_layers.1." in n or ".hidden_fc.1." in n or "norm_f" in n
        for n in changed
    ), sorted(changed)
    assert not any("_layers.0." in n or "hidden_fc.0." in n or "embedding" in n for n in changed)
    out = node([ids], mask)
    assert out.shape == (4, 11, 16) and torch.all(out[0, 8:] == 0)  # padding stays zero


def test_zero_shot_scores_of_a_table_mixing_fragments_and_proteins_read_each_row_in_its_own_sequence() -> (
    None
):
    from ptmkit import zero_shot
    from ptmkit.sitetable import SiteTable

    protein = "MKSLLWAKTTAAAKWLKPE"
    base = {"label": 0, "task": "succinylation", "split": "test", "origin": "t:1"}
    fragment = {"protein_id": "frag1", "position": None, "residue": "K", "window": "--AWKLL", **base}
    whole = {"protein_id": "P1", "position": 8, "residue": "K", "window": "LLWAKTT", **base}
    model = _tiny()
    mixed = SiteTable.from_records([fragment, whole], proteins={"P1": protein})
    alone_fragment = SiteTable.from_records([fragment])
    alone_whole = SiteTable.from_records([whole], proteins={"P1": protein})
    scores, names = zero_shot.table_scores(model, mixed, "succinylation")
    assert names == ["<N6-succinyllysine>"] * 2
    assert scores[0] == pytest.approx(zero_shot.table_scores(model, alone_fragment, "succinylation")[0][0])
    assert scores[1] == pytest.approx(zero_shot.table_scores(model, alone_whole, "succinylation")[0][0])
