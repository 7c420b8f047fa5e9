"""Surrogate oracle: reference calculator plus seeded Gaussian noise of a given sigma."""

import hashlib

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from pydantic import ValidationError

from mfal.errors import ConfigError
from mfal.qmc.base import QmcJobFailed
from mfal.qmc.surrogate import ReferenceSurface, SurrogateBackend, SurrogateSettings, noise_for

EMT_PATH = "ase.calculators.emt:EMT"


def _chain(d: float) -> Atoms:
    return Atoms("H3", positions=[(0, 0, 0), (0, 0, 0.74), (0, 0, 0.74 + d)])


def _hydrogen_committee(tmp_path, n_members: int):
    """An untrained hydrogen committee saved as a model file: a reference with its own, arbitrary surface."""
    from mfal.potentials import Committee, default_architecture

    architecture = default_architecture([1], [-13.6], avg_num_neighbors=2.0)
    committee = Committee.from_architecture(architecture, n_members=n_members, min_members=1)
    return committee, committee.save(tmp_path / "reference.pt")


def _label(settings, atoms, tmp_path, name="job"):
    backend = SurrogateBackend(settings)
    job = backend.prepare(atoms, tmp_path / name)
    backend.run(job)
    return backend.analyse(job)


def test_label_is_reference_plus_recorded_noise(tmp_path):
    settings = SurrogateSettings(calculator=EMT_PATH, noise_sigma_eV=0.05, seed=7)
    atoms = _chain(1.5)
    result = _label(settings, atoms, tmp_path)
    reference = _chain(1.5)
    reference.calc = EMT()
    exact = reference.get_potential_energy()
    assert result.diagnostics["reference_energy_eV"] == pytest.approx(exact, abs=1e-12)
    assert result.energy_eV == pytest.approx(exact + result.diagnostics["noise_eV"], abs=1e-12)
    assert result.diagnostics["noise_eV"] != 0.0
    assert result.error_eV == 0.05
    assert result.method == "surrogate"
    assert result.diagnostics["surrogate"] is True and result.diagnostics["seed"] == 7


def test_reproducible_with_seed_and_independent_of_order(tmp_path):
    settings = SurrogateSettings(calculator=EMT_PATH, noise_sigma_eV=0.1, seed=3)
    a = [_label(settings, _chain(d), tmp_path, f"a{i}").energy_eV for i, d in enumerate((1.2, 2.0))]
    b = [_label(settings, _chain(d), tmp_path, f"b{i}").energy_eV for i, d in enumerate((2.0, 1.2))]
    assert a == b[::-1]
    other = SurrogateSettings(calculator=EMT_PATH, noise_sigma_eV=0.1, seed=4)
    assert _label(other, _chain(1.2), tmp_path, "c").energy_eV != a[0]


def test_noise_has_the_configured_sigma():
    settings = SurrogateSettings(calculator=EMT_PATH, noise_sigma_eV=0.2, seed=11)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    noise = np.array([noise_for(settings, key) for key in keys])
    assert abs(noise.mean()) < 4 * 0.2 / np.sqrt(len(noise))
    assert noise.std(ddof=1) == pytest.approx(0.2, rel=0.04)
    quiet = SurrogateSettings(calculator=EMT_PATH)
    assert noise_for(quiet, keys[0]) == 0.0


def test_settings_and_calculator_errors(tmp_path):
    with pytest.raises(ValidationError, match="or both"):
        SurrogateSettings()
    with pytest.raises(ValidationError, match="package.module:factory"):
        SurrogateSettings(calculator="ase.calculators.emt.EMT")
    with pytest.raises(ValidationError, match="noise_sigma_eV"):
        SurrogateSettings(calculator=EMT_PATH, noise_sigma_eV=-1)
    with pytest.raises(ConfigError, match="cannot import calculator"):
        ReferenceSurface(SurrogateSettings(calculator="ase.calculators.nonexistent:X"))
    backend = SurrogateBackend(SurrogateSettings(calculator=EMT_PATH))
    with pytest.raises(QmcJobFailed, match="has not run"):
        backend.analyse(backend.prepare(_chain(1.0), tmp_path / "idle"))


