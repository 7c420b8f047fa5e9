"""Double a trained committee's channels without changing what it computes, to train on with more capacity.

A wider MACE trained from scratch needs hundreds of epochs to catch up with a
narrow one that has been trained for long: on the MoS2 dataset a 32-channel
member after 120 epochs from scratch was still at 89.7 meV/Å on the held-out
forces, where the 16-channel members it would replace were at 80-96. Widening
keeps what was learnt instead (the shipped 32-channel MoS2 committee began as
that 16-channel one, widened). Each wide member's channels are the trained
member's followed by those of a freshly initialised member of the same architecture,
laid out as in :mod:`mfal.potentials.stacked` (block-diagonal linear maps,
per-channel weights side by side). The fresh channels' readout weights and all
cross blocks start at zero, so the wide member computes exactly the trained
member's energy, and training on from there puts the new channels to use: their
activations are nonzero, so the gradients of the zero weights are not.

The wide member is an ordinary ScaleShiftMACE of twice the channels (the
architecture record's ``hidden_irreps`` and ``MLP_irreps`` doubled); only its
radial networks keep their width, the fresh channels reading the trained
member's hidden radial features through the fresh member's last layer.
"""

from __future__ import annotations

from typing import Any

import torch

from mfal.potentials.architecture import build_model
from mfal.potentials.committee import Committee
from mfal.potentials.errors import PotentialError
from mfal.potentials.stacked import (
    STACKABLE_INTERACTIONS, conv_path_ratios, scaled_irreps, stack_linear, stack_product, stack_skip_tp, stackable,
)


def widened_record(record: dict[str, Any]) -> dict[str, Any]:
    """The architecture record with twice the channels (hidden features and readout MLP)."""
    return dict(record, hidden_irreps=str(scaled_irreps(record["hidden_irreps"], 2)),
                MLP_irreps=str(scaled_irreps(record["MLP_irreps"], 2)))


def _widen_radial(wide, trained, fresh, n_instructions: int, column_scale: torch.Tensor) -> None:
    """The trained member's radial network, its last layer's columns interleaved with the fresh member's per path."""
    layers = len(trained.hs) - 1
    with torch.no_grad():
        for i in range(layers - 1):
            getattr(wide, f"layer{i}").weight.copy_(getattr(trained, f"layer{i}").weight)
        last = [getattr(net, f"layer{layers - 1}").weight for net in (trained, fresh)]
        h_in, width = last[0].shape
        blocks = [weight.reshape(h_in, n_instructions, width // n_instructions) for weight in last]
        combined = torch.cat(blocks, dim=2) * column_scale.reshape(1, -1, 1)
        getattr(wide, f"layer{layers - 1}").weight.copy_(combined.reshape(h_in, -1))


def _widen_readout(wide, trained, fresh) -> None:
    """The trained member's readout on its channels, zero on the fresh ones (one energy, as before)."""
    if hasattr(wide, "linear_1"):
        stack_linear(wide.linear_1, [trained.linear_1, fresh.linear_1])
        stack_linear(wide.linear_2, [trained.linear_2, fresh.linear_2], member_scale=[1.0, 0.0], output_stacked=False)
    else:
        stack_linear(wide.linear, [trained.linear, fresh.linear], member_scale=[1.0, 0.0], output_stacked=False)


def widened_member(model: torch.nn.Module, record: dict[str, Any], seed: int) -> torch.nn.Module:
    """A member of :func:`widened_record` that computes what ``model`` computes (its new channels seeded by ``seed``)."""
    energies = model.atomic_energies_fn.atomic_energies
    torch.manual_seed(seed)
    fresh = build_model(record, dtype=energies.dtype).to(energies.device)
    wide = build_model(widened_record(record), dtype=energies.dtype).to(energies.device)  # E0s, scale, shift: record
    stack_linear(wide.node_embedding.linear, [model.node_embedding.linear, fresh.node_embedding.linear],
                 input_stacked=False)
    for wide_block, trained, new in zip(wide.interactions, model.interactions, fresh.interactions):
        stack_linear(wide_block.linear_up, [trained.linear_up, new.linear_up])
        stack_linear(wide_block.linear, [trained.linear, new.linear])
        stack_skip_tp(wide_block.skip_tp, [trained.skip_tp, new.skip_tp])
        scale = conv_path_ratios(trained.conv_tp, wide_block.conv_tp, like=energies)
        _widen_radial(wide_block.conv_tp_weights, trained.conv_tp_weights, new.conv_tp_weights, len(scale), scale)
    for wide_block, trained, new in zip(wide.products, model.products, fresh.products):
        stack_product(wide_block, [trained, new])
    for wide_block, trained, new in zip(wide.readouts, model.readouts, fresh.readouts):
        _widen_readout(wide_block, trained, new)
    return wide


def widened_committee(committee: Committee, seed: int = 0) -> Committee:
    """Every member widened (:func:`widened_member`, member ``i`` seeded ``seed + i``), same dtype and device."""
    if not stackable(committee.architecture):
        raise PotentialError(
            f"a committee of {committee.architecture['interaction_cls']} layers cannot be widened: mfal widens "
            f"only the layers it can stack ({', '.join(STACKABLE_INTERACTIONS)} with linear or nonlinear readouts)"
        )
    models = [widened_member(model, record, seed + i)
              for i, (model, record) in enumerate(zip(committee.models, committee.architectures))]
    return Committee(models, [widened_record(record) for record in committee.architectures], dtype=committee.dtype,
                     device=committee.device)
