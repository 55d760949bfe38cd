"""``ptmkit plugins new``: the scaffolded packages install, register, pass their own tests, and work
in a recipe; bad names and existing folders are refused with a clear message.

The packages are pip-installed for real (a wheel build, as from an index) into this environment
and always uninstalled afterwards. ptmkit caches its registry per process, so the checks run
``ptmkit`` in fresh subprocesses.
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pip_helpers import build_flags, pip

from ptmkit import API_VERSION
from ptmkit.errors import PtmkitError
from ptmkit.scaffold import class_name, names, scaffold

KINDS = ("feature", "fusion", "loss")
DISTS = {kind: f"ptmkit-scaffoldcheck-{kind}" for kind in KINDS}
PLUGINS = {kind: f"scaffoldcheck_{kind}" for kind in KINDS}


def ptmkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("ptmkit")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ptmkit.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, cwd=cwd, env=dict(os.environ), timeout=300
    )


def installed(dist: str) -> bool:
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory) -> dict[str, Path]:
    """One scaffolded package per kind, made by the CLI and pip-installed; always uninstalled."""
    root = tmp_path_factory.mktemp("scaffold")
    leftovers = [d for d in DISTS.values() if installed(d)]  # from a run that was killed
    if leftovers:
        pip("uninstall", "-y", *leftovers)
    try:
        made = {}
        for kind in KINDS:
            done = ptmkit("plugins", "new", DISTS[kind], "--kind", kind, "--dir", str(root))
            assert done.returncode == 0, done.stderr
            assert f"{kind} plugin '{PLUGINS[kind]}'" in done.stdout and "pip install -e ." in done.stdout
            made[kind] = root / DISTS[kind]
        pip("install", "--no-deps", *build_flags(), *map(str, made.values()))
        yield made
    finally:
        pip("uninstall", "-y", *DISTS.values(), check=False)


@pytest.mark.slow
def test_layout(scaffolded):
    for kind, folder in scaffolded.items():
        package = DISTS[kind].replace("-", "_")
        for rel in ("pyproject.toml", "README.md", f"src/{package}/__init__.py", f"tests/test_{package}.py"):
            assert (folder / rel).is_file(), rel
        pyproject = (folder / "pyproject.toml").read_text()
        assert "[project.entry-points.ptmkit]" in pyproject
        assert f'{PLUGINS[kind]} = "{package}"' in pyproject
        code = (folder / "src" / package / "__init__.py").read_text()
        assert f"PTMKIT_API_VERSION = {API_VERSION}" in code and "NotImplementedError" not in code
        assert f'@register.{kind}("{PLUGINS[kind]}")' in code and "ptmkit_register" not in code
        assert "from ptmkit.api import" in code
        assert "from ptmkit.testing import" in (folder / "tests" / f"test_{package}.py").read_text()


@pytest.mark.slow
def test_their_own_tests_pass_against_the_installed_packages(scaffolded, tmp_path):
    tests = [str(folder / "tests") for folder in scaffolded.values()]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the package folders: the imports must come from the installed packages
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "34 passed" in done.stdout  # fusion: 22 of them from ptmkit.testing.standard_tests


@pytest.mark.slow
def test_listed_by_ptmkit_with_distribution_and_version(scaffolded):
    done = ptmkit("plugins", "list", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = {(r["kind"], r["name"]): r for r in csv.DictReader(io.StringIO(done.stdout))}
    for kind in KINDS:
        row = rows[(kind, PLUGINS[kind])]
        assert (row["distribution"], row["version"]) == (DISTS[kind], "0.1.0")
    assert "was not loaded" not in done.stderr


@pytest.mark.slow
def test_usable_together_in_a_recipe(scaffolded, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data: {source: uniptms:H1}\n"
        "features:\n"
        "  hydrophobic: {type: scaffoldcheck_feature}\n"
        "  basic: {type: scaffoldcheck_feature, residues: KRH}\n"
        "model:\n"
        "  nodes:\n"
        "    fused: {type: scaffoldcheck_fusion, inputs: [hydrophobic, basic]}\n"
        "    head: {type: mlp_head, inputs: [fused], hidden: [4]}\n"
        "losses:\n"
        "  - {type: scaffoldcheck_loss, pos_weight: 2.0}\n"
    )
    done = ptmkit("validate", str(recipe))
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout and "scaffoldcheck_fusion" in done.stdout


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "name", ["Bad_Name", "9lives", "my--plugin", "my plugin", "-x", "plugin-", "x.y", ""]
)
def test_invalid_names_are_refused(name, tmp_path):
    with pytest.raises(PtmkitError, match="invalid plugin package name"):
        scaffold(name, directory=tmp_path)
    assert not any(tmp_path.iterdir())


def test_names_that_would_shadow_or_clash_are_refused(tmp_path):
    with pytest.raises(PtmkitError, match="Python keyword"):
        scaffold("class", directory=tmp_path)
    with pytest.raises(PtmkitError, match="'numpy' is already importable"):
        scaffold("numpy", directory=tmp_path)
    with pytest.raises(PtmkitError, match="'onehot' is already registered by ptmkit"):
        scaffold("ptmkit-onehot", directory=tmp_path)
    with pytest.raises(PtmkitError, match="'concat' is already registered by ptmkit"):
        scaffold("ptmkit-concat", kind="fusion", directory=tmp_path)
    with pytest.raises(PtmkitError, match="unknown plugin kind 'backbone'"):
        scaffold("ptmkit-thing", kind="backbone", directory=tmp_path)
    assert not any(tmp_path.iterdir())


def test_name_mapping():
    assert names("ptmkit-hydrophobic") == ("ptmkit-hydrophobic", "ptmkit_hydrophobic", "hydrophobic")
    assert names("ptmkit-plugin-cksaap") == ("ptmkit-plugin-cksaap", "ptmkit_plugin_cksaap", "cksaap")
    assert names("my_features") == ("my_features", "my_features", "my_features")
    assert names("ptmkit-class")[2] == "ptmkit_class"  # a keyword is not a usable plugin name
    assert names("ptmkit-2d")[2] == "ptmkit_2d"  # nor is a name starting with a digit
    assert class_name("hydrophobic", "feature") == "HydrophobicFeature"
    assert class_name("scaffoldcheck_loss", "loss") == "ScaffoldcheckLoss"
    assert class_name("loss", "loss") == "LossLoss"  # never the base class's own name


def test_cli_refuses_existing_folder_and_bad_name_in_one_line(tmp_path):
    existing = tmp_path / "ptmkit-mine"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    done = ptmkit("plugins", "new", "ptmkit-mine", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "already exists; refusing to overwrite it" in done.stderr
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]
    done = ptmkit("plugins", "new", "My.Plugin", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "error: invalid plugin package name 'My.Plugin'" in done.stderr
    assert "Traceback" not in done.stderr
