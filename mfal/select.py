"""Acquisition: which NEB images deserve an expensive QMC label.

The default strategy, ``barrier_variance``, asks which labels would shrink the
committee's uncertainty of the *barrier* the most. It treats the committee as an
ensemble prior over the image energies e (images x members) and the barrier as
the linear functional b = e[saddle] - e[initial]. Observing image j with noise
sigma_j reduces var(b) by (C a)_j^2 / (C_jj + sigma_j^2) (a Gaussian update, as in
an ensemble Kalman filter). Images are picked greedily, the covariance being
conditioned on each pick, so the batch is diverse by construction: once an image
is chosen, images whose committee errors move with it lose their value.

Two facts of the refit shape the prior:

* the refit fits a free energy offset, so a common shift of all energies is
  never learned from one label: a large common-mode variance is added, and only
  energy *differences* carry information (one label alone is worth nothing);
* a committee of N members has a covariance of rank N - 1, so a diagonal floor
  (``prior_floor``, eV) stands for model error the committee does not see.

Structures already labelled condition the prior first and are never picked again.
The baselines the benchmarks compare against are ``spread`` (largest committee
spread, optionally with a minimum distance between picks), ``random`` and
``all``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from mfal.errors import MfalError

Strategy = Literal["barrier_variance", "spread", "random", "all"]
STRATEGIES: tuple[str, ...] = ("barrier_variance", "spread", "random", "all")

#: Variance (eV^2) of the common energy offset the refit fits freely.
OFFSET_VARIANCE = 1.0e4


class SelectionError(MfalError, ValueError):
    """The inputs of an acquisition step are inconsistent."""


@dataclass(frozen=True)
class Selection:
    """Picked image indices, in the order picked, and each one's acquisition score."""

    indices: list[int]
    scores: list[float]
    strategy: str
    barrier_std_before: float | None = None
    barrier_std_after: float | None = None


def select_images(
    member_energies: np.ndarray,
    k: int,
    *,
    strategy: Strategy = "barrier_variance",
    labelled: Sequence[bool] | None = None,
    saddle_index: int | None = None,
    initial_index: int = 0,
    noise: float = 0.01,
    prior_floor: float = 0.05,
    positions: Sequence[np.ndarray] | None = None,
    min_distance: float = 0.0,
    seed: int = 0,
) -> Selection:
    """Pick up to ``k`` images to label.

    ``member_energies`` is (n_images, n_members) in eV; ``labelled`` marks images
    whose structure already has a label (never picked); ``noise`` is the expected
    QMC error bar (eV); ``positions`` (one array per image) and ``min_distance``
    (Å, RMS displacement) enforce diversity for the ``spread`` strategy.
    """
    energies = np.asarray(member_energies, dtype=float)
    if energies.ndim != 2 or energies.shape[0] < 2 or energies.shape[1] < 2:
        raise SelectionError(f"member_energies must be (n_images >= 2, n_members >= 2), got shape {energies.shape}")
    if not np.all(np.isfinite(energies)):
        raise SelectionError("member_energies contain NaN or inf")
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown acquisition strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if k < 0:
        raise SelectionError(f"batch size k must be >= 0, got {k}")
    n_images = energies.shape[0]
    done = np.zeros(n_images, bool) if labelled is None else np.asarray(labelled, dtype=bool)
    if done.shape != (n_images,):
        raise SelectionError(f"labelled has {done.size} entries for {n_images} images")
    candidates = [i for i in range(n_images) if not done[i]]
    k = min(k, len(candidates))

    if strategy == "all":
        return Selection(candidates, [1.0] * len(candidates), strategy)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(candidates, size=k, replace=False).tolist()) if k else []
        return Selection(picked, [1.0] * len(picked), strategy)
    if strategy == "spread":
        return _select_by_spread(energies, k, candidates, positions, min_distance)
    if saddle_index is None or saddle_index == initial_index:
        # Downhill or flat paths have their maximum at the initial state: the barrier
        # then runs to the highest of the other images.
        mean = np.where(np.arange(n_images) == initial_index, -np.inf, energies.mean(axis=1))
        saddle_index = int(np.argmax(mean))
    return _select_by_barrier_variance(energies, k, done, int(saddle_index), initial_index, noise, prior_floor)


def _select_by_spread(energies, k, candidates, positions, min_distance) -> Selection:
    spread = energies.std(axis=1, ddof=1)
    order = sorted(candidates, key=lambda i: -spread[i])
    if min_distance > 0 and positions is None:
        raise SelectionError("min_distance > 0 needs the image positions")
    picked: list[int] = []
    for index in order:
        if len(picked) == k:
            break
        if min_distance > 0 and any(_rms_distance(positions[index], positions[j]) < min_distance for j in picked):
            continue
        picked.append(index)
    return Selection(picked, [float(spread[i]) for i in picked], "spread")


def _select_by_barrier_variance(energies, k, done, saddle, initial, noise, prior_floor) -> Selection:
    n_images = energies.shape[0]
    if not (0 <= saddle < n_images and 0 <= initial < n_images):
        raise SelectionError(f"saddle index {saddle} and initial index {initial} must be images of the {n_images}")
    if noise <= 0 or prior_floor <= 0:
        raise SelectionError(f"noise and prior_floor must be > 0 eV, got {noise} and {prior_floor}")
    covariance = np.cov(energies) + prior_floor**2 * np.eye(n_images) + OFFSET_VARIANCE * np.ones((n_images, n_images))
    barrier = np.zeros(n_images)
    barrier[saddle], barrier[initial] = 1.0, -1.0
    for index in np.flatnonzero(done):
        covariance = _condition(covariance, index, noise)
    std_before = float(np.sqrt(barrier @ covariance @ barrier))
    picked, scores = [], []
    available = ~done
    for _ in range(k):
        cross = covariance @ barrier
        gain = np.where(available, cross**2 / (np.diag(covariance) + noise**2), -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        scores.append(float(gain[best]))
        available[best] = False
        covariance = _condition(covariance, best, noise)
    std_after = float(np.sqrt(max(barrier @ covariance @ barrier, 0.0)))
    return Selection(picked, scores, "barrier_variance", std_before, std_after)


def _condition(covariance: np.ndarray, index: int, noise: float) -> np.ndarray:
    """Gaussian update of the prior after observing image ``index`` with noise ``noise``."""
    column = covariance[:, index]
    return covariance - np.outer(column, column) / (covariance[index, index] + noise**2)


def _rms_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=1))))
