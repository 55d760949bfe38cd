"""The scikit-learn floor: plain classifiers on flattened one-hot + BLOSUM62 windows.

Any learned PTM predictor should clear this bar; if it does not, the composition is not earning
its parameters. Both models see the very rows the ptmkit recipes see (same SiteTable splits),
are class-balanced, and have their decision threshold chosen on the validation split only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ptmkit import metrics
from ptmkit.hooks import get_registry
from ptmkit.sitetable import SiteTable

#: The floor's encodings (ptmkit's own feature plugins, so the windows are encoded identically).
FEATURES = ("onehot", "blosum62")


def _logreg(seed: int) -> object:
    # Scaled features let lbfgs converge in a few hundred iterations on 1,000-1,500 columns.
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.05, class_weight="balanced", max_iter=500, random_state=seed),
    )


def _hgb(seed: int) -> object:
    # Fixed iteration count (no internal early stopping): the internal split would be a second
    # validation set drawn from training rows, and it would make the floor seed-dependent.
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        max_leaf_nodes=31,
        class_weight="balanced",
        early_stopping=False,
        random_state=seed,
    )


#: name -> (label in tables, factory)
MODELS = {
    "logreg": ("logistic regression", _logreg),
    "hgb": ("hist. gradient boosting", _hgb),
}


@dataclass
class FloorResult:
    model: str
    test: dict[str, float]
    threshold: float
    phases: dict[str, float] = field(default_factory=dict)
    test_scores: np.ndarray | None = None


def encode(table: SiteTable) -> np.ndarray:
    """``[N, W * 40]`` float32: one-hot and BLOSUM62 rows of every window position, flattened."""
    registry = get_registry()
    parts = []
    for name in FEATURES:
        spec = registry.get("feature", name)
        feature = spec.obj(spec.obj.Config())
        parts.append(feature.encode(table).numpy())
    return np.concatenate(parts, axis=-1).reshape(len(table), -1).astype(np.float32)


def run_floor(table: SiteTable, model: str, seed: int = 0) -> FloorResult:
    """Fit ``model`` on the train split, pick the max-MCC threshold on valid, report on test."""
    if model not in MODELS:
        raise ValueError(f"unknown floor model {model!r}; available: {', '.join(MODELS)}")
    t0 = time.perf_counter()
    x = encode(table)
    split = table.frame["split"].to_numpy()
    y = table.labels.astype(int)
    features_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf = MODELS[model][1](seed)
    clf.fit(x[split == "train"], y[split == "train"])
    train_s = time.perf_counter() - t0
    val_scores = clf.predict_proba(x[split == "valid"])[:, 1]
    threshold = metrics.threshold_max_mcc(y[split == "valid"], val_scores)
    t0 = time.perf_counter()
    test_scores = clf.predict_proba(x[split == "test"])[:, 1]
    inference_s = time.perf_counter() - t0
    return FloorResult(
        model=model,
        test=metrics.evaluate(y[split == "test"], test_scores, threshold),
        threshold=threshold,
        phases={"features_s": features_s, "train_s": train_s, "inference_s": inference_s},
        test_scores=test_scores,
    )
