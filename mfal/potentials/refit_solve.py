"""The penalised least-squares fit of one member, and the search for lambda under a force bound.

With the exact linear response (:mod:`mfal.potentials.refit_linear`) a member's loss

    sum(((E_base + X dtheta + O phi - E_label) / sigma)^2) + lambda * dtheta^T G dtheta

is quadratic, with ``G = D^T D / atoms`` so that ``dtheta^T G dtheta`` is the mean
over anchor atoms of ``|F_pred - F_ref|^2``. It is solved as one stacked
least-squares problem (minimum-norm where the labels leave directions open).
The hard form looks for the weakest penalty whose solution keeps the RMS force
deviation (over force components) within the tolerance: the deviation falls
monotonically as lambda grows, so a decade bracket and a bisection in log(lambda)
find it. When that fit is closer to the labels than their error bars, lambda is
raised (same bracket and bisection, on chi^2) until chi^2 per degree of freedom
reaches 1: see :func:`settle_to_label_noise`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mfal.potentials.errors import PotentialError
from mfal.potentials.refit_offsets import initial_offsets
from mfal.potentials.refit_settings import RefitSettings


class RefitSolveError(PotentialError):
    """The force tolerance cannot be met within the allowed range of lambda."""


def force_root(design: np.ndarray) -> np.ndarray:
    """R with ``R^T R = D^T D / atoms``: ``|R dtheta|^2`` is the mean squared force change per atom."""
    n_atoms = design.shape[0] // 3
    gram = design.T @ design / n_atoms
    values, vectors = np.linalg.eigh(gram)
    return np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T


def force_rms(root: np.ndarray, delta_theta: np.ndarray) -> float:
    """RMS over force components of the force change ``D dtheta``."""
    return float(np.sqrt(np.sum((root @ delta_theta) ** 2) / 3.0))


@dataclass(frozen=True)
class MemberProblem:
    """One member's fit on one (possibly resampled) set of N labels with P weights and K offsets."""

    energy_design: np.ndarray
    """(N, P) derivatives of the label energies in the output weights."""
    offset_features: np.ndarray
    """(N, K) ``counts @ basis``: how the offset coefficients shift each label energy."""
    residuals: np.ndarray
    """(N,) label energy minus the base model's energy."""
    sigma: np.ndarray
    """(N,) error bars after the floor."""
    root: np.ndarray
    """(P, P) see :func:`force_root`."""
    initial_phi: np.ndarray
    """(K,) weighted least-squares offsets alone, the starting point the joint fit refines."""

    @classmethod
    def build(cls, energy_design, offset_features, residuals, sigma, root) -> "MemberProblem":
        offset_features = np.asarray(offset_features, float)
        residuals, sigma = np.asarray(residuals, float), np.asarray(sigma, float)
        return cls(
            np.asarray(energy_design, float),
            offset_features,
            residuals,
            sigma,
            np.asarray(root, float),
            initial_offsets(offset_features, residuals, sigma),
        )


@dataclass(frozen=True)
class MemberSolution:
    """Change of the output weights, offset coefficients, the lambda used and the RMS force change."""

    delta_theta: np.ndarray
    phi: np.ndarray
    force_weight: float
    force_rms: float
    chi2: float
    """Sum of squared label residuals over their error bars."""


def solve_penalised(problem: MemberProblem, force_weight: float, rcond: float) -> MemberSolution:
    """Minimise the loss at a fixed lambda.

    The offset (hundreds of eV between fidelities) is removed first by weighted
    least squares, so the joint solve sees residuals of the size of the correction.
    """
    rest = problem.residuals - problem.offset_features @ problem.initial_phi
    n_weights, n_offsets = problem.energy_design.shape[1], problem.offset_features.shape[1]
    weighted = np.hstack([problem.energy_design, problem.offset_features]) / problem.sigma[:, None]
    penalty = np.hstack([math.sqrt(force_weight) * problem.root, np.zeros((n_weights, n_offsets))])
    matrix = np.vstack([weighted, penalty])
    target = np.concatenate([rest / problem.sigma, np.zeros(n_weights)])
    solution, *_ = np.linalg.lstsq(matrix, target, rcond=rcond)
    delta_theta = solution[:n_weights]
    return MemberSolution(
        delta_theta=delta_theta,
        phi=problem.initial_phi + solution[n_weights:],
        force_weight=float(force_weight),
        force_rms=force_rms(problem.root, delta_theta),
        chi2=float(np.sum((weighted @ solution - rest / problem.sigma) ** 2)),
    )


