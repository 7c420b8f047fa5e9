"""Committee: batched evaluation, forces as gradients, persistence round trips, bad input."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from mfal.potentials import (
    ArchitectureMismatchError,
    Committee,
    CommitteeFileError,
    CommitteeSizeError,
    UnknownElementError,
    build_model,
    default_architecture,
)

torch.set_num_threads(1)


def tiny_architecture(r_max=3.0):
    """A few-parameter MACE over H and O, fast enough for many calls in a test."""
    return default_architecture(
        [1, 8],
        [-13.6, -2041.0],
        avg_num_neighbors=3.0,
        r_max=r_max,
        channels=4,
        max_ell=1,
        num_bessel=4,
        radial_MLP=(8,),
        correlation=2,
        atomic_inter_scale=0.5,
        atomic_inter_shift=0.1,
    )


@pytest.fixture(scope="module")
def committee():
    return Committee.from_architecture(tiny_architecture(), 4, seeds=[1, 2, 3, 4])


def structures():
    """Molecules of different sizes plus one periodic cell, slightly distorted."""
    rng = np.random.default_rng(7)
    water = molecule("H2O")
    peroxide = molecule("H2O2")
    periodic = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[3.2, 3.4, 3.6], pbc=True)
    result = []
    for atoms in (water, peroxide, periodic):
        atoms = atoms.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        result.append(atoms)
    return result


def test_architecture_record_is_json(committee):
    record = committee.record()
    assert json.loads(json.dumps(record)) == record
    assert record["n_members"] == 4
    assert record["members"][0]["hidden_irreps"] == "4x0e+4x1o"


def test_batched_matches_one_at_a_time(committee):
    batch = structures()
    together = committee.evaluate(batch, stress=False)
    assert together.energies.shape == (4, 3)
    for index, atoms in enumerate(batch):
        alone = committee.evaluate(atoms)
        np.testing.assert_allclose(alone.energies[:, 0], together.energies[:, index], rtol=0, atol=1e-10)
        np.testing.assert_allclose(alone.forces, together.structure_forces(index), rtol=0, atol=1e-10)
    # the members really differ, so the spread is informative
    assert np.all(together.energy_spread > 1e-6)


def test_forces_are_minus_gradient_of_mean_energy(committee):
    atoms = structures()[1]
    forces = committee.evaluate(atoms).forces_mean
    step = 1e-5
    numeric = np.zeros_like(atoms.positions)
    for i in range(len(atoms)):
        for k in range(3):
            shifted = []
            for sign in (+1, -1):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step
                shifted.append(moved)
            energies = committee.evaluate(shifted).energy_mean
            numeric[i, k] = -(energies[0] - energies[1]) / (2 * step)
    np.testing.assert_allclose(forces, numeric, rtol=0, atol=1e-6)
    assert np.abs(forces).max() > 1e-3


def test_stress_is_strain_derivative_of_mean_energy(committee):
    atoms = structures()[2]
    stress = committee.evaluate(atoms, stress=True).stress_mean[0]
    step = 1e-5
    volume = atoms.get_volume()
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        energies = []
        for sign in (+1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * step
            strain[j, i] += sign * step if i != j else 0.0
            deformed = atoms.copy()
            deformed.set_cell(atoms.cell @ strain, scale_atoms=True)
            energies.append(committee.evaluate(deformed).energy_mean[0])
        expected = (energies[0] - energies[1]) / (2 * step) / volume / (2 if i != j else 1)
        assert stress[i, j] == pytest.approx(expected, abs=1e-6)


def test_calculator_gives_committee_mean(committee):
    atoms = structures()[0]
    prediction = committee.evaluate(atoms)
    atoms.calc = committee.calculator()
    assert atoms.get_potential_energy() == pytest.approx(prediction.energy_mean[0], abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), prediction.forces_mean, atol=1e-12)
    assert atoms.calc.results["energy_spread"] == pytest.approx(prediction.energy_spread[0], abs=1e-12)


def test_file_round_trip_gives_identical_predictions(committee, tmp_path):
    path = committee.save(tmp_path / "committee.pt")
    loaded = Committee.load(path)
    before, after = committee.evaluate(structures()), loaded.evaluate(structures())
    np.testing.assert_array_equal(before.energies, after.energies)
    np.testing.assert_array_equal(before.forces, after.forces)
    assert loaded.record() == committee.record()


def test_members_with_their_own_shifts_and_energies_load_with_their_own(tmp_path):
    base = tiny_architecture()
    records = [{**base, "atomic_inter_shift": 0.1 * i, "atomic_energies": [-13.6 + i, -2041.0 - i]} for i in range(4)]
    members = []
    for seed, record in enumerate(records):
        torch.manual_seed(seed)
        members.append(build_model(record))
    committee = Committee(members, records)
    loaded = Committee.load(committee.save(tmp_path / "committee.pt"))
    before, after = committee.evaluate(structures()), loaded.evaluate(structures())
    np.testing.assert_array_equal(before.energies, after.energies)
    np.testing.assert_array_equal(before.forces, after.forces)
    assert len({round(float(e), 6) for e in after.energies[:, 0]}) == 4


def test_pair_repulsion_adds_zbl_within_the_covalent_bond_and_survives_a_round_trip(tmp_path):
    """The same weights with and without ``pair_repulsion``: they differ only below the H-H covalent
    bond length (0.62 Å), where the ZBL term pushes the atoms apart."""
    plain_record = tiny_architecture()
    repulsive_record = {**plain_record, "pair_repulsion": True}
    torch.manual_seed(0)
    plain = build_model(plain_record)
    repulsive = build_model(repulsive_record)
    repulsive.load_state_dict(plain.state_dict(), strict=False)  # ZBL adds buffers only
    plain_committee = Committee([plain] * 4, [plain_record] * 4)
    repulsive_committee = Committee.load(Committee([repulsive] * 4, [repulsive_record] * 4).save(tmp_path / "zbl.pt"))
    assert all(member["pair_repulsion"] is True for member in repulsive_committee.record()["members"])
    dimers = [Atoms("H2", positions=[[0, 0, 0], [0, 0, distance]]) for distance in (0.2, 0.4, 0.8, 1.5)]
    extra = repulsive_committee.evaluate(dimers).energy_mean - plain_committee.evaluate(dimers).energy_mean
    assert extra[0] > extra[1] > 0.5  # eV, after the architecture's energy scale of 0.5
    np.testing.assert_allclose(extra[2:], 0.0, atol=1e-12)


def test_float32_committee_agrees_with_float64(committee, tmp_path):
    single = Committee.load(committee.save(tmp_path / "committee.pt"), dtype="float32")
    assert next(single.models[0].parameters()).dtype == torch.float32
    np.testing.assert_allclose(
        single.evaluate(structures()).energies, committee.evaluate(structures()).energies, rtol=1e-5
    )


def test_store_round_trip_gives_identical_predictions(committee, store):
    key = committee.to_store(store, "base-committee", metrics={"energy_rmse_mev_per_atom": 1.0})
    assert committee.to_store(store, "base-committee") == key  # idempotent
    loaded = Committee.from_store(store, key)
    before, after = committee.evaluate(structures()), loaded.evaluate(structures())
    np.testing.assert_array_equal(before.energies, after.energies)
    np.testing.assert_array_equal(before.forces, after.forces)
    record, _ = store.get_model(key)
    assert record["architecture"] == committee.record()


def test_mace_model_files_round_trip_and_match_mace_calculator(committee, tmp_path):
    from mace.calculators import MACECalculator

    paths = committee.export_mace_models(tmp_path)
    imported = Committee.from_mace_model_files(paths)
    assert [record["r_max"] for record in imported.architectures] == [3.0] * 4
    atoms = structures()[1]
    ours = committee.evaluate(atoms)
    np.testing.assert_array_equal(imported.evaluate(atoms).energies, ours.energies)
    atoms.calc = MACECalculator(model_paths=[str(path) for path in paths], device="cpu")
    assert atoms.get_potential_energy() == pytest.approx(ours.energy_mean[0], abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), ours.forces_mean, atol=1e-9)


def test_pickled_model_file_is_refused_by_weights_only_load(committee, tmp_path):
    path = committee.export_mace_models(tmp_path)[0]
    with pytest.raises(CommitteeFileError, match="from_mace_model_files"):
        Committee.load(path)


def test_unknown_element_is_named(committee):
    with pytest.raises(UnknownElementError, match=r"\['N'\].*\['H', 'O'\]"):
        committee.evaluate(molecule("NH3"))


def test_members_with_different_cutoffs_are_refused(tmp_path):
    short = Committee.from_architecture(tiny_architecture(r_max=3.0), 2, min_members=2)
    long = Committee.from_architecture(tiny_architecture(r_max=3.5), 2, min_members=2)
    records = short.architectures + long.architectures
    weights = short.state_dicts() + long.state_dicts()
    with pytest.raises(ArchitectureMismatchError, match="r_max: 3.0"):
        Committee.from_state_dicts(records, weights)
    files = short.export_mace_models(tmp_path / "short") + long.export_mace_models(tmp_path / "long")
    with pytest.raises(ArchitectureMismatchError, match="long"):
        Committee.from_mace_model_files(files)


def test_members_with_different_layers_are_refused():
    narrow = tiny_architecture()
    wide = default_architecture(
        [1, 8], [-13.6, -2041.0], avg_num_neighbors=3.0, r_max=3.0, channels=8, max_ell=1, num_bessel=4,
        radial_MLP=(8,), correlation=2,
    )
    weights = (
        Committee.from_architecture(narrow, 3, min_members=3).state_dicts()
        + Committee.from_architecture(wide, 1, min_members=1).state_dicts()
    )
    with pytest.raises(ArchitectureMismatchError, match="hidden_irreps"):
        Committee.from_state_dicts([narrow] * 3 + [wide], weights)


def test_too_few_members_are_refused():
    with pytest.raises(CommitteeSizeError, match="at least 4 members, got 2"):
        Committee.from_architecture(tiny_architecture(), 2)


@pytest.mark.slow
def test_committee_from_a_mace_run_train_model(tmp_path):
    """A .model file written by mace_run_train itself becomes a member, predicting as mace does."""
    import subprocess
    import sys
    from pathlib import Path

    from ase.io import write
    from mace.calculators import MACECalculator

    from mfal.potentials.analytic import leps_h3_dataset

    write(tmp_path / "train.extxyz", leps_h3_dataset(12, seed=5))
    command = [
        str(Path(sys.executable).with_name("mace_run_train")), "--name", "tiny", "--train_file", "train.extxyz",
        "--valid_fraction", "0.25", "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", "average",
        "--model", "MACE", "--hidden_irreps", "4x0e", "--r_max", "3.0", "--max_ell", "1", "--correlation", "2",
        "--num_radial_basis", "4", "--radial_MLP", "[8]", "--batch_size", "4", "--max_num_epochs", "1",
        "--device", "cpu", "--default_dtype", "float64", "--seed", "3",
    ]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    model_file = tmp_path / "tiny.model"
    committee = Committee.from_mace_model_files([model_file, model_file], min_members=2)
    assert committee.architecture["hidden_irreps"] == "4x0e"
    atoms = leps_h3_dataset(1, seed=9)[0]
    ours = committee.evaluate(atoms)
    atoms.calc = MACECalculator(model_paths=str(model_file), device="cpu", default_dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(ours.energy_mean[0], abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), ours.forces_mean, atol=1e-9)
    # stored as state_dict + record, it comes back without unpickling code
    reloaded = Committee.load(committee.save(tmp_path / "imported.pt"), min_members=2)
    np.testing.assert_array_equal(reloaded.evaluate(atoms).energies, ours.energies)
