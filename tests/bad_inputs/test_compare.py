"""Run ids and ``compare`` as a new user meets them (issue 11, part "compare").

Two real runs of the quickstart recipe (1 and 2 epochs on UniPTMs H1, ~20 s together) go into a
real sqlite MLflow store once per module; runs that never finished (RUNNING, FAILED, KILLED, a
FINISHED one without a model) and two runs whose ids share 8 hex digits are made through
MLflow's client, metadata only. Every case runs the real CLI in-process and asserts the exit
code, the one-line message naming the culprit, and that nothing was written or registered.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ptmkit import metrics, mlflow_ui, tracking
from ptmkit import recipe as recipes
from ptmkit import sweep as sweeps
from ptmkit.cli import main
from ptmkit.errors import RecipeError
from ptmkit.run import run

ROOT = Path(__file__).parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
FASTA = """\
>sp|P00001|TEST1_HUMAN first protein
MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQHHKL
>P00002 second
MSDNKELHHQAKEPRLTTSSVLKGDLHKYVHGKPLSAAEVEKHMLSSDLAKRQKHHAVL
"""
SHARED = "abcdef01"  # the 8 hex digits two metadata runs have in common
QS = ("--experiment", "quickstart")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[dict[str, Any]]:
    """A real store: two real quickstart runs, then metadata-only runs in experiment 'meta'."""
    folder = tmp_path_factory.mktemp("compare-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("PTMKIT_DATA", str(data_root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracking.open_store(uri)
        client = MlflowClient(uri)
        # an experiment that exists before ptmkit runs in it: it gets the UI tags when a run starts
        client.create_experiment("quickstart", artifact_location=f"{tracking.artifact_root(uri)}/quickstart")
        real = {}
        for epochs in (1, 2):
            recipe = recipes.load(QUICKSTART, [f"train.epochs={epochs}", f"tracking.uri={uri}"])
            real[epochs] = run(recipe, data_root=data_root, progress=False, inference_repeats=1).run_id
        meta = client.create_experiment("meta", artifact_location=f"{tracking.artifact_root(uri)}/meta")
        runs = {}
        for status in ("RUNNING", "FAILED", "KILLED", "FINISHED"):
            r = client.create_run(meta, run_name=f"meta-{status.lower()}")
            runs[status] = r.info.run_id
            if status == "FAILED":
                client.set_tag(r.info.run_id, "ptmkit.error", "RuntimeError: CUDA out of memory")
            if status != "RUNNING":
                client.set_terminated(r.info.run_id, status)
        # two runs whose ids share SHARED: MLflow draws ids with uuid4, so hand it two chosen ones
        chosen = iter([uuid.UUID(SHARED + "0" * 23 + "1"), uuid.UUID(SHARED + "0" * 23 + "2")])
        real_uuid4 = uuid.uuid4
        mp.setattr(uuid, "uuid4", lambda: next(chosen, None) or real_uuid4())
        twins = [client.create_run(meta, run_name=f"twin-{i}").info.run_id for i in (1, 2)]
        mp.setattr(uuid, "uuid4", real_uuid4)
        for twin in twins:
            client.set_terminated(twin, "FINISHED")
        yield {"uri": uri, "folder": folder, "real": real, "meta": runs, "twins": twins}


def _error_line(err: str) -> str:
    """The one ``error:`` line of stderr (there must be exactly one, and it is one line)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _compare(capsys: pytest.CaptureFixture[str], uri: str, *extra: str) -> list[dict[str, str]]:
    assert main(["compare", "--uri", uri, "--format", "csv", *extra]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def _registered(uri: str) -> list[str]:
    return [m.name for m in MlflowClient(uri, registry_uri=uri).search_registered_models()]


# ---------------------------------------------------------------------------- ids round-trip
@pytest.mark.slow
def test_compare_ids_round_trip_into_predict_from_another_folder(store, capsys, tmp_path, monkeypatch):
    rows = _compare(capsys, store["uri"], *QS)
    by_id = {r["run_id"]: r for r in rows}
    assert len(rows) == 2 and all(len(i) == 8 for i in by_id)
    short = store["real"][1][:8]
    assert short in by_id and by_id[short]["status"] == "FINISHED"
    monkeypatch.chdir(tmp_path)  # no mlflow.db here or above: the store comes from the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    (tmp_path / "p.fasta").write_text(FASTA)
    assert main(["predict", short, "p.fasta", "-o", "sites.tsv", "--quiet"]) == 0
    assert "quickstart" in (tmp_path / "sites.tsv").read_text()
    assert main(["predict", f"runs:/{short}/model", "p.fasta", "-o", "again.tsv", "--quiet"]) == 0
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_full_ids_and_a_longer_prefix_is_as_good(store, capsys, tmp_path, monkeypatch):
    rows = _compare(capsys, store["uri"], "--full-ids")
    assert {store["real"][1], store["real"][2], *store["twins"]} <= {r["run_id"] for r in rows}
    assert all(len(r["run_id"]) == 32 for r in rows)
    monkeypatch.chdir(tmp_path)
    prefix = store["real"][2][:12].upper()
    code = main(["evaluate", prefix, "uniptms:H1", "--split", "test", "--uri", store["uri"]])
    assert code == 0 and "104 sites" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_lengthens_ids_that_share_eight_digits(store, capsys):
    rows = _compare(capsys, store["uri"], "--experiment", "meta")
    twins = {r["run_id"] for r in rows if r["run"].startswith("twin")}
    assert twins == {t[:32] for t in store["twins"]}  # they differ only in the last digit
    others = [r["run_id"] for r in rows if not r["run"].startswith("twin")]
    assert all(len(i) == 8 for i in others)


@pytest.mark.slow
def test_register_takes_a_prefix(store, capsys):
    assert main(["register", store["real"][1][:8], "h1-quickstart", "--uri", store["uri"]]) == 0
    assert "version 1" in capsys.readouterr().out
    assert "h1-quickstart" in _registered(store["uri"])


# ---------------------------------------------------------------------------- bad run ids
@pytest.mark.slow
@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (SHARED, rf"run id prefix {SHARED} is ambiguous in .*: 2 runs start with it: .*twin-1.*twin-2"),
        ("abcdef0", r"model 'abcdef0' is not a folder, and as a run id: .*too short \(7 hex digits\)"),
        ("0123456789abcdef0123456789abcdef0", r"has 33 hex digits; an MLflow run id has 32"),
        ("runs:/1234/model", r"runs:/1234/model: run id '1234' is too short \(4 hex digits\)"),
        ("runs:/not-hex/model", r"runs:/not-hex/model: run id 'not-hex' is not a run id: run ids are hex"),
    ],
    ids=["ambiguous", "seven-digits", "too-long", "short-in-uri", "not-hex-in-uri"],
)
def test_bad_run_ids_are_one_line(store, capsys, tmp_path, monkeypatch, ref, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.fasta").write_text(FASTA)
    assert main(["predict", ref, "p.fasta", "-o", "out.tsv", "--uri", store["uri"]]) == 2
    assert re.search(expected, _error_line(capsys.readouterr().err))
    assert not (tmp_path / "out.tsv").exists()


@pytest.mark.slow
def test_unknown_run_names_the_store_and_close_ids(store, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = store["real"][1]
    typo = real[:7] + ("0" if real[7] != "0" else "1")  # one digit off
    assert main(["register", typo, "x", "--uri", store["uri"]]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no run {typo} in {store['uri']}; closest: {real[:8]} (quickstart, FIN")
    assert "x" not in _registered(store["uri"])


# ---------------------------------------------------------------------------- runs without a model
@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("RUNNING", "is RUNNING and has no packaged model"),
        ("FAILED", "is FAILED and has no packaged model (RuntimeError: CUDA out of memory)"),
        ("KILLED", "is KILLED and has no packaged model"),
        ("FINISHED", "finished but has no packaged model (no 'model' artifact"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "evaluate", "register"])
def test_runs_without_a_model_are_refused_in_one_line(
    store, capsys, tmp_path, monkeypatch, status, expected, command
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.fasta").write_text(FASTA)
    short = store["meta"][status][:8]
    argv = {
        "predict": ["predict", short, "p.fasta", "-o", "out.tsv"],
        "evaluate": ["evaluate", short, "p.fasta"],
        "register": ["register", short, f"never-{status.lower()}"],
    }[command]
    assert main([*argv, "--uri", store["uri"]]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"error: run {short} {expected}")
    assert "Traceback" not in line and not (tmp_path / "out.tsv").exists()
    assert f"never-{status.lower()}" not in _registered(store["uri"])
    assert MlflowClient(store["uri"]).get_run(store["meta"][status]).info.status == status  # untouched


# ---------------------------------------------------------------------------- compare columns
@pytest.mark.slow
def test_compare_shows_start_time_and_what_differs(store, capsys):
    rows = _compare(capsys, store["uri"], *QS, "--params", "epochs", "--sort", "epochs")
    assert [r["train.epochs"] for r in rows] == ["1", "2"]  # text ascending
    assert [r["differs"] for r in rows] == ["train.epochs=1", "train.epochs=2"]
    started = [r["started"] for r in rows]
    assert all(len(s) == 16 and s[4] == "-" and s[13] == ":" for s in started)  # YYYY-MM-DD HH:MM


@pytest.mark.slow
def test_metric_aliases_and_sort_use_the_one_scheme(store, capsys):
    rows = _compare(capsys, store["uri"], *QS, "--metrics", "MCC,tuned_mcc,val_best/ap")
    assert {"test/mcc", "test/tuned_mcc", "val_best/ap"} <= set(rows[0])
    assert all(r["test/tuned_mcc"] for r in rows)
    rows = _compare(capsys, store["uri"], *QS, "--sort", "auc")
    aucs = [float(r["test/auc"]) for r in rows]
    assert aucs == sorted(aucs, reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--metrics", "test/mc"], "error: unknown metric 'test/mc' (did you mean test/mcc"),
        (["--metrics", "tunedmcc"], "error: unknown metric 'tunedmcc' (did you mean"),
        (["--params", "hiden"], "error: unknown param 'hiden' (did you mean model.nodes.encoder.hidden"),
        (["--params", "hidden"], "error: param 'hidden' is ambiguous: model.nodes.encoder.hidden, model."),
        (["--sort", "tuned_mc"], "error: cannot sort by 'tuned_mc' (did you mean tuned_mcc"),
        (["--experiment", "quickstrat"], "error: no experiment named quickstrat in sqlite:///"),
    ],
    ids=["metric", "metric-no-slash", "param", "param-ambiguous", "sort", "experiment"],
)
def test_unknown_names_are_errors_with_close_matches(store, capsys, extra, expected):
    assert main(["compare", "--uri", store["uri"], "--experiment", "quickstart", *extra]) == 2
    captured = capsys.readouterr()
    assert _error_line(captured.err).startswith(expected) and captured.out == ""


# ---------------------------------------------------------------------------- MLflow UI
@pytest.mark.slow
def test_experiments_open_in_the_training_view(store):
    client = MlflowClient(store["uri"])
    existing = client.get_experiment_by_name("quickstart")  # made before ptmkit ran in it
    assert existing.tags[mlflow_ui.KIND_TAG] == "custom_model_development"
    assert mlflow_ui.missing_tags(existing.tags) == {}
    new_id = tracking.setup(store["uri"], "brand-new")
    tags = client.get_experiment(new_id).tags
    assert tags[mlflow_ui.KIND_TAG] == "custom_model_development" and mlflow_ui.VIEW_TAG in tags
    client.set_experiment_tag(new_id, mlflow_ui.KIND_TAG, "genai_development")  # a user's own choice
    tracking.setup(store["uri"], "brand-new")
    assert client.get_experiment(new_id).tags[mlflow_ui.KIND_TAG] == "genai_development"


@pytest.mark.slow
def test_mlflow_ui_shows_the_runs_table_with_test_metrics(store):
    from benchmarks import ui_screenshot

    if ui_screenshot.find_browser() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    experiment = MlflowClient(store["uri"]).get_experiment_by_name("quickstart").experiment_id
    with ui_screenshot.mlflow_server(store["uri"]) as base:
        dom = ui_screenshot.dump_dom(mlflow_ui.experiment_url(base, experiment), budget_ms=8000)
    assert "ptmkit: test metrics" in dom and "test/tuned_mcc" in dom and "train/best_epoch" in dom
    assert "uniptms:H1" in dom and "Detect Issues" not in dom


# ---------------------------------------------------------------------------- sweep tables
def _row(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    report = metrics.evaluate(labels, scores, metrics.threshold_max_mcc(labels, scores))
    return {"status": "FINISHED", **{k: report[k] for k in sweeps.TABLE_METRICS}}


def test_sweep_tables_never_star_degenerate_classifiers():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(60), np.zeros(60)].astype(int)
    good = np.clip(0.35 * labels + 0.65 * rng.random(120), 0, 1)
    rows = {
        "good": _row(labels, good),
        "all-positive": _row(labels, 0.55 + 0.4 * good),  # every score >= 0.5, same ranking
        "all-negative": _row(labels, 0.45 * good),
        "constant": _row(labels, np.full(120, 0.7)),
    }
    table = sweeps.comparison(rows)
    assert table.at["all-positive", "note"] == "degenerate at 0.5: calls every site positive"
    assert table.at["all-negative", "note"] == "degenerate at 0.5: calls every site negative"
    assert table.at["constant", "note"].startswith("degenerate at 0.5: calls every site positive; degenerate")
    assert table.at["good", "note"] == ""
    marked = sweeps.highlight(table, "text")
    assert marked.at["all-positive", "sen"] == "1.000" and marked.at["all-negative", "spec"] == "1.000"
    assert marked.at["good", "sen"].endswith("*") and marked.at["good", "spec"].endswith("*")
    assert marked.at["all-positive", "auc"].endswith("*")  # AUC needs no threshold: same ranking, same AUC
    assert sweeps.best_variant(table, "sen") == "good" and sweeps.best_variant(table, "mcc") == "good"
    only_bad = sweeps.comparison({k: rows[k] for k in ("all-positive", "all-negative")})
    assert sweeps.best_variant(only_bad, "sen") is None
    assert not any(str(v).endswith("*") for v in sweeps.highlight(only_bad, "text")["sen"])


@pytest.mark.parametrize(
    ("rank_by", "column"), [("test/tuned_mcc", "tuned_mcc"), ("MCC", "mcc"), ("auc", "auc")]
)
def test_sweep_rank_by_takes_the_logged_names(tmp_path, rank_by, column):
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {QUICKSTART}\nrank_by: {rank_by}\nvariants:\n  a: {{}}\n")
    assert sweeps.load(path).rank_by == column


def test_sweep_rank_by_typo_is_refused_with_close_names(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {QUICKSTART}\nrank_by: tuned_mc\nvariants:\n  a: {{}}\n")
    with pytest.raises(RecipeError, match=r"rank_by: 'tuned_mc' is not a column of the sweep table \(did"):
        sweeps.load(path)
