"""The interface every QMC backend implements, and what a finished job reports.

A campaign labels structures through one of several backends (QMCPACK on a
cluster, pyqmc on this machine, a surrogate with a known truth). All of them
turn a structure into a job directory (``prepare``), do the work (``run``) and
read the result back (``analyse``) as a total energy with its statistical error
bar in eV. A job that cannot give a trustworthy number raises
:class:`QmcJobFailed` with the reason, so that it is rerun and never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ase import Atoms
from ase.io import read, write
from ase.units import Hartree
from pydantic import BaseModel, ConfigDict

from mfal.errors import MfalError

#: eV per Hartree (CODATA value used by ASE); backends convert at their boundary.
HARTREE_EV = float(Hartree)
#: The structure a job works on, as written by :func:`write_job_structure`.
STRUCTURE_FILE = "structure.extxyz"


class StrictModel(BaseModel):
    """Settings model that rejects unknown keys, so a typo is an error, not a default, and inf or NaN."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    def label_key(self) -> dict:
        """The JSON-able settings that define a label, for its settings hash."""
        return self.model_dump(mode="json")


class QmcJobFailed(MfalError):
    """A QMC job finished without a usable energy; ``reason`` says why, ``job`` where."""

    def __init__(self, job: str | Path, reason: str):
        self.job = Path(job)
        self.reason = reason
        super().__init__(f"QMC job {self.job} failed: {reason}")


@dataclass(frozen=True)
class QmcResult:
    """A QMC total energy with its one-sigma statistical error bar, both in eV.

    ``diagnostics`` holds what the analysis saw (blocks used, equilibration cut,
    autocorrelation time, variance, population), JSON-able, stored with the label.
    """

    energy_eV: float
    error_eV: float
    method: str
    diagnostics: dict[str, Any] = field(default_factory=dict)


class QmcBackend(Protocol):
    """A way of computing QMC labels: write a job, run it, read its energy back."""

    name: str

    def prepare(self, structure: Atoms, job_dir: str | Path) -> Path:
        """Write everything the job needs into ``job_dir`` and return it."""

    def run(self, job_dir: str | Path) -> None:
        """Do the calculation in ``job_dir`` (blocking)."""

    def analyse(self, job_dir: str | Path) -> QmcResult:
        """Read the finished job; raise :class:`QmcJobFailed` if it is not usable."""


def write_job_structure(structure: Atoms, job_dir: str | Path) -> Path:
    """Create ``job_dir`` and store the structure there (extended XYZ, full precision)."""
    job = Path(job_dir)
    job.mkdir(parents=True, exist_ok=True)
    write(job / STRUCTURE_FILE, structure, format="extxyz")
    return job


def read_job_structure(job_dir: str | Path) -> Atoms:
    """The structure stored by :func:`write_job_structure`."""
    path = Path(job_dir) / STRUCTURE_FILE
    if not path.is_file():
        raise QmcJobFailed(job_dir, f"missing {path}; the job was not prepared")
    return read(path, format="extxyz")
