"""Reading a user's reaction endpoints, with errors that say what is wrong with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from mfal.errors import ConfigError


def read_structure(path: str | Path) -> Atoms:
    """One structure from any file ASE reads (the last frame of a trajectory)."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"structure file {path} does not exist")
    if path.stat().st_size == 0:
        raise ConfigError(f"structure file {path} is empty")
    try:
        atoms = ase.io.read(path, index=-1)
    except Exception as exc:  # ASE raises many types for malformed files
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"structure file {path} could not be read: {reason[:200]}") from None
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise ConfigError(f"structure file {path} holds no atoms")
    return _finite(atoms, path)


def read_structures(path: str | Path) -> list[Atoms]:
    """Every frame of a structure file, e.g. a DFT dataset in extended XYZ."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"structure file {path} does not exist")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # ASE raises many types for malformed files
        raise ConfigError(f"structure file {path} could not be read: {' '.join(str(exc).split())[:200]}") from None
    if not frames:
        raise ConfigError(f"structure file {path} holds no structures")
    return [_finite(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc), path) for atoms in frames]


def _finite(atoms: Atoms, path: Path) -> Atoms:
    """Reject NaN or inf in positions or cell, which parse as numbers but poison every later step."""
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        raise ConfigError(f"structure file {path} holds non-finite (NaN or inf) coordinates or cell vectors")
    return atoms


def read_endpoints(initial: str | Path, final: str | Path) -> tuple[Atoms, Atoms]:
    """Initial and final states of a reaction; they must hold the same atoms in the same order."""
    first, last = read_structure(initial), read_structure(final)
    if len(first) != len(last):
        raise ConfigError(f"endpoints differ in atom count: {initial} has {len(first)}, {final} has {len(last)}")
    if list(first.numbers) != list(last.numbers):
        raise ConfigError(f"endpoints {initial} and {final} hold different elements or a different atom order")
    if (first.pbc != last.pbc).any() or abs(first.cell.array - last.cell.array).max() > 1e-6:
        raise ConfigError(f"endpoints {initial} and {final} have different cells or periodicity")
    return first, last
