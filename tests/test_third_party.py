"""Third-party plugins for real: pip-installed distributions, seen through the `ptmkit` entry points.

Nothing here is mocked. The example package (examples/ptmkit-plugin-example) is pip-installed
into this environment, listed by ``ptmkit plugins list`` and used by a recipe on real data, then
uninstalled; the recipe then fails with the "is that package installed?" message. Throwaway
distributions that raise while registering, register a duplicate name or declare another plugin
API are installed into a private ``--target`` folder (put on PYTHONPATH for the subprocesses), so
their failures can never leak into other processes that use this environment meanwhile.

ptmkit caches its registry per process, so every check runs ``ptmkit`` in a fresh subprocess.
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pip_helpers import build_flags, pip

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ptmkit-plugin-example"
RECIPE = EXAMPLE / "recipes" / "h1-cksaap.yaml"
DIST = "ptmkit-plugin-example"
pytestmark = pytest.mark.slow  # every test needs a pip install (the fast lane skips them)
EXAMPLE_PLUGINS = {
    ("feature", "cksaap"),
    ("fusion", "gated_sum"),
    ("loss", "label_smoothing_bce"),
}


def pip_install(*targets: str | Path, extra: tuple[str, ...] = ()) -> None:
    pip("install", "--no-deps", "--disable-pip-version-check", *build_flags(), *extra, *map(str, targets))


def ptmkit(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the ``ptmkit`` command in a fresh process (the console script when installed)."""
    script = Path(sys.executable).with_name("ptmkit")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ptmkit.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600
    )


def listed(done: subprocess.CompletedProcess) -> dict[tuple[str, str], dict[str, str]]:
    """``ptmkit plugins list --format csv`` output as {(kind, name): row}."""
    assert done.returncode == 0, done.stderr
    return {(r["kind"], r["name"]): r for r in csv.DictReader(io.StringIO(done.stdout))}


# ---------------------------------------------------------------------------- the example package
@pytest.fixture(scope="module")
def example_installed():
    """The example package pip-installed (editable, as the guide says); always uninstalled after."""
    try:
        pip_install("-e", EXAMPLE)
        yield DIST
    finally:
        pip("uninstall", "-y", DIST, check=False)


def test_listed_with_its_distribution_and_version(example_installed):
    done = ptmkit("plugins", "list", "--format", "csv")
    rows = listed(done)
    for key in EXAMPLE_PLUGINS:
        assert key in rows, key
        assert rows[key]["distribution"] == DIST
        assert rows[key]["version"] == "0.1.0"
    assert rows[("feature", "onehot")]["distribution"] == "ptmkit"
    assert "was not loaded" not in done.stderr


