"""Packaged models, whole-protein prediction, evaluation and the registry, on real runs.

Two small models are trained once for the module in a real sqlite MLflow store: a K2
succinylation model (whole proteins, window 33, one epoch of a hidden-8 BiLSTM, ~20 s) and an H1
N-phosphorylation model (the quickstart for one epoch). No mocks: the CLI, the store, the
registry and the data under ``data_root`` are the real ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ptmkit import metrics, runids
from ptmkit.cli import main
from ptmkit.errors import PtmkitError
from ptmkit.evaluate import evaluate_model
from ptmkit.featurize import encode_all, padding_mask
from ptmkit.inference import Encoded, infer
from ptmkit.model_store import load_model
from ptmkit.package import (
    META,
    WEIGHTS,
    load_feature_state,
    package_root,
    save_feature_state,
    sha256,
)
from ptmkit.plugin_api import Feature, PluginConfig
from ptmkit.predict import predict_file, predict_frame
from ptmkit.sitetable import SiteTable, window_at

ROOT = Path(__file__).parents[1]

K2_RECIPE = """\
name: k2-tiny
data:
  source: uniptms:K2
  window: 33
  split: {valid: 0.1, seed: 0}
features:
  onehot: {type: onehot}
  blosum62: {type: blosum62}
model:
  nodes:
    fused: {type: concat, inputs: [onehot, blosum62]}
    encoder: {type: bilstm, inputs: [fused], hidden: 8}
    head: {type: mlp_head, inputs: [encoder], pool: center, hidden: [8]}
losses:
  - {type: bce}
