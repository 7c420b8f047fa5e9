"""Data-efficiency measures of barrier histories: labels to a threshold, coverage, stopping, seed bands."""

import math

import numpy as np
import pytest

from mfal.config import ConvergenceSection
from mfal.efficiency import (
    EfficiencyInputError,
    HistoryPoint,
    band,
    coverage,
    labels_to_first_reach,
    labels_to_threshold,
    median_labels,
    stopping_point,
)

TRUTH = 0.40


def history(*rows):
    return [HistoryPoint(n, barrier, spread) for n, barrier, spread in rows]


def test_labels_to_threshold_needs_the_barrier_to_stay_within():
    # Inside at 3 labels, out again at 6, inside for good from 9.
    points = history((0, 0.16, 0.05), (3, 0.42, 0.03), (6, 0.30, 0.03), (9, 0.43, 0.02), (12, 0.39, 0.02))
    assert labels_to_threshold(points, TRUTH, 0.05) == 9
    assert labels_to_threshold(points, TRUTH, 0.11) == 3
    assert labels_to_threshold(points, TRUTH, 0.5) == 0


def test_first_reach_counts_a_visit_that_does_not_last():
    points = history((0, 0.16, 0.05), (3, 0.42, 0.03), (6, 0.30, 0.03), (9, 0.43, 0.02))
    assert labels_to_first_reach(points, TRUTH, 0.05) == 3
    assert labels_to_first_reach(points, TRUTH, 0.01) is None


def test_labels_to_threshold_is_none_when_the_last_cycle_is_outside():
    points = history((0, 0.16, 0.05), (3, 0.39, 0.03), (6, 0.46, 0.03))
    assert labels_to_threshold(points, TRUTH, 0.05) is None


def test_an_error_equal_to_the_threshold_counts_as_inside():
    points = history((0, 0.75, 0.01))  # exactly representable: |0.75 - 0.5| == 0.25
    assert labels_to_threshold(points, 0.5, 0.25) == 0
    assert labels_to_threshold(points, 0.5, 0.125) is None


def test_coverage_counts_cycles_within_n_spreads():
    points = history((0, 0.16, 0.10), (3, 0.35, 0.03), (6, 0.39, 0.02), (9, 0.40, 0.0))
    # |errors| 0.24, 0.05, 0.01, 0: within 1 spread only the last two, within 2 spreads also the second.
    assert coverage(points, TRUTH, 1) == (2, 4)
    assert coverage(points, TRUTH, 2) == (3, 4)


def test_stopping_point_applies_the_convergence_rule_to_growing_histories():
    rules = ConvergenceSection(tol_energy=0.03, n_consecutive=1, tol_spread=0.05, max_cycles=5, max_labels=15)
    points = history((0, 0.16, 0.10), (3, 0.35, 0.04), (6, 0.37, 0.03), (9, 0.40, 0.02))
    cycle, point = stopping_point(points, rules, batch_size=3)
    assert cycle == 2 and point.n_labels == 6
    # A budget of 5 labels stops before the first batch would exceed it... at cycle 1 (3 + 3 > 5).
    tight = rules.model_copy(update={"max_labels": 5})
    assert stopping_point(points, tight, batch_size=3)[0] == 1
    # Never stopped: the last cycle.
    loose = rules.model_copy(update={"tol_energy": 1e-6})
    assert stopping_point(points, loose, batch_size=3)[0] == 3


def test_band_over_seeds_of_different_lengths():
    result = band([[1.0, 2.0, 3.0], [3.0, 4.0], [2.0, 0.0, 5.0]])
    np.testing.assert_allclose(result["median"], [2.0, 2.0, 4.0])
    np.testing.assert_allclose(result["min"], [1.0, 0.0, 3.0])
    np.testing.assert_allclose(result["max"], [3.0, 4.0, 5.0])


def test_median_labels_counts_seeds_that_never_arrived_as_infinite():
    assert median_labels([6, 9, 3]) == 6
    assert median_labels([6, None, 3]) == 6
    assert math.isinf(median_labels([6, None, None]))


@pytest.mark.parametrize("points, message", [
    ([], "at least one"),
    (history((3, 0.4, 0.1), (0, 0.4, 0.1)), "must not decrease"),
    (history((0, float("nan"), 0.1)), "finite"),
    (history((0, 0.4, -0.1)), ">= 0"),
])
def test_bad_histories_are_rejected(points, message):
    with pytest.raises(EfficiencyInputError, match=message):
        labels_to_threshold(points, TRUTH, 0.05)


def test_threshold_must_be_positive():
    with pytest.raises(EfficiencyInputError, match="threshold"):
        labels_to_threshold(history((0, 0.4, 0.1)), TRUTH, 0.0)
