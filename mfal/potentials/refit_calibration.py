"""Calibration of a refitted committee: does its spread cover its errors on unseen labels?

Each label in turn is held out, the committee is refitted on the others, and the
held-out energy is compared with the committee mean. With a combined sigma of
``sqrt(label error^2 + committee spread^2)``, a calibrated committee has about
68 % of the errors within 1 sigma and 95 % within 2.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def leave_one_out_predictions(n_labels: int, predict_held_out: Callable[[int], np.ndarray]) -> np.ndarray:
    """(labels, members) predictions of each label by the committee refitted without it."""
    return np.array([np.asarray(predict_held_out(index), dtype=float) for index in range(n_labels)])


def calibration_summary(energies: np.ndarray, sigma: np.ndarray, predictions: np.ndarray) -> dict:
    """Fractions of held-out labels within 1 and 2 combined sigmas, and the sizes behind them (eV)."""
    mean = predictions.mean(axis=1)
    spread = predictions.std(axis=1)
    combined = np.sqrt(sigma**2 + spread**2)
    scaled = np.abs(mean - energies) / combined
    return {
        "method": "leave-one-out",
        "n_labels": int(len(energies)),
        "within_1_sigma": float(np.mean(scaled <= 1.0)),
        "within_2_sigma": float(np.mean(scaled <= 2.0)),
        "mean_abs_error": float(np.mean(np.abs(mean - energies))),
        "mean_spread": float(np.mean(spread)),
        "mean_label_error": float(np.mean(sigma)),
    }