train: {epochs: 1, batch_size: 256, lr: 0.005, patience: 1, seed: 0, threads: 1}
tracking: {experiment: predict-tests}
"""

# Hand-written proteins: UniProt header with wrapped lowercase lines, MusiteDeep '#' marks,
# a K2-style '#pos' header. Every one is at least 37 residues (the H1 model's window).
SMALL = """\
>sp|P00001|TEST1_HUMAN first protein
MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ
fevvhslakwkrqtlgqhdfsagegly
>P00002 second, MusiteDeep marks
MSDNK#ELHHQAKEPRLTTSSVLK#GDLHKYVHGKPLSAAEVEKHMLSSDLAKRQK#
>sp|P00003|\t#6\t#20\t
MAAHHKLLGSGAPQVEKAAKDEHIKLSQEGGAKHVVTQAWRTPLEK
"""


def _proteins(text: str) -> dict[str, tuple[str, list[int]]]:
    """id -> (sequence, marked positions) for SMALL, parsed independently of ptmkit."""
    out: dict[str, tuple[str, list[int]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(">"):
            head = line[1:].split()[0]
            current = head.split("|")[1] if head.startswith("sp|") else head
            marks = [int(t[1:]) for t in line.split() if t.startswith("#")]
            out[current] = ("", marks)
        else:
            seq, marks = out[current]
            out[current] = (seq + line.strip().upper(), marks)
    final = {}
    for pid, (seq, marks) in out.items():
        if "#" in seq:
            clean, marks = "", []
            for ch in seq:
                if ch == "#":
                    marks.append(len(clean))
                else:
                    clean += ch
            seq = clean
        final[pid] = (seq, marks)
    return final


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", comment="#", dtype={"protein_id": str})


def _comments(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


@pytest.fixture(scope="module")
def env(tmp_path_factory, data_root):
    """A working dir with a sqlite store holding the two trained runs."""
    work = tmp_path_factory.mktemp("predict")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("PTMKIT_DATA", str(data_root))
    mp.setenv("PTMKIT_HOME", str(work))  # the store is work/mlflow.db
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    (work / "k2-tiny.yaml").write_text(K2_RECIPE)
    assert main(["run", "k2-tiny.yaml", "--quiet"]) == 0
    quick = [
        "run",
        str(ROOT / "experiments/quickstart.yaml"),
        "--quiet",
        "--set",
        "train.epochs=1",
        "--set",
        "train.threads=1",
        "--set",
        "model.nodes.encoder.hidden=8",
        "--set",
        "tracking.experiment=predict-tests",
    ]
    assert main(quick) == 0
    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("predict-tests")
    runs = {r.data.tags["ptmkit.dataset"]: r for r in client.search_runs([exp.experiment_id])}
    (work / "small.fasta").write_text(SMALL)
    yield {"dir": work, "store": store, "k2": runs["uniptms:K2"], "h1": runs["uniptms:H1"], "root": data_root}
    mp.undo()


def _training_path_scores(model, sequence: str, positions: list[int]) -> np.ndarray:
    """Scores of the same windows computed the way `ptmkit run` scores its test split."""
    rows = [
        {
            "protein_id": "p",
            "position": p,
            "residue": sequence[p - 1],
            "window": window_at(sequence, p, model.window),
            "label": 0,
            "task": "t",
            "split": "test",
            "origin": "x",
        }
        for p in positions
    ]
    table = SiteTable.from_records(rows, proteins={"p": sequence})
    encoded = Encoded(encode_all(model.features, table), padding_mask(table), torch.zeros(len(rows)))
    return infer(model.model, encoded, device="cpu").scores


# ---------------------------------------------------------------------------- the must-show check
@pytest.mark.slow
def test_whole_protein_predict_and_evaluate_match_the_runs_test_evaluation(env, capsys):
    """K2's test proteins: `evaluate` gives the run's test metrics, `predict` the run's scores."""
    run = env["k2"]
    rid = run.info.run_id
    assert main(["evaluate", rid, "uniptms:K2", "--split", "test", "--json", "cat.json", "--quiet"]) == 0
    fasta = env["root"] / "uniptms/K2/test_sequence.txt"
    assert main(["evaluate", f"runs:/{rid}/model", str(fasta), "--json", "file.json", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reader protein_sites" in out and "3231 sites (254 positive, 2977 negative) in 124 proteins" in out
    logged = run.data.metrics
    for name in ("cat.json", "file.json"):
        result = json.loads(Path(name).read_text())
        assert result["counts"] == {"sites": 3231, "positive": 254, "negative": 2977, "proteins": 124}
        for key in metrics.evaluate(np.array([0, 1]), np.array([0.1, 0.9]), 0.5):
            assert result["metrics"][key] == pytest.approx(logged[f"test/{key}"], abs=1e-12), key

    assert main(["predict", rid, str(fasta), "-o", "k2.tsv", "--known-sites", "--quiet"]) == 0
    sites = _read_tsv(Path("k2.tsv"))
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=rid, artifact_path="predictions", tracking_uri=env["store"]
        )
    )
    test = pd.read_csv(local / "test_predictions.csv", dtype={"protein_id": str})
    merged = test.merge(
        sites, on=["protein_id", "position"], how="outer", indicator=True, suffixes=("_run", "")
    )
    assert (merged["_merge"] == "both").all() and len(merged) == 3231
    assert np.abs(merged["score_run"] - merged["score"]).max() < 1e-6  # 6 decimals written
    assert (merged["known"] == merged["label"]).all()


# ---------------------------------------------------------------------------- output table
@pytest.mark.slow
def test_small_fasta_row_by_row(env, capsys):
    rid = env["k2"].info.run_id
    assert main(["predict", rid, "small.fasta", "-o", "small.tsv", "--known-sites", "--quiet"]) == 0
    capsys.readouterr()
    sites = _read_tsv(Path("small.tsv"))
    assert list(sites.columns) == [
        "protein_id",
        "position",
        "residue",
        "ptm_type",
        "score",
        "call",
        "model",
        "known",
    ]
    model = load_model(rid)
    threshold = model.threshold("val_spec95")
    expected = _proteins(SMALL)
    assert list(dict.fromkeys(sites["protein_id"])) == list(expected)  # input order
    for pid, (seq, marks) in expected.items():
        rows = sites[sites["protein_id"] == pid]
        positions = [i + 1 for i, c in enumerate(seq) if c == "K"]
        assert rows["position"].tolist() == positions  # every K once, 1-based, in order
        assert all(seq[p - 1] == r for p, r in zip(rows["position"], rows["residue"], strict=True))
        assert set(rows["ptm_type"]) == {"succinylation"} and set(rows["model"]) == {"k2-tiny"}
        reference = _training_path_scores(model, seq, positions)
        np.testing.assert_allclose(rows["score"], reference, atol=1e-6)
        assert rows["call"].tolist() == (reference >= threshold).astype(int).tolist()
        assert sorted(rows.loc[rows["known"] == 1, "position"]) == sorted(marks)
    meta = json.loads(Path("small.tsv.json").read_text())
    assert meta["proteins"] == {
        "read": 3,
        "scanned": 3,
        "skipped": {},
        "without_candidates": 0,
        "not_scanned_by_model": {},
    }
    assert meta["sites"] == {"k2-tiny": len(sites)} and meta["known_sites"]["marked"] == 5


