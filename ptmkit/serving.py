"""MLflow-native serving of a packaged model: the ``mlflow.pyfunc`` class, its signature, its code.

A run's logged model runs :data:`ENTRY_POINT` (models-from-code), which instantiates
:class:`PtmkitPyfunc`; ``load_context`` reads the package with ptmkit's own safe loader, and
``predict`` scans proteins exactly as ``ptmkit predict`` does. The class is built on first
attribute access, because importing ``mlflow.pyfunc`` costs about a second that ``ptmkit
predict`` on a local folder should not pay.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .package import PYFUNC_KEY, read_package
from .thresholds import DEFAULT_RULE

#: The models-from-code entry file a run logs as ``ptmkit_pyfunc.py``.
ENTRY_POINT = '''"""MLflow models-from-code entry point of a ptmkit model (written by ptmkit.model_store)."""

import mlflow

from ptmkit.serving import PtmkitPyfunc

mlflow.models.set_model(PtmkitPyfunc())
'''


def pip_requirements() -> list[str]:
    """This ptmkit and the versions of what the pyfunc needs, pinned as installed now."""
    from importlib import metadata

    reqs = [f"ptmkit=={__version__}"]
    for name in ("torch", "mlflow", "pandas", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{name}=={metadata.version(name).split('+')[0]}")
    return reqs


def signature() -> Any:
    """Input (protein_id, sequence), output (the long site table) and params (rule, threshold)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "protein_id", required=False), ColSpec("string", "sequence")])
    outputs = Schema(
        [
            ColSpec("string", "protein_id"),
            ColSpec("long", "position"),
            ColSpec("string", "residue"),
            ColSpec("string", "ptm_type"),
            ColSpec("double", "score"),
            ColSpec("long", "call"),
            ColSpec("string", "model"),
        ]
    )
    params = ParamSchema(
        [ParamSpec("rule", "string", default=DEFAULT_RULE), ParamSpec("threshold", "double", default=None)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _make_pyfunc_class() -> type:
    """Build the ``mlflow.pyfunc.PythonModel`` subclass (imports mlflow.pyfunc).

    ``pd`` is a module global so that MLflow can resolve predict's ``pd.DataFrame`` hint when the
    class is made (an unresolvable hint makes it print advice on every run that logs a model)."""
    import mlflow.pyfunc

    class PtmkitPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow-native serving: DataFrame (protein_id, sequence) in, the long site table out.

        ``load_context`` goes through ptmkit's own safe loader on the package artifacts, so only
        the entry-point code (``ptmkit_pyfunc.py``) runs as code. Params: ``rule``, ``threshold``.
        """

        def load_context(self, context: Any) -> None:
            self.loaded = read_package(Path(context.artifacts[PYFUNC_KEY]), "pyfunc")

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            from .predict import predict_frame

            params = params or {}
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            return predict_frame(
                [self.loaded],
                frame,
                rule=params.get("rule") or DEFAULT_RULE,
                threshold=params.get("threshold"),
            )

    PtmkitPyfunc.__module__ = __name__
    PtmkitPyfunc.__qualname__ = "PtmkitPyfunc"
    return PtmkitPyfunc


def __getattr__(name: str) -> Any:
    """``ptmkit.serving.PtmkitPyfunc`` (the class ``ptmkit_pyfunc.py`` instantiates), made lazily."""
    if name == "PtmkitPyfunc":
        cls = _make_pyfunc_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
