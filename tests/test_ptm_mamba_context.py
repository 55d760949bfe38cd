"""PTM-Mamba's context branch (ESM-2 in the paper): what the context feature sees (masked and
modified residues concealed), pretraining with it, and every later use reading the same context.

The ESM-2 is a tiny random one saved with ``save_pretrained`` and read by the real ``esm2``
feature; pretraining runs for real on a synthetic corpus with a real sqlite MLflow store.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from ptmkit_plugins.features.onehot import OneHot  # noqa: E402
from ptmkit_plugins.features.plm import Esm2  # noqa: E402
from ptmkit_plugins.ptm_mamba import tokens  # noqa: E402
from ptmkit_plugins.ptm_mamba.feature import PtmMambaFeature  # noqa: E402
from ptmkit_plugins.ptm_mamba.model import PtmMamba  # noqa: E402

from ptmkit import language_models, zero_shot  # noqa: E402
from ptmkit import pretrain as pretraining  # noqa: E402
from ptmkit.cli import main  # noqa: E402
from ptmkit.errors import PtmkitError, RecipeError  # noqa: E402
from ptmkit.hooks import get_registry  # noqa: E402
from ptmkit.testing import save_tiny_esm2  # noqa: E402

AMINO = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_esm2(tmp_path_factory.mktemp("esm") / "esm2_tiny", hidden=12)


def _esm(folder: Path, cache: Path) -> Esm2:
    return Esm2(Esm2.Config(model=str(folder), progress=False, cache_dir=str(cache), device="cpu"))


def test_a_context_feature_conceals_hidden_residues_with_its_mask_token_or_x(
    esm_dir: Path, tmp_path: Path
) -> None:
    # the default (any feature): hidden residues are read as X, an unknown residue
    onehot = OneHot(OneHot.Config())
    (got,) = onehot.context(["MKSLW"], [np.array([0, 1, 0, 0, 1], dtype=bool)])
    (plain,) = onehot.context(["MXSLX"], [np.zeros(5, dtype=bool)])
    assert got.shape == (5, onehot.dim) and np.array_equal(got, plain)
    assert not got[1].any() and got[0].any()  # one-hot writes X as zeros

    # a language model writes its own mask token there, exactly what the model gives for it
    esm = _esm(esm_dir, tmp_path / "cache")
    protein = "MKSLWAKTTE"
    hide = np.zeros(len(protein), dtype=bool)
    hide[[1, 6]] = True
    (masked,) = esm.context([protein], [hide])
    model = transformers.EsmModel.from_pretrained(esm_dir, add_pooling_layer=False).eval()
    tok = transformers.AutoTokenizer.from_pretrained(esm_dir)
    ids = [tok.cls_token_id, *tok.convert_tokens_to_ids(list(protein)), tok.eos_token_id]
    for i in np.flatnonzero(hide):
        ids[1 + i] = tok.mask_token_id
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).last_hidden_state[0, 1:-1].numpy()
    assert np.allclose(masked, want.astype(np.float16).astype(np.float32), atol=1e-3)
    (unmasked,) = esm.context([protein], [np.zeros(len(protein), dtype=bool)])
    assert not np.allclose(masked, unmasked, atol=1e-3)
    # an unmasked sequence is an ordinary (cached) embedding; masked ones never enter the cache
    assert np.array_equal(unmasked, esm.embed_sequences([protein])[protein].astype(np.float32))
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def test_the_context_of_a_batch_hides_masked_and_modified_residues_and_skips_specials() -> None:
    onehot = OneHot(OneHot.Config())
    model = PtmMamba(PtmMamba.Config(d_model=8, n_layer=1, context_dim=onehot.dim))
    language_models.attach_context(model, onehot, {"type": "onehot", **onehot.config.model_dump()})
    row = [tokens.IDS["<cls>"], *tokens.encode("MK<N6-succinyllysine>S"), tokens.IDS["<mask>"]]
    row += [tokens.IDS["L"], tokens.IDS["<eos>"]]
    ids = torch.tensor(
        [row + [tokens.IDS["<pad>"]] * 2, [tokens.IDS["<cls>"], *tokens.encode("WW")] + [1] * 7]
    )
    context = language_models.context_batch(model, ids)
    assert context.shape == (2, 10, onehot.dim)
    letter = {c: torch.from_numpy(onehot.context([c], [np.zeros(1, dtype=bool)])[0][0]) for c in "MKSLW"}
    assert torch.equal(context[0, 1], letter["M"]) and torch.equal(context[0, 2], letter["K"])
    assert torch.equal(context[0, 4], letter["S"]) and torch.equal(context[0, 6], letter["L"])
    for col in (0, 3, 5, 7, 8, 9):  # <cls>, the PTM token, <mask>, <eos>, padding: nothing to read
        assert not context[0, col].any(), col
    assert torch.equal(context[1, 1], letter["W"]) and not context[1, 3:].any()
    with pytest.raises(PtmkitError, match="gives 20 features per residue; the model's context branch takes"):
        language_models.attach_context(
            PtmMamba(PtmMamba.Config(d_model=8, n_layer=1, context_dim=7)), onehot, {}
        )


def _corpus(path: Path, n: int = 40) -> None:
    rng = random.Random(1)
    lines = []
    for i in range(n):
        seq = [rng.choice(AMINO) for _ in range(rng.choice([30, 60]))]
        marked = [c + ("#" if c == "K" and j >= 2 and seq[j - 2] == "W" else "") for j, c in enumerate(seq)]
        lines += [f">sp|Q{i:05d}|P{i}", "".join(marked)]
    path.write_text("\n".join(lines) + "\n")


def _recipe(esm_dir: Path, **model: object) -> dict:
    return {
        "name": "lm-context",
        "kind": "pretrain",
        "data": {
            "source": {
                "reader": "musite_fasta",
                "name": "synthetic",
                "ptm": "succinylation",
                "residues": "K",
                "files": {"unsplit": "proteins.fasta"},
            },
            "window": 15,
            "split": {"valid": 0.2, "test": 0.2, "seed": 0, "group": "protein"},
        },
        "model": {"type": "ptm_mamba", "d_model": 16, "n_layer": 1, **model},
        "context": {"type": "esm2", "model": str(esm_dir), "progress": False, "device": "cpu"},
        "train": {
            "batch_tokens": 512,
            "max_length": 128,
            "steps": 6,
            "eval_every": 6,
            "checkpoint_every": 3,
            "log_every": 3,
            "threads": 1,
            "progress": False,
        },
        "tracking": {"uri": "sqlite:///mlflow.db", "experiment": "lm"},
    }


def test_a_pretraining_recipe_fills_or_checks_the_context_dim_at_its_line(
    esm_dir: Path, tmp_path: Path
) -> None:
    registry = get_registry()
    filled = pretraining.parse(_recipe(esm_dir), registry)
    assert filled.model.config.context_dim == 12 and filled.filled()["context"]["type"] == "esm2"
    assert filled.filled()["model"]["context_dim"] == 12
    path = tmp_path / "lm.yaml"
    wrong = _recipe(esm_dir, context_dim=1280)
    path.write_text(yaml.safe_dump(wrong, sort_keys=False))
    with pytest.raises(
        RecipeError, match=r"lm.yaml:\d+.*context_dim 1280, but the context feature esm2 gives 12"
    ):
        pretraining.load(path)
    del wrong["context"]
    path.write_text(yaml.safe_dump(wrong, sort_keys=False))
    with pytest.raises(RecipeError, match="needs the feature that feeds it: add a `context:` section"):
        pretraining.load(path)


def test_pretraining_with_an_esm2_context_and_every_later_use_reads_the_same_context(
    esm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTMKIT_CACHE", str(tmp_path / "cache"))
    _corpus(tmp_path / "proteins.fasta")
    Path("lm.yaml").write_text(yaml.safe_dump(_recipe(esm_dir), sort_keys=False))
    assert main(["pretrain", "lm.yaml", "--out", "out", "--quiet"]) == 0
    package = tmp_path / "out" / "language_model"
    meta = json.loads((package / "config.json").read_text())
    assert meta["context"]["type"] == "esm2" and meta["config"]["context_dim"] == 12

    # the package rebuilds its context: zero-shot scores read it (and differ from zeros)
    lm = language_models.load(package)
    assert isinstance(lm.context_feature, Esm2) and lm.context_spec == meta["context"]
    protein = "MKSLLWAKTTAAAKWLKPE"
    query = [zero_shot.Query(0, p, (tokens.IDS["<N6-succinyllysine>"],)) for p in (2, 8, 14)]
    with_context = zero_shot.score(lm, [protein], query)
    context = lm.context_feature
    lm.context_feature = None
    without = zero_shot.score(lm, [protein], query)
    lm.context_feature = context
    assert not np.allclose(np.concatenate(with_context), np.concatenate(without))

    # the feature: the hidden states of the unmasked protein with its (cached) ESM-2 context
    feature = PtmMambaFeature(PtmMambaFeature.Config(model=str(package), progress=False))
    emb = feature.embed_sequences([protein])[protein]
    ids, lead = lm.residue_ids(protein)
    batch = torch.tensor([ids])
    with torch.no_grad():
        hidden = lm(batch, language_models.context_batch(lm, batch))[0][0, lead : lead + len(protein)]
        bare = lm(batch)[0][0, lead : lead + len(protein)]
    assert torch.allclose(torch.from_numpy(emb.astype("float32")), hidden, atol=2e-3)
    assert not torch.allclose(hidden, bare, atol=1e-2)

    # the node takes the context as its second graph input; without it a package refuses
    site = {
        "name": "k-site",
        "data": _recipe(esm_dir)["data"],
        "features": {
            "ids": {"type": "residue_ids"},
            "esm": {"type": "esm2", "model": str(esm_dir), "progress": False, "device": "cpu"},
        },
        "model": {
            "nodes": {
                "tuned": {"type": "ptm_mamba_encoder", "inputs": ["ids", "esm"], "model": str(package)},
                "head": {"type": "mlp_head", "inputs": ["tuned"], "pool": "center", "hidden": [8]},
            }
        },
        "train": {"epochs": 1, "batch_size": 32, "threads": 1},
        "tracking": {"uri": "sqlite:///mlflow.db", "experiment": "sites"},
    }
    Path("site.yaml").write_text(yaml.safe_dump(site))
    assert main(["run", "site.yaml", "--quiet"]) == 0
    site["model"]["nodes"]["tuned"]["inputs"] = ["ids"]
    Path("site.yaml").write_text(yaml.safe_dump(site))
    assert main(["validate", "site.yaml"]) == 2
    assert "was pretrained with a context (type: esm2" in capsys.readouterr().err