@pytest.mark.slow
def test_threshold_rules(env, capsys):
    rid = env["k2"].info.run_id
    model = load_model(rid)
    cases = [
        (["--rule", "0.5"], "0.5", 0.5),
        (["--rule", "val_max_mcc"], "val_max_mcc", model.thresholds["val_max_mcc"]),
        ([], "val_spec95", model.thresholds["val_spec95"]),  # the default rule
        (["--threshold", "0.12"], "user", 0.12),
    ]
    for extra, rule, value in cases:
        assert main(["predict", rid, "small.fasta", "-o", "t.tsv", "--quiet", *extra]) == 0
        assert f"rule={rule}, threshold={value:.6f}" in _comments(Path("t.tsv"))[0]
        assert f"called at {rule} threshold {value:.4f}" in capsys.readouterr().out
        info = json.loads(Path("t.tsv.json").read_text())["models"][0]
        assert info["rule"] == rule and info["threshold"] == pytest.approx(value)
        sites = _read_tsv(Path("t.tsv"))
        clear = (sites["score"] - value).abs() > 1e-6  # rows not on the rounding edge
        assert (sites.loc[clear, "call"] == (sites.loc[clear, "score"] >= value)).all()
    with pytest.raises(SystemExit):  # argparse: --threshold not allowed with --rule
        main(["predict", rid, "small.fasta", "-o", "t.tsv", "--rule", "0.5", "--threshold", "0.2"])
    assert "not allowed with argument --rule" in capsys.readouterr().err


@pytest.mark.slow
def test_multi_model_pass_shares_features_and_keeps_rows_per_model(env, capsys):
    k_id, h_id = env["k2"].info.run_id, env["h1"].info.run_id
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{k_id}/model", dst_path="k2-local"))
    assert main(["predict", k_id, h_id, str(folder), "small.fasta", "-o", "multi.tsv", "--quiet"]) == 0
    assert main(["predict", k_id, "small.fasta", "-o", "k.tsv", "--quiet"]) == 0
    assert main(["predict", h_id, "small.fasta", "-o", "h.tsv", "--quiet"]) == 0
    capsys.readouterr()
    multi, k_only, h_only = (_read_tsv(Path(p)) for p in ("multi.tsv", "k.tsv", "h.tsv"))
    assert set(multi["model"]) == {"k2-tiny-1", "quickstart", "k2-tiny-3"}
    assert len(_comments(Path("multi.tsv"))) == 4  # one line per model + the column note
    for label, single in (("k2-tiny-1", k_only), ("k2-tiny-3", k_only), ("quickstart", h_only)):
        rows = multi[multi["model"] == label].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            rows.drop(columns="model"), single.drop(columns="model"), check_exact=False, atol=1e-6
        )
    assert set(multi.loc[multi["model"] == "quickstart", "residue"]) == {"H"}
    assert set(multi.loc[multi["model"] == "quickstart", "ptm_type"]) == {"N-phosphorylation"}
    # grouped by protein (input order), then by model (command-line order), then by position
    order = {"k2-tiny-1": 0, "quickstart": 1, "k2-tiny-3": 2}
    proteins = multi["protein_id"].map({"P00001": 0, "P00002": 1, "P00003": 2})
    key = list(zip(proteins, multi["model"].map(order), strict=True))
    assert key == sorted(key)
    encodings = json.loads(Path("multi.tsv.json").read_text())["feature_encodings"]
    assert encodings["computed"] == 5 and encodings["shared"] == 2  # the 2nd K model reuses both features


