"""The bond-breaking energy of the MoS2 surrogate: zero on intact MoS2, largest at the hop, exact forces."""

import numpy as np
import pytest

from mfal.potentials.coordination import CoordinationPenalty
from mfal.potentials.errors import PotentialError
from mfal.systems.mos2 import mos2_monolayer, mos2_vacancy_endpoints, mos2_vacancy_path


def _energy(atoms, **options):
    atoms = atoms.copy()
    atoms.calc = CoordinationPenalty(**options)
    return atoms.get_potential_energy()


def test_intact_cells_cost_nothing():
    assert _energy(mos2_monolayer((3, 3))) == 0.0
    for endpoint in mos2_vacancy_endpoints():
        assert _energy(endpoint) == 0.0
    rattled = mos2_monolayer((3, 3))
    rattled.rattle(0.03, seed=2)
    assert _energy(rattled) == 0.0


def test_every_sulfur_counts_three_molybdenum():
    cell = mos2_monolayer((3, 3))
    assert CoordinationPenalty().coordination(cell) == pytest.approx(np.full(18, 3.0))


def test_the_hop_midpoint_costs_most_and_the_profile_is_symmetric():
    energies = np.array([_energy(image) for image in mos2_vacancy_path(7)])
    assert energies[0] == energies[-1] == 0.0
    assert energies.argmax() == len(energies) // 2
    assert energies == pytest.approx(energies[::-1], abs=1e-9)
    assert _energy(mos2_vacancy_path(7)[4], strength=1.1) == pytest.approx(2 * energies[4])


def test_forces_are_minus_the_energy_gradient():
    atoms = mos2_vacancy_path(5)[2].copy()
    atoms.rattle(0.05, seed=1)
    atoms.calc = CoordinationPenalty()
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
    (dict(r_on=3.0, r_off=2.5), "r_on < r_off"),
    (dict(strength=-1.0), ">= 0"),
])
def test_bad_settings(options, message):
    with pytest.raises(PotentialError, match=message):
        CoordinationPenalty(**options)
