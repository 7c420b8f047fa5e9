"""pyqmc backend: real QMC on this machine for small molecules (the H + H2 campaign).

A PySCF unrestricted mean field (UHF or UKS; for a fully periodic small cell the
k-point code ``pyscf.pbc`` at the Gamma point) gives the Slater determinant; pyqmc
adds a two-body/one-body Jastrow, optimises it (line minimisation on the VMC
energy gradient), then runs DMC. The label is the mean of the DMC block energies
after an equilibration cut, with qmca's autocorrelation-corrected error bar
(:func:`mfal.qmc.qmca.simstats`), and the same checks as a QMCPACK label.

Time step and projection time both bias the answer (see DESIGN.md: for H + H2 at
tau = 0.01/Ha the barrier came out 0.07 eV low; tau = 0.005/Ha agreed with the
exact one), so both are settings, and the equilibration cut is a projection
time, not a block count, so that it stays right when the time step changes.

Runs are deterministic for a given seed: pyqmc draws from numpy's global
generator, which is seeded before each stage. Outputs live in the job
directory (``mf.chk``, ``opt.hdf5``, ``dmc.hdf5``); pyqmc continues from them
when a job is run again, so a job can be extended by raising ``dmc.blocks``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from pydantic import Field, PositiveInt

from mfal.errors import MfalError
from mfal.qmc.base import QmcJobFailed, QmcResult, StrictModel, read_job_structure, \
    write_job_structure
from mfal.qmc.qmca import Series
from mfal.qmc.qmcpack_analysis import DmcAnalysisSettings, analyse_series

SETTINGS_FILE = "pyqmc_settings.json"
CHECKPOINT = "mf.chk"
OPT_FILE = "opt.hdf5"
DMC_FILE = "dmc.hdf5"


class PyqmcInputError(MfalError):
    """A structure or setting that the pyqmc backend cannot run."""


class MeanFieldSettings(StrictModel):
    """PySCF reference determinant."""

    method: Literal["UHF", "UKS"] = "UHF"
    xc: str = Field("PBE", description="Functional when method is UKS.")
    basis: str = Field("cc-pVTZ", description="Gaussian basis set (PySCF name).")
    ecp: str | None = Field(None, description="Effective core potential (PySCF name, e.g. "
                                              "'ccecp' with basis 'ccecp-ccpvdz'); None: all "
                                              "electrons.")
    spin: int | None = Field(None, ge=0, description="2S; None: 0 or 1 by electron count.")
    charge: int = 0


class JastrowOptimisationSettings(StrictModel):
    """pyqmc line minimisation of the Jastrow parameters."""

    iterations: int = Field(10, ge=0, description="Line-minimisation steps (0: no Jastrow "
                                                  "optimisation, a pure Slater-Jastrow guess).")
    vmc_blocks: PositiveInt = Field(10, description="VMC blocks per gradient estimate.")
    vmc_steps_per_block: PositiveInt = 10
    npts: int = Field(40, ge=3, description="Points of each correlated-sampling line search.")


class PyqmcDmcSettings(StrictModel):
    """Diffusion Monte Carlo run."""

    timestep: float = Field(0.005, gt=0, description="DMC time step (1/Ha); 0.005 reproduced "
                                                      "the exact H + H2 barrier, 0.01 did not.")
    steps_per_block: PositiveInt = Field(20, description="Steps between branchings.")
    blocks: PositiveInt = Field(200)
    vmc_warmup_blocks: PositiveInt = Field(10, description="VMC blocks before DMC starts.")
    equilibration_time: float = Field(
        1.0, ge=0, description="Projection time (1/Ha) dropped from the start of DMC; converted "
                               "to whole blocks of steps_per_block * timestep.")


class PyqmcAnalysisSettings(DmcAnalysisSettings):
    """QMCPACK's label checks with pyqmc's defaults.

    A subclass rather than a default instance, so that a config naming one of
    its keys keeps these defaults for the others.
    """

    equilibration_blocks: int | Literal["auto"] = Field(
        0, description="Blocks dropped beyond dmc.equilibration_time, which already sets the projection "
                       "time dropped; 'auto' uses qmca's bounce heuristic.")
    max_error_eV: float | None = Field(
        0.05, gt=0, description="Largest acceptable one-sigma error bar of the total energy (eV); "
                                "None accepts any.")


class PyqmcSettings(StrictModel):
    """Everything that defines a pyqmc label (its hash keys the label)."""

    backend: Literal["pyqmc"] = "pyqmc"
    walkers: PositiveInt = Field(400, description="Configurations (walkers) in VMC and DMC.")
    seed: int = Field(0, ge=0, description="Seed of numpy's generator, which pyqmc uses.")
    mean_field: MeanFieldSettings = Field(default_factory=MeanFieldSettings)
    optimisation: JastrowOptimisationSettings = Field(default_factory=JastrowOptimisationSettings)
    dmc: PyqmcDmcSettings = Field(default_factory=PyqmcDmcSettings)
    analysis: PyqmcAnalysisSettings = Field(
        default_factory=PyqmcAnalysisSettings,
        description="Label checks; equilibration_blocks is added to dmc.equilibration_time.")

    def equilibration_blocks(self) -> int:
        """Blocks dropped before averaging: the projection time plus any explicit blocks."""
        per_block = self.dmc.steps_per_block * self.dmc.timestep
        extra = self.analysis.equilibration_blocks
        if extra == "auto":
            raise PyqmcInputError("pyqmc analysis needs a fixed equilibration; set "
                                  "analysis.equilibration_blocks to a number (0 is fine)")
        return math.ceil(self.dmc.equilibration_time / per_block - 1e-9) + extra


def build_mean_field(structure: Atoms, settings: MeanFieldSettings, checkpoint: Path | None):
    """PySCF system and converged unrestricted mean field.

    A molecule (no periodic direction) gets ``scf.UHF``/``dft.UKS``; a fully
    periodic cell gets ``pbc.scf.KUHF``/``pbc.dft.KUKS`` at the Gamma point with
    density fitting. Returns ``(system, mean_field, periodic)``.
    """
    periodic = _periodicity(structure)
    atom = [(s, tuple(p)) for s, p in zip(structure.get_chemical_symbols(), structure.positions)]
    n_electrons = int(sum(structure.numbers)) - settings.charge
    spin = n_electrons % 2 if settings.spin is None else settings.spin
    if (n_electrons - spin) % 2:
        raise PyqmcInputError(f"{n_electrons} electrons cannot have 2S = {spin}")
    options = dict(atom=atom, basis=settings.basis, unit="Angstrom", spin=spin,
                   charge=settings.charge, verbose=0)
    if settings.ecp is not None:
        options["ecp"] = settings.ecp
    try:
        if periodic:
            from pyscf.pbc import dft, gto, scf

            system = gto.M(a=np.asarray(structure.cell), **options)
        else:
            from pyscf import dft, gto, scf

            system = gto.M(**options)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PyqmcInputError(f"PySCF cannot build the system with basis {settings.basis!r} "
                              f"and ecp {settings.ecp!r}: {exc}") from None
    if periodic:
        kpts = system.make_kpts([1, 1, 1])
        mf = (scf.KUHF(system, kpts) if settings.method == "UHF"
              else dft.KUKS(system, kpts)).density_fit()
    else:
        mf = scf.UHF(system) if settings.method == "UHF" else dft.UKS(system)
    if settings.method == "UKS":
        mf.xc = settings.xc
    if checkpoint is not None:
        mf.chkfile = str(checkpoint)
    mf.kernel()
    if not mf.converged:
        raise QmcJobFailed(checkpoint.parent if checkpoint else ".",
                           f"{settings.method} did not converge")
    return system, mf, periodic


def _periodicity(structure: Atoms) -> bool:
    pbc = tuple(bool(p) for p in structure.pbc)
    if pbc not in ((False, False, False), (True, True, True)):
        raise PyqmcInputError(f"the pyqmc backend handles molecules and fully periodic cells; "
                              f"got pbc={pbc}")
    return all(pbc)


class PyqmcBackend:
    """Slater-Jastrow DMC with pyqmc on a PySCF reference, for molecules and small cells."""

    name = "pyqmc"

    def __init__(self, settings: PyqmcSettings):
        self.settings = settings

    def prepare(self, structure: Atoms, job_dir: str | Path) -> Path:
        _periodicity(structure)
        self.settings.equilibration_blocks()
        job = write_job_structure(structure, job_dir)
        (job / SETTINGS_FILE).write_text(self.settings.model_dump_json(indent=2))
        return job

    def run(self, job_dir: str | Path) -> None:
        """Mean field, Jastrow optimisation, DMC; continues from files of an earlier run."""
        import pyqmc.api as pyq

        job = Path(job_dir)
        s = self.settings
        structure = read_job_structure(job)
        np.random.seed(s.seed)
        mol, mf, periodic = build_mean_field(structure, s.mean_field, job / CHECKPOINT)
        if periodic:
            mol = pyq.get_supercell(mol, np.eye(3, dtype=int))
        wf, to_optimise = pyq.generate_wf(mol, mf)
        configs = pyq.initial_guess(mol, s.walkers)
        opt = s.optimisation
        if opt.iterations:
            np.random.seed(s.seed + 1)
            wf, _ = pyq.line_minimization(
                wf, configs, pyq.gradient_generator(mol, wf, to_optimise),
                max_iterations=opt.iterations, npts=opt.npts, hdf_file=str(job / OPT_FILE),
                vmcoptions={"nblocks": opt.vmc_blocks, "nsteps_per_block": opt.vmc_steps_per_block})
        np.random.seed(s.seed + 2)
        try:
            pyq.rundmc(wf, configs, accumulators={"energy": pyq.EnergyAccumulator(mol)},
                       tstep=s.dmc.timestep, nblocks=s.dmc.blocks,
                       nsteps_per_block=s.dmc.steps_per_block,
                       vmc_warmup=s.dmc.vmc_warmup_blocks, hdf_file=str(job / DMC_FILE))
        except ValueError as exc:
            raise QmcJobFailed(job, f"pyqmc DMC failed: {exc}") from exc
        (job / "pyqmc_meanfield.json").write_text(json.dumps(
            {"method": s.mean_field.method, "energy_Ha": float(mf.e_tot), "periodic": periodic}))

    def analyse(self, job_dir: str | Path) -> QmcResult:
        """DMC block energies -> mean and qmca error bar in eV, with the label checks."""
        import h5py

        job = Path(job_dir)
        path = job / DMC_FILE
        if not path.is_file():
            raise QmcJobFailed(job, f"missing output {path}")
        try:
            with h5py.File(path, "r") as handle:
                energy = np.real(handle["energytotal"][()])
                weight = np.real(handle["weight"][()])
                tstep = float(handle["tstep"][-1])
        except (OSError, KeyError) as exc:
            raise QmcJobFailed(job, f"unreadable pyqmc DMC output {path}: {exc}") from None
        series = Series(path=str(path), prefix="dmc", series=0, kind="pyqmc",
                        data={"LocalEnergy": energy, "BlockWeight": weight})
        s = self.settings
        analysis = s.analysis.model_copy(update={"equilibration_blocks":
                                                 s.equilibration_blocks()})
        result = analyse_series([series], analysis, expected_blocks=s.dmc.blocks)
        diagnostics = {**result["diagnostics"], "timestep": tstep,
                       "projection_time_used": result["diagnostics"]["blocks_used"]
                       * s.dmc.steps_per_block * s.dmc.timestep}
        meanfield = job / "pyqmc_meanfield.json"
        if meanfield.is_file():
            diagnostics["mean_field"] = json.loads(meanfield.read_text())
        return QmcResult(energy_eV=result["energy_eV"], error_eV=result["error_eV"],
                         method="dmc-pyqmc", diagnostics=diagnostics)