@pytest.mark.slow
def test_bad_proteins_are_reported_with_file_and_line(env, capsys):
    k_id, h_id = env["k2"].info.run_id, env["h1"].info.run_id
    good = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"
    fasta = Path("bad.fasta")
    fasta.write_text(
        f">good\n{good}\n"  # line 1
        ">empty\n"  # line 3
        f">nonstd\n{good[:20]}\n{good[20:30]}X{good[30:]}\n"  # line 4, X on line 6
        ">short\nMKKLLAK\n"  # line 7
        f">good\n{good}\n"  # line 9: duplicate id
        f">between\n{good[:35]}\n"  # line 11: 35 aa: K model (33) yes, H model (37) no
        f">stop\n{good}*\n"  # line 13
    )
    with pytest.warns(UserWarning) as caught:
        assert main(["predict", k_id, h_id, str(fasta), "-o", "bad.tsv", "--quiet"]) == 0
    messages = [str(w.message) for w in caught]
    expect = {
        f"{fasta}:3: protein 'empty' skipped: the record has no sequence",
        f"{fasta}:7: protein 'short' skipped: length 7 is shorter than every model's window ([33, 37])",
        f"{fasta}:9: protein 'good' skipped: id already read at {fasta}:1",
        f"{fasta}:11: protein 'between' not scanned by model quickstart: length 35 is shorter than its "
        "window 37",
        f"{fasta}:13: protein 'stop' skipped: letter '*' at residue {len(good) + 1} (line 14) is not an "
        "amino acid; valid are the 20 standard amino acids ACDEFGHIKLMNPQRSTVWY and non-standard BZJUOX",
    }
    for message in expect:
        assert any(m.startswith(message) for m in messages), (message, messages)
    assert not any("'nonstd'" in m for m in messages)  # an X is scanned, as the protein readers keep it
    out = capsys.readouterr().out
    assert "scanned 3 of 7 proteins" in out
    assert "skipped 4 protein(s): " in out and "1 letter outside the protein alphabet" in out
    assert "1 empty sequence" in out
    assert "1 shorter than the window" in out and "1 duplicate protein id" in out
    assert "not scanned by some models (shorter than their window): 1 by quickstart" in out
    sites = _read_tsv(Path("bad.tsv"))
    assert set(sites["protein_id"]) == {"good", "nonstd", "between"}
    nonstd = sites[sites["protein_id"] == "nonstd"]
    assert set(nonstd["model"]) == {"k2-tiny", "quickstart"} and nonstd["score"].between(0, 1).all()
    assert set(sites.loc[sites["protein_id"] == "between", "model"]) == {"k2-tiny"}
    meta = json.loads(Path("bad.tsv.json").read_text())
    assert meta["proteins"]["skipped"] == {"invalid-letter": 1, "empty": 1, "too-short": 1, "duplicate": 1}
    assert {s["origin"] for s in meta["skipped"]} == {f"{fasta}:{n}" for n in (3, 7, 9, 11, 13)}


def _by_site(frame: pd.DataFrame, column: str) -> dict[tuple[str, int], float]:
    """(protein, position) -> value of ``column``."""
    keys = zip(frame["protein_id"], frame["position"].astype(int), strict=True)
    return dict(zip(keys, frame[column].astype(float), strict=True))


