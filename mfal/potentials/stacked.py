"""All members of a committee as one MACE model whose channels are the members' side by side.

A member's pass over a few hundred atoms is made of many small operations:
matrix products of 16 or 32 channels, too narrow to keep two cores busy.
Members of one architecture can instead share a single pass. Every MACE layer
either acts on each channel alone (the convolution tensor product, the
symmetric contraction, activations) or mixes channels linearly (e3nn
``Linear`` and the skip tensor product). Laying the N members' channels next to
each other and giving each linear map the members' weights as diagonal blocks
makes one model of N x channels whose channel block k computes exactly what
member k computes. Its readouts give N energies per atom, one per member, and
one backward pass of their sum gives the committee-mean forces.

What cannot be a diagonal block without wasting work is computed per member
in one batched product: the radial networks that turn edge lengths into the
convolution's weights (``bmm`` over members). Member-specific constants
(atomic energies, scale and shift, the average neighbour count) become
per-member vectors or are folded into the weights.

On 2 CPU cores this evaluates the moving images of the MoS2 NEB 1.2x faster
than the members one at a time in float64 and 1.4x in float32 with 16-channel
members, 0.91-0.98x and 1.07-1.12x with 32-channel ones (``scripts/bench_stacked.py``):
most of a call is per-edge arithmetic (the radial networks, the convolution),
the same either way, and it grows with the channels while the overhead saved does not.

Only the layer types whose algebra is written out here are stacked
(:func:`stackable`); any other committee is evaluated one member at a time.
The stacked model is a derived cache: :class:`~mfal.potentials.committee.Committee`
refills it (:meth:`StackedCommittee.restack`) when any member's weights changed
since (:meth:`StackedCommittee.stacks`), as after every readout refit.
"""

from __future__ import annotations

from typing import Any, Sequence

import mace.modules  # imported before e3nn, which needs mace's torch.load setup
import torch
from e3nn import o3
from mace.modules.blocks import (
    EquivariantProductBasisBlock,
    LinearReadoutBlock,
    NonLinearReadoutBlock,
    RealAgnosticResidualInteractionBlock,
)
from mace.modules.utils import prepare_graph
from mace.tools.scatter import scatter_sum

from mfal.potentials.architecture import build_model

STACKABLE_INTERACTIONS = ("RealAgnosticResidualInteractionBlock",)
STACKABLE_READOUTS = ("LinearReadoutBlock", "NonLinearReadoutBlock")


def stackable(architecture: dict[str, Any]) -> bool:
    """Whether members of this architecture record can be stacked into one model."""
    return (
        architecture["model_class"] == "ScaleShiftMACE"
        and architecture["interaction_cls"] in STACKABLE_INTERACTIONS
        and architecture["interaction_cls_first"] in STACKABLE_INTERACTIONS
        and architecture["readout_cls"] in STACKABLE_READOUTS
        and len(architecture["heads"]) == 1
        and architecture["edge_irreps"] is None
        and not architecture["use_agnostic_product"]
        and not architecture["use_last_readout_only"]
        and architecture["distance_transform"] in (None, "None")
    )


def scaled_irreps(irreps: str, factor: int) -> o3.Irreps:
    """``irreps`` with every multiplicity (channel count) times ``factor``."""
    return o3.Irreps([(mul * factor, ir) for mul, ir in o3.Irreps(irreps)])


