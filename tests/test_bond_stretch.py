"""The stretched-bond energy of the MoS2 surrogate: zero on intact MoS2, largest at the hop's saddle, exact forces."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from mfal.potentials.bond_stretch import StretchedBondEnergy
from mfal.potentials.errors import PotentialError
from mfal.systems.mos2 import mos2_monolayer, mos2_vacancy_endpoints, mos2_vacancy_path

SHIPPED_PATH = Path(__file__).resolve().parents[1] / "data" / "mos2" / "committee_neb.extxyz"


def _energy(atoms, **options):
    atoms = atoms.copy()
    atoms.calc = StretchedBondEnergy(**options)
    return atoms.get_potential_energy()


def test_intact_cells_cost_nothing():
    assert _energy(mos2_monolayer((3, 3))) == 0.0
    for endpoint in mos2_vacancy_endpoints():
        assert _energy(endpoint) == 0.0
    rattled = mos2_monolayer((3, 3))
    rattled.rattle(0.03, seed=2)
    assert 0.0 <= _energy(rattled) < 0.01  # a bond stretched past 2.5 Å by the rattle costs a few meV


def test_the_bump_rises_to_one_at_its_peak_and_vanishes_past_its_ends():
    calculator = StretchedBondEnergy()
    for distance, expected in [(2.4, 0.0), (2.6, 0.5), (2.7, 1.0), (2.9, 0.5), (3.2, 0.0)]:
        pair = Atoms("MoS", positions=[[0, 0, 0], [0, 0, distance]])
        assert calculator.bumps(pair).sum() == pytest.approx(expected, abs=1e-12)


def test_the_relaxed_hop_is_raised_at_its_saddle_and_not_at_its_shoulders():
    """On the shipped committee's own CI-NEB path the hopping S bridges two Mo at 2.65 Å at the saddle."""
    path = read(SHIPPED_PATH, ":")
    energies = np.array([_energy(image) for image in path])
    saddle = len(path) // 2
    assert energies[0] == energies[-1] == 0.0
    assert energies.argmax() == saddle
    assert energies[saddle] > 0.4
    assert energies[saddle - 2: saddle].max() < 0.25 * energies[saddle]  # the shoulders, one bond already broken
    assert energies == pytest.approx(energies[::-1], abs=1e-3)
    assert _energy(path[saddle], strength=0.64) == pytest.approx(2 * energies[saddle])


def test_forces_are_minus_the_energy_gradient():
    atoms = mos2_vacancy_path(5)[2].copy()
    atoms.rattle(0.08, seed=1)
    atoms.calc = StretchedBondEnergy()
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.1
    step = 1e-5
    numeric = np.zeros_like(forces)
    for index in range(len(atoms)):
        for axis in range(3):
            shifted = atoms.copy()
            shifted.positions[index, axis] += step
            plus = _energy(shifted)
            shifted.positions[index, axis] -= 2 * step
            numeric[index, axis] = -(plus - _energy(shifted)) / (2 * step)
    assert forces == pytest.approx(numeric, abs=1e-7)


@pytest.mark.parametrize("options, message", [
    (dict(centre="Xx"), "unknown element"),
    (dict(r_on=2.8, r_peak=2.7), "r_on < r_peak < r_off"),
    (dict(r_off=2.6), "r_on < r_peak < r_off"),
    (dict(strength=-1.0), ">= 0"),
])
def test_bad_settings(options, message):
    with pytest.raises(PotentialError, match=message):
        StretchedBondEnergy(**options)
