"""The PySCF UKS calculator: analytic forces against finite differences, a sane H2 bond energy,
and clear errors for bad settings."""

import numpy as np
import pytest
from ase import Atoms

from mfal.systems import SystemSpecError, h3_chain
from mfal.systems.pyscf_calculator import PySCFCalculator

pytest.importorskip("pyscf")


def _energy(atoms, **settings):
    atoms = atoms.copy()
    atoms.calc = PySCFCalculator(**settings)
    return atoms.get_potential_energy()


def test_forces_are_minus_finite_difference_gradient():
    atoms = h3_chain(0.85, 1.1, angle=150.0)
    settings = dict(basis="cc-pVDZ")
    atoms.calc = PySCFCalculator(**settings)
    forces = atoms.get_forces()
    step = 1e-3
    for index, axis in [(0, 0), (1, 1), (2, 0), (2, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[index, axis] += step
        minus.positions[index, axis] -= step
        gradient = (_energy(plus, **settings) - _energy(minus, **settings)) / (2 * step)
        assert forces[index, axis] == pytest.approx(-gradient, abs=2e-4)
    assert np.abs(forces.sum(axis=0)).max() < 1e-4


def test_h2_bond_energy_is_pbe_like():
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.741]])
    h = Atoms("H", positions=[[0, 0, 0]])
    binding = 2 * _energy(h, basis="cc-pVDZ") - _energy(h2, basis="cc-pVDZ")
    # PBE De of H2 is about 4.5 eV (experiment 4.75 eV)
    assert 4.3 < binding < 4.7


def test_a_stretched_bond_gets_the_broken_symmetry_ground_state():
    # H2 stretched to 2.4 Å beside a far H: the SCF from the atomic guess stays on the
    # spin-symmetric solution, about 1 eV above the broken-symmetry UKS ground state.
    stretched = h3_chain(2.4, 4.0)
    followed = _energy(stretched, basis="cc-pVDZ")
    symmetric = _energy(stretched, basis="cc-pVDZ", follow_instabilities=False)
    assert followed < symmetric - 0.5
    atoms = stretched.copy()
    atoms.calc = PySCFCalculator(basis="cc-pVDZ")
    forces = atoms.get_forces()
    step = 1e-3
    plus, minus = stretched.copy(), stretched.copy()
    plus.positions[1, 0] += step
    minus.positions[1, 0] -= step
    gradient = (_energy(plus, basis="cc-pVDZ") - _energy(minus, basis="cc-pVDZ")) / (2 * step)
    assert forces[1, 0] == pytest.approx(-gradient, abs=2e-4)


def test_settings_record_and_doublet_default():
    calc = PySCFCalculator(basis="cc-pVDZ")
    assert calc.settings()["basis"] == "cc-pVDZ"
    assert calc.settings()["xc"] == "PBE"
    assert calc.settings()["method"] == "UKS"


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(basis="no-such-basis"), "basis"),
        (dict(xc="NOT_A_FUNCTIONAL"), "functional"),
        (dict(smearing=0.1), "unknown PySCF setting"),
    ],
)
def test_bad_settings_rejected_before_any_scf(settings, message):
    with pytest.raises(SystemSpecError, match=message):
        PySCFCalculator(**settings)


def test_impossible_spin_rejected():
    atoms = h3_chain(1.0, 1.0)
    atoms.calc = PySCFCalculator(basis="cc-pVDZ", spin=0)
    with pytest.raises(SystemSpecError, match="spin"):
        atoms.get_potential_energy()


def test_periodic_atoms_rejected():
    atoms = h3_chain(1.0, 1.0)
    atoms.cell = [5, 5, 5]
    atoms.pbc = True
    atoms.calc = PySCFCalculator(basis="cc-pVDZ")
    with pytest.raises(SystemSpecError, match="molecules"):
        atoms.get_potential_energy()
