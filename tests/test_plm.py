"""Language-model features on tiny random models built in tmp folders and loaded by the real loaders.

No weights are downloaded: a 2-layer ESM-2 is saved with ``save_pretrained`` (with ESM's real
33-token vocabulary), the same weights are written as a fair-esm checkpoint (+ contact-regression
file) and a 2-layer T5 encoder gets a real SentencePiece model built from a protobuf, so
``T5Tokenizer.from_pretrained`` converts it exactly as it does Rostlab's ``spiece.model``.
"""

from __future__ import annotations

import argparse
import json
import random
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
esm = pytest.importorskip("esm")

from ptmkit_plugins.backbones.esm2_encoder import FAIR_LAYER_NAMES  # noqa: E402
from ptmkit_plugins.features.plm import Ember2, Esm2, HFEncoder, PlmFeature, ProtT5  # noqa: E402
from ptmkit_plugins.features.plm_context import chunk_owner, chunk_spans, plan_segments  # noqa: E402
from ptmkit_plugins.features.plm_models import (  # noqa: E402
    ESM2_TOKENS,
    FeatureUnavailableError,
    ModelUnavailableError,
    Runner,
)

from ptmkit import embcache  # noqa: E402
from ptmkit.errors import PtmkitError  # noqa: E402
from ptmkit.hooks import build_registry  # noqa: E402
from ptmkit.sitetable import SiteTable, window_at  # noqa: E402
from ptmkit.testing import save_tiny_esm2  # noqa: E402

ESM_TOKENS = list(ESM2_TOKENS)
HIDDEN, LAYERS, HEADS = 16, 2, 2
AA = "ACDEFGHIKLMNPQRSTVWY"


def rand_seq(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(AA) for _ in range(n))


# ---------------------------------------------------------------------------------- fixtures