def test_its_own_tests_pass(example_installed):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        cwd=EXAMPLE,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_recipe_with_its_feature_runs_on_real_data(example_installed, data_root, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = ptmkit(
        "run",
        str(RECIPE),
        "--set",
        "train.epochs=1",
        "--quiet",
        cwd=tmp_path,
        env={"PTMKIT_DATA": str(data_root), "MLFLOW_TRACKING_URI": uri},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "h1-cksaap on uniptms:H1" in done.stdout
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("plugin-example")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["features.pairs.type"] == "cksaap"
    assert run.data.params["model.nodes.fused.type"] == "gated_sum"
    assert run.data.tags["ptmkit.dataset"] == "uniptms:H1"
    assert run.data.tags["plugin.ptmkit-plugin-example"] == "0.1.0"  # provenance of third-party parts
    assert "test/mcc" in run.data.metrics


def test_after_uninstall_the_recipe_fails_with_a_clear_message(example_installed, tmp_path):
    pip("uninstall", "-y", DIST)
    rows = listed(ptmkit("plugins", "list", "--format", "csv"))
    assert not EXAMPLE_PLUGINS & set(rows)
    done = ptmkit("run", str(RECIPE), "--set", "train.epochs=1", "--quiet", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown feature plugin 'cksaap'" in done.stderr
    assert "is that package installed?" in done.stderr
    assert "requires ptmkit-plugin-example, not installed here" in done.stderr  # from `requires:`
    assert "h1-cksaap.yaml:13" in done.stderr  # the recipe line that names it
    assert "Traceback" not in done.stderr + done.stdout


# ---------------------------------------------------------------------------- broken packages
def _distribution(root: Path, dist: str, body: str, api: int = 1, source: str | None = None) -> Path:
    """A minimal plugin distribution (pyproject + one module) with ``body`` as its hook's code
    (plugin API 1 style), or with ``source`` as the whole module."""
    module = dist.replace("-", "_")
    folder = root / dist
    (folder / module).mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "0.3.1"

            [project.entry-points.ptmkit]
            plugins = "{module}"

            [tool.setuptools]
            packages = ["{module}"]
            """
        )
    )
    if source is not None:
        (folder / module / "__init__.py").write_text(textwrap.dedent(source))
        return folder
    (folder / module / "__init__.py").write_text(
        textwrap.dedent(
            f"""\
            import torch

            from ptmkit.hooks import hookimpl
            from ptmkit.plugin_api import Feature

            PTMKIT_API_VERSION = {api}


            class Ones(Feature):
                \"\"\"A constant feature.\"\"\"

                dim = 1

                def encode(self, table):
                    return torch.ones(len(table), table.width, 1)


            @hookimpl
            def ptmkit_register(registry):
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return folder


#: A plugin API 2 package: the class is marked by decorator, no hook, an old name kept as alias.
DECORATED = """\
    import torch

    from ptmkit.api import Feature, register

    PTMKIT_API_VERSION = 2


    @register.feature("tp_decorated", aliases=("tp_old_name",))
    class Ones(Feature):
        \"\"\"A constant feature, registered by decorator.\"\"\"

        dim = 1

        def encode(self, table):
            return torch.ones(len(table), table.width, 1)
    """


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    """Five throwaway distributions pip-installed into a private folder (for PYTHONPATH)."""
    root = tmp_path_factory.mktemp("dists")
    dists = [
        _distribution(root, "ptmkit-test-good", 'registry.feature("tp_good", Ones)\n'),
        _distribution(
            root,
            "ptmkit-test-raising",
            'registry.feature("tp_raising", Ones)\nraise RuntimeError("boom in a third-party hook")\n',
        ),
        _distribution(
            root,
            "ptmkit-test-duplicate",
            'registry.feature("tp_duplicate", Ones)\nregistry.feature("onehot", Ones)\n',
        ),
        _distribution(root, "ptmkit-test-futureapi", 'registry.feature("tp_future", Ones)\n', api=3),
        _distribution(root, "ptmkit-test-decorated", "", source=DECORATED),
    ]
    site = root / "site"
    pip_install(*dists, extra=("--target", str(site)))
    assert {d.name for d in md.distributions(path=[str(site)])} >= {f.name for f in dists}
    return site


def test_broken_packages_are_reported_by_distribution_and_spare_the_others(broken_site):
    done = ptmkit("plugins", "list", "--format", "csv", env={"PYTHONPATH": str(broken_site)})
    rows = listed(done)
    # built-ins and the good third-party package are all there
    assert rows[("feature", "onehot")]["distribution"] == "ptmkit"
    assert rows[("backbone", "bilstm")]["distribution"] == "ptmkit"
    assert rows[("feature", "tp_good")]["distribution"] == "ptmkit-test-good"
    assert rows[("feature", "tp_good")]["version"] == "0.3.1"
    # a failing package's registrations are rolled back, not half-registered
    for name in ("tp_raising", "tp_duplicate", "tp_future"):
        assert ("feature", name) not in rows
    err = done.stderr
    assert (
        "plugin package 'ptmkit-test-raising' was not loaded: registration failed: "
        "boom in a third-party hook" in err
    )
    assert (
        "plugin package 'ptmkit-test-duplicate' was not loaded: registration failed: duplicate feature "
        "plugin 'onehot': registered by ptmkit 0.1.0 (as feature) and by ptmkit-test-duplicate 0.3.1"
    ) in err
    assert (
        "plugin package 'ptmkit-test-futureapi' was not loaded: built for ptmkit plugin API 3, "
        "but this ptmkit provides API 2 (and still loads API 1); upgrade the plugin package or ptmkit"
    ) in err
    assert "ptmkit-test-good" not in err
    # plugin API 2 style: registered by decorator, the old name listed as an alias
    decorated = rows[("feature", "tp_decorated")]
    assert (decorated["distribution"], decorated["aliases"]) == ("ptmkit-test-decorated", "tp_old_name")
    assert "ptmkit-test-decorated" not in err


def test_an_old_plugin_name_in_a_recipe_still_works_with_a_warning(broken_site, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data: {source: uniptms:H1}\n"
        "features: {x: {type: tp_old_name}}\n"
        "model: {nodes: {head: {type: mlp_head, inputs: [x]}}}\n"
    )
    done = ptmkit("validate", str(recipe), env={"PYTHONPATH": str(broken_site)})
    assert done.returncode == 0, done.stderr
    assert "feature plugin 'tp_old_name' is deprecated, renamed to 'tp_decorated'" in done.stderr


def test_a_recipe_naming_a_broken_packages_plugin_says_which_failed(broken_site, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data: {source: uniptms:H1}\n"
        "features: {x: {type: tp_raising}}\n"
        "model: {nodes: {head: {type: mlp_head, inputs: [x]}}}\n"
    )
    done = ptmkit("validate", str(recipe), env={"PYTHONPATH": str(broken_site)})
    assert done.returncode == 2
    assert "unknown feature plugin 'tp_raising'" in done.stderr
    failed = done.stderr.split("some plugin packages failed to load: ", 1)[1]
    assert "ptmkit-test-raising" in failed
    assert "Traceback" not in done.stderr
