"""Data-efficiency measures of a campaign's barrier history against a known true barrier.

A history is one row per explored cycle: the QMC labels the cycle's committee
was fitted on, its barrier and the committee's barrier spread (eV). These
functions turn such histories into the numbers the acquisition benchmark
compares strategies by: labels spent until the barrier is within a threshold of
the truth for good, the error at the end, and how well the spread predicts the
error. They are plain numpy, independent of the store and of FireWorks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mfal.errors import MfalError


class EfficiencyInputError(MfalError, ValueError):
    """A barrier history is empty, unordered or inconsistent."""


@dataclass(frozen=True)
class HistoryPoint:
    """One explored cycle: labels its committee was fitted on, its barrier and barrier spread (eV)."""

    n_labels: int
    barrier: float
    spread: float


def _checked(history: Sequence[HistoryPoint]) -> list[HistoryPoint]:
    points = list(history)
    if not points:
        raise EfficiencyInputError("a barrier history needs at least one explored cycle")
    labels = [point.n_labels for point in points]
    if any(b < a for a, b in zip(labels[:-1], labels[1:])):
        raise EfficiencyInputError(f"label counts must not decrease from cycle to cycle, got {labels}")
    values = [v for point in points for v in (point.barrier, point.spread)]
    if not np.all(np.isfinite(values)) or any(point.spread < 0 for point in points):
        raise EfficiencyInputError("barriers must be finite and spreads finite and >= 0")
    return points


def labels_to_threshold(history: Sequence[HistoryPoint], truth: float, threshold: float) -> int | None:
    """Labels used when |barrier - truth| <= ``threshold`` first holds for every later cycle too.

    None when the last cycle is outside the threshold (the campaign did not
    settle within it in the cycles it ran).
    """
    if threshold <= 0:
        raise EfficiencyInputError(f"threshold must be > 0 eV, got {threshold}")
    points = _checked(history)
    settled = None
    for point in reversed(points):
        if abs(point.barrier - truth) > threshold:
            break
        settled = point.n_labels
    return settled


def labels_to_first_reach(history: Sequence[HistoryPoint], truth: float, threshold: float) -> int | None:
    """Labels used when |barrier - truth| <= ``threshold`` holds for the first time (None: never)."""
    if threshold <= 0:
        raise EfficiencyInputError(f"threshold must be > 0 eV, got {threshold}")
    return next((point.n_labels for point in _checked(history) if abs(point.barrier - truth) <= threshold), None)


def coverage(history: Sequence[HistoryPoint], truth: float, n_sigma: float) -> tuple[int, int]:
    """(cycles with the truth within ``n_sigma`` spreads of the barrier, cycles counted).

    A zero spread covers the truth only when the barrier equals it.
    """
    points = _checked(history)
    inside = sum(abs(point.barrier - truth) <= n_sigma * point.spread for point in points)
    return int(inside), len(points)


def stopping_point(history: Sequence[HistoryPoint], rules, batch_size: int) -> tuple[int, HistoryPoint]:
    """Cycle at which a campaign with convergence ``rules`` (a ConvergenceSection) would stop, and its point.

    The same :func:`mfal.convergence.decide` the converge step calls, applied to
    growing prefixes of the history; the last cycle when no prefix stops it.
    """
    from mfal.convergence import decide

    points = _checked(history)
    for cycle in range(len(points)):
        prefix = points[: cycle + 1]
        decision = decide([p.barrier for p in prefix], [p.spread for p in prefix], prefix[-1].n_labels,
                          tol_energy=rules.tol_energy, n_consecutive=rules.n_consecutive,
                          tol_spread=rules.tol_spread, max_cycles=rules.max_cycles,
                          max_labels=rules.max_labels, batch_size=batch_size)
        if decision.finished:
            return cycle, points[cycle]
    return len(points) - 1, points[-1]


def band(values_per_seed: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """Median, min and max over seeds at each position; shorter series leave NaN where they end."""
    if not values_per_seed:
        raise EfficiencyInputError("a band needs at least one series")
    length = max(len(series) for series in values_per_seed)
    table = np.full((len(values_per_seed), length), np.nan)
    for row, series in zip(table, values_per_seed):
        row[: len(series)] = series
    return {"median": np.nanmedian(table, axis=0), "min": np.nanmin(table, axis=0), "max": np.nanmax(table, axis=0)}


def median_labels(values: Sequence[int | None]) -> float:
    """Median labels-to-threshold over seeds, counting a seed that never got there as infinitely many."""
    if not values:
        raise EfficiencyInputError("no labels-to-threshold values to take the median of")
    return float(np.median([np.inf if value is None else value for value in values]))
