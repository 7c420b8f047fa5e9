"""ASE Atoms -> one mace graph batch, and one model's forward pass with forces.

Shared by batched committee evaluation, base training and the readout refit:
the neighbour lists of all structures are built once into a single
disconnected graph that every committee member then reads.
"""

from __future__ import annotations

from typing import Sequence

import ase
import ase.data
import mace.data  # imported before e3nn, which needs mace's torch.load setup
import numpy as np
import torch
from mace.tools import torch_geometric
from mace.tools.utils import AtomicNumberTable

from mfal.potentials.errors import UnknownElementError

NO_LABELS = mace.data.KeySpecification(info_keys={}, arrays_keys={})
"""Key specification for evaluation: read no labels from ``atoms.info``/``atoms.arrays``."""


def labelled_keys(energy_key: str = "REF_energy", forces_key: str = "REF_forces") -> mace.data.KeySpecification:
    """Key specification reading energy from ``atoms.info[energy_key]`` and forces from ``atoms.arrays[forces_key]``.

    Always name the keys: mace's default empty ``KeySpecification`` reads no
    labels and silently trains on zero energies and forces.
    """
    return mace.data.KeySpecification(
        info_keys={"energy": energy_key}, arrays_keys={"forces": forces_key}
    )


def check_elements(structures: Sequence[ase.Atoms], atomic_numbers: Sequence[int]) -> None:
    """Raise :class:`UnknownElementError` if any structure holds an element outside ``atomic_numbers``."""
    known = set(int(z) for z in atomic_numbers)
    for index, atoms in enumerate(structures):
        unknown = sorted(set(int(z) for z in atoms.numbers) - known)
        if unknown:
            raise UnknownElementError(
                f"structure {index} ({atoms.get_chemical_formula()}) holds elements "
                f"{[ase.data.chemical_symbols[z] for z in unknown]} that the committee was not trained on; "
                f"it knows {[ase.data.chemical_symbols[z] for z in sorted(known)]}"
            )


def atoms_to_batch(
    structures: Sequence[ase.Atoms],
    atomic_numbers: Sequence[int],
    r_max: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    heads: Sequence[str] = ("Default",),
    head: str = "Default",
    key_specification: mace.data.KeySpecification = NO_LABELS,
) -> torch_geometric.Batch:
    """One graph batch of all ``structures``, with neighbour lists within ``r_max`` (Å).

    ``atomic_numbers`` is the model's element table (one-hot order). Labels are
    read only where ``key_specification`` names them (see :func:`labelled_keys`).
    Floating tensors are in ``dtype``; the batch lives on ``device``.
    """
    if len(structures) == 0:
        raise ValueError("atoms_to_batch needs at least one structure")
    check_elements(structures, atomic_numbers)
    z_table = AtomicNumberTable([int(z) for z in atomic_numbers])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        graphs = [
            mace.data.AtomicData.from_config(
                mace.data.config_from_atoms(atoms, key_specification=key_specification, head_name=head),
                z_table=z_table,
                cutoff=float(r_max),
                heads=list(heads),
            )
            for atoms in structures
        ]
    finally:
        torch.set_default_dtype(previous)
    return torch_geometric.Batch.from_data_list(graphs).to(device)


def run_model(
    model: torch.nn.Module,
    batch: torch_geometric.Batch,
    *,
    compute_stress: bool = False,
    training: bool = False,
) -> dict[str, torch.Tensor]:
    """One forward pass of ``model`` on ``batch`` with forces (and stress on request).

    Returns ``energy`` [structures] (eV), ``forces`` [atoms, 3] (eV/Å) and, with
    ``compute_stress``, ``stress`` [structures, 3, 3] (eV/Å^3). With
    ``training=True`` the autograd graph is kept so a loss on forces can be
    back-propagated into the parameters; otherwise outputs are detached.
    The batch itself is not modified, so one batch serves every member.
    """
    data = dict(batch.to_dict())
    data["positions"] = data["positions"].detach().clone()
    output = model(
        data,
        training=training,
        compute_force=True,
        compute_stress=compute_stress,
    )
    result = {"energy": output["energy"], "forces": output["forces"]}
    if compute_stress:
        result["stress"] = output["stress"]
    if not training:
        result = {name: value.detach() for name, value in result.items()}
    return result


def atom_offsets(structures: Sequence[ase.Atoms]) -> np.ndarray:
    """Start index of each structure's atoms in the concatenated batch, plus the total at the end."""
    return np.concatenate([[0], np.cumsum([len(atoms) for atoms in structures])]).astype(np.int64)
