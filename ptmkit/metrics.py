"""Binary site-prediction metrics (scikit-learn), with thresholds chosen on validation only."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    matthews_corrcoef,
    roc_auc_score,
    roc_curve,
)

#: Metric names in table order.
NAMES = ("acc", "sen", "spec", "mcc", "auc", "ap")


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ACC, SEN, SPEC, MCC at ``threshold`` (score >= threshold is a site), plus AUC and AP."""
    labels = np.asarray(labels).astype(int)
    calls = (np.asarray(scores) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, calls, labels=[0, 1]).ravel()
    both = len(np.unique(labels)) == 2
    return {
        "acc": float((tp + tn) / max(len(labels), 1)),
        "sen": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "spec": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "mcc": float(matthews_corrcoef(labels, calls)),
        "auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "ap": float(average_precision_score(labels, scores)) if both else float("nan"),
    }


def sensitivity_at_specificity(labels: np.ndarray, scores: np.ndarray, specificity: float = 0.95) -> float:
    """Highest sensitivity reached on the ROC curve while specificity stays >= ``specificity``."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= 1 - specificity + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_max_mcc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising MCC; used on validation data, never on test data.

    Candidate thresholds are the distinct scores; MCC is computed for all of them at once from
    cumulative counts (O(n log n)), and the midpoint to the next lower score is returned so the
    rule generalises to unseen scores.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        return 0.5
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each score group
    tp = np.cumsum(y)[distinct].astype(float)
    fp = (distinct + 1 - tp).astype(float)
    pos, neg = y.sum(), len(y) - y.sum()
    fn, tn = pos - tp, neg - fp
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), 0.0)
    best = int(np.argmax(mcc))
    upper = s[distinct[best]]
    lower = s[distinct[best + 1]] if best + 1 < len(distinct) else upper - 1e-6
    return float((upper + lower) / 2)


def threshold_at_specificity(labels: np.ndarray, scores: np.ndarray, specificity: float = 0.95) -> float:
    """Lowest threshold whose specificity on these (validation) labels is >= ``specificity``."""
    negatives = np.sort(np.asarray(scores)[np.asarray(labels) == 0])
    if len(negatives) == 0:
        return 0.5
    k = int(np.ceil(specificity * len(negatives))) - 1
    return float(np.nextafter(negatives[min(max(k, 0), len(negatives) - 1)], np.inf))


def evaluate(labels: np.ndarray, scores: np.ndarray, tuned_threshold: float) -> dict[str, float]:
    """The full test report: metrics at 0.5, at the validation-chosen threshold, SEN@95%SPEC."""
    out = {f"{k}": v for k, v in at_threshold(labels, scores, 0.5).items()}
    tuned = at_threshold(labels, scores, tuned_threshold)
    out.update({f"tuned_{k}": tuned[k] for k in ("acc", "sen", "spec", "mcc")})
    out["sen_at_spec95"] = sensitivity_at_specificity(labels, scores, 0.95)
    return out
