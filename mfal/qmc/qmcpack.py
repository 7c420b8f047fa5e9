"""QMCPACK backend: settings, job directories, running the chain, reading the label back.

This is the production path on HPC: ``prepare`` writes a self-contained job
directory (QE inputs, pw2qmcpack input, one QMCPACK XML per twist, ``run.sh``),
``run`` executes ``run.sh`` with the worker's commands (FireWorks ``my_fworker.yaml``
``env``: ``pw_cmd``, ``pw2qmcpack_cmd``, ``qmcpack_cmd``, ``mpi_cmd``), and
``analyse`` twist-averages each DMC series with qmca's statistics, checks it, and
extrapolates to zero time step when a time-step series was run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from pydantic import Field, PositiveInt, field_validator

from mfal.qmc import qmcpack_decks as decks
from mfal.qmc.base import QmcJobFailed, QmcResult, StrictModel
from mfal.qmc.qmcpack_analysis import DmcAnalysisSettings, analyse_dmc_series

JOB_RECORD = "mfal_job.json"
Grid = tuple[PositiveInt, PositiveInt, PositiveInt]


class DftSettings(StrictModel):
    """Quantum ESPRESSO trial-wavefunction settings."""

    ecutwfc_Ry: float = Field(300.0, gt=0, description="Plane-wave cut-off (Ry); ccECP cores "
                                                         "are hard, 300 Ry converges the orbitals.")
    functional: str = Field("PBE", description="QE input_dft of the trial orbitals.")
    scf_kgrid: Grid = Field((2, 2, 1), description="SCF Monkhorst-Pack grid of the supercell.")
    conv_thr_Ry: float = Field(1e-8, gt=0, description="SCF convergence threshold (Ry).")
    mixing_beta: float = Field(0.3, gt=0, le=1)
    electron_maxstep: PositiveInt = 200
    occupations: Literal["fixed", "smearing"] = "fixed"
    degauss_Ry: float = Field(0.01, gt=0, description="Gaussian smearing width when smearing.")


class JastrowSettings(StrictModel):
    """B-spline one- and two-body Jastrow factors, optional three-body (eeI) term."""

    j1_size: PositiveInt = 8
    j1_rcut_bohr: float | None = Field(None, gt=0, description="None: Wigner-Seitz radius (bulk) "
                                                               "or half the in-plane width (layer).")
    j2_size: PositiveInt = 8
    j2_rcut_bohr: float | None = Field(None, gt=0)
    j3: bool = False
    j3_size: PositiveInt = 3
    j3_rcut_bohr: float = Field(5.0, gt=0)


class OptimisationSettings(StrictModel):
    """Linear-method Jastrow optimisation, repeated ``loops`` times."""

    loops: int = Field(8, ge=0, description="Optimisation cycles (0 skips optimisation).")
    samples: PositiveInt = Field(20000, description="VMC samples per cycle, all ranks together.")
    walkers_per_rank: PositiveInt = 16
    blocks: PositiveInt = 100
    substeps: PositiveInt = 5
    warmup_steps: int = Field(50, ge=0)
    timestep: float = Field(0.3, gt=0, description="VMC time step during optimisation (1/Ha).")
    minwalkers: float = Field(0.3, gt=0, le=1)


class VmcSettings(StrictModel):
    """VMC run after optimisation; its walkers seed DMC."""

    walkers_per_rank: PositiveInt = 16
    blocks: PositiveInt = 50
    steps: PositiveInt = 10
    substeps: PositiveInt = 3
    warmup_steps: int = Field(50, ge=0)
    timestep: float = Field(0.3, gt=0)


class DmcSettings(StrictModel):
    """DMC with T-moves; optionally a time-step series tau, tau/2, ... for extrapolation."""

    timestep: float = Field(0.01, gt=0, description="DMC time step (1/Ha).")
    timestep_series: PositiveInt = Field(1, description="Number of time steps tau, tau/2, ...; "
                                                        "with 2 or more the label is the linear "
                                                        "extrapolation to tau=0.")
    total_walkers: PositiveInt = Field(2048, description="Target population of each twist.")
    blocks: PositiveInt = 200
    steps: PositiveInt = Field(20, description="Steps per block at the first time step.")
    warmup_steps: int = Field(100, ge=0)
    nonlocalmoves: Literal["no", "yes", "v0", "v1", "v3"] = Field(
        "v3", description="T-moves for the non-local pseudopotential (v3: size-consistent).")


class QmcpackSettings(StrictModel):
    """Everything that defines a QMCPACK label (its hash keys the label)."""

    backend: Literal["qmcpack"] = "qmcpack"
    pseudo_dir: Path = Field(..., description="Directory with STEM.upf (QE) and STEM.xml "
                                              "(QMCPACK) for every element.")
    pseudopotentials: dict[str, str] = Field(
        default_factory=dict, description="Element -> file stem; default SYMBOL.ccECP.")
    twist_grid: Grid = Field((2, 2, 1), description="Twists of the supercell (NSCF k-points).")
    twist_shift: tuple[float, float, float] = Field((0.0, 0.0, 0.0))
    spin_polarisation: int = Field(0, description="Up minus down electrons.")
    meshfactor: float = Field(1.0, gt=0, description="B-spline grid relative to the FFT grid.")
    spline_precision: Literal["float", "double"] = "float"
    lr_dim_cutoff: float = Field(15.0, gt=0, description="Ewald breakup cut-off (QMCPACK's).")
    slab_lr_handler: Literal["ewald_quasi2d", "ewald_strict2d"] | None = Field(
        "ewald_quasi2d", description="Long-range handler for p p n cells (layers in vacuum).")
    seed: int | None = Field(None, ge=0, description="QMCPACK random seed (twist i uses seed+i).")
    dft: DftSettings = Field(default_factory=DftSettings)
    jastrow: JastrowSettings = Field(default_factory=JastrowSettings)
    optimisation: OptimisationSettings = Field(default_factory=OptimisationSettings)
    vmc: VmcSettings = Field(default_factory=VmcSettings)
    dmc: DmcSettings = Field(default_factory=DmcSettings)
    analysis: DmcAnalysisSettings = Field(default_factory=DmcAnalysisSettings)

    def label_key(self) -> dict:
        """The settings that define the label, without where the files live on this machine.

        ``pseudo_dir`` differs between machines while the pseudopotentials (named
        by their stems) do not, so it is left out of the key a label is stored under.
        """
        return self.model_dump(mode="json", exclude={"pseudo_dir"})

    @field_validator("twist_shift")
    @classmethod
    def _shift_in_unit_interval(cls, value):
        if any(not 0 <= s < 1 for s in value):
            raise ValueError(f"twist_shift components must be in [0, 1); got {value}")
        return value


class WorkerCommands(StrictModel):
    """How this worker runs the codes (FireWorks ``my_fworker.yaml`` ``env``)."""

    pw_cmd: str = "pw.x"
    pw2qmcpack_cmd: str = "pw2qmcpack.x"
    qmcpack_cmd: str = "qmcpack"
    mpi_cmd: str = Field("", description="MPI launcher with its options, e.g. 'srun' or "
                                         "'mpirun -np 64'; empty runs serially.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None) -> WorkerCommands:
        """Take the known keys from a worker env mapping, ignoring the others."""
        env = env or {}
        return cls(**{key: str(env[key]) for key in cls.model_fields if key in env})

    def environment(self) -> dict[str, str]:
        return {"MFAL_PW_CMD": self.pw_cmd, "MFAL_PW2QMCPACK_CMD": self.pw2qmcpack_cmd,
                "MFAL_QMCPACK_CMD": self.qmcpack_cmd, "MFAL_MPI_CMD": self.mpi_cmd}


class QmcpackBackend:
    """QMCPACK labels: DFT trial orbitals, Jastrow optimisation, DMC; qmca statistics."""

    name = "qmcpack"

    def __init__(self, settings: QmcpackSettings, commands: WorkerCommands | None = None):
        self.settings = settings
        self.commands = commands or WorkerCommands()

    def prepare(self, structure: Atoms, job_dir: str | Path) -> Path:
        """Write the full job into ``job_dir``; fails before writing on bad input."""
        s = self.settings
        species = decks.species_for(structure, s.pseudo_dir, s.pseudopotentials)
        decks.boundary_conditions(structure)
        up, down = decks.electron_counts(structure, species, s.spin_polarisation)
        twists = decks.twist_grid(s.twist_grid, s.twist_shift)
        job = Path(job_dir)
        job.mkdir(parents=True, exist_ok=True)
        (job / "scf.in").write_text(decks.pw_input(structure, species, s, "scf"))
        (job / "nscf.in").write_text(decks.pw_input(structure, species, s, "nscf", twists))
        (job / "p2q.in").write_text(decks.pw2qmcpack_input())
        inputs = []
        for index in range(len(twists)):
            name = f"{decks.QMC_PREFIX}.g{index:03d}.twistnum_{index}.in.xml"
            (job / name).write_text(decks.qmcpack_input(structure, species, s, index))
            inputs.append(name)
        script = job / "run.sh"
        script.write_text(decks.run_script(inputs))
        script.chmod(0o755)
        record = {"backend": self.name, "settings": s.model_dump(mode="json"),
                  "electrons": {"up": up, "down": down}, "twists": twists.tolist(),
                  "series": decks.series_layout(s), "timesteps": decks.dmc_timesteps(s),
                  "inputs": inputs}
        (job / JOB_RECORD).write_text(json.dumps(record, indent=2))
        return job

    def run(self, job_dir: str | Path) -> None:
        """Run ``run.sh`` with the worker's commands; a non-zero exit is a failed job."""
        job = Path(job_dir)
        env = {**os.environ, **self.commands.environment()}
        with open(job / "run.log", "w") as log:
            proc = subprocess.run(["bash", str(job / "run.sh")], cwd=job, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise QmcJobFailed(job, f"run.sh exited with status {proc.returncode}; see "
                                    f"{job / 'run.log'} and the *.out files")

    def analyse(self, job_dir: str | Path) -> QmcResult:
        """DMC energy of the job (eV), twist-averaged, extrapolated in tau for a series."""
        job = Path(job_dir)
        record_path = job / JOB_RECORD
        if not record_path.is_file():
            raise QmcJobFailed(job, f"missing {JOB_RECORD}; not a job written by prepare()")
        record = json.loads(record_path.read_text())
        # The deck's own settings say what was run; the current ones say what is acceptable.
        asked = QmcpackSettings.model_validate(record["settings"])
        n_twists = len(record["twists"])
        per_tau = []
        for series, tau in zip(record["series"]["dmc"], record["timesteps"]):
            files = [job / f"{decks.QMC_PREFIX}.g{t:03d}.s{series:03d}.scalar.dat"
                     for t in range(n_twists)]
            result = analyse_dmc_series(files, self.settings.analysis,
                                        expected_blocks=asked.dmc.blocks)
            per_tau.append({"timestep": tau, "series": series, **result})
        energy, error = _extrapolate([p["timestep"] for p in per_tau],
                                     [p["energy_eV"] for p in per_tau],
                                     [p["error_eV"] for p in per_tau])
        diagnostics = {"twists": n_twists, "timesteps": per_tau,
                       "extrapolated": len(per_tau) > 1}
        return QmcResult(energy_eV=energy, error_eV=error, method="dmc-qmcpack",
                         diagnostics=diagnostics)


def _extrapolate(taus, energies, errors) -> tuple[float, float]:
    """Weighted linear fit E(tau) = E0 + b tau; E0 and its standard error (one tau: as is)."""
    if len(taus) == 1:
        return float(energies[0]), float(errors[0])
    design = np.column_stack([np.ones(len(taus)), taus])
    weights = 1.0 / np.asarray(errors) ** 2
    normal = design.T @ (weights[:, None] * design)
    covariance = np.linalg.inv(normal)
    coefficients = covariance @ design.T @ (weights * np.asarray(energies))
    return float(coefficients[0]), float(np.sqrt(covariance[0, 0]))