def _fair_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fair-esm ESM2 parameter names -> tensors, taken from a transformers EsmModel state dict."""
    from esm.model.esm2 import ESM2

    state = ESM2(num_layers=LAYERS, embed_dim=HIDDEN, attention_heads=HEADS, alphabet="ESM-1b").state_dict()
    names = {
        "embed_tokens.weight": "embeddings.word_embeddings.weight",
        "emb_layer_norm_after.weight": "encoder.emb_layer_norm_after.weight",
        "emb_layer_norm_after.bias": "encoder.emb_layer_norm_after.bias",
        "contact_head.regression.weight": "contact_head.regression.weight",
        "contact_head.regression.bias": "contact_head.regression.bias",
    }
    parts = FAIR_LAYER_NAMES  # fair-esm -> transformers, per layer part (the node's own table)
    for i in range(LAYERS):
        for fair, hfname in parts.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{fair}.{p}"] = f"encoder.layer.{i}.{hfname}.{p}"
    for fair, hfname in names.items():
        state[fair] = hf[hfname].clone()
    state["lm_head.weight"] = state["embed_tokens.weight"]  # tied, as in fair-esm
    return state


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plm_models")
    assert list(esm.data.Alphabet.from_architecture("ESM-1b").all_toks) == ESM_TOKENS
    # transformers ESM-2
    hf_dir = save_tiny_esm2(root / "esm2_tiny", hidden=HIDDEN, layers=LAYERS, heads=HEADS)
    hf_model = transformers.EsmModel.from_pretrained(hf_dir, add_pooling_layer=False).eval()
    # the same weights as a fair-esm checkpoint (its loader reads the name, cfg and this file pair)
    state = _fair_from_hf(hf_model.state_dict())
    pt = root / "fair" / "esm2_t2_tiny.pt"
    pt.parent.mkdir()
    cfg = argparse.Namespace(
        encoder_layers=LAYERS, encoder_embed_dim=HIDDEN, encoder_attention_heads=HEADS, token_dropout=True
    )
    body = {f"encoder.sentence_encoder.{k}": v for k, v in state.items() if not k.startswith("contact_head")}
    torch.save({"model": body, "cfg": {"model": cfg}}, pt)
    regression = {k: v for k, v in state.items() if k.startswith("contact_head")}
    torch.save({"model": regression}, pt.parent / "esm2_t2_tiny-contact-regression.pt")
    return {"esm": hf_dir, "fair": pt, "root": root}


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    folder = tmp_path_factory.mktemp("prott5_tiny")
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    m.trainer_spec.unk_id, m.trainer_spec.pad_id, m.trainer_spec.eos_id, m.trainer_spec.bos_id = 2, 0, 1, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    piece = pb.ModelProto.SentencePiece
    for text, kind in (("<pad>", piece.CONTROL), ("</s>", piece.CONTROL), ("<unk>", piece.UNKNOWN)):
        p = m.pieces.add()
        p.piece, p.score, p.type = text, 0.0, kind
    for i, aa in enumerate("ALGVESIKRDTPNQFYMHCWX"):  # ProtT5 has X, not U/Z/O/B
        p = m.pieces.add()
        p.piece, p.score = "\u2581" + aa, -float(i + 1)
    m.trainer_spec.vocab_size = len(m.pieces)
    (folder / "spiece.model").write_bytes(m.SerializeToString())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0})
    )
    config = transformers.T5Config(
        vocab_size=len(m.pieces),
        d_model=12,
        d_kv=6,
        d_ff=24,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(1)
    transformers.T5EncoderModel(config).save_pretrained(folder)
    return folder


def esm2(model: Path, cache: Path | None = None, **kw: object) -> Esm2:
    opts: dict[str, object] = {"model": str(model), "progress": False, "device": "cpu"}
    opts.update({"cache_dir": str(cache)} if cache else {"cache": False})
    return Esm2(Esm2.Config(**{**opts, **kw}))


def whole_protein_table(proteins: dict[str, str], sites: list[tuple[str, int]], width: int) -> SiteTable:
    return SiteTable.from_records(
        [
            {
                "protein_id": pid,
                "position": pos,
                "residue": proteins[pid][pos - 1],
                "window": window_at(proteins[pid], pos, width),
                "label": i % 2,
                "task": "t",
                "split": "train",
                "origin": f"test:{i + 1}",
            }
            for i, (pid, pos) in enumerate(sites)
        ],
        proteins,
    )


def fragment_table(*windows: str) -> SiteTable:
    return SiteTable.from_records(
        [
            {
                "protein_id": f"F{i}",
                "position": None,
                "residue": w[len(w) // 2],
                "window": w,
                "label": 0,
                "task": "t",
                "split": "train",
                "origin": f"frag:{i + 1}",
            }
            for i, w in enumerate(windows)
        ]
    )


def hf_reference(folder: Path, seq: str) -> np.ndarray:
    """Direct transformers forward of one sequence: last layer at the residues."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.EsmModel.from_pretrained(folder, add_pooling_layer=False).eval()
    ids = torch.tensor([[tok.cls_token_id, *tok.convert_tokens_to_ids(list(seq)), tok.eos_token_id]])
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state[0, 1:-1].numpy()


@contextmanager
def count_forwards(cls: type):
    """Count forward calls of modules of ``cls`` with a global forward hook."""
    calls: list[int] = []

    def hook(module: torch.nn.Module, args: object, output: object) -> None:
        if isinstance(module, cls):
            calls.append(1)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def f16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


# ----------------------------------------------------------------------------- pure context


def test_plan_segments_whole_protein_and_fragments() -> None:
    prot = {"P": "MKTAYIAKQR"}
    table = whole_protein_table(prot, [("P", 1), ("P", 5), ("P", 10)], 5)
    segs = plan_segments(table)
    assert [(s.row, s.seq, s.seq_start, s.win_start, s.length) for s in segs] == [
        (0, "MKTAYIAKQR", 0, 2, 3),
        (1, "MKTAYIAKQR", 2, 0, 5),
        (2, "MKTAYIAKQR", 7, 0, 3),
    ]
    frag = plan_segments(fragment_table("--MXK", "AC-DE"))
    # padding is never embedded; X stays; an interior gap splits the fragment
    assert [(s.row, s.seq, s.win_start, s.length) for s in frag] == [
        (0, "MXK", 2, 3),
        (1, "AC", 0, 2),
        (1, "DE", 3, 2),
    ]
    bad = whole_protein_table(prot, [("P", 5)], 5)
    bad.frame.loc[0, "window"] = "KTWYI"
    with pytest.raises(PtmkitError, match="does not match protein 'P'"):
        plan_segments(bad)


