import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    matthews_corrcoef,
    roc_auc_score,
)

from ptmkit import metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(labels * 0.3 + rng.normal(0.4, 0.25, 400), 0, 1)
    return labels, scores


def test_metrics_match_scikit_learn(data):
    labels, scores = data
    m = metrics.at_threshold(labels, scores, 0.5)
    calls = (scores >= 0.5).astype(int)
    assert m["acc"] == pytest.approx(accuracy_score(labels, calls))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(labels, calls))
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert m["sen"] == pytest.approx(calls[labels == 1].mean())
    assert m["spec"] == pytest.approx(1 - calls[labels == 0].mean())


def test_hand_computed_confusion():
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    m = metrics.at_threshold(labels, scores, 0.5)
    # tp=2 fn=1 fp=1 tn=1
    assert (m["sen"], m["spec"], m["acc"]) == (pytest.approx(2 / 3), 0.5, 0.6)
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))


def test_threshold_max_mcc_equals_brute_force(data):
    labels, scores = data
    t = metrics.threshold_max_mcc(labels, scores)
    brute = max(matthews_corrcoef(labels, (scores >= s).astype(int)) for s in np.unique(scores))
    assert matthews_corrcoef(labels, (scores >= t).astype(int)) == pytest.approx(brute)


def test_threshold_at_specificity_reaches_it(data):
    labels, scores = data
    t = metrics.threshold_at_specificity(labels, scores, 0.95)
    spec = 1 - (scores[labels == 0] >= t).mean()
    assert spec >= 0.95
    assert spec < 0.95 + 1 / (labels == 0).sum() + 1e-9  # the lowest such threshold, not a stricter one


def test_sensitivity_at_95_specificity_by_hand():
    # 20 negatives at 0..0.19, positives at 0.185 (above 19 negatives... ) and 0.5
    neg = np.arange(20) / 100
    labels = np.r_[np.zeros(20), np.ones(4)].astype(int)
    scores = np.r_[neg, [0.185, 0.5, 0.6, 0.05]]
    # specificity 0.95 allows one false positive (0.19); positives above 0.185 threshold: 0.185? needs
    # threshold 0.185 -> fp = {0.19} -> spec 0.95, tp = {0.185, 0.5, 0.6} = 3/4
    assert metrics.sensitivity_at_specificity(labels, scores, 0.95) == pytest.approx(0.75)


def test_evaluate_has_both_threshold_rules(data):
    labels, scores = data
    out = metrics.evaluate(labels, scores, 0.42)
    assert out["tuned_mcc"] == pytest.approx(metrics.at_threshold(labels, scores, 0.42)["mcc"])
    assert {"acc", "sen", "spec", "mcc", "auc", "ap", "sen_at_spec95"} <= set(out)
