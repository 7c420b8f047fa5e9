"""Resumable extended-XYZ datasets of labelled configurations.

Generation scripts build a deterministic plan of configurations, each with a
unique ``config_id``; every finished single point is appended to the file at
once (and flushed), so an interrupted run loses at most the configuration in
progress, and a restart skips every ``config_id`` already in the file.

Each frame stores the energy (eV) and forces (eV/Å) as the standard extxyz
``energy`` / ``forces`` fields, and in its header the method settings as flat
``key=value`` pairs together with their ``settings_hash``.
"""

import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from mfal.hashing import settings_hash
from mfal.systems.errors import SystemSpecError


def read_dataset(path: str | os.PathLike) -> list[Atoms]:
    """All frames of an extxyz dataset (an empty list if the file does not exist yet)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    return read(path, index=":", format="extxyz")


def done_ids(path: str | os.PathLike) -> set[str]:
    """The ``config_id`` of every frame already in the dataset."""
    return {str(atoms.info["config_id"]) for atoms in read_dataset(path)}


def held_out_indices(frames: list[Atoms], heldout_file: str | os.PathLike) -> list[int] | None:
    """Indices in ``frames`` of the frames of ``heldout_file`` (matched by ``config_id``); None when there is no such file.

    An earlier training's held-out set, kept as the test split while the
    dataset grows: redrawing a random split after frames were appended would
    put structures the shipped committee trained on into the new test set, so a
    warm start from it would be measured on its own training data, and no two
    committees on the same structures. Raises :class:`SystemSpecError` if the
    file names a frame the dataset no longer holds.
    """
    heldout = read_dataset(heldout_file)
    if not heldout:
        return None
    index = {str(frame.info.get("config_id")): i for i, frame in enumerate(frames)}
    kept = [str(atoms.info.get("config_id")) for atoms in heldout]
    missing = [config_id for config_id in kept if config_id not in index]
    if missing:
        raise SystemSpecError(
            f"{heldout_file} holds {len(missing)} frame(s) the dataset does not ({', '.join(missing[:5])}); "
            "draw a new held-out set (train_base.py --new-split)"
        )
    return [index[config_id] for config_id in kept]


def labelled_frame(atoms: Atoms, energy: float, forces, config_id: str, settings: dict, **info) -> Atoms:
    """A copy of ``atoms`` carrying energy, forces, ``config_id``, ``info`` and the settings."""
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(atoms), 3):
        raise SystemSpecError(f"forces must have shape ({len(atoms)}, 3), got {forces.shape}")
    clash = set(settings) & (set(info) | {"config_id", "settings_hash"})
    if clash:
        raise SystemSpecError(f"settings keys {sorted(clash)} clash with frame info keys")
    frame = atoms.copy()
    frame.info = {
        key: value for key, value in atoms.info.items() if isinstance(value, (str, int, float, bool))
    }
    frame.info.update(info)
    frame.info.update(settings)
    frame.info["config_id"] = config_id
    frame.info["settings_hash"] = settings_hash(settings)
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=forces)
    return frame


def append_frame(path: str | os.PathLike, frame: Atoms) -> None:
    """Append one labelled frame to the dataset and flush it to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        write(handle, frame, format="extxyz", parallel=False)
        handle.flush()
        os.fsync(handle.fileno())