def test_chunk_spans_and_owner_rule() -> None:
    assert chunk_spans(10, 20, 5) == [(0, 10)]
    spans = chunk_spans(70, 24, 8)
    assert spans[0][0] == 0 and spans[-1][1] == 70
    assert all(b - a == 24 for a, b in spans)
    assert all(spans[i][1] - spans[i + 1][0] >= 8 for i in range(len(spans) - 1))
    owner = chunk_owner(70, spans)
    for i in range(70):
        # brute force: the owner maximises the distance to an artificial edge (ends are not edges)
        def score(span: tuple[int, int], i: int = i) -> float:
            a, b = span
            if not a <= i < b:
                return -1.0
            return min(i - a if a > 0 else np.inf, b - 1 - i if b < 70 else np.inf)

        best = max(range(len(spans)), key=lambda k: (score(spans[k]), -k))
        assert owner[i] == best
        a, b = spans[owner[i]]
        assert (a == 0 or i - a >= 4) and (b == 70 or b - 1 - i >= 4)  # >= overlap // 2 context
    with pytest.raises(ValueError):
        chunk_spans(10, 5, 5)


# ------------------------------------------------------------------------------ ESM-2 paths


def test_esm2_whole_protein_windows_are_slices(models: dict[str, Path], tmp_path: Path) -> None:
    prot = {"P1": rand_seq(40, 1), "P2": rand_seq(25, 2)}
    table = whole_protein_table(prot, [("P1", 1), ("P1", 20), ("P1", 40), ("P2", 13)], 11)
    feat = esm2(models["esm"], tmp_path)
    assert feat.dim == HIDDEN  # read from config.json, no weights loaded
    assert feat._runner is None
    out = feat.encode(table)
    assert out.shape == (4, 11, HIDDEN) and out.dtype == torch.float32
    full = {pid: hf_reference(models["esm"], s) for pid, s in prot.items()}
    for row, (pid, pos) in enumerate([("P1", 1), ("P1", 20), ("P1", 40), ("P2", 13)]):
        for j in range(11):
            idx = pos - 1 - 5 + j
            if 0 <= idx < len(prot[pid]):
                np.testing.assert_allclose(out[row, j].numpy(), full[pid][idx], atol=2e-3, rtol=1e-3)
            else:
                assert not out[row, j].any()  # padding rows are zeros


def test_fair_esm_gives_the_same_output(models: dict[str, Path], tmp_path: Path) -> None:
    prot = {"P1": rand_seq(30, 3), "P2": rand_seq(18, 4)}
    table = whole_protein_table(prot, [("P1", 3), ("P1", 28), ("P2", 9)], 9)
    for layers in ("last", [0, 1, -1]):
        hf = esm2(models["esm"], tmp_path, layers=layers)
        fair = esm2(models["fair"], tmp_path, layers=layers, backend="fair-esm")
        assert fair.dim == HIDDEN  # from the checkpoint's cfg, read lazily with mmap
        a, b = hf.encode(table), fair.encode(table)
        assert hf.cache_store().dir != fair.cache_store().dir
        torch.testing.assert_close(a, b, atol=4e-3, rtol=2e-3)


def test_fragment_embeds_only_real_residues(models: dict[str, Path]) -> None:
    feat = esm2(models["esm"])
    out = feat.encode(fragment_table("---MKXAY", "QRSTVWYA"[:8]))
    ref = hf_reference(models["esm"], "MKXAY")
    np.testing.assert_allclose(out[0, 3:].numpy(), ref, atol=2e-3, rtol=1e-3)
    assert not out[0, :3].any()
    # same residues with padding given as letters would differ: padding really is not embedded
    assert not np.allclose(out[0, 3:].numpy(), hf_reference(models["esm"], "AAAMKXAY")[3:], atol=1e-2)


