"""The energy offset between fidelities: shared per atom, or per element.

QMC and DFT total energies differ by a large constant (pseudopotentials,
method), which the refit must absorb without touching forces. Offsets are added
to the per-element reference energies E0, so an offset vector ``delta`` (one
value per element of the model, eV) shifts a structure's energy by
``counts @ delta``. It is parametrised as ``delta = basis @ phi``:

* shared: ``basis`` is a column of ones, one per-atom offset for every element.
  When all labels share one composition only this total is determined.
* per element: ``basis`` spans the row space of the labels' composition matrix,
  so every determined combination is fitted and undetermined ones stay zero
  (the minimum-norm solution).

The first estimate of ``phi`` is a weighted least-squares fit of the label
residuals (scikit-learn); the joint fit with the readout weights then refines it.
"""

from __future__ import annotations

from typing import Literal, Sequence

import ase
import numpy as np
from sklearn.linear_model import LinearRegression

OffsetMode = Literal["shared", "per_element"]


def composition_matrix(structures: Sequence[ase.Atoms], atomic_numbers: Sequence[int]) -> np.ndarray:
    """(structures, elements) atom counts, columns in the model's element order."""
    zs = np.asarray(list(atomic_numbers))
    return np.array([[np.count_nonzero(atoms.numbers == z) for z in zs] for atoms in structures], dtype=float).reshape(
        len(structures), len(zs)
    )


def choose_offset_mode(counts: np.ndarray, requested: str) -> OffsetMode:
    """``requested`` unless it is ``"auto"``: then shared for one composition (rank <= 1), else per element."""
    if requested in ("shared", "per_element"):
        return requested
    return "shared" if np.linalg.matrix_rank(counts) <= 1 else "per_element"


def offset_basis(counts: np.ndarray, mode: OffsetMode, rcond: float) -> np.ndarray:
    """(elements, k) matrix B with per-element offsets ``delta = B @ phi``."""
    n_elements = counts.shape[1]
    if mode == "shared":
        return np.ones((n_elements, 1))
    _, singular, vt = np.linalg.svd(counts, full_matrices=False)
    keep = singular > rcond * max(singular.max(initial=0.0), 1.0)
    return vt[keep].T


def initial_offsets(features: np.ndarray, residuals: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Weighted least-squares ``phi`` for ``residuals ~ features @ phi`` (weights 1/sigma^2)."""
    if features.shape[0] == 0 or features.shape[1] == 0:
        return np.zeros(features.shape[1])
    fit = LinearRegression(fit_intercept=False).fit(features, residuals, sample_weight=1.0 / sigma**2)
    return np.atleast_1d(fit.coef_).astype(float)