@pytest.mark.slow
def test_predict_and_evaluate_score_the_same_sites_of_a_protein_with_an_x(env):
    """One '#'-marked FASTA (proteins holding X, U and B): `evaluate` (through the protein reader)
    and `predict` give the same (protein, position) set and the same scores."""
    body = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"
    with_x = f"{body[:20]}X{body[20:30]}K#{body[30:]}"
    fasta = Path("marked-x.fasta")
    fasta.write_text(
        f">sp|P10001|WITH_X\n{with_x}\n>P10002 with U and B\nMAK#LLUK{body}BKK#\n>P10003\n{body}K#\n"
    )
    model = load_model(env["k2"].info.run_id)
    evaluation = evaluate_model(model, str(fasta), reader="musite_fasta", data_root=env["root"])
    table = evaluation.table.frame.assign(score=evaluation.scores)
    evaluated = _by_site(table, "score")
    assert set(table["protein_id"]) == {"P10001", "P10002", "P10003"} and table["label"].sum() == 4

    summary = predict_file([model], fasta, Path("marked-x.tsv"), known_sites=True, progress=False)
    assert summary.proteins_scanned == 3 and not summary.skipped
    sites = _read_tsv(Path("marked-x.tsv"))
    predicted = _by_site(sites, "score")
    assert set(predicted) == set(evaluated)
    assert max(abs(predicted[k] - evaluated[k]) for k in evaluated) < 1e-6  # the TSV has 6 decimals
    assert _by_site(sites, "known") == _by_site(table, "label")  # '#' marks read alike

    frame = predict_frame([model], pd.DataFrame({"protein_id": ["P10001"], "sequence": [with_x]}))
    assert _by_site(frame, "score") == {k: v for k, v in evaluated.items() if k[0] == "P10001"}  # same floats