def test_long_protein_chunks_are_stitched(models: dict[str, Path]) -> None:
    seq = rand_seq(70, 5)
    chunked = esm2(models["esm"], max_length=24, overlap=8, batch_tokens=60)
    got = chunked.embed_sequences([seq])[seq].astype(np.float32)
    spans = chunk_spans(70, 24, 8)
    owner = chunk_owner(70, spans)
    # the rule itself: each residue is its owning chunk's own output
    for k, (a, b) in enumerate(spans):
        ref = hf_reference(models["esm"], seq[a:b])
        mine = np.nonzero(owner == k)[0]
        np.testing.assert_allclose(got[mine], ref[mine - a], atol=2e-3, rtol=1e-3)
    # closeness to the unchunked embedding (a random attention model attends everywhere, so a
    # chunk differs everywhere a little; the stitched result must stay close)
    full = hf_reference(models["esm"], seq)
    rel = np.abs(got - full).mean() / np.abs(full).mean()
    assert rel < 0.15
    # no chunking when the protein fits
    whole = esm2(models["esm"], max_length=70, overlap=8).embed_sequences([seq])[seq]
    np.testing.assert_allclose(whole.astype(np.float32), full, atol=2e-3, rtol=1e-3)


class LocalRunner(Runner):
    """A model whose output at a residue depends on the residues within ``radius`` of it only."""

    def __init__(self, radius: int) -> None:
        self.radius, self.hidden, self.n_layers, self.model = radius, HIDDEN, 1, torch.nn.Identity()
        self.batches: list[list[str]] = []

    def embed(self, seqs: list[str]) -> list[np.ndarray]:
        self.batches.append(seqs)
        out = []
        for s in seqs:
            codes = np.array([AA.index(c) + 1 for c in s], dtype=np.float64)
            rows = []
            for i in range(len(s)):
                ctx = codes[max(0, i - self.radius) : i + self.radius + 1]
                rows.append([np.sin(ctx * (d + 1)).sum() / 4 + 0.1 * len(ctx) for d in range(HIDDEN)])
            out.append(np.array(rows, dtype=np.float32))
        return out


def test_stitching_is_exact_for_a_local_model(models: dict[str, Path]) -> None:
    seq = rand_seq(97, 6)
    runner = LocalRunner(radius=3)
    feat = esm2(models["esm"], max_length=20, overlap=6, batch_tokens=50)
    feat._runner = runner
    got = feat.embed_sequences([seq])[seq]
    np.testing.assert_array_equal(got, f16(runner.embed([seq])[0]).astype(np.float16))
    assert max(len(b) for b in runner.batches[:-1]) == 2  # batches of 50 tokens: two 20-residue chunks
    # an overlap smaller than twice the context cannot be exact
    short = esm2(models["esm"], max_length=20, overlap=2)
    short._runner = LocalRunner(radius=3)
    assert not np.array_equal(short.embed_sequences([seq])[seq], got)


# ----------------------------------------------------------------------------------- cache


