"""Binary site-prediction metrics (scikit-learn), with thresholds chosen on validation only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    matthews_corrcoef,
    roc_auc_score,
    roc_curve,
)

from .thresholds import DEFAULT_RULE, RUN_RULE

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


def threshold_bootstrap_mcc(
    labels: np.ndarray, scores: np.ndarray, resamples: int = 200, seed: int = 0
) -> float:
    """Median of the max-MCC threshold over stratified bootstrap resamples of validation.

    On a small validation set the single max-MCC threshold follows a handful of windows; the
    median over resamples (each keeping the positive and negative counts) is the bagged estimate
    of the same rule. Deterministic for a given ``seed``. Used on validation data only.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        return 0.5
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    cuts = np.empty(resamples)
    for i in range(resamples):
        pick = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        cuts[i] = threshold_max_mcc(labels[pick], scores[pick])
    return float(np.median(cuts))


def threshold_smoothed_mcc(labels: np.ndarray, scores: np.ndarray, grid: int = 512) -> float:
    """Threshold maximising MCC on a kernel-smoothed curve (validation data only).

    Each window counts as a call with a weight that rises smoothly from 0 to 1 as its score
    passes ``t`` (a logistic kernel) instead of a 0/1 step, so the MCC curve is smooth in ``t``
    and its maximum does not jump between neighbouring windows. Smoothing is done on the logit
    scale (sigmoid scores crowd at 0 and 1), with Silverman's bandwidth of the logit scores.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        return 0.5
    p = np.clip(scores, 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    iqr = float(np.subtract(*np.percentile(z, [75, 25])))
    spread = min(float(np.std(z)), iqr / 1.349) or float(np.std(z)) or 1.0
    bandwidth = max(0.9 * spread * len(z) ** -0.2, 1e-3)  # a standard deviation
    scale = bandwidth * np.sqrt(3) / np.pi  # the logistic kernel with that standard deviation
    ts = np.linspace(z.min(), z.max(), grid)
    positive = labels == 1
    tp, fp = np.empty(grid), np.empty(grid)
    step = max(1, 2_000_000 // len(z))  # thresholds per block: bounded memory on large sets
    for lo in range(0, grid, step):
        weight = 0.5 + 0.5 * np.tanh((z[None, :] - ts[lo : lo + step, None]) / (2 * scale))  # soft calls
        tp[lo : lo + step] = weight[:, positive].sum(1)
        fp[lo : lo + step] = weight[:, ~positive].sum(1)
    pos, neg = labels.sum(), len(labels) - labels.sum()
    fn, tn = pos - tp, neg - fp
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), -1.0)
    return float(1 / (1 + np.exp(-ts[int(np.argmax(mcc))])))


#: Validation-chosen threshold rules: name -> function(labels, scores) (``threshold/<name>`` in MLflow).
THRESHOLD_RULES = {
    RUN_RULE: threshold_max_mcc,
    DEFAULT_RULE: lambda y, s: threshold_at_specificity(y, s, 0.95),
    "val_mcc_bootstrap": threshold_bootstrap_mcc,
    "val_mcc_smooth": threshold_smoothed_mcc,
}

#: Below these validation counts a validation-chosen threshold moves a lot with the split seed
#: (measured in docs/benchmarks/threshold-stability.md), so ``ptmkit run`` says so.
SMALL_VALID_WINDOWS = 200
SMALL_VALID_POSITIVES = 30


def small_validation_note(positives: int, negatives: int) -> str | None:
    """A one-line warning when validation is too small for a stable threshold, else None."""
    if positives + negatives >= SMALL_VALID_WINDOWS and min(positives, negatives) >= SMALL_VALID_POSITIVES:
        return None
    return (
        f"the validation split is small ({positives} positive, {negatives} negative windows; "
        f"< {SMALL_VALID_WINDOWS} windows or < {SMALL_VALID_POSITIVES} of a class): the threshold "
        "chosen on it is noisy; compare threshold/val_mcc_smooth (predict --rule val_mcc_smooth) or raise "
        "data.split.valid"
    )


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


#: Key of the mean over tasks in per-task metric names (``test/macro/mcc``).
MACRO = "macro"


def by_task(
    report: Callable[[np.ndarray, np.ndarray, float], dict[str, float]],
    labels: np.ndarray,
    scores: np.ndarray,
    task: np.ndarray,
    names: Sequence[str],
    thresholds: Sequence[float] | float = 0.5,
) -> dict[str, float]:
    """``report`` on each task's rows, as ``<task>/<metric>``, and their unweighted mean over
    tasks as ``macro/<metric>`` (a task without both classes in these rows gives NaN for its
    ranking metrics and is left out of that metric's mean).

    ``task``: each row's index into ``names``; ``thresholds``: one per task, or one for all.
    """
    task = np.asarray(task)
    cuts = [thresholds] * len(names) if np.isscalar(thresholds) else list(thresholds)
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    for i, name in enumerate(names):
        rows = task == i
        if not rows.any():
            continue
        for key, value in report(np.asarray(labels)[rows], np.asarray(scores)[rows], float(cuts[i])).items():
            out[f"{name}/{key}"] = value
            per.setdefault(key, []).append(value)
    for key, values in per.items():
        finite = [v for v in values if np.isfinite(v)]
        out[f"{MACRO}/{key}"] = float(np.mean(finite)) if finite else float("nan")
    return out