@pytest.mark.slow
def test_plots_are_capped(env, capsys):
    k_id, h_id = env["k2"].info.run_id, env["h1"].info.run_id
    args = [
        "predict",
        k_id,
        h_id,
        "small.fasta",
        "-o",
        "p.tsv",
        "--plot",
        "plots",
        "--plot-max",
        "2",
        "--quiet",
    ]
    assert main(args) == 0
    assert "plotted 2 of 3 scanned protein(s) (at most 2: --plot-max)" in capsys.readouterr().out
    pngs = sorted(Path("plots").glob("*.png"))
    assert [p.name for p in pngs] == ["0001_P00001.png", "0002_P00002.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)


# ---------------------------------------------------------------------------- loading
@pytest.mark.slow
def test_loading_by_run_id_alias_and_folder_gives_one_model(env, capsys):
    rid = env["k2"].info.run_id
    assert main(["register", rid, "k2-succ", "--alias", "production"]) == 0
    assert "load it as models:/k2-succ@production" in capsys.readouterr().out
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model", dst_path="k2-copy"))
    registry_copy = Path(
        mlflow.artifacts.download_artifacts("models:/k2-succ@production", dst_path="k2-registry")
    )
    refs = [
        rid,
        rid[:8],  # a unique prefix
        f"runs:/{rid}/model",
        f"runs:/{rid[:8]}/model",
        "models:/k2-succ@production",
        str(folder),
        str(registry_copy),
    ]
    proteins = pd.DataFrame({"protein_id": ["a", "b"], "sequence": [SMALL.split("\n")[1], "MAKK" * 12]})
    frames = [predict_frame([load_model(ref)], proteins) for ref in refs]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    assert len(frames[0]) == SMALL.split("\n")[1].count("K") + 24
    model = load_model("models:/k2-succ@production")
    assert model.meta["run_id"] == rid and model.window == 33 and model.residues == "K"
    # the run stores the package once, inside its pyfunc model: both copies are that layout
    for copy in (folder, registry_copy):
        assert (copy / "MLmodel").is_file() and not (copy / META).exists()
        assert (package_root(copy) / META).is_file() and not list(copy.rglob("*.pkl"))
    with pytest.raises(PtmkitError, match="neither a folder, a run id"):
        load_model("no-such-model")
    with pytest.raises(PtmkitError, match="cannot load model models:/k2-succ@staging"):
        load_model("models:/k2-succ@staging")


@pytest.mark.slow
def test_each_run_stores_its_weights_once(env):
    """The package lives only inside the run's pyfunc logged model: one weights.pt per run in the
    store's artifact folders on disk (run artifacts and logged models together)."""
    client = MlflowClient(env["store"])
    experiment = client.get_experiment_by_name("predict-tests")
    location = experiment.artifact_location
    root = Path(urlparse(location).path) if location.startswith("file:") else Path(location)
    stored = sorted(root.rglob(WEIGHTS))
    runs = {env["k2"].info.run_id, env["h1"].info.run_id}
    assert len(stored) == len(runs), stored
    assert {json.loads((p.parent / META).read_text())["run_id"] for p in stored} == runs
    for rid in runs:
        assert runids.require_model(env["store"], rid) is None  # the logged model counts as the run's
        assert not any(a.path == "model" for a in client.list_artifacts(rid))  # no plain copy


@pytest.mark.slow
def test_loader_refuses_tampered_or_missing_weights(env, capsys):
    rid = env["k2"].info.run_id
    pristine = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model", dst_path="pristine"))

    def copy(name: str) -> Path:
        target = Path(name)
        shutil.copytree(pristine, target)
        return target

    tampered = copy("tampered")
    state = torch.load(package_root(tampered) / WEIGHTS, weights_only=True)
    next(iter(state.values())).add_(0.01)
    torch.save(state, package_root(tampered) / WEIGHTS)
    with pytest.raises(PtmkitError, match="weights.pt does not match the sha256 recorded in model.json"):
        load_model(tampered)

    missing = copy("missing")
    (package_root(missing) / WEIGHTS).unlink()
    with pytest.raises(PtmkitError, match="weights file .* is missing"):
        load_model(missing)

    # a feature that encodes differently now (plugin version bumped) is refused; a changed key
    # formula alone (same class, version and config) is not
    for name, edit, fails in (
        ("bumped", {"version": "0", "cache_key": "0123456789abcdef"}, True),
        ("reformulated", {"cache_key": "0123456789abcdef"}, False),
    ):
        changed = copy(name)
        meta = json.loads((package_root(changed) / META).read_text())
        meta["features"]["onehot"].update(edit)
        (package_root(changed) / META).write_text(json.dumps(meta))
        if fails:
            with pytest.raises(PtmkitError, match="feature 'onehot' encodes differently in this install"):
                load_model(changed)
        else:
            assert load_model(changed).window == 33

    # a pickle payload with a matching checksum: torch.load(weights_only=True) never runs it
    evil = copy("evil")
    marker = Path("payload-ran")
    torch.save(_Payload(str(marker)), package_root(evil) / WEIGHTS)
    meta = json.loads((package_root(evil) / META).read_text())
    meta["files"][WEIGHTS] = sha256(package_root(evil) / WEIGHTS)
    (package_root(evil) / META).write_text(json.dumps(meta))
    with pytest.raises(
        PtmkitError, match=r"not a plain state dict loadable with torch.load\(weights_only=True\)"
    ):
        load_model(evil)
    assert not marker.exists()
    assert main(["predict", str(evil), "small.fasta", "-o", "x.tsv", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: model evil: weights.pt is not a plain state dict" in err and "Traceback" not in err
    assert "unpickling them could run code" in err


class _Payload:
    """Unpickling this would create a file (what a malicious 'model' would do, harmlessly)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_mlflow_pyfunc_flavour_serves_the_same_table(env):
    """For trusted sources: mlflow.pyfunc.load_model runs the package's entry point."""
    rid = env["k2"].info.run_id
    mlflow.set_tracking_uri(env["store"])
    served = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    proteins = pd.DataFrame({"protein_id": ["x"], "sequence": ["MAKK" * 12]})
    got = served.predict(proteins, params={"rule": "val_max_mcc"})
    want = predict_frame([load_model(rid)], proteins, rule="val_max_mcc")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)


def test_models_logged_by_older_ptmkit_still_serve(env, tmp_path):
    """Their entry point imports ``ptmkit.packaging.PtmkitPyfunc``: the shim serves the class."""
    from ptmkit import serving
    from ptmkit.package import PYFUNC_KEY

    rid = env["k2"].info.run_id
    copy = mlflow.artifacts.download_artifacts(
        f"runs:/{rid}/model", dst_path=str(tmp_path / "m"), tracking_uri=env["store"]
    )
    code = tmp_path / "ptmkit_pyfunc.py"
    old = "from ptmkit.packaging import PtmkitPyfunc"
    code.write_text(serving.ENTRY_POINT.replace("from ptmkit.serving import PtmkitPyfunc", old))
    assert old in code.read_text()
    mlflow.set_tracking_uri(env["store"])
    mlflow.set_experiment("legacy-entry-point")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), artifacts={PYFUNC_KEY: str(package_root(Path(copy)))}
        )
    proteins = pd.DataFrame({"protein_id": ["x"], "sequence": ["MAKK" * 12]})
    got = mlflow.pyfunc.load_model(info.model_uri).predict(proteins)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), predict_frame([load_model(rid)], proteins))


