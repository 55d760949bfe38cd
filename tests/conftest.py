"""Shared fixtures: where the real benchmark files live (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A relative data root (``PTMKIT_DATA=../shared/data``, as the README shows) must survive the
# tests that chdir into temporary folders: make it absolute once, before any test runs.
if os.environ.get("PTMKIT_DATA"):
    os.environ["PTMKIT_DATA"] = str(Path(os.environ["PTMKIT_DATA"]).expanduser().resolve())


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root holding ``uniptms/``: $PTMKIT_DATA, else ../shared/data next to the repo."""
    env = os.environ.get("PTMKIT_DATA")
    root = Path(env) if env else Path(__file__).parents[1].parent / "shared" / "data"
    if not (root / "uniptms").is_dir():
        pytest.skip(f"UniPTMs data not found under {root}; set PTMKIT_DATA to the data root")
    return root


@pytest.fixture(autouse=True, scope="session")
def _no_user_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may write the real per-user MLflow store: PTMKIT_HOME points into the session's
    temporary folder (tests that need their own set it again), and the walk up to the nearest
    mlflow.db stops at pytest's base temporary folder (a stray /tmp/mlflow.db stays out)."""
    os.environ["PTMKIT_HOME"] = str(tmp_path_factory.mktemp("ptmkit-home"))
    os.environ["PTMKIT_CEILING_DIRS"] = str(tmp_path_factory.getbasetemp())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Path:
    """A fresh working directory for a real run: data from the data root, MLflow in ./mlflow.db.

    The per-user store (PTMKIT_HOME) is this folder too, and the walk up for a project store
    stops here: a run lands in ``workdir / "mlflow.db"`` whatever lies above.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTMKIT_DATA", str(data_root))
    monkeypatch.setenv("PTMKIT_HOME", str(tmp_path))
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
