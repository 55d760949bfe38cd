"""Threshold rules by name: the one list the CLI, the package, predict, evaluate and runs share.

Import-light on purpose (no numpy, torch or scikit-learn at import time): ``ptmkit --help``
lists :data:`RULES` as the ``--rule`` choices. The rules themselves live in
:mod:`ptmkit.metrics` and are imported only when thresholds are chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: The threshold ``ptmkit predict`` applies when no rule is given (95 % validation specificity).
DEFAULT_RULE = "val_spec95"
#: The validation threshold ``ptmkit run`` reports as its tuned threshold (``tuned_*`` metrics).
RUN_RULE = "val_max_mcc"
#: The fixed cut-off, stored as ``default`` in a package's thresholds.
FIXED_RULE = "0.5"
#: Validation-chosen rules, in the order ``ptmkit run`` computes them (``threshold/<name>``).
VALIDATION_RULES = (DEFAULT_RULE, RUN_RULE, "val_mcc_bootstrap", "val_mcc_smooth")
#: Every rule, in the order the CLI offers them.
RULES = (*VALIDATION_RULES, FIXED_RULE)


def choose_all(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every validation rule's threshold on these (validation) labels and scores.

    Keys follow ``metrics.THRESHOLD_RULES``; a test checks they are :data:`VALIDATION_RULES`.
    """
    from .metrics import THRESHOLD_RULES

    return {name: float(rule(labels, scores)) for name, rule in THRESHOLD_RULES.items()}
