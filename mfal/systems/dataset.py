"""Resumable extended-XYZ datasets of labelled configurations.

Generation scripts build a deterministic plan of configurations, each with a
unique ``config_id``; every finished single point is appended to the file at
once (and flushed), so an interrupted run loses at most the configuration in
progress, and a restart skips every ``config_id`` already in the file.

Each frame stores the energy (eV) and forces (eV/Å) as the standard extxyz
``energy`` / ``forces`` fields, and in its header the method settings as flat
``key=value`` pairs together with their ``settings_hash``.
"""

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from mfal.hashing import settings_hash, structure_hash
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


def kept_split(frames: list[Atoms], splits_file: str | os.PathLike) -> dict[str, list[int]] | None:
    """Indices in ``frames`` of an earlier training's test and validation frames (``splits_file``); None without one.

    The file (JSON) names the frames of each split by ``config_id``. Keeping
    them while the dataset grows, new frames going to training, matters: a
    random split redrawn after frames were appended puts structures the shipped
    committee trained on into the new test and validation sets, so a warm start
    from it is measured, and early-stopped, on its own training data, and no
    two committees are measured on the same structures. Raises
    :class:`SystemSpecError` if the file names a frame the dataset no longer holds.
    """
    path = Path(splits_file)
    if not path.is_file():
        return None
    named = json.loads(path.read_text())
    index = {str(frame.info.get("config_id")): i for i, frame in enumerate(frames)}
    missing = [config_id for part in ("test", "valid") for config_id in named[part] if config_id not in index]
    if missing:
        raise SystemSpecError(
            f"{path} names {len(missing)} frame(s) the dataset does not hold ({', '.join(missing[:5])}); "
            "draw a new split instead (train_base.py --new-split; mfal train-base without --keep-splits)"
        )
    return {part: [index[config_id] for config_id in named[part]] for part in ("test", "valid")}


def split_ids(frames: list[Atoms], splits: dict[str, Sequence[int]]) -> dict[str, list[str]]:
    """The ``config_id`` of each test and validation frame: what :func:`kept_split` reads back."""
    return {part: [str(frames[i].info["config_id"]) for i in splits[part]] for part in ("test", "valid")}


def path_tag(images: Sequence[Atoms]) -> str:
    """A path's short name in config ids (``refpath_<tag>_NN``, ``cpath_<tag>_NN``): the hash of its middle image.
    The DFT reference barrier records it, so a committee's barrier is compared with DFT on its own path only."""
    return structure_hash(images[len(images) // 2])[:10]


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