class GroupedRadialMLP(torch.nn.Module):
    """The members' radial networks (e3nn ``FullyConnectedNet``) run as one batched product.

    Returns the weights of the stacked convolution: for each tensor-product
    instruction, the members' per-channel weights one after the other, each
    multiplied by ``column_scale`` (the ratio of the members' path
    normalisation to the stacked one's).
    """

    def __init__(self, networks: Sequence[torch.nn.Module], n_instructions: int, column_scale: torch.Tensor) -> None:
        super().__init__()
        layers = [[getattr(net, f"layer{i}") for net in networks] for i in range(len(networks[0].hs) - 1)]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([layer.weight.detach() for layer in group]), requires_grad=False)
            for group in layers
        )
        self.acts = [group[0].act for group in layers]
        self.scales = []
        for group in layers:
            layer = group[0]
            if layer.act is not None:
                self.scales.append((1.0 / (layer.h_in * layer.var_in) ** 0.5, layer.var_out**0.5))
            else:
                self.scales.append((1.0 / (layer.h_in * layer.var_in / layer.var_out) ** 0.5, 1.0))
        self.n_members = len(networks)
        self.n_instructions = n_instructions
        self.register_buffer("column_scale", column_scale)

    def forward(self, edge_feats: torch.Tensor) -> torch.Tensor:
        x = edge_feats.unsqueeze(0).expand(self.n_members, -1, -1)
        for weight, act, (scale_in, scale_out) in zip(self.weights, self.acts, self.scales):
            x = torch.bmm(x, weight * scale_in)
            if act is not None:
                x = act(x) * scale_out
        members, edges, width = x.shape
        x = x.reshape(members, edges, self.n_instructions, width // self.n_instructions)
        return (x.permute(1, 2, 0, 3) * self.column_scale).reshape(edges, -1)


def stack_linear(wide: o3.Linear, members: Sequence[o3.Linear], input_stacked: bool = True,
                 member_scale: Sequence[float] | None = None, output_stacked: bool = True) -> None:
    """Write the members' e3nn ``Linear`` weights into ``wide`` as diagonal blocks (in place).

    Without ``input_stacked`` every member reads the same inputs; without
    ``output_stacked`` the members' outputs add up in the same channels.
    ``member_scale`` multiplies each member's block.
    """
    n = len(members)
    member_scale = [1.0] * n if member_scale is None else member_scale
    with torch.no_grad():
        wide.weight.zero_()
        wide_views = list(wide.weight_views())
        for k, member in enumerate(members):
            for j, (view, block) in enumerate(zip(wide_views, member.weight_views())):
                ratio = member.instructions[j].path_weight / wide.instructions[j].path_weight * member_scale[k]
                rows, cols = block.shape
                row = slice(k * rows, (k + 1) * rows) if input_stacked else slice(0, rows)
                col = slice(k * cols, (k + 1) * cols) if output_stacked else slice(0, cols)
                view[row, col] = block * ratio


def stack_skip_tp(wide: o3.TensorProduct, members: Sequence[o3.TensorProduct]) -> None:
    """Diagonal blocks of the members' skip tensor products (node features x element one-hot)."""
    with torch.no_grad():
        wide.weight.zero_()
        wide_views = list(wide.weight_views())
        for k, member in enumerate(members):
            for j, (view, block) in enumerate(zip(wide_views, member.weight_views())):
                if member.instructions[j].connection_mode != "uvw":
                    raise ValueError(f"skip tensor product path mode {member.instructions[j].connection_mode}")
                ratio = member.instructions[j].path_weight / wide.instructions[j].path_weight
                u, v, w = block.shape
                view[k * u:(k + 1) * u, :, k * w:(k + 1) * w] = block * ratio


def stack_product(wide: EquivariantProductBasisBlock, members: Sequence[EquivariantProductBasisBlock]) -> None:
    with torch.no_grad():
        for j, contraction in enumerate(wide.symmetric_contractions.contractions):
            parts = [member.symmetric_contractions.contractions[j] for member in members]
            contraction.weights_max.copy_(torch.cat([part.weights_max for part in parts], dim=-1))
            for i, weight in enumerate(contraction.weights):
                weight.copy_(torch.cat([part.weights[i] for part in parts], dim=-1))
    stack_linear(wide.linear, [member.linear for member in members])


def _stack_interaction(wide: RealAgnosticResidualInteractionBlock,
                       members: Sequence[RealAgnosticResidualInteractionBlock]) -> None:
    stack_linear(wide.linear_up, [m.linear_up for m in members])
    stack_linear(wide.linear, [m.linear for m in members], member_scale=[1.0 / m.avg_num_neighbors for m in members])
    wide.avg_num_neighbors = 1.0
    stack_skip_tp(wide.skip_tp, [m.skip_tp for m in members])
    ratios = conv_path_ratios(members[0].conv_tp, wide.conv_tp, like=wide.linear.weight)
    wide.conv_tp_weights = GroupedRadialMLP([m.conv_tp_weights for m in members], len(ratios), ratios.reshape(-1, 1, 1))


def conv_path_ratios(member_tp: o3.TensorProduct, wide_tp: o3.TensorProduct, like: torch.Tensor) -> torch.Tensor:
    """Per convolution path, the member's path normalisation over the wide one's (dtype and device of ``like``).

    The radial network's output for a path is multiplied by that ratio when a
    member's channels move into a wider convolution. Only channel-wise paths
    (``uvu``, one weight per channel) can move so; anything else is refused.
    """
    for instruction in member_tp.instructions:
        if instruction.connection_mode != "uvu" or instruction.path_shape[1:] not in ((), (1,)):
            raise ValueError(f"convolution path {instruction} is not channel-wise")
    assert member_tp.instructions[0].path_shape[0] * len(member_tp.instructions) == member_tp.weight_numel
    return torch.tensor([mine.path_weight / theirs.path_weight
                         for mine, theirs in zip(member_tp.instructions, wide_tp.instructions)],
                        dtype=like.dtype, device=like.device)


def _wide_readout(wide_irreps_in: o3.Irreps, member: torch.nn.Module, n: int, dtype: torch.dtype) -> torch.nn.Module:
    """An empty readout of ``n`` members' stacked features, giving one energy per member."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if isinstance(member, LinearReadoutBlock):
            readout = LinearReadoutBlock(wide_irreps_in, o3.Irreps(f"{n}x0e"))
        elif isinstance(member, NonLinearReadoutBlock):
            readout = NonLinearReadoutBlock(wide_irreps_in, scaled_irreps(str(member.hidden_irreps), n),
                                            member.non_linearity.acts[0].f, o3.Irreps(f"{n}x0e"))
        else:
            raise ValueError(f"readout {type(member).__name__} cannot be stacked")
    finally:
        torch.set_default_dtype(previous)
    return readout.to(dtype)


def _stack_readout(wide: torch.nn.Module, members: Sequence[torch.nn.Module]) -> None:
    if isinstance(wide, LinearReadoutBlock):
        stack_linear(wide.linear, [m.linear for m in members])
    else:
        stack_linear(wide.linear_1, [m.linear_1 for m in members])
        stack_linear(wide.linear_2, [m.linear_2 for m in members])


def copy_constants(wide: "StackedCommittee", member: torch.nn.Module) -> None:
    """The member's fixed constants into the stack (in place): every floating-point buffer of the same
    name and shape, i.e. those that do not depend on the channels (the radial basis, the convolution's
    Wigner 3j symbols, the symmetric contractions' coupling matrices).

    A model computes them when it is built, at its default dtype, and keeps them
    in its state: members trained in float32 carry them at float32 precision
    (Bessel frequencies 1e-7 off) even when evaluated in float64, and the stack
    built here in float64 would otherwise compute what they compute to 1e-6 eV only.
    """
    constants = {name: buffer for name, buffer in member.named_buffers() if buffer.is_floating_point()}
    with torch.no_grad():
        for name, buffer in wide.named_buffers():
            source = constants.get(name)
            if source is not None and source.shape == buffer.shape:
                buffer.copy_(source)


def _distinct_pair_repulsions(models: Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    """The members' pair-repulsion terms: one if they are all equal (the usual case), else one per member."""
    if not hasattr(models[0], "pair_repulsion"):
        return []
    terms = [m.pair_repulsion_fn for m in models]
    first = terms[0].state_dict()
    if all(all(torch.equal(first[k], v) for k, v in term.state_dict().items()) for term in terms[1:]):
        return terms[:1]
    return terms


class StackedCommittee(torch.nn.Module):
    """N members of one architecture evaluated in one pass (see the module docstring)."""

    def __init__(self, models: Sequence[torch.nn.Module], architecture: dict[str, Any]) -> None:
        super().__init__()
        n = len(models)
        dtype = models[0].atomic_energies_fn.atomic_energies.dtype
        device = models[0].atomic_energies_fn.atomic_energies.device
        record = dict(architecture, hidden_irreps=str(scaled_irreps(architecture["hidden_irreps"], n)))
        wide = build_model(record, dtype=dtype)
        self.node_embedding = wide.node_embedding
        self.spherical_harmonics = wide.spherical_harmonics
        self.radial_embedding = wide.radial_embedding
        self.interactions = wide.interactions
        self.products = wide.products
        self.readouts = torch.nn.ModuleList(
            _wide_readout(wide_product.linear.irreps_out, models[0].readouts[i], n, dtype)
            for i, wide_product in enumerate(wide.products)
        )
        self.register_buffer("atomic_numbers", models[0].atomic_numbers.clone())
        self.n_members = n
        self.to(device=device, dtype=dtype)
        self.restack(models)

    def restack(self, models: Sequence[torch.nn.Module]) -> None:
        """Write the members' current weights into this model (as many members, of the same architecture).

        Building the wide model costs seconds (e3nn compiles its layers);
        refilling it after a readout refit costs milliseconds.
        """
        if len(models) != self.n_members:
            raise ValueError(f"stacked for {self.n_members} members, given {len(models)}")
        for wide_interaction, *member_interactions in zip(self.interactions, *(m.interactions for m in models)):
            _stack_interaction(wide_interaction, member_interactions)
        for wide_product, *member_products in zip(self.products, *(m.products for m in models)):
            stack_product(wide_product, member_products)
        stack_linear(self.node_embedding.linear, [m.node_embedding.linear for m in models], input_stacked=False)
        copy_constants(self, models[0])
        for i, readout in enumerate(self.readouts):
            _stack_readout(readout, [m.readouts[i] for m in models])
        self.pair_repulsion = torch.nn.ModuleList(_distinct_pair_repulsions(models))
        self.atomic_energies = torch.stack([m.atomic_energies_fn.atomic_energies.reshape(-1) for m in models], dim=1)
        self.scale = torch.stack([m.scale_shift.scale.reshape(()) for m in models])
        self.shift = torch.stack([m.scale_shift.shift.reshape(()) for m in models])
        self.requires_grad_(False)
        # The members themselves (a tuple, not submodules) and their tensors' versions when stacked.
        self._members = tuple(models)
        self._member_tensors = [tensor for model in models for tensor in (*model.parameters(), *model.buffers())]
        self._member_versions = self._versions()

    def _versions(self) -> list[int]:
        return [tensor._version for tensor in self._member_tensors]

    def stacks(self, models: Sequence[torch.nn.Module]) -> bool:
        """Whether this was stacked from these very members, none of whose weights has changed since.

        Weights change in place (a readout refit, ``load_state_dict``), and every
        in-place update bumps the tensor's version counter. Reading the counters
        of the tensors listed at stacking time costs microseconds; walking the
        members' modules again for them would cost milliseconds per call.
        """
        return (len(models) == len(self._members) and all(a is b for a, b in zip(models, self._members))
                and self._versions() == self._member_versions)

    def energies(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(structures, N) member energies and the positions tensor they were computed from (with grad)."""
        ctx = prepare_graph(data)
        node_attrs, edge_index, batch = data["node_attrs"], data["edge_index"], data["batch"]
        node_es = torch.zeros(node_attrs.shape[0], self.n_members, dtype=ctx.positions.dtype, device=ctx.positions.device)
        if len(self.pair_repulsion):
            pair = [term(ctx.lengths, node_attrs, edge_index, self.atomic_numbers) for term in self.pair_repulsion]
            node_es = node_es + torch.stack(pair, dim=1)  # one column, or one per member
        node_feats = self.node_embedding(node_attrs)
        edge_attrs = self.spherical_harmonics(ctx.vectors)
        edge_feats, cutoff = self.radial_embedding(ctx.lengths, node_attrs, edge_index, self.atomic_numbers)
        for i, (interaction, product, readout) in enumerate(zip(self.interactions, self.products, self.readouts)):
            node_feats, sc = interaction(
                node_attrs=node_attrs, node_feats=node_feats, edge_attrs=edge_attrs, edge_feats=edge_feats,
                edge_index=edge_index, cutoff=cutoff, first_layer=(i == 0),
            )
            node_feats = product(node_feats=node_feats, sc=sc, node_attrs=node_attrs)
            node_es = node_es + readout(node_feats)
        node_es = node_es * self.scale + self.shift + node_attrs @ self.atomic_energies
        return scatter_sum(node_es, batch, dim=0, dim_size=ctx.num_graphs), ctx.positions

    def energies_and_mean_forces(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(structures, N) member energies and (atoms, 3) forces of their mean, both detached."""
        data = dict(batch.to_dict())
        data["positions"] = data["positions"].detach().clone()
        energies, positions = self.energies(data)
        mean_forces = -torch.autograd.grad(energies.sum() / self.n_members, positions)[0]
        return energies.detach(), mean_forces