# ---------------------------------------------------------------------------- fitted feature state
class _Centred(Feature):
    """A stateful feature: learns a per-dimension mean in fit (stored as JSON + npz)."""

    class Config(PluginConfig):
        pass

    dim = 2

    def fit(self, train: SiteTable) -> None:
        self.mean = np.array([0.25, 0.5])
        self.count = len(train)

    def export_state(self) -> dict:
        return {"mean": self.mean, "count": self.count}

    def import_state(self, state: dict) -> None:
        self.mean, self.count = state["mean"], state["count"]

    def encode(self, table: SiteTable) -> torch.Tensor:
        return torch.zeros(len(table), table.width, 2) + torch.from_numpy(self.mean).float()


def test_feature_state_round_trips_without_pickle(tmp_path):
    feature = _Centred(_Centred.Config())
    feature.fit(SiteTable.from_records([]))
    entry = save_feature_state("centred", feature, tmp_path / "features")
    assert entry == {"json": "features/centred.json", "npz": "features/centred.npz"}
    assert json.loads((tmp_path / entry["json"]).read_text()) == {"count": 0}
    fresh = _Centred(_Centred.Config())
    load_feature_state("centred", fresh, entry, tmp_path)
    np.testing.assert_array_equal(fresh.mean, [0.25, 0.5])

    assert save_feature_state("u", _UnsavedFit(_UnsavedFit.Config()), tmp_path) == {"unsaved": True}
    with pytest.raises(PtmkitError, match="learned state in fit\\(\\) but its plugin has no export_state"):
        load_feature_state("u", _UnsavedFit(_UnsavedFit.Config()), {"unsaved": True}, tmp_path)


class _UnsavedFit(Feature):
    class Config(PluginConfig):
        pass

    dim = 1

    def fit(self, train: SiteTable) -> None:
        self.learned = 1.0

    def encode(self, table: SiteTable) -> torch.Tensor:
        return torch.zeros(len(table), table.width, 1)


# ---------------------------------------------------------------------------- one input path
def test_marks_and_windows_have_one_parser_and_one_cutter(tmp_path):
    """ptmkit.fasta parses records and '#' marks, sitetable.windows_at cuts windows, for the protein
    readers and predict alike; a '#' after no residue is named by its sequence index."""
    from ptmkit.fasta import MisplacedMark, iter_records, parse_marks
    from ptmkit.sitetable import windows_at

    assert parse_marks("MKS#LLK#") == ("MKSLLK", [3, 6])
    assert parse_marks("MKS") == ("MKS", [])
    for bad, index in (("#MK", 1), ("MK##L", 4)):
        with pytest.raises(MisplacedMark, match=f"'#' at sequence index {index} follows no residue"):
            parse_marks(bad)
    assert windows_at("MKSLLK", [1, 3, 6], 5) == ["--MKS", "MKSLL", "LLK--"]
    assert window_at("MK", 2, 5) == "-MK--"
    with pytest.raises(ValueError, match=r"position 7 lies outside the sequence \(1..6\)"):
        windows_at("MKSLLK", [2, 7], 5)
    fasta = tmp_path / "x.fa"
    fasta.write_text("\n>p1 desc\r\nMKS#\n  ll  \n>p2\n\n>p3\nA\n")
    records = list(iter_records(fasta))
    assert [(r.header, r.line, r.parts) for r in records] == [
        ("p1 desc", 2, [(3, "MKS#"), (4, "ll")]),
        ("p2", 5, []),
        ("p3", 7, [(8, "A")]),
    ]
    assert records[0].seq_line == 3 and records[0].text() == "MKS#ll"
