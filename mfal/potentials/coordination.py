"""A smooth bond-breaking energy: the MoS2 surrogate's stand-in for "QMC minus DFT".

The MoS2 benchmark needs a high-fidelity surface whose barrier is known and
differs from the DFT committee's the way QMC's does (Hložný et al.: DFT 2.30 eV,
QMC 2.85 eV for the S-vacancy hop). A QMC correction to DFT is largest where
bonds break and vanishes where the bonding is intact, so the surrogate adds to
the DFT-trained model an energy that depends only on how many bonds an atom has:

    E = strength * sum_i (reference - CN_i)^2,   CN_i = sum_j s(r_ij)

over centre atoms i (S) and their ligands j (Mo), with a switching function s
equal to 1 below ``r_on``, 0 beyond ``r_off`` and a cosine between. With the
defaults, every S of a relaxed or rattled MoS2 cell has three Mo at about 2.4 Å
(CN = 3, E = 0), while the hopping S at the bridge between two sites has two
(E ~ strength): the correction raises the hop's saddle, not its minima, and has
analytic forces.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from mfal.potentials.errors import PotentialError


class CoordinationPenalty(Calculator):
    """``strength * sum (reference - CN)^2`` over ``centre`` atoms counting ``ligand`` neighbours (eV, Å)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        centre: str = "S",
        ligand: str = "Mo",
        reference: float = 3.0,
        strength: float = 0.55,
        r_on: float = 2.6,
        r_off: float = 3.0,
        **kwargs,
    ) -> None:
        for name in (centre, ligand):
            if name not in atomic_numbers:
                raise PotentialError(f"unknown element {name!r} in the coordination penalty")
        if not 0 < r_on < r_off:
            raise PotentialError(f"need 0 < r_on < r_off (Å), got r_on={r_on}, r_off={r_off}")
        if reference < 0 or strength < 0:
            raise PotentialError(f"reference and strength must be >= 0, got {reference} and {strength}")
        super().__init__(**kwargs)
        self.centre, self.ligand = atomic_numbers[centre], atomic_numbers[ligand]
        self.reference, self.strength = float(reference), float(strength)
        self.r_on, self.r_off = float(r_on), float(r_off)

    def coordination(self, atoms: Atoms) -> np.ndarray:
        """Smooth ligand count of every centre atom (in the order of ``atoms``' centre atoms)."""
        return self._terms(atoms)[0]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        counts, pairs, slopes, vectors, distances = self._terms(self.atoms)
        deficit = self.reference - counts
        energy = self.strength * float(np.sum(deficit**2))
        # dE/dr_ij = -2 strength deficit_i s'(r_ij); r_ij moves with atom j along the unit vector i -> j
        d_energy_d_r = -2.0 * self.strength * deficit[pairs[0]] * slopes
        along = (d_energy_d_r / distances)[:, None] * vectors
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, pairs[1], along)
        np.add.at(forces, pairs[2], -along)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}

    def _terms(self, atoms: Atoms):
        """Counts per centre atom, and per centre-ligand pair: (centre slot, i, j), s'(r), vector, r."""
        first, second, distances, vectors = neighbor_list("ijdD", atoms, self.r_off)
        numbers = atoms.numbers
        keep = (numbers[first] == self.centre) & (numbers[second] == self.ligand)
        first, second, distances, vectors = first[keep], second[keep], distances[keep], vectors[keep]
        centres = np.flatnonzero(numbers == self.centre)
        slot = np.full(len(atoms), -1)
        slot[centres] = np.arange(len(centres))
        width = self.r_off - self.r_on
        phase = np.clip((distances - self.r_on) / width, 0.0, 1.0)
        switch = 0.5 * (1.0 + np.cos(np.pi * phase))
        slopes = np.where((phase > 0) & (phase < 1), -0.5 * np.pi / width * np.sin(np.pi * phase), 0.0)
        counts = np.zeros(len(centres))
        np.add.at(counts, slot[first], switch)
        return counts, (slot[first], first, second), slopes, vectors, distances