def solve_within_tolerance(problem: MemberProblem, tolerance: float, settings: RefitSettings) -> MemberSolution:
    """The fit with the smallest lambda whose RMS force change is <= ``tolerance`` (eV/Å).

    lambda = 0 when the free fit already meets the bound. The returned solution
    always meets it; the search stops once the deviation lies within
    ``tolerance * (1 - search_rtol)`` of the bound or lambda is bracketed that closely.
    """

    def solve(weight: float) -> MemberSolution:
        return solve_penalised(problem, weight, settings.rcond)

    free = solve(0.0)
    if free.force_rms <= tolerance:
        return settle_to_label_noise(problem, free, settings)
    high, best = settings.search_start, solve(settings.search_start)
    low = None
    while best.force_rms > tolerance:
        low, high = high, high * 10.0
        if high > settings.search_max:
            raise RefitSolveError(
                f"no lambda up to search_max={settings.search_max:g} keeps the RMS force change within "
                f"{tolerance} eV/Å (at lambda={low:g} it is {best.force_rms:.4g} eV/Å); raise search_max"
            )
        best = solve(high)
    steps = 0
    while low is None:
        candidate = solve(high / 10.0)
        steps += 1
        if candidate.force_rms > tolerance:
            low = high / 10.0
        else:
            high, best = high / 10.0, candidate
        if steps >= settings.search_max_steps:
            return best
    best = bisect_log_lambda(
        solve, lambda candidate: candidate.force_rms <= tolerance, high, low, best, settings,
        close_enough=lambda solution: solution.force_rms >= tolerance * (1.0 - settings.search_rtol),
    )
    return settle_to_label_noise(problem, best, settings)


def settle_to_label_noise(problem: MemberProblem, solution: MemberSolution, settings: RefitSettings) -> MemberSolution:
    """The strongest force penalty, from ``solution``'s up, that still fits the labels to their error bars.

    The tolerance search returns the weakest penalty within the force bound,
    which fits the labels as closely as that bound allows: with a loose bound
    and few labels it fits their noise too (chi^2 per label far below 1), by
    moving weights the anchors barely constrain, and the next NEB finds the
    damage. Raising lambda while chi^2 per degree of freedom stays <= 1
    (the discrepancy principle) keeps the fit at the labels' own precision.
    """
    dof = max(len(problem.residuals) - problem.offset_features.shape[1], 1)
    if solution.chi2 >= dof:
        return solution
    low, best = solution.force_weight, solution
    high = max(low, settings.search_start)
    while True:
        high *= 10.0
        if high > settings.search_max:
            return best
        candidate = solve_penalised(problem, high, settings.rcond)
        if candidate.chi2 > dof:
            break
        low, best = high, candidate
    return bisect_log_lambda(
        lambda weight: solve_penalised(problem, weight, settings.rcond),
        lambda candidate: candidate.chi2 <= dof, low, high, best, settings,
    )


def bisect_log_lambda(solve, acceptable, good: float, bad: float, best: MemberSolution, settings: RefitSettings,
                      close_enough=lambda solution: False) -> MemberSolution:
    """Bisect log(lambda) between ``good`` (its solution ``best`` is acceptable) and ``bad`` (not).

    Returns the acceptable solution nearest ``bad`` once the two are within
    ``search_rtol`` of each other, ``close_enough(best)`` holds, or
    ``search_max_steps`` are spent. A ``good`` of 0 (the free fit) is bisected
    from 1e-12 of ``bad`` up.
    """
    for _ in range(settings.search_max_steps):
        low, high = min(good, bad), max(good, bad)
        if close_enough(best) or (low > 0 and high / low <= 1.0 + settings.search_rtol):
            break
        middle = math.sqrt(max(low, high * 1e-12) * high)
        candidate = solve(middle)
        if acceptable(candidate):
            good, best = middle, candidate
        else:
            bad = middle
    return best


def solve_member(problem: MemberProblem, settings: RefitSettings) -> MemberSolution:
    """Fixed lambda or tolerance search, as the settings ask."""
    if settings.constrained:
        return solve_within_tolerance(problem, settings.force_rms_tolerance, settings)
    return solve_penalised(problem, settings.force_weight, settings.rcond)
