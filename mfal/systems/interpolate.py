"""Straight-line interpolation between two endpoints of a reaction path.

The path builders hand an NEB a first guess; a straight line in Cartesian space
(taken through the minimum-image displacement for periodic cells, so an atom
crossing a cell face does not travel through the whole cell) is what ASE's own
``NEB.interpolate`` does, without needing an NEB object or a calculator.
"""

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

from mfal.systems.errors import SystemSpecError


def interpolate_path(initial: Atoms, final: Atoms, n_intermediate: int) -> list[Atoms]:
    """Return ``[initial, n_intermediate images, final]`` on the straight line between them.

    Both endpoints must hold the same atoms in the same order and share one cell.
    Each returned image is an independent copy carrying the endpoints' ``info``.
    """
    if n_intermediate < 0:
        raise SystemSpecError(f"n_intermediate must be >= 0, got {n_intermediate}")
    if list(initial.numbers) != list(final.numbers):
        raise SystemSpecError(
            "endpoints must hold the same atoms in the same order; got "
            f"{initial.get_chemical_formula()} and {final.get_chemical_formula()}"
        )
    if not np.allclose(initial.cell, final.cell) or list(initial.pbc) != list(final.pbc):
        raise SystemSpecError("endpoints must share one cell and one pbc")
    start = initial.get_positions()
    delta = final.get_positions() - start
    if initial.pbc.any():
        delta, _ = find_mic(delta, initial.cell, initial.pbc)
    images = [initial.copy()]
    for k in range(1, n_intermediate + 1):
        image = initial.copy()
        image.set_positions(start + delta * k / (n_intermediate + 1))
        images.append(image)
    images.append(final.copy())
    return images
