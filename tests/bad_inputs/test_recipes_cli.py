"""Bad recipes, ``--set`` values, command-line arguments and damaged packages: each is refused
with exit code 2 and one line naming the culprit (file:line of the key to fix, or the option and
its valid range), before any work starts and without touching existing outputs.

Also the first-hour promises of the command line: ``ptmkit --version``, ``python -m ptmkit``,
help text on every option, and the small-validation warning with the extra threshold rules.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptmkit import __version__, metrics
from ptmkit.cli import main, parser
from ptmkit.errors import PtmkitError
from ptmkit.evaluate import check_reader_options
from ptmkit.model_store import load_model
from ptmkit.package import META, WEIGHTS, sha256

ROOT = Path(__file__).parents[2]

RECIPE = """\
name: tiny
data:
  source: uniptms:H1
  split: {valid: 0.1, seed: 0}
features:
  onehot: {type: onehot}
  blosum62: {type: blosum62}
model:
  nodes:
    fused: {type: concat, inputs: [onehot, blosum62]}
    encoder: {type: bilstm, inputs: [fused], hidden: 4}
    head: {type: mlp_head, inputs: [encoder], pool: center, hidden: [4]}
train: {epochs: 1, threads: 1}
"""
# line numbers in RECIPE: 2 data, 5 features, 9 model.nodes, 10 fused, 11 encoder, 12 head, 13 train


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def _edit(old: str, new: str) -> str:
    assert old in RECIPE
    return RECIPE.replace(old, new, 1)


# ---------------------------------------------------------------------------- recipe files
RECIPE_CASES = {
    # name: (recipe text or bytes, expected fragments of the one error line; {f} = the file)
    "latin1-byte": (
        RECIPE.replace("name: tiny", "name: tiny\n# données de test").encode("latin-1"),
        ["{f}:2:", "0xe9", "UTF-8"],
    ),
    "even-window": (_edit("data:\n", "data:\n  window: 32\n"), ["{f}:3: data.window", "odd", "got 32"]),
    "zero-window": (_edit("data:\n", "data:\n  window: 0\n"), ["{f}:3: data.window", "odd", "got 0"]),
    "graph-cycle": (
        _edit("inputs: [fused]", "inputs: [head]"),
        ["{f}:12:", "cycle encoder -> head -> encoder"],
    ),
    "missing-input": (
        _edit("inputs: [fused]", "inputs: [fusd]"),
        ["{f}:11: model.nodes.encoder.inputs[0]", "'fusd' is neither a feature nor a node", "'fused'"],
    ),
    "unknown-node-output": (
        _edit("inputs: [encoder]", "inputs: [encoder.states]"),
        ["{f}:12: model.nodes.head.inputs[0]", "'encoder' has no output 'states'"],
    ),
    "output-not-a-node": (
        _edit("train:", "  output: haed\ntrain:"),
        ["{f}:13: model.output", "'haed' is not a node"],
    ),
    "unused-node": (
        _edit("    fused:", "    spare: {type: bilstm, inputs: [onehot], hidden: 2}\n    fused:").replace(
            "train:", "  output: head\ntrain:"
        ),
        ["{f}:10:", "'spare' do not feed the output node 'head'"],
    ),
    "too-many-inputs": (
        _edit("inputs: [encoder]", "inputs: [encoder, fused]"),
        ["{f}:12: model.nodes.head.inputs", "takes exactly 1 input(s), got 2"],
    ),
    "extends-missing-file": (
        "extends: no-such-base.yaml\nname: child\n",
        ["{f}:1: extends", "no-such-base.yaml"],
    ),
    "extends-not-a-path": ("extends: [a, b]\nname: child\n", ["{f}:1: extends", "expected a file path"]),
}


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_recipe_names_file_and_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, fragments = RECIPE_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["validate", str(path)]) == 2
    line = _one_error_line(capsys)
    for fragment in fragments:
        assert fragment.format(f=path) in line, line


def test_extends_cycle_points_at_the_extends_that_closes_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("# the base\nextends: a.yaml\nname: b\n")
    assert main(["validate", str(tmp_path / "a.yaml")]) == 2
    line = _one_error_line(capsys)
    assert f"{tmp_path / 'b.yaml'}:2: extends" in line and "a.yaml -> b.yaml -> a.yaml" in line


SET_CASES = {
    "even-window": ("data.window=20", ["--set data.window=20: data.window", "odd", "got 20"]),
    "missing-input": (
        "model.nodes.encoder.inputs=[fusd]",
        ["--set model.nodes.encoder.inputs=[fusd]: model.nodes.encoder.inputs[0]", "Did you mean 'fused'"],
    ),
    "cycle": (
        "model.nodes.fused.inputs=[head]",
        ["--set model.nodes.fused.inputs=[head]: model.nodes: cycle fused -> head -> encoder -> fused"],
    ),
}


@pytest.mark.parametrize("case", list(SET_CASES))
def test_bad_set_value_is_named(case: str, tmp_path: Path, capsys) -> None:
    item, fragments = SET_CASES[case]
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE)
    assert main(["validate", str(path), "--set", item]) == 2
    line = _one_error_line(capsys)
    for fragment in fragments:
        assert fragment in line, line


def test_valid_recipe_still_validates(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE)
    assert main(["validate", str(path)]) == 0
    assert "valid (recipe hash" in capsys.readouterr().out


# ---------------------------------------------------------------------------- command-line arguments
ARG_CASES = {
    # argv after the subcommand, option named, valid range in the message
    "batch-size-0": (["predict", "M", "in.fa", "-o", "out.tsv", "--batch-size", "0"], "--batch-size", ">= 1"),
    "threads-negative": (["predict", "M", "in.fa", "-o", "out.tsv", "--threads", "-1"], "--threads", ">= 1"),
    "threads-0": (["predict", "M", "in.fa", "-o", "out.tsv", "--threads", "0"], "--threads", ">= 1"),
    "threshold-2": (["predict", "M", "in.fa", "-o", "out.tsv", "--threshold", "2"], "--threshold", "[0, 1]"),
    "threshold-nan": (
        ["predict", "M", "in.fa", "-o", "out.tsv", "--threshold", "nan"],
        "--threshold",
        "[0, 1]",
    ),
    "plot-max-negative": (
        ["predict", "M", "in.fa", "-o", "out.tsv", "--plot-max", "-1"],
        "--plot-max",
        ">= 0",
    ),
    "port-0": (["ui", "--port", "0"], "--port", "[1, 65535]"),
    "port-70000": (["ui", "--port", "70000"], "--port", "[1, 65535]"),
    "limit-0": (["compare", "--limit", "0"], "--limit", ">= 1"),
    "evaluate-threads-text": (["evaluate", "M", "x.fa", "--threads", "many"], "--threads", ">= 1"),
}


@pytest.mark.parametrize("case", list(ARG_CASES))
def test_out_of_range_arguments_are_refused_up_front(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    argv, option, valid = ARG_CASES[case]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    line = _one_error_line(capsys)
    assert f"argument {option}: must be" in line and valid in line and f"(got '{argv[-1]}')" in line
    assert list(tmp_path.iterdir()) == []  # nothing written, no store created


def test_reader_option_typo_lists_the_valid_keys() -> None:
    with pytest.raises(PtmkitError) as info:
        check_reader_options("musite_fasta", {"windw": 33})
    message = str(info.value)
    assert "--option windw=...: reader 'musite_fasta' has no option 'windw'" in message
    assert "Did you mean 'window'?" in message and "valid: " in message and "on_bad_site" in message
    check_reader_options("csv_sites", {"delimiter": ";", "ptm": "x"})  # real keys pass


def test_version_names_ptmkit_torch_and_mlflow(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"ptmkit {__version__} (torch ") and "mlflow " in out and "python " in out


def test_python_dash_m_ptmkit_is_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ptmkit", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout.startswith(f"ptmkit {__version__}")
    bad = subprocess.run(
        [sys.executable, "-m", "ptmkit", "compare", "--limit", "-3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--limit" in bad.stderr


OPTIONAL = ("transformers", "esm", "sentencepiece", "pytest", "ruff")


def test_default_install_is_lean_and_imports_nothing_optional(tmp_path: Path) -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"]).lower()
    assert not [
        name for name in ("transformers", "fair-esm", "sentencepiece", "pytest", "ruff") if name in required
    ]
    assert "transformers" in " ".join(project["optional-dependencies"]["plm"])
    code = (
        "import sys; from ptmkit.cli import main; import ptmkit.run, ptmkit.predict; "
        f"main(['validate', {str(ROOT / 'experiments/quickstart.yaml')!r}]); "
        f"print('loaded:', [m for m in {OPTIONAL!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def _walk(p: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{path} {name}", argparse.Action([], name, help=helped.get(name))))
                found += _walk(sub, f"{path} {name}")
        else:
            found.append((f"{path} {'/'.join(action.option_strings) or action.dest}", action))
    return found


def test_every_option_of_every_subcommand_has_help() -> None:
    actions = _walk(parser(), "ptmkit")
    assert len(actions) > 80  # the walk reaches the nested subcommands
    missing = [where for where, action in actions if not action.help or not str(action.help).strip()]
    assert missing == []


# ---------------------------------------------------------------------------- damaged packages
def _truncate(b: bytes) -> bytes:
    return b[: len(b) // 2]


def _flip_middle_byte(b: bytes) -> bytes:
    i = len(b) // 2
    return b[:i] + bytes([b[i] ^ 0xFF]) + b[i + 1 :]


DAMAGE = {
    "truncated": (_truncate, "truncated or damaged zip archive"),
    "empty": (lambda b: b"", "the file is empty"),
    "crc-mismatch": (_flip_middle_byte, "fails its CRC check"),
    "not-torch": (lambda b: b"plain text, not a torch file\n" * 4, "not a torch.save file"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_corrupt_weights_with_a_rewritten_sha_read_as_corrupt(
    case: str, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    damage, why = DAMAGE[case]
    copy = tmp_path / case
    shutil.copytree(package, copy)
    weights = copy / WEIGHTS
    weights.write_bytes(damage(weights.read_bytes()))
    meta = json.loads((copy / META).read_text())
    meta["files"][WEIGHTS] = sha256(weights)  # the checksum passes: only loading can tell
    (copy / META).write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.fa").write_text(">P1\nMKHAAHLLKHGG\n")
    (tmp_path / "old.tsv").write_text("previous results\n")
    assert main(["predict", str(copy), "in.fa", "-o", "old.tsv", "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert f"corrupt weights file {weights}: " in line and why in line and "run code" not in line
    assert (tmp_path / "old.tsv").read_text() == "previous results\n"


class _Payload:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("payload ran",))


def test_pickled_objects_keep_the_security_wording(package: Path, tmp_path: Path) -> None:
    copy = tmp_path / "evil"
    shutil.copytree(package, copy)
    torch.save(_Payload(), copy / WEIGHTS)
    meta = json.loads((copy / META).read_text())
    meta["files"][WEIGHTS] = sha256(copy / WEIGHTS)
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(PtmkitError, match="could run code") as info:
        load_model(copy)
    assert "corrupt" not in str(info.value)
    assert load_model(package).window == 37  # the pristine package still loads


# ---------------------------------------------------------------------------- thresholds
def test_threshold_rules_are_deterministic_and_sensible() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = 1 / (1 + np.exp(-(2 * labels - 1 + rng.normal(0, 1, 2000))))
    best = metrics.at_threshold(labels, scores, metrics.threshold_max_mcc(labels, scores))["mcc"]
    for name in ("val_mcc_bootstrap", "val_mcc_smooth"):
        rule = metrics.THRESHOLD_RULES[name]
        cut = rule(labels, scores)
        assert cut == rule(labels, scores) and 0 < cut < 1
        assert metrics.at_threshold(labels, scores, cut)["mcc"] > best - 0.02  # a large set: same answer
        assert rule(np.zeros(5, int), np.linspace(0, 1, 5)) == 0.5  # one class: the fixed cut-off


@pytest.mark.parametrize(
    ("pos", "neg", "warns"), [(52, 51, True), (20, 400, True), (150, 150, False), (30, 170, False)]
)
def test_small_validation_note(pos: int, neg: int, warns: bool) -> None:
    note = metrics.small_validation_note(pos, neg)
    assert (note is not None) == warns
    if note:
        assert f"{pos} positive, {neg} negative" in note and "noisy" in note


@pytest.mark.slow
def test_run_warns_on_a_small_validation_split_and_logs_every_rule(workdir: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    (workdir / "tiny.yaml").write_text(RECIPE.replace("tiny", "h1-small-valid", 1))
    store = f"sqlite:///{workdir / 'store.db'}"
    assert main(["run", "tiny.yaml", "--quiet", "--set", f"tracking.uri={store}"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "validation split is small" in line]
    assert warning and warning[0].startswith("warning: ") and "52 positive, 51 negative" in warning[0]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("ptmkit").experiment_id])
    for rule in metrics.THRESHOLD_RULES:
        assert f"threshold/{rule}" in run.data.metrics
    (workdir / "in.fa").write_text(">P1\n" + "MKHAAHLLKHGGHHSTPERW" * 3 + "\n")
    model = run.info.run_id
    assert (
        main(["predict", model, "in.fa", "-o", "out.tsv", "--rule", "val_mcc_bootstrap", "--uri", store]) == 0
    )
    table = (workdir / "out.tsv").read_text()
    assert "rule=val_mcc_bootstrap" in table and "\nP1\t" in table
    capsys.readouterr()
    assert main(["evaluate", model, "uniptms:H1", "--split", "test", "--uri", store, "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "val_mcc_smooth threshold" in shown and "val_mcc_bootstrap threshold" in shown


def test_threshold_rule_names_have_one_source():
    """The rules ``ptmkit run`` computes are the ones the CLI and packages name (ptmkit.thresholds)."""
    from ptmkit import thresholds

    assert set(metrics.THRESHOLD_RULES) == set(thresholds.VALIDATION_RULES)
    assert (*thresholds.VALIDATION_RULES, thresholds.FIXED_RULE) == thresholds.RULES
    assert thresholds.RULES[0] == thresholds.DEFAULT_RULE  # predict's default comes first in --help
    labels, scores = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    chosen = thresholds.choose_all(labels, scores)
    assert list(chosen) == list(metrics.THRESHOLD_RULES)
    assert chosen[thresholds.RUN_RULE] == metrics.threshold_max_mcc(labels, scores)
