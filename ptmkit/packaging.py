"""Compatibility shim: models logged by older ptmkit run ``from ptmkit.packaging import PtmkitPyfunc``.

The former module was split: the package format is :mod:`ptmkit.package`, MLflow storage
:mod:`ptmkit.model_store`, MLflow serving :mod:`ptmkit.serving` and threshold rule names
:mod:`ptmkit.thresholds`. Only ``PtmkitPyfunc`` is served from here (lazily, as before); any
other name fails with the module that now holds it.
"""

from __future__ import annotations

from typing import Any

#: Where the names of the former ``ptmkit.packaging`` live now (for the error message).
MOVED = {
    **dict.fromkeys(
        (
            "FORMAT",
            "READABLE",
            "WEIGHTS",
            "RECIPE",
            "META",
            "FEATURES",
            "PYFUNC_KEY",
            "sha256",
            "write_package",
            "read_package",
            "package_root",
            "LoadedModel",
            "save_feature_state",
            "load_feature_state",
            "feature_key",
            "feature_identity",
            "check_feature",
            "feature_has_fit",
        ),
        "ptmkit.package",
    ),
    **dict.fromkeys(
        ("ARTIFACT", "log_package", "download", "resolve_ref", "load_model", "register", "quiet_mlflow"),
        "ptmkit.model_store",
    ),
    "RULES": "ptmkit.thresholds",
}


def __getattr__(name: str) -> Any:
    """``PtmkitPyfunc`` from :mod:`ptmkit.serving`; a moved name says where it went."""
    if name == "PtmkitPyfunc":
        from . import serving

        return serving.PtmkitPyfunc
    if name in MOVED:
        raise AttributeError(f"ptmkit.packaging.{name} moved to {MOVED[name]}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
