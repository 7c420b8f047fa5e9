"""Structures and a committee small enough for the refit tests: H/O clusters and 8-channel members."""

import numpy as np
import torch
from ase import Atoms

from mfal.potentials import Committee, default_architecture


def cluster(rng, symbols="H2O2", box=2.6, min_distance=0.9) -> Atoms:
    """Atoms placed at random in a ``box`` Å cube, no two closer than ``min_distance`` Å."""
    count = len(Atoms(symbols))
    while True:
        positions = rng.uniform(0.0, box, (count, 3))
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[np.triu_indices(count, 1)]
        if distances.min() > min_distance:
            return Atoms(symbols, positions=positions)


def tiny_architecture() -> dict:
    return default_architecture([1, 8], [-13.6, -2040.0], 3.0, r_max=3.0, channels=8, radial_MLP=(16, 16))


def tiny_committee_on_one_thread(members: int):
    """Generator for a module fixture: ``members`` fresh members, torch on one thread meanwhile.

    Building models is the slow part, and tiny models run fastest on one thread;
    the previous thread count is restored afterwards.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Committee.from_architecture(tiny_architecture(), members, min_members=members, device="cpu")
    torch.set_num_threads(previous)
