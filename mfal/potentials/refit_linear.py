"""Exact linear response of a MACE model to the output layers of its readouts.

A ScaleShiftMACE energy is ``E = sum_i E0(Z_i) + scale * sum_i sum_k L_k(z_ik) +
shift * N``, where ``L_k`` is the last linear map (no bias) of readout ``k`` and
``z_ik`` its input on atom ``i``. The energy is therefore *linear* in the
output-layer weights theta, and so are the forces:

    E(theta) = E(theta0) + X (theta - theta0)
    F(theta) = F(theta0) + D (theta - theta0)

X is obtained by back-propagating each structure's energy into theta. D needs
second derivatives: the energy gradient g = dE/dtheta is built with
``create_graph=True`` (so it stays a function of the positions) and each column
``D[:, j] = -dg_j/dpositions`` is one backward pass through the frozen network.
After these passes, any penalised fit of theta is a small exact least-squares
problem; no approximation is involved, and nothing but theta can change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mfal.potentials.committee import frozen_parameters
from mfal.potentials.errors import PotentialError

OUTPUT_LAYERS = {"LinearReadoutBlock": "linear", "NonLinearReadoutBlock": "linear_2"}
"""Readout block class -> name of its last linear map, in which the energy is linear."""

ATOMIC_ENERGIES_KEY = "atomic_energies_fn.atomic_energies"
"""State-dict key of the per-element reference energies, the buffer the fitted offsets go into."""


class RefitModelError(PotentialError):
    """The model has a readout or head layout the readout refit cannot linearise."""


def output_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The output-layer weights of every readout, by state-dict name, in readout order."""
    heads = list(getattr(model, "heads", ["Default"]))
    if len(heads) != 1:
        raise RefitModelError(f"the readout refit supports single-head models; this one has heads {heads}")
    found: dict[str, torch.nn.Parameter] = {}
    for index, readout in enumerate(model.readouts):
        kind = type(readout).__name__
        if kind not in OUTPUT_LAYERS:
            raise RefitModelError(
                f"readout {index} is a {kind}; the refit supports {sorted(OUTPUT_LAYERS)}, whose energy is "
                "linear in the last layer"
            )
        layer_name = OUTPUT_LAYERS[kind]
        for name, parameter in getattr(readout, layer_name).named_parameters():
            found[f"readouts.{index}.{layer_name}.{name}"] = parameter
    return found


def flat_parameters(parameters: dict[str, torch.nn.Parameter]) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in parameters.values()]).cpu().double().numpy()


@dataclass(frozen=True)
class EnergyResponse:
    """Energies of M structures at theta0 and their derivatives X (M, P) with respect to theta."""

    energies: np.ndarray
    design: np.ndarray


@dataclass(frozen=True)
class ForceResponse:
    """Forces on the anchors' A atoms at theta0, flattened to (3A,), and D (3A, P)."""

    forces: np.ndarray
    design: np.ndarray

    @property
    def n_atoms(self) -> int:
        return self.forces.shape[0] // 3


def _inputs(batch) -> dict[str, torch.Tensor]:
    """The model's input dict, with positions of its own so the batch itself stays untouched."""
    data = dict(batch.to_dict())
    data["positions"] = data["positions"].detach().clone()
    return data


def energy_response(model: torch.nn.Module, batch) -> EnergyResponse:
    """Energies of the batch's structures and their exact derivatives in the output-layer weights."""
    parameters = output_parameters(model)
    with frozen_parameters(model):
        for parameter in parameters.values():
            parameter.requires_grad_(True)
        energies = model(_inputs(batch), compute_force=False)["energy"]
        rows = []
        for index in range(energies.shape[0]):
            grads = torch.autograd.grad(energies[index], list(parameters.values()), retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return EnergyResponse(
        energies=energies.detach().cpu().double().numpy(),
        design=torch.stack(rows).detach().cpu().double().numpy(),
    )


def force_response(model: torch.nn.Module, batch) -> ForceResponse:
    """Forces of the batch at theta0 and their exact derivatives D in the output-layer weights.

    One backward pass per output weight (plus one for the forces themselves).
    """
    parameters = output_parameters(model)
    with frozen_parameters(model):
        for parameter in parameters.values():
            parameter.requires_grad_(True)
        data = _inputs(batch)
        total = model(data, compute_force=False)["energy"].sum()
        positions = data["positions"]
        gradient = torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(total, list(parameters.values()), create_graph=True)]
        )
        (energy_gradient,) = torch.autograd.grad(total, positions, retain_graph=True)
        columns = []
        for index in range(gradient.shape[0]):
            (column,) = torch.autograd.grad(
                gradient[index], positions, retain_graph=index < gradient.shape[0] - 1, allow_unused=True
            )
            columns.append(torch.zeros_like(positions) if column is None else column)
    return ForceResponse(
        forces=(-energy_gradient).detach().reshape(-1).cpu().double().numpy(),
        design=(-torch.stack([c.reshape(-1) for c in columns], dim=1)).detach().cpu().double().numpy(),
    )


def concatenate_force_responses(parts: Sequence[ForceResponse]) -> ForceResponse:
    """One response for anchors evaluated in several batches (atoms in batch order)."""
    return ForceResponse(
        forces=np.concatenate([part.forces for part in parts]),
        design=np.concatenate([part.design for part in parts], axis=0),
    )


def refitted_model(model: torch.nn.Module, theta: np.ndarray, element_offsets: np.ndarray) -> torch.nn.Module:
    """A copy of ``model`` with output weights ``theta`` and ``element_offsets`` (eV) added to E0.

    Every other parameter and buffer is copied unchanged, bit for bit.
    """
    new = copy.deepcopy(model)
    parameters = output_parameters(new)
    sizes = [p.numel() for p in parameters.values()]
    if sum(sizes) != len(theta):
        raise RefitModelError(f"got {len(theta)} output weights for a model with {sum(sizes)}")
    with torch.no_grad():
        start = 0
        for parameter, size in zip(parameters.values(), sizes):
            values = torch.as_tensor(theta[start : start + size], dtype=parameter.dtype, device=parameter.device)
            parameter.copy_(values.reshape(parameter.shape))
            start += size
        buffer = new.atomic_energies_fn.atomic_energies
        shift = torch.as_tensor(np.asarray(element_offsets, dtype=np.float64), dtype=buffer.dtype, device=buffer.device)
        buffer.add_(shift.reshape(buffer.shape[:1] + (1,) * (buffer.dim() - 1)))
    return new
