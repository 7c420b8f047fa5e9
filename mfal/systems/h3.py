"""H + H2 -> H2 + H: the collinear hydrogen exchange reaction.

The textbook case where density functionals fail for a barrier: PBE gives about
0.16 eV while the exact classical barrier is 0.417 eV (9.61 kcal/mol) with the
saddle point at 0.930 Å for both bonds. Three atoms, no cell, a doublet.

Atom order is fixed: atom 1 is the middle H, atom 0 and atom 2 the outer ones,
so ``r1 = |x1 - x0|`` and ``r2 = |x2 - x1|``. The reactant has the H2 molecule on
the right (atoms 1-2) and the product on the left (atoms 0-1).
"""

import math

import numpy as np
from ase import Atoms

from mfal.systems.errors import SystemSpecError
from mfal.systems.interpolate import interpolate_path

H2_BOND = 0.741
"""Equilibrium H2 bond length (Å) used for the endpoints."""

H3_FAR_DISTANCE = 3.5
"""Default distance (Å) from the incoming H to the near atom of the H2 molecule."""

H3_SADDLE_BOND = 0.930
"""Both bond lengths (Å) at the exact collinear saddle point."""

H3_EXACT_BARRIER_EV = 0.417
"""Exact classical (no zero-point) barrier of H + H2, eV."""

H3_SPIN = 1
"""Number of unpaired electrons (2S) of H3: a doublet."""


def h3_chain(r1: float, r2: float, angle: float = 180.0) -> Atoms:
    """Three H atoms with bonds ``r1`` (0-1), ``r2`` (1-2) and angle 0-1-2 in degrees.

    Atom 1 sits at the origin, atom 0 on the -x axis, atom 2 in the xy-plane;
    ``angle=180`` gives the collinear geometry along x.
    """
    for name, value in (("r1", r1), ("r2", r2)):
        if not value > 0:
            raise SystemSpecError(f"{name} must be a positive bond length in Å, got {value}")
    if not 0 < angle <= 180:
        raise SystemSpecError(f"angle must lie in (0, 180] degrees, got {angle}")
    theta = math.radians(angle)
    positions = np.array(
        [
            [-r1, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [-r2 * math.cos(theta), r2 * math.sin(theta), 0.0],
        ]
    )
    positions[np.abs(positions) < 1e-12] = 0.0
    atoms = Atoms("H3", positions=positions, pbc=False)
    atoms.info["system"] = "h3"
    return atoms


def h3_endpoints(r_far: float = H3_FAR_DISTANCE, r_h2: float = H2_BOND) -> tuple[Atoms, Atoms]:
    """Reactant H + H2 (``r1 = r_far``, ``r2 = r_h2``) and its mirror-image product.

    The product has ``r1 = r_h2`` and ``r2 = r_far``; both keep the middle atom at
    the origin so the straight-line path moves only the outer atoms.
    """
    if not r_far > r_h2:
        raise SystemSpecError(
            f"r_far ({r_far} Å) must exceed the H2 bond r_h2 ({r_h2} Å) so the endpoints "
            "are separated H + H2"
        )
    return h3_chain(r_far, r_h2), h3_chain(r_h2, r_far)


def h3_path(
    n_intermediate: int = 7, r_far: float = H3_FAR_DISTANCE, r_h2: float = H2_BOND
) -> list[Atoms]:
    """Reactant, ``n_intermediate`` straight-line images and product (``n_intermediate + 2`` in all)."""
    initial, final = h3_endpoints(r_far=r_far, r_h2=r_h2)
    return interpolate_path(initial, final, n_intermediate)
