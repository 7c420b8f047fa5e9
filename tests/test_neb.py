"""Committee NEB: batched force calls, bad paths, and a double well with a known saddle."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.constraints import FixAtoms

from mfal.neb import NEBSettingsError, neb_from_endpoints, relax_endpoints, run_neb
from mfal.potentials import CollapsedPathError, Committee, PathCompositionError, default_architecture
from mfal.potentials.analytic import LEPSCalculator
from mfal.potentials.train import TrainingSettings, train_committee
from mfal.systems.h3 import h3_path

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def untrained():
    """Four random tiny members over H and O: a smooth surface with real forces, built in seconds."""
    architecture = default_architecture(
        [1, 8], [-13.6, -2041.0], avg_num_neighbors=2.0, r_max=3.0, channels=4, max_ell=1, num_bessel=4,
        radial_MLP=(8,), correlation=2, atomic_inter_scale=0.3,
    )
    return Committee.from_architecture(architecture, 4)


def test_each_force_evaluation_is_one_call_over_all_moving_images(untrained, monkeypatch):
    sizes = []
    evaluate = untrained.evaluate

    def counting(structures, **options):
        sizes.append(len(structures))
        return evaluate(structures, **options)

    monkeypatch.setattr(untrained, "evaluate", counting)
    result = run_neb(untrained, h3_path(3), max_steps=4, fmax=1e-4)
    assert sizes[0] == 2  # both endpoints, once, together
    assert sizes[1:] == [3] * result.force_calls  # every other call covers all three moving images
    assert result.force_calls == result.steps + 1
    assert not result.converged
    assert result.member_energies.shape == (4, 5)
    assert json.loads(json.dumps(result.summary()))["force_calls"] == result.force_calls


def test_endpoints_of_different_composition_are_refused(untrained):
    hydrogen = Atoms("H3", positions=[[0, 0, 0], [0.8, 0, 0], [2.5, 0, 0]])
    water = Atoms("H2O", positions=[[0, 0, 0], [0.8, 0, 0], [2.5, 0, 0]])
    with pytest.raises(PathCompositionError, match=r"H2O.*H3"):
        neb_from_endpoints(untrained, hydrogen, water)
    reordered = Atoms("OH2", positions=water.positions)
    with pytest.raises(PathCompositionError, match="same order"):
        relax_endpoints(untrained, water, reordered)


def test_bad_neb_settings_are_refused(untrained):
    with pytest.raises(NEBSettingsError, match="optimizer must be one of"):
        run_neb(untrained, h3_path(1), optimizer="LBFGS-B")
    with pytest.raises(NEBSettingsError, match="at least one moving image"):
        run_neb(untrained, h3_path(0))


def test_a_collapsed_image_stops_the_neb_and_is_named(untrained):
    path = h3_path(3)
    path[2].positions[1] = path[2].positions[0] + [0.1, 0.0, 0.0]  # H-H 0.1 Å; bond 0.62 Å
    with pytest.raises(CollapsedPathError, match=r"NEB image 2: atoms 0 \(H\) and 1 \(H\) are 0.10 Å apart"):
        run_neb(untrained, path, max_steps=4)
    initial = path[0].copy()
    initial.positions[2] = initial.positions[1] + [0.0, 0.2, 0.0]
    with pytest.raises(CollapsedPathError, match="the initial endpoint: atoms 1 \\(H\\) and 2"):
        relax_endpoints(untrained, initial, path[-1])


OUTER = 1.1
"""Outer H atoms held at -OUTER and +OUTER (Å); the middle one hops between two wells."""


def double_well(x: float, y: float = 0.0) -> Atoms:
    atoms = Atoms("H3", positions=[[-OUTER, 0, 0], [x, y, 0], [OUTER, 0, 0]])
    atoms.set_constraint(FixAtoms([0, 2]))
    return atoms


@pytest.fixture(scope="module")
def double_well_committee():
    """Four small members trained on the LEPS surface of the middle atom's plane."""
    rng = np.random.default_rng(0)
    calculator = LEPSCalculator()
    data = []
    for x, y in zip(rng.uniform(-0.55, 0.55, 48), rng.uniform(-0.25, 0.25, 48)):
        atoms = double_well(float(x), float(y))
        calculator.calculate(atoms)
        atoms.info["REF_energy"] = calculator.results["energy"]
        atoms.new_array("REF_forces", calculator.results["forces"].copy())
        data.append(atoms)
    committee, _ = train_committee(
        data,
        4,
        settings=TrainingSettings(max_epochs=150, patience=40, batch_size=8, learning_rate=1e-2,
                                  valid_fraction=0.15, test_fraction=0.15),
        architecture_options=dict(r_max=3.0, channels=4, max_ell=1, num_bessel=6, radial_MLP=(16,), correlation=2),
    )
    return committee


@pytest.mark.slow
def test_climbing_image_finds_the_symmetric_saddle(double_well_committee):
    committee = double_well_committee
    initial, final, _ = relax_endpoints(committee, double_well(-0.4), double_well(0.4))
    a, b = initial.positions[1, 0], final.positions[1, 0]
    # a bent, unevenly spaced first band: the climbing image has to travel to the saddle
    band = [initial]
    for k in range(1, 6):
        t = (k / 6) ** 1.4
        band.append(double_well(a + (b - a) * t, 0.15 * np.sin(np.pi * k / 6)))
    band.append(final)
    result = run_neb(committee, band, fmax=0.005, optimizer="FIRE")

    assert result.converged
    climbing = result.climbing_index
    assert climbing == int(np.argmax(result.energies))
    others = np.delete(result.energies, climbing)
    assert result.energies[climbing] > others.max()
    saddle = result.images[climbing].positions[1]
    assert abs(saddle[0]) < 0.02 and abs(saddle[1]) < 0.02
    # by mirror symmetry the saddle of the committee mean is the centred configuration
    centre = committee.evaluate(double_well(0.0)).energy_mean[0]
    assert result.barrier == pytest.approx(centre - result.energies[0], abs=2e-3)
    # and the committee learnt the LEPS barrier of this double well to within its training error
    leps = LEPSCalculator()
    profile = []
    for x in (0.0, a):
        leps.calculate(double_well(x))
        profile.append(leps.results["energy"])
    assert result.barrier == pytest.approx(profile[0] - profile[1], abs=0.1)
    assert result.barrier_spread > 0
    assert result.member_barriers.shape == (4,)
