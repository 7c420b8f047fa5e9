"""When a campaign stops: a steady, confident barrier, or a spent budget.

Cycle 0 is the base (DFT-trained) committee; cycle c >= 1 is the committee after
the c-th refit. A campaign has converged when the barrier moved by less than
``tol_energy`` in each of the last ``n_consecutive`` cycles and the committee's
barrier spread is below ``tol_spread``. It stops without converging when the
number of refits reaches ``max_cycles`` or another batch of labels would exceed
``max_labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Decision:
    """``finished`` (stop the loop), ``converged`` (stopped because the criteria hold) and why."""

    finished: bool
    converged: bool
    reason: str


def decide(
    barriers: Sequence[float],
    spreads: Sequence[float],
    n_labels: int,
    *,
    tol_energy: float,
    n_consecutive: int,
    tol_spread: float,
    max_cycles: int,
    max_labels: int,
    batch_size: int,
) -> Decision:
    """Decide after the NEB of cycle ``len(barriers) - 1`` on the barrier history so far."""
    if not barriers or len(barriers) != len(spreads):
        raise ValueError(f"need one spread per barrier and at least one cycle, got {len(barriers)} and {len(spreads)}")
    cycle = len(barriers) - 1
    changes = [abs(b - a) for a, b in zip(barriers[:-1], barriers[1:])]
    recent = changes[-n_consecutive:]
    steady = len(recent) == n_consecutive and all(change < tol_energy for change in recent)
    confident = spreads[-1] < tol_spread
    if cycle >= 1 and steady and confident:
        return Decision(True, True, f"barrier changed by < {tol_energy} eV for {n_consecutive} cycle(s) "
                                    f"and committee spread {spreads[-1]:.3f} eV < {tol_spread} eV")
    if cycle >= max_cycles:
        return Decision(True, False, f"reached max_cycles = {max_cycles} without converging")
    if n_labels + batch_size > max_labels:
        return Decision(True, False, f"another batch of {batch_size} label(s) would exceed max_labels = "
                                     f"{max_labels} ({n_labels} used) without converging")
    return Decision(False, False, "not converged")
