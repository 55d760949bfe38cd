"""Screenshot the MLflow UI on a real ptmkit run, as a new user opens it (headless Chromium).

Run from the repository root (``PTMKIT_DATA`` or ``../shared/data`` must hold ``uniptms/``)::

    python -m benchmarks.ui_screenshot                       # train a tiny run, write docs/img/mlflow-ui.png
    python -m benchmarks.ui_screenshot --plain -o /tmp/plain.png   # the bare experiment link, for contrast
    python -m benchmarks.ui_screenshot --store sqlite:///path/mlflow.db --experiment quickstart

Without ``--store`` it trains the quickstart recipe for two epochs on UniPTMs H1 (about 15 s on
2 cores) into a fresh sqlite store in a temporary folder, so the picture shows exactly one real
run. It then starts a real ``mlflow server`` on 127.0.0.1 (a free port) for that store, opens the
experiment with the link ``ptmkit.mlflow_ui.experiment_url`` builds (model-training view,
ptmkit's saved view of the runs table) in headless Chromium, and saves the page as a PNG.
``--plain`` opens ``#/experiments/<id>`` instead: what clicking the experiment in a fresh
browser shows. Needs ``chromium`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "img" / "mlflow-ui.png"
#: Milliseconds of page time Chromium grants the single-page app to fetch and draw the runs.
BUDGET_MS = 12000
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH, else None (callers skip or say so)."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def tiny_run(folder: Path, epochs: int = 2) -> tuple[str, str]:
    """Train the quickstart recipe for ``epochs`` into ``folder/mlflow.db``; (store URI, run id)."""
    from ptmkit import recipe as recipes
    from ptmkit.datasets import resolve_data_root
    from ptmkit.run import run

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    recipe = recipes.load(
        ROOT / "experiments" / "quickstart.yaml", [f"train.epochs={epochs}", f"tracking.uri={uri}"]
    )
    summary = run(recipe, data_root=resolve_data_root(None), progress=False, inference_repeats=1)
    return uri, summary.run_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(uri: str, timeout: float = 90.0) -> Iterator[str]:
    """A real ``mlflow server`` for ``uri`` on 127.0.0.1 (as ``ptmkit ui`` starts it); yields its base URL."""
    from ptmkit.tracking import artifact_root

    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    root = artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_healthy(base, proc, log, timeout)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(base: str, proc: subprocess.Popen, log: Any, timeout: float) -> None:
    """Poll ``/health`` until the server answers; its log tail in the error when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"mlflow server did not come up on {base}:\n{tail}") from None
            time.sleep(0.5)


def _browser_cmd(browser: str, profile: Path, budget_ms: int, size: tuple[int, int]) -> list[str]:
    return [
        browser,
        "--headless=new",
        "--no-sandbox",  # root in containers; the page is our own local server
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",  # a fresh profile: no remembered GenAI / ML switch
        f"--window-size={size[0]},{size[1]}",
        f"--virtual-time-budget={budget_ms}",
    ]


def screenshot(
    url: str, out: Path, *, budget_ms: int = BUDGET_MS, size: tuple[int, int] = (1920, 1000)
) -> Path:
    """Save ``url`` as rendered by headless Chromium (fresh profile) to ``out``."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ptmkit-chromium-") as profile:
        partial = Path(profile) / "shot.png"
        cmd = [*_browser_cmd(browser, Path(profile), budget_ms, size), f"--screenshot={partial}", url]
        subprocess.run(cmd, capture_output=True, timeout=budget_ms / 1000 + 90, check=True)
        shutil.copyfile(partial, out)
    return out


def dump_dom(url: str, *, budget_ms: int = BUDGET_MS, size: tuple[int, int] = (1920, 1000)) -> str:
    """The page's DOM after ``budget_ms`` of page time (what the test asserts on)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="ptmkit-chromium-") as profile:
        cmd = [*_browser_cmd(browser, Path(profile), budget_ms, size), "--dump-dom", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 90, check=True)
    return proc.stdout


def experiment_id(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(name)
    if found is None:
        raise SystemExit(f"no experiment {name!r} in {uri}")
    return str(found.experiment_id)


def main(argv: list[str] | None = None) -> int:
    from ptmkit import mlflow_ui

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "-o", "--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})"
    )
    p.add_argument("--store", help="an existing store URI instead of a fresh tiny run")
    p.add_argument("--experiment", default="quickstart", help="experiment to open (default quickstart)")
    p.add_argument("--plain", action="store_true", help="open the bare #/experiments/<id> link instead")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the tiny run (default 2)")
    args = p.parse_args(argv)
    if find_browser() is None:
        print("no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ptmkit-ui-") as tmp:
        uri = args.store
        if uri is None:
            uri, run_id = tiny_run(Path(tmp), args.epochs)
            print(f"trained run {run_id} into {uri}")
        exp = experiment_id(uri, args.experiment)
        with mlflow_server(uri) as base:
            url = f"{base}/#/experiments/{exp}" if args.plain else mlflow_ui.experiment_url(base, exp)
            screenshot(url, args.out)
    print(f"{url} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