def test_cache_hit_returns_identical_tensor_without_model(models: dict[str, Path], tmp_path: Path) -> None:
    prot = {"P1": rand_seq(33, 7)}
    table = whole_protein_table(prot, [("P1", 2), ("P1", 17)], 7)
    with count_forwards(transformers.EsmModel) as calls:
        first = esm2(models["esm"], tmp_path).encode(table)
    assert len(calls) == 1
    fresh = esm2(models["esm"], tmp_path)
    with count_forwards(transformers.EsmModel) as calls:
        again = fresh.encode(table)
    assert calls == [] and fresh._runner is None  # model neither run nor loaded
    assert torch.equal(first, again)
    entries = list(tmp_path.rglob("*.npy"))
    assert len(entries) == 1
    stored = np.load(entries[0], mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (33, HIDDEN)
    assert "1 entries" in embcache.cache_info(tmp_path)


def test_corrupt_cache_entry_is_recomputed_with_warning(models: dict[str, Path], tmp_path: Path) -> None:
    prot = {"P1": rand_seq(21, 8)}
    table = whole_protein_table(prot, [("P1", 11)], 5)
    first = esm2(models["esm"], tmp_path).encode(table)
    (entry,) = tmp_path.rglob("*.npy")
    raw = bytearray(entry.read_bytes())
    raw[-7] ^= 0xFF  # flip bits inside the data
    entry.write_bytes(bytes(raw))
    with (
        count_forwards(transformers.EsmModel) as calls,
        pytest.warns(embcache.CacheWarning, match="checksum"),
    ):
        again = esm2(models["esm"], tmp_path).encode(table)
    assert len(calls) == 1 and torch.equal(first, again)
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with pytest.warns(embcache.CacheWarning, match="corrupt"):
        assert torch.equal(esm2(models["esm"], tmp_path).encode(table), first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten entry is clean again
        assert torch.equal(esm2(models["esm"], tmp_path).encode(table), first)


def test_cache_info_and_clear(models: dict[str, Path], tmp_path: Path) -> None:
    seqs = [rand_seq(12, 9), rand_seq(15, 10)]
    esm2(models["esm"], tmp_path).embed_sequences(seqs)
    esm2(models["esm"], tmp_path, layers=[1]).embed_sequences(seqs[:1])
    info = embcache.cache_info(tmp_path)
    assert "2 models, 3 entries" in info and "esm2" in info
    assert embcache.cache_clear(tmp_path, model="no-such-model") == 0
    removed = embcache.cache_clear(tmp_path, model=str(models["esm"]))
    assert removed == 2 * 3 + 2  # .npy + .json per entry, model.json per model
    assert "0 models, 0 entries" in embcache.cache_info(tmp_path)
    assert embcache.cache_root(tmp_path) == tmp_path


def test_cache_cli(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ptmkit.cli import main

    esm2(models["esm"], tmp_path).embed_sequences([rand_seq(12, 11)])
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    assert "1 models, 1 entries" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 3 file(s)" in capsys.readouterr().out


# ------------------------------------------------------------------------ ProtT5 and generic


def test_prott5_tiny_encoder(t5_dir: Path, tmp_path: Path) -> None:
    feat = ProtT5(ProtT5.Config(model=str(t5_dir), cache_dir=str(tmp_path), progress=False, device="cpu"))
    assert feat.dim == 12
    seq = "MKTAYIAKQRUZ"
    out = feat.embed_sequences([seq, "MKTAYIAKQRXX"])
    np.testing.assert_array_equal(out[seq], out["MKTAYIAKQRXX"])  # U/Z -> X
    tok = transformers.T5Tokenizer.from_pretrained(t5_dir)
    model = transformers.T5EncoderModel.from_pretrained(t5_dir).eval()
    enc = tok([" ".join("MKTAYIAKQRXX")], return_tensors="pt")
    assert enc["input_ids"].shape[1] == 13  # one token per residue + </s>
    with torch.no_grad():
        ref = model(**enc).last_hidden_state[0, :-1].numpy()
    np.testing.assert_allclose(out[seq].astype(np.float32), ref, atol=2e-3, rtol=1e-3)
    table = fragment_table("--MKTAY", "AYIAKQR")
    assert feat.encode(table).shape == (2, 7, 12)


def test_hf_encoder_by_config_matches_esm2(models: dict[str, Path]) -> None:
    cfg = {"model": str(models["esm"]), "progress": False, "cache": False, "device": "cpu"}
    generic = HFEncoder(HFEncoder.Config(model_class="EsmModel", tokenizer="plain", **cfg))
    assert generic.dim == HIDDEN
    table = fragment_table("-MKTAYI", "KQRSTVW")
    torch.testing.assert_close(
        generic.encode(table), Esm2(Esm2.Config(**cfg)).encode(table), atol=2e-3, rtol=1e-3
    )
    wrong = HFEncoder(HFEncoder.Config(model_class="EsmModel", tokenizer="plain", strip_leading=0, **cfg))
    with pytest.raises(PtmkitError, match="tokenizer made 9 tokens of a 7-residue"):
        wrong.encode(table)


# ------------------------------------------------------------------------ errors and registry


def test_missing_model_gives_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "esm2_t6"
    with pytest.raises(ModelUnavailableError) as err:
        _ = esm2(missing).dim
    msg = str(err.value)
    assert str(missing) in msg and "no such folder" in msg and "Fix:" in msg and "\n" not in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    feat = Esm2(Esm2.Config(model="ptmkit-test/esm2_unknown", revision="v1", progress=False, cache=False))
    with pytest.raises(ModelUnavailableError) as err:
        feat.encode(fragment_table("MKTAY"))
    msg = str(err.value)
    for part in (
        "'ptmkit-test/esm2_unknown'",
        "revision: v1",
        "no such folder",
        "Hugging Face cache",
        "hub unreachable / offline",
        "HF_HUB_OFFLINE=1",
        "hf download ptmkit-test/esm2_unknown --revision v1",
    ):
        assert part in msg, (part, msg)
    with pytest.raises(ModelUnavailableError, match="hub unreachable / offline"):
        _ = feat.dim  # unknown hub id: the size needs its config.json
    known = Esm2(Esm2.Config(model="facebook/esm2_t6_8M_UR50D"))
    assert known.dim == 320  # known hub ids need nothing
    with pytest.raises(ModelUnavailableError, match="no such file"):
        _ = Esm2(Esm2.Config(model=str(tmp_path / "esm2_x.pt"), backend="fair-esm")).dim


def test_fair_esm_needs_the_regression_file(models: dict[str, Path], tmp_path: Path) -> None:
    lone = tmp_path / models["fair"].name
    lone.write_bytes(models["fair"].read_bytes())
    with pytest.raises(ModelUnavailableError, match="contact-regression.pt"):
        _ = Esm2(Esm2.Config(model=str(lone), backend="fair-esm")).dim


def test_ember2_is_declared_but_not_available() -> None:
    feat = Ember2(Ember2.Config())
    assert feat.dim == 128
    with pytest.raises(FeatureUnavailableError, match="EMBER2 weights and ProtT5"):
        feat.encode(fragment_table("MKTAY"))
    registry = build_registry()
    for name in ("esm2", "prott5", "hf_encoder", "ember2"):
        assert registry.get("feature", name)
    assert issubclass(Esm2, PlmFeature)


@pytest.mark.slow
def test_a_recipe_with_a_local_esm2_trains_end_to_end(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path
) -> None:
    """uniptms-plm's situation in small: a pLM feature loaded from a local folder feeds a real run."""
    from mlflow.tracking import MlflowClient

    from ptmkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTMKIT_DATA", str(data_root))
    monkeypatch.setenv("PTMKIT_HOME", str(tmp_path))  # the store is tmp_path/mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recipe = tmp_path / "esm.yaml"
    recipe.write_text(f"""\
name: h1-tiny-esm2
data: {{source: "uniptms:H1"}}
features:
  esm: {{type: esm2, model: "{models["esm"]}", cache_dir: "{tmp_path / "cache"}", progress: false}}
  onehot: {{type: onehot}}
model:
  nodes:
    x: {{type: concat, inputs: [esm, onehot]}}
    head: {{type: mlp_head, inputs: [x], pool: center, hidden: [8]}}
train: {{epochs: 1, threads: 1}}
tracking: {{experiment: plm}}
""")
    assert main(["run", str(recipe), "--quiet"]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("plm").experiment_id])
    assert run.info.status == "FINISHED" and "test/auc" in run.data.metrics
    assert "1 models" in embcache.cache_info(tmp_path / "cache")