def test_mace_model_file_as_reference(tmp_path):
    committee, path = _hydrogen_committee(tmp_path, n_members=1)
    settings = SurrogateSettings(model_file=path, noise_sigma_eV=0.0)
    result = _label(settings, _chain(1.3), tmp_path)
    atoms = _chain(1.3)
    atoms.calc = committee.calculator()
    assert result.energy_eV == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    assert result.error_eV == 0.0


def test_model_file_plus_calculator_is_their_sum(tmp_path):
    committee, path = _hydrogen_committee(tmp_path, n_members=1)
    settings = SurrogateSettings(model_file=path, calculator=EMT_PATH)
    result = _label(settings, _chain(1.3), tmp_path)
    model, emt = _chain(1.3), _chain(1.3)
    model.calc, emt.calc = committee.calculator(), EMT()
    assert result.energy_eV == pytest.approx(model.get_potential_energy() + emt.get_potential_energy(), abs=1e-9)
    assert result.diagnostics["reference"] == f"{path} + {EMT_PATH}"
    key = settings.label_key()
    assert key["calculator"] == EMT_PATH and len(key["model_sha256"]) == 64


def test_reference_surface_evaluates_many_structures_like_a_committee(tmp_path):
    committee, path = _hydrogen_committee(tmp_path, n_members=2)
    structures = [_chain(1.1), _chain(1.6)]
    summed = ReferenceSurface(SurrogateSettings(model_file=path, calculator=EMT_PATH)).evaluate(structures)
    model = committee.evaluate(structures)
    for index, atoms in enumerate(structures):
        atoms.calc = EMT()
        assert summed.energies[:, index] == pytest.approx(model.energies[:, index] + atoms.get_potential_energy(), abs=1e-9)
        assert summed.structure_forces(index) == pytest.approx(model.structure_forces(index) + atoms.get_forces(), abs=1e-9)
    alone = ReferenceSurface(SurrogateSettings(calculator=EMT_PATH)).evaluate(structures)
    assert alone.n_members == 1 and alone.energies[0, 1] == pytest.approx(structures[1].get_potential_energy())


def test_model_file_labels_are_keyed_by_content_not_path(tmp_path):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights one")
    key = SurrogateSettings(model_file=first).label_key()
    assert "model_file" not in key and key == SurrogateSettings(model_file=second).label_key()
    first.write_bytes(b"weights two")
    assert SurrogateSettings(model_file=first).label_key() != key
    first.unlink()
    with pytest.raises(ConfigError, match="a.pt"):
        SurrogateSettings(model_file=first).label_key()


@pytest.mark.parametrize("damage", [lambda text: text[: len(text) // 2], lambda text: "", lambda text: "[1, 2]",
                                    lambda text: text.replace('"noise_eV"', '"noise"')])
def test_damaged_output_is_a_failed_job(tmp_path, damage):
    from mfal.qmc.surrogate import RESULT_FILE

    backend = SurrogateBackend(SurrogateSettings(calculator=EMT_PATH))
    job = backend.prepare(_chain(1.5), tmp_path / "job")
    backend.run(job)
    assert [path.name for path in job.iterdir() if "result" in path.name] == [RESULT_FILE]
    output = job / RESULT_FILE
    output.write_text(damage(output.read_text()))
    with pytest.raises(QmcJobFailed, match="unreadable output .*surrogate_result.json \\(truncated or damaged\\)"):
        backend.analyse(job)


def test_reference_surface_runs_mfal_neb_on_mean_forces(tmp_path):
    """A benchmark's true barrier is mfal's NEB on the reference, which asks for mean forces only."""
    from mfal.neb import idpp_path, run_neb
    from mfal.systems.h3 import h3_endpoints

    committee, path = _hydrogen_committee(tmp_path, n_members=2)
    structures = [_chain(1.1), _chain(1.6)]
    surface = ReferenceSurface(SurrogateSettings(model_file=path, calculator=EMT_PATH))
    full, mean_only = surface.evaluate(structures), surface.evaluate(structures, member_forces=False)
    assert mean_only.forces is None
    assert mean_only.forces_mean == pytest.approx(full.forces_mean, abs=1e-9)
    assert mean_only.energies == pytest.approx(full.energies, abs=1e-9)

    leps = ReferenceSurface(SurrogateSettings(calculator="mfal.potentials.analytic:LEPSCalculator"))
    result = run_neb(leps, idpp_path(*h3_endpoints(), 5), fmax=0.05)
    assert result.converged and 0.3 < result.barrier < 0.5
