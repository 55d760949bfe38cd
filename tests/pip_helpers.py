"""pip for tests that install real plugin packages into this environment (and remove them)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def build_flags() -> list[str]:
    """Build with this environment's setuptools when it can make wheels on its own (no index
    needed); otherwise let pip build in isolation (it fetches setuptools from the configured index)."""
    try:
        import setuptools
    except ImportError:
        return []
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1) or ((major, minor) >= (64, 0) and importlib.util.find_spec("wheel")):
        return ["--no-build-isolation"]
    return []


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m pip ARGS``; a failure fails the test with pip's whole output."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done
