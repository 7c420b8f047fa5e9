"""The stopping rule of a campaign."""

import pytest

from mfal.convergence import decide

RULES = dict(tol_energy=0.02, n_consecutive=2, tol_spread=0.05, max_cycles=6, max_labels=15, batch_size=3)


def test_base_committee_alone_never_converges():
    assert not decide([0.16], [0.001], 0, **RULES).finished


def test_steady_and_confident_converges():
    decision = decide([0.16, 0.40, 0.415, 0.42], [0.1, 0.04, 0.03, 0.02], 9, **RULES)
    assert decision.finished and decision.converged


def test_steady_but_unconfident_goes_on():
    assert not decide([0.16, 0.40, 0.415, 0.42], [0.1, 0.04, 0.03, 0.2], 9, **RULES).finished


def test_one_steady_cycle_is_not_enough_for_two():
    assert not decide([0.16, 0.40, 0.41], [0.1, 0.02, 0.02], 6, **RULES).finished


def test_budgets():
    cycles = decide([0.1, 0.3, 0.1, 0.3, 0.1, 0.3, 0.1], [0.01] * 7, 6, **RULES)
    assert cycles.finished and not cycles.converged and "max_cycles" in cycles.reason
    labels = decide([0.1, 0.3], [0.01, 0.01], 13, **RULES)
    assert labels.finished and not labels.converged and "max_labels" in labels.reason


def test_inconsistent_history():
    with pytest.raises(ValueError):
        decide([0.1, 0.2], [0.01], 0, **RULES)
