"""Evaluation maths checked against independent computations on fixed arrays."""

import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from fracture.errors import ConfigError
from fracture.evaluation.calibration import fit_temperature
from fracture.evaluation.metrics import binary_metrics, bootstrap_auroc_ci, expected_calibration_error, group_level
from fracture.evaluation.threshold import choose_threshold, sensitivity_threshold, youden_threshold
from fracture.models.calibration import apply_temperature

Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
P = np.array([0.9, 0.8, 0.35, 0.6, 0.2, 0.4, 0.7, 0.1, 0.05, 0.55])


def test_metrics_at_a_threshold_match_hand_counts():
    m = binary_metrics(Y, P, threshold=0.5, bootstrap_resamples=200)
    # At 0.5: predicted positive = {0.9, 0.8, 0.6, 0.7, 0.55} -> TP 4 (0.9, 0.8, 0.6, 0.55), FP 1 (0.7)
    tp, fp, fn, tn = 4, 1, 1, 4
    assert m["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["accuracy"] == pytest.approx((tp + tn) / 10)
    assert m["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # Cohen's kappa by hand: observed agreement against chance agreement from the marginals.
    observed, chance = 0.8, (5 / 10) * (5 / 10) + (5 / 10) * (5 / 10)
    assert m["cohen_kappa"] == pytest.approx((observed - chance) / (1 - chance))
    assert m["brier"] == pytest.approx(np.mean((P - Y) ** 2))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(Y, P))


@pytest.mark.filterwarnings("error")
def test_figures_that_need_a_missing_class_are_nan():
    negatives = binary_metrics(np.zeros(4, int), np.array([0.1, 0.6, 0.3, 0.2]), 0.5, bootstrap_resamples=20)
    assert negatives["specificity"] == 0.75 and negatives["accuracy"] == 0.75
    for undefined in ("sensitivity", "auroc", "auroc_ci_low", "average_precision", "balanced_accuracy"):
        assert np.isnan(negatives[undefined]), undefined
    positives = binary_metrics(np.ones(4, int), np.array([0.9, 0.6, 0.3, 0.8]), 0.5, bootstrap_resamples=20)
    assert positives["sensitivity"] == 0.75 and np.isnan(positives["specificity"])
    assert positives["cohen_kappa"] == 0.0  # predictions of both classes: no better than chance, but defined
    agreed = binary_metrics(np.ones(4, int), np.array([0.9, 0.6, 0.7, 0.8]), 0.5, bootstrap_resamples=20)
    assert agreed["sensitivity"] == 1.0 and np.isnan(agreed["cohen_kappa"])


def test_auroc_equals_the_share_of_correctly_ordered_pairs():
    pairs = list(itertools.product(P[Y == 1], P[Y == 0]))
    by_hand = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    m = binary_metrics(Y, P, 0.5, bootstrap_resamples=300)
    assert m["auroc"] == pytest.approx(by_hand)
    assert m["auroc_ci_low"] <= m["auroc"] <= m["auroc_ci_high"]


def test_ece_by_hand():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.85, 0.95])
    # bins of width 0.1: [0.05] gap |0.05-1|, [0.15] gap |0.15-0|, [0.85] gap 0.15, [0.95] gap 0.05; each weight 1/4
    assert expected_calibration_error(y, p) == pytest.approx((0.95 + 0.15 + 0.15 + 0.05) / 4)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == pytest.approx(0.0)


def test_grouped_bootstrap_is_wider_than_pretending_copies_are_independent():
    rng = np.random.default_rng(0)
    y_source = np.repeat([0, 1], 10)
    p_source = np.clip(0.5 + 0.25 * (y_source - 0.5) + rng.normal(0, 0.25, 20), 0, 1)
    copies = 30  # every source image appears 30 times, as augmented copies do in the Kaggle data
    y, p = np.repeat(y_source, copies), np.repeat(p_source, copies) + rng.normal(0, 0.01, 20 * copies)
    groups = np.repeat(np.arange(20), copies)
    naive_low, naive_high = bootstrap_auroc_ci(y, p, None, resamples=300)
    grouped_low, grouped_high = bootstrap_auroc_ci(y, p, groups, resamples=300)
    assert grouped_high - grouped_low > 2 * (naive_high - naive_low)


def test_group_level_averages_probabilities_per_group():
    y_group, p_group, names = group_level([1, 1, 0], [0.2, 0.6, 0.3], ["a", "a", "b"])
    assert list(names) == ["a", "b"] and list(y_group) == [1, 0]
    assert p_group == pytest.approx([0.4, 0.3])


def test_youden_threshold_is_the_best_by_brute_force():
    def youden(t):
        pred = P >= t
        return pred[Y == 1].mean() + (~pred[Y == 0]).mean() - 1

    best = max(youden(t) for t in P)
    assert youden(youden_threshold(Y, P)) == pytest.approx(best)
    assert choose_threshold(Y, P) == (youden_threshold(Y, P), "youden")


def test_sensitivity_threshold_reaches_the_target_with_the_best_specificity():
    for target in (0.6, 0.8, 1.0):
        t = sensitivity_threshold(Y, P, target)
        assert (P[Y == 1] >= t).mean() >= target
        # No higher candidate threshold still reaches the target.
        assert all((P[Y == 1] >= c).mean() < target for c in P if c > t)
    with pytest.raises(ConfigError):
        sensitivity_threshold(Y, P, 1.5)
    with pytest.raises(ConfigError, match="both classes"):
        choose_threshold(np.ones(4), P[:4])


def test_temperature_scaling_recovers_overconfidence():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 4000)
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-logits))).astype(int)
    overconfident = 1 / (1 + np.exp(-2 * logits))  # logits doubled: the right temperature is 2
    temperature = fit_temperature(y, overconfident)
    assert temperature == pytest.approx(2.0, rel=0.1)
    calibrated = apply_temperature(overconfident, temperature)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, overconfident)
    assert skm.roc_auc_score(y, calibrated) == pytest.approx(skm.roc_auc_score(y, overconfident))
