"""Hostile YAML (alias bombs, recursion, nesting) and output paths that must never be destroyed.

Every YAML a user hands ptmkit — recipe, ``--set`` value, sweep, suite, packaged recipe,
``--option`` — goes through ptmkit.safeyaml; every file a command writes through
ptmkit.outputs. The special-file cases use device nodes and FIFOs made inside tmp_path (never
the system's /dev/null), so a regression cannot damage the machine running the tests.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ptmkit import outputs, safeyaml
from ptmkit import recipe as recipes
from ptmkit.cli import main
from ptmkit.errors import PtmkitError

ROOT = Path(__file__).parents[2]

RECIPE = """\
name: tiny
data: {source: uniptms:H1, split: {valid: 0.1, seed: 0}}
features: {onehot: {type: onehot}}
model:
  nodes:
    encoder: {type: bilstm, inputs: [onehot], hidden: 4}
    head: {type: mlp_head, inputs: [encoder], pool: center, hidden: [4]}
train: {epochs: 1, threads: 1}
"""


def bomb(levels: int = 10, key: str = "lol") -> str:
    """The classic ~1 KB 'billion laughs': each anchor aliases the previous one 9 times."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    lines.append(f"{key}: [{', '.join([f'*a{levels - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _one_line_error(capsys: pytest.CaptureFixture[str], culprit: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert culprit in err, err
    return err


# ---------------------------------------------------------------------------- YAML bombs
@pytest.mark.parametrize(
    "text",
    [
        RECIPE + bomb(key="requires"),
        bomb(key="name") + "data: {source: uniptms:H1}\n",
        RECIPE + bomb(key="train"),
    ],
    ids=["requires", "name", "train"],
)
def test_alias_bomb_in_a_recipe_fails_fast_with_one_line(tmp_path, capsys, text):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    started = time.perf_counter()
    assert main(["validate", str(path)]) == 2
    assert time.perf_counter() - started < 30  # the old location pass never returned
    err = _one_line_error(capsys, str(path))
    assert "alias" in err


def test_alias_bomb_is_refused_by_the_loader_quickly():
    started = time.perf_counter()
    with pytest.raises(safeyaml.YamlTooLarge, match="expands to"):
        safeyaml.load(bomb(), "bomb.yaml")
    assert time.perf_counter() - started < 5


def test_alias_bomb_through_run_in_a_subprocess_exits_2(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(RECIPE + bomb(key="requires"))
    proc = subprocess.run(
        [sys.executable, "-m", "ptmkit.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "alias bomb" in proc.stderr
    assert not (tmp_path / "m.db").exists()  # refused before any store was touched


def test_alias_bomb_in_a_set_value(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    flow = "{" + ", ".join(bomb().splitlines()) + "}"
    assert main(["validate", str(path), "--set", f"tracking.tags={flow}"]) == 2
    _one_line_error(capsys, "--set tracking.tags")


def test_alias_bomb_in_a_sweep_file(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(RECIPE)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: base.yaml\n" + bomb(key="variants"))
    assert main(["sweep", str(sweep), "--dry-run"]) == 2
    _one_line_error(capsys, str(sweep))


def test_alias_bomb_in_a_suite_file(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.suite import load_suite
    finally:
        sys.path.remove(str(ROOT))
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\n" + bomb(key="recipes"))
    with pytest.raises(PtmkitError, match="alias bomb"):
        load_suite(path)


def test_recursive_alias_is_refused_with_its_line(tmp_path, capsys):
    path = tmp_path / "rec.yaml"
    path.write_text(RECIPE + "requires: &r [ptmkit, *r]\n")
    assert main(["validate", str(path)]) == 2
    err = _one_line_error(capsys, f"{path}:{RECIPE.count(chr(10)) + 1}")
    assert "recursive" in err


def test_deeply_nested_yaml_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text(RECIPE + "requires: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["validate", str(path)]) == 2
    _one_line_error(capsys, "nested too deeply")


def test_small_anchors_and_aliases_still_work(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PTMKIT_DATA", str(data_root))
    path = tmp_path / "anchors.yaml"
    text = RECIPE.replace("hidden: 4}", "hidden: &h 4}", 1).replace("hidden: [4]", "hidden: [*h]")
    path.write_text(text)
    recipe = recipes.load(path)
    assert recipe.nodes["head"].config.hidden == [4]


def test_alias_bomb_in_a_packaged_recipe(tmp_path, capsys, package):
    """A package whose recipe.yaml was replaced by a bomb (and its sha updated to match)."""
    bad = tmp_path / "bad-package"
    import shutil

    shutil.copytree(package, bad)
    (bad / "recipe.yaml").write_text(RECIPE + bomb(key="requires"))
    meta = json.loads((bad / "model.json").read_text())
    from ptmkit.package import sha256

    meta["files"]["recipe.yaml"] = sha256(bad / "recipe.yaml")
    (bad / "model.json").write_text(json.dumps(meta))
    fasta = tmp_path / "p.fasta"
    fasta.write_text(">p\nMKHHHHAAAAHHHHKKKKAAAAHHHHAAAAKKKKHHHHAAAAHHHH\n")
    started = time.perf_counter()
    assert main(["predict", str(bad), str(fasta), "-o", str(tmp_path / "out.tsv")]) == 2
    assert time.perf_counter() - started < 30
    _one_line_error(capsys, "alias bomb")


# ---------------------------------------------------------------------------- outputs
FASTA = ">sp|P1|ONE\n" + "MKHAAAHKKLLHAAGHHEEKAHAALLHKKAAGHEEHAAKLH" + "\n>P2\n" + "AH" * 30 + "\n"


def _predict(package: Path, fasta: Path, out: str | Path, *extra: str) -> int:
    return main(["predict", str(package), str(fasta), "-o", str(out), "--quiet", *extra])


def test_predict_to_a_character_device_writes_through_it(tmp_path, package):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
    fasta = tmp_path / "p.fasta"
    fasta.write_text(FASTA)
    assert _predict(package, fasta, device) == 0
    assert stat.S_ISCHR(os.stat(device).st_mode)  # still a device, not replaced by a file
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.partial"))
    assert not (tmp_path / "null.json").exists()  # no sidecar beside a special file


def test_predict_to_a_fifo_streams_into_it(tmp_path, package):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    fasta = tmp_path / "p.fasta"
    fasta.write_text(FASTA)
    assert _predict(package, fasta, fifo) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    rows = [line for line in got[0].splitlines() if not line.startswith("#")]
    assert rows[0].startswith("protein_id\t")
    assert {r.split("\t")[0] for r in rows[1:]} == {"P1", "P2"}


def test_predict_to_an_existing_directory_is_refused_before_loading(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    # the model does not even exist: the output is checked first, before any work
    assert main(["predict", str(tmp_path / "no-model"), str(tmp_path / "no.fasta"), "-o", str(out)]) == 2
    _one_line_error(capsys, f"{out} is a directory")
    assert (out / "keep.txt").read_text() == "old"


def test_predict_output_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["predict", "m", "f.fasta", "-o", str(tmp_path / "afile" / "out.tsv")]) == 2
    _one_line_error(capsys, "is a file, not a folder")


def test_predict_plot_dir_that_is_a_file_is_refused(tmp_path, capsys, package):
    (tmp_path / "plots").write_text("x")
    fasta = tmp_path / "p.fasta"
    fasta.write_text(FASTA)
    assert _predict(package, fasta, tmp_path / "o.tsv", "--plot", str(tmp_path / "plots")) == 2
    _one_line_error(capsys, "--plot")
    assert not (tmp_path / "o.tsv").exists()


def test_evaluate_json_to_a_directory_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["evaluate", "no-model", "uniptms:H1", "--json", str(tmp_path / "d")]) == 2
    _one_line_error(capsys, "--json")


def test_predict_keeps_the_old_output_when_the_scan_fails(tmp_path, package, capsys):
    out = tmp_path / "sites.tsv"
    out.write_text("previous results\n")
    bad = tmp_path / "bad.fasta"
    bad.write_bytes(b">p\nMKH\xff\xfeAAAH\n")  # undecodable mid-file: the scan fails
    assert _predict(package, bad, out) != 0
    capsys.readouterr()
    assert out.read_text() == "previous results\n"
    assert not list(tmp_path.glob(".*.partial"))


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only): writes past it fail with ENOSPC."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    cmd = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_names_the_path_and_keeps_the_old_file(tiny_fs, tmp_path, package, capsys):
    out = tiny_fs / "sites.tsv"
    out.write_text("previous results\n")
    fasta = tmp_path / "big.fasta"
    fasta.write_text("".join(f">P{i}\n{'MKHAAHKKLLHAAGHHEEKAHAALLHKKAAGHEEH' * 4}\n" for i in range(400)))
    assert _predict(package, fasta, out) == 2
    err = _one_line_error(capsys, f"disk full while writing {out}")
    assert "unchanged" in err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["sites.tsv"]  # no partial file left


def test_disk_full_on_a_special_file_names_it(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(PtmkitError, match="disk full while writing /dev/full"):
        outputs.write_text("/dev/full", "x" * 100_000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_read_only_folder_is_refused_up_front(tmp_path, package, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: a read-only mount is the honest test
        cmd = ["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(ro)]
        done = subprocess.run(cmd, capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro.chmod(0o555)
    try:
        fasta = tmp_path / "p.fasta"
        fasta.write_text(FASTA)
        assert _predict(package, fasta, ro / "out.tsv") == 2
        _one_line_error(capsys, str(ro))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)


def test_atomic_open_leaves_no_partial_on_failure(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), outputs.atomic_open(target) as fh:
        fh.write("new half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_plugins_new_into_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["plugins", "new", "ptmkit-hydro", "--dir", str(tmp_path / "f")]) == 2
    _one_line_error(capsys, "is a file, not a folder")


def test_plugins_new_on_a_full_disk_leaves_no_half_package(tiny_fs, capsys):
    (tiny_fs / "filler").write_bytes(b"x" * (60 * 1024))  # leave ~4 KiB: the scaffold needs more
    assert main(["plugins", "new", "ptmkit-hydro", "--dir", str(tiny_fs)]) == 2
    _one_line_error(capsys, "disk full while writing")
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler"]


def test_data_fetch_onto_a_full_disk_says_disk_full_not_download_failed(tiny_fs, data_root, capsys):
    url = (data_root / "uniptms").as_uri() + "/"
    assert main(["data", "fetch", "uniptms:C1", "--data-root", str(tiny_fs), "--base-url", url]) == 2
    err = _one_line_error(capsys, "disk full while writing")
    assert "could not download" not in err
    leftovers = [p.name for p in tiny_fs.rglob("*") if p.is_file()]
    assert not [n for n in leftovers if n.endswith(".part")], leftovers


def test_evaluate_option_typo_lists_the_readers_keys(tmp_path, package, capsys):
    marked = tmp_path / "marked.fasta"
    marked.write_text(">P1\nMKHAAAH#KKLLHAAGHHEEKAHAALLHKKAAGHEEHAAKLH\n")
    assert main(["evaluate", str(package), str(marked), "--option", "windw=33", "--quiet"]) == 2
    err = _one_line_error(capsys, "--option windw")
    assert "valid:" in err


def test_a_link_to_a_regular_file_replaces_the_target_and_keeps_the_link(tmp_path):
    real = tmp_path / "real.tsv"
    real.write_text("old")
    link = tmp_path / "link.tsv"
    link.symlink_to(real)
    outputs.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tsv", "real.tsv"]


def test_predict_through_a_proc_fd_link_writes_in_place(tmp_path, package):
    """``-o /dev/stdout`` is a link to /proc/self/fd/1: written through, never renamed over."""
    read_end, write_end = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{write_end}")
    got: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_end, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    fasta = tmp_path / "p.fasta"
    fasta.write_text(FASTA)
    try:
        assert _predict(package, fasta, link) == 0
    finally:
        os.close(write_end)
    reader.join(timeout=30)
    assert link.is_symlink()
    assert b"protein_id\t" in got[0]
    assert not (tmp_path / "stdout.json").exists()  # no sidecar beside a stream


def test_two_writers_of_one_path_never_share_a_partial_file(tmp_path):
    target = tmp_path / "t.txt"
    with outputs.atomic_open(target) as first, outputs.atomic_open(target) as second:
        first.write("first " * 1000)
        second.write("second")
    assert target.read_text() == "first " * 1000  # the last to finish wins, whole
    assert list(tmp_path.iterdir()) == [target]


def test_a_new_output_gets_the_usual_permissions(tmp_path):
    outputs.write_text(tmp_path / "n.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "n.txt").st_mode) == 0o666 & ~umask
