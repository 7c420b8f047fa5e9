"""Faults injected into real campaigns, for the fault tests.

``recording_leps`` is the surrogate's "QMC code" in these campaigns (its import
path goes into the campaign config): the LEPS surface, which appends the
structure of every job it computes to a log file, so a test counts how often
each QMC job ran, whichever worker ran it. While a ``poison`` file exists it
returns NaN, as a broken QMC run would. With ``seconds`` each job also takes that
long, as a real QMC job takes time, so that parallel workers' jobs overlap.

``refuse_writes`` makes directories refuse new files, as a full or read-only
disk would.

Run as ``python -m tests.fault_worker -l my_launchpad.yaml rapidfire ...``, this
module is ``mfal-rlaunch`` (FireWorks' own ``rlaunch``) in this process with one more fault:

- ``MFAL_FAULT_BLOCK=explore|label|refit`` makes the worker stop inside that step,
  after its work is done and before the firework completes (for a label: after
  the QMC job has finished, before the label is stored). It writes the file
  ``blocked-STEP`` into ``$MFAL_FAULT_DIR`` and waits there until the file
  ``release-STEP`` appears, so a test can SIGKILL it, or stop the database, at a
  known point;
- ``MFAL_FAULT_TRUNCATE=1``: while ``$MFAL_FAULT_DIR/garbage`` exists, a
  surrogate QMC job's output file is cut in half after the job ran, as a code
  killed while writing would leave it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

from ase.calculators.calculator import all_changes

from mfal.hashing import structure_hash
from mfal.potentials.analytic import LEPSCalculator

RECORDING_LEPS = "tests.fault_worker:recording_leps"


class RecordingLEPS(LEPSCalculator):
    """LEPS that logs each structure it computes; NaN energies while ``poison`` exists; each job lasts ``seconds``."""

    def __init__(self, log: str, poison: str | None = None, seconds: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.log, self.poison, self.seconds = Path(log), Path(poison) if poison else None, seconds

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        time.sleep(self.seconds)
        with open(self.log, "a") as stream:
            stream.write(f"{structure_hash(self.atoms)}\n")
        if self.poison is not None and self.poison.exists():
            self.results["energy"] = self.results["free_energy"] = float("nan")


def recording_leps(log: str, poison: str | None = None, seconds: float = 0.0) -> RecordingLEPS:
    return RecordingLEPS(log, poison, seconds)


def qmc_runs(log: Path) -> list[str]:
    """Structure hashes of every QMC job computed so far, in order."""
    return log.read_text().split() if log.exists() else []


def refuse_writes(directories, refuse: bool) -> None:
    """Make directories refuse new files, as a full or read-only disk would (immutable as root, else read-only)."""
    for directory in directories:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i" if refuse else "-i", str(directory)], check=True, capture_output=True)
        else:
            directory.chmod(0o555 if refuse else 0o755)


def can_refuse_writes(scratch: Path) -> bool:
    """Whether :func:`refuse_writes` works here (as root it needs ``chattr`` and the right capability)."""
    if os.geteuid() != 0:
        return True
    probe = scratch / "refuse_writes_probe"
    probe.mkdir()
    try:
        refuse_writes([probe], True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False
    refuse_writes([probe], False)
    return True


def _block(fault_dir: Path, step: str) -> None:
    (fault_dir / f"blocked-{step}").write_text(str(os.getpid()))
    while not (fault_dir / f"release-{step}").exists():
        time.sleep(0.2)


def install_hooks() -> None:
    from mfal import steps
    from mfal.qmc import surrogate

    fault_dir = Path(os.environ["MFAL_FAULT_DIR"])
    blocked_step = os.environ.get("MFAL_FAULT_BLOCK")
    truncate = os.environ.get("MFAL_FAULT_TRUNCATE") == "1"
    original_run = surrogate.SurrogateBackend.run

    @functools.wraps(original_run)
    def run(self, job_dir):
        original_run(self, job_dir)
        if truncate and (fault_dir / "garbage").exists():
            output = Path(job_dir) / surrogate.RESULT_FILE
            text = output.read_text()
            output.write_text(text[: len(text) // 2])
        if blocked_step == "label":
            _block(fault_dir, "label")

    surrogate.SurrogateBackend.run = run
    if blocked_step in ("explore", "refit"):
        original_step = getattr(steps, blocked_step)

        @functools.wraps(original_step)
        def step(*args, **kwargs):
            result = original_step(*args, **kwargs)
            _block(fault_dir, blocked_step)
            return result

        setattr(steps, blocked_step, step)


if __name__ == "__main__":
    install_hooks()
    from mfal.rlaunch import main

    sys.exit(main())
