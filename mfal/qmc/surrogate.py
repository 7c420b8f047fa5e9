"""Surrogate high-fidelity oracle: any ASE calculator (or MACE model) plus Gaussian noise.

Benchmarks need a "QMC" whose truth is known, to count how many labels the
active-learning loop needs to reach a known barrier. The surrogate evaluates a
reference calculator and adds noise of a configured sigma, reported as the
label's error bar, like a QMC error bar. The noise of a structure is drawn from
a stream seeded by (seed, structure hash), so a label does not depend on the
order in which structures are labelled, and rerunning reproduces it exactly.
Every label records that it came from a surrogate, with the noise-free energy.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from pydantic import Field, model_validator

from mfal.errors import ConfigError
from mfal.hashing import structure_hash
from mfal.qmc.base import QmcJobFailed, QmcResult, StrictModel, read_job_structure, \
    write_job_structure

SETTINGS_FILE = "surrogate_settings.json"
RESULT_FILE = "surrogate_result.json"


class SurrogateSettings(StrictModel):
    """Reference calculator (import path, MACE model file, or their sum) and the noise added to it.

    With both ``model_file`` and ``calculator`` the reference is their sum: a
    DFT-trained model plus an analytic correction (e.g.
    :class:`mfal.potentials.bond_stretch.StretchedBondEnergy`) makes a
    high-fidelity surface that differs from the model where it should.
    """

    backend: Literal["surrogate"] = "surrogate"
    calculator: str | None = Field(
        None, description="'package.module:factory' returning an ASE calculator, called with "
                          "calculator_kwargs.")
    calculator_kwargs: dict[str, Any] = Field(default_factory=dict)
    model_file: Path | None = Field(
        None, description="MACE model file: an mfal committee file, or a mace_run_train '.model' "
                          "file (a trusted pickle).")
    device: str = Field("cpu", description="Torch device for a MACE model.")
    noise_sigma_eV: float = Field(0.0, ge=0, description="Standard deviation of the added noise "
                                                         "(eV), also the label's error bar.")
    seed: int = Field(0, ge=0, description="Seed of the noise; recorded with every label.")

    def label_key(self) -> dict:
        """The settings that define a label: a model file counts by its content, not its path.

        A model file replaced at the same path is another reference, so its labels
        must not be reused; the same file copied elsewhere is the same reference.
        """
        key = self.model_dump(mode="json", exclude={"model_file"})
        if self.model_file is not None:
            try:
                key["model_sha256"] = hashlib.sha256(Path(self.model_file).read_bytes()).hexdigest()
            except OSError as exc:
                raise ConfigError(f"qmc.model_file {self.model_file}: cannot read it ({exc.strerror})") from None
        return key

    @model_validator(mode="after")
    def _some_reference(self):
        if self.calculator is None and self.model_file is None:
            raise ValueError("give 'calculator' (import path 'module:factory'), 'model_file' (MACE model "
                             "file), or both (their sum)")
        if self.calculator is not None and ":" not in self.calculator:
            raise ValueError(f"calculator must look like 'package.module:factory'; "
                             f"got {self.calculator!r}")
        return self


class ReferenceSurface:
    """The surrogate's noise-free reference, evaluated like a committee.

    ``evaluate`` returns a :class:`~mfal.potentials.committee.CommitteePrediction`,
    so mfal's relaxations and NEB run on the reference as they do on a
    committee (a benchmark's true barrier). A model file is a committee whose
    members run in one batched call, the reference being their mean; a
    calculator is evaluated structure by structure and added to every member,
    or acts alone as a one-member committee.
    """

    def __init__(self, settings: SurrogateSettings) -> None:
        self.committee = _model_committee(settings) if settings.model_file is not None else None
        self.calculator = _imported_calculator(settings) if settings.calculator is not None else None

    def evaluate(self, structures: list[Atoms], *, member_forces: bool = True):
        """Like :meth:`Committee.evaluate`: with ``member_forces=False`` (what an NEB asks) only the mean forces."""
        from mfal.potentials.committee import CommitteePrediction
        from mfal.potentials.graphs import atom_offsets

        structures = list(structures)
        offsets = atom_offsets(structures)
        if self.committee is not None:
            prediction = self.committee.evaluate(structures, member_forces=member_forces)
            energies = prediction.energies.copy()
            forces = (prediction.forces if member_forces else prediction.forces_mean).copy()
        else:
            energies = np.zeros((1, len(structures)))
            forces = np.zeros((1, offsets[-1], 3) if member_forces else (offsets[-1], 3))
        if self.calculator is not None:
            for index, atoms in enumerate(structures):
                atoms = atoms.copy()
                atoms.calc = self.calculator
                energies[:, index] += atoms.get_potential_energy()
                forces[..., offsets[index]:offsets[index + 1], :] += atoms.get_forces()
        if member_forces:
            return CommitteePrediction(energies=energies, forces=forces, atom_offsets=offsets)
        return CommitteePrediction(energies=energies, forces=None, atom_offsets=offsets, mean_forces=forces)

    def energy(self, atoms: Atoms) -> float:
        """The reference energy of one structure (eV)."""
        return float(self.evaluate([atoms]).energy_mean[0])


def _model_committee(settings: SurrogateSettings):
    from mfal.potentials import Committee

    path = Path(settings.model_file)
    options = {"device": settings.device, "min_members": 1}
    return (Committee.from_mace_model_files([path], **options)
            if path.suffix == ".model" else Committee.load(path, **options))


def _imported_calculator(settings: SurrogateSettings):
    module_name, _, attribute = settings.calculator.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot import calculator {settings.calculator!r}: {exc}") from None
    try:
        calculator = factory(**settings.calculator_kwargs)
    except Exception as exc:  # any factory, any failure: the settings do not make a calculator
        raise ConfigError(f"calculator {settings.calculator!r} with calculator_kwargs "
                          f"{settings.calculator_kwargs!r} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(calculator, BaseCalculator):
        raise ConfigError(f"calculator {settings.calculator!r} returned a {type(calculator).__name__}, "
                          "not an ASE calculator")
    return calculator


def noise_for(settings: SurrogateSettings, key: str) -> float:
    """The noise (eV) of the structure with hash ``key``: fixed by (seed, key)."""
    if settings.noise_sigma_eV == 0:
        return 0.0
    rng = np.random.default_rng([settings.seed, int(key[:16], 16)])
    return float(rng.normal(0.0, settings.noise_sigma_eV))


class SurrogateBackend:
    """Labels from a reference surface plus seeded Gaussian noise."""

    name = "surrogate"

    def __init__(self, settings: SurrogateSettings):
        self.settings = settings
        self._surface = None

    def prepare(self, structure: Atoms, job_dir: str | Path) -> Path:
        """Write the job; the reference calculator is made here, so bad settings fail before any run."""
        self._reference()
        job = write_job_structure(structure, job_dir)
        (job / SETTINGS_FILE).write_text(self.settings.model_dump_json(indent=2))
        return job

    def _reference(self) -> ReferenceSurface:
        if self._surface is None:
            self._surface = ReferenceSurface(self.settings)
        return self._surface

    def run(self, job_dir: str | Path) -> None:
        job = Path(job_dir)
        structure = read_job_structure(job)
        try:
            energy = self._reference().energy(structure)
        except Exception as exc:
            raise QmcJobFailed(job, f"reference calculator failed: {exc}") from exc
        key = structure_hash(structure)
        noise = noise_for(self.settings, key)
        # Written whole or not at all: a worker killed mid-write leaves no half result.
        partial = job / f".{RESULT_FILE}.partial"
        partial.write_text(json.dumps({"structure_hash": key, "reference_energy_eV": energy, "noise_eV": noise}))
        os.replace(partial, job / RESULT_FILE)

    def analyse(self, job_dir: str | Path) -> QmcResult:
        job = Path(job_dir)
        path = job / RESULT_FILE
        if not path.is_file():
            raise QmcJobFailed(job, f"missing {path}; the surrogate job has not run")
        try:
            result = json.loads(path.read_text())
            energy = float(result["reference_energy_eV"]) + float(result["noise_eV"])
        except (ValueError, TypeError, KeyError) as exc:
            raise QmcJobFailed(job, f"unreadable output {path} (truncated or damaged): {exc}") from None
        if not np.isfinite(energy):
            raise QmcJobFailed(job, f"reference energy is not finite: {energy}")
        reference = " + ".join(str(part) for part in (self.settings.model_file, self.settings.calculator) if part)
        return QmcResult(
            energy_eV=energy, error_eV=self.settings.noise_sigma_eV, method="surrogate",
            diagnostics={"surrogate": True, "reference": reference, "seed": self.settings.seed,
                         "noise_sigma_eV": self.settings.noise_sigma_eV, **result})
