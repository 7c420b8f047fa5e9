"""An analytic reference surface for H3: the London-Eyring-Polanyi-Sato (LEPS) potential.

Cheap, smooth and with a real barrier for H + H2 -> H2 + H (saddle on the
symmetric collinear line), so committees can be trained on it and NEB results
checked against a surface whose saddle is known, without any electronic
structure code. Morse parameters of H2 (D, alpha, r0) and a Sato parameter tuned
to the exact saddle.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mfal.potentials.errors import PotentialError
from mfal.systems.h3 import h3_chain

H2_DISSOCIATION = 4.7466
"""Morse well depth of H2 (eV)."""
H2_MORSE_ALPHA = 1.9426
"""Morse range parameter of H2 (1/Å)."""
H2_BOND = 0.7416
"""Equilibrium H2 bond length (Å)."""
SATO_PARAMETER = 0.14
"""Sato parameter: 0.14 puts the collinear saddle at 0.93 Å for both bonds with a
barrier of about 0.40 eV, close to the exact H3 surface (0.930 Å, 0.417 eV)."""


class LEPSCalculator(Calculator):
    """LEPS energy and analytic forces for exactly three hydrogen atoms (no cell).

    Pairs are (0, 1), (1, 2) and (0, 2); the surface does not depend on atom order.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        dissociation: float = H2_DISSOCIATION,
        alpha: float = H2_MORSE_ALPHA,
        bond: float = H2_BOND,
        sato: float = SATO_PARAMETER,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dissociation, self.alpha, self.bond, self.sato = dissociation, alpha, bond, sato

    def _coulomb_exchange(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Coulomb (Q) and exchange (J) integrals of each pair and their derivatives in r."""
        d, a, s = self.dissociation, self.alpha, self.sato
        e1 = np.exp(-a * (r - self.bond))
        e2 = e1**2
        q = d / (4 * (1 + s)) * ((3 + s) * e2 - (2 + 6 * s) * e1)
        j = d / (4 * (1 + s)) * ((1 + 3 * s) * e2 - (6 + 2 * s) * e1)
        dq = d / (4 * (1 + s)) * (-2 * a * (3 + s) * e2 + a * (2 + 6 * s) * e1)
        dj = d / (4 * (1 + s)) * (-2 * a * (1 + 3 * s) * e2 + a * (6 + 2 * s) * e1)
        return q, j, dq, dj

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) != 3 or set(self.atoms.numbers) != {1}:
            raise PotentialError(
                f"the LEPS surface is defined for exactly three H atoms, got {self.atoms.get_chemical_formula()}"
            )
        x = self.atoms.positions
        pairs = [(0, 1), (1, 2), (0, 2)]
        vectors = np.array([x[j] - x[i] for i, j in pairs])
        r = np.linalg.norm(vectors, axis=1)
        q, j, dq, dj = self._coulomb_exchange(r)
        w = 0.5 * ((j[0] - j[1]) ** 2 + (j[1] - j[2]) ** 2 + (j[2] - j[0]) ** 2)
        root = np.sqrt(max(w, 1e-300))
        energy = q.sum() - root
        dw_dj = 2 * j - np.roll(j, 1) - np.roll(j, -1)
        de_dr = dq - dw_dj * dj / (2 * root)
        forces = np.zeros_like(x)
        for (i, k), unit, g in zip(pairs, vectors / r[:, None], de_dr):
            forces[i] += g * unit
            forces[k] -= g * unit
        self.results = {"energy": float(energy), "free_energy": float(energy), "forces": forces}


def leps_h3_dataset(
    n_structures: int,
    seed: int = 0,
    short_range: tuple[float, float] = (0.6, 1.1),
    long_max: float = 2.6,
    angle_range: tuple[float, float] = (150.0, 180.0),
    energy_key: str = "REF_energy",
    forces_key: str = "REF_forces",
) -> list:
    """Random H3 geometries around the reaction valley, labelled with LEPS energy and forces.

    One bond is drawn from ``short_range`` (Å), the other between it and
    ``long_max``, on a random side; the bond angle from ``angle_range``
    (degrees). This covers reactant, product and saddle without wasting
    samples on three separated atoms. Labels go to ``info[energy_key]`` and
    ``arrays[forces_key]``.
    """
    rng = np.random.default_rng(seed)
    calculator = LEPSCalculator()
    structures = []
    for _ in range(n_structures):
        short = float(rng.uniform(*short_range))
        long = float(rng.uniform(short, long_max))
        r1, r2 = (short, long) if rng.random() < 0.5 else (long, short)
        atoms = h3_chain(r1, r2, float(rng.uniform(*angle_range)))
        calculator.calculate(atoms)
        atoms.info[energy_key] = calculator.results["energy"]
        atoms.new_array(forces_key, calculator.results["forces"].copy())
        structures.append(atoms)
    return structures
