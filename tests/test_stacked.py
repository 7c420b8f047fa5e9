"""The stacked committee (all members as one model of their channels side by side) against the member loop."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from mfal.potentials import Committee, PotentialError, build_model
from mfal.potentials.stacked import stackable
from tests.test_committee import structures, tiny_architecture

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parents[1] / "data"


def assert_stacked_matches_loop(committee: Committee, batch) -> None:
    """Member energies and mean forces of ``member_forces=False`` equal the member loop's (float64)."""
    loop = committee.evaluate(batch)
    stacked = committee.evaluate(batch, member_forces=False)
    assert stacked.forces is None
    np.testing.assert_allclose(stacked.energies, loop.energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(stacked.forces_mean, loop.forces_mean, rtol=0, atol=1e-10)
    for index in range(len(batch)):
        np.testing.assert_allclose(stacked.structure_forces_mean(index), loop.structure_forces(index).mean(axis=0),
                                   rtol=0, atol=1e-10)


def test_members_with_their_own_constants_and_pair_repulsion_stack_exactly():
    """Per-member shifts, E0s and neighbour counts, linear readouts, ZBL: one pass gives each member's energy."""
    base = {**tiny_architecture(), "pair_repulsion": True}
    records = [{**base, "atomic_inter_shift": 0.1 * i, "atomic_energies": [-13.6 + i, -2041.0 - i],
                "avg_num_neighbors": 3.0 + 0.5 * i} for i in range(4)]
    members = []
    for seed, record in enumerate(records):
        torch.manual_seed(seed)
        members.append(build_model(record))
    committee = Committee(members, records)
    assert stackable(committee.architecture)
    assert_stacked_matches_loop(committee, structures())


@pytest.mark.parametrize("system", ["mos2", "h3"])
def test_shipped_committees_stack_exactly_on_their_neb_path(system):
    """Nonlinear readouts, 16 and 32 channels, l <= 2 edges, correlation 3: the architectures campaigns run."""
    committee = Committee.load(DATA / system / "committee.pt", device="cpu")
    images = read(DATA / system / "committee_neb.extxyz", ":")[1:-1]
    assert_stacked_matches_loop(committee, images)


def test_stacked_model_follows_every_change_of_the_members_weights():
    """A refit changes readout weights in place, a reload replaces them: the next call sees both."""
    committee = Committee.from_architecture(tiny_architecture(), 4, seeds=[1, 2, 3, 4])
    batch = structures()
    before = committee.evaluate(batch, member_forces=False).energies
    with torch.no_grad():
        for parameter in committee.models[2].readouts[-1].parameters():
            parameter.mul_(1.5)
    changed = committee.evaluate(batch, member_forces=False).energies
    assert np.abs(changed[2] - before[2]).max() > 1e-6
    np.testing.assert_array_equal(changed[[0, 1, 3]], before[[0, 1, 3]])
    assert_stacked_matches_loop(committee, batch)
    committee.models[0].load_state_dict(committee.models[3].state_dict())
    reloaded = committee.evaluate(batch, member_forces=False).energies
    np.testing.assert_allclose(reloaded[0], reloaded[3], rtol=0, atol=1e-12)


def test_a_mean_forces_prediction_refuses_to_give_member_forces():
    committee = Committee.from_architecture(tiny_architecture(), 4, seeds=[1, 2, 3, 4])
    prediction = committee.evaluate(structures(), member_forces=False)
    with pytest.raises(PotentialError, match="member_forces=True"):
        prediction.structure_forces(0)
    with pytest.raises(PotentialError, match="member_forces=True"):
        prediction.forces_spread


def test_an_unstackable_architecture_is_evaluated_member_by_member():
    """Interaction blocks whose algebra the stacking does not know fall back to the loop, same answers."""
    record = {**tiny_architecture(), "interaction_cls": "RealAgnosticInteractionBlock",
              "interaction_cls_first": "RealAgnosticInteractionBlock"}
    assert not stackable(record)
    committee = Committee.from_architecture(record, 4, seeds=[1, 2, 3, 4])
    loop = committee.evaluate(structures())
    mean_only = committee.evaluate(structures(), member_forces=False)
    np.testing.assert_array_equal(mean_only.energies, loop.energies)
    np.testing.assert_array_equal(mean_only.forces_mean, loop.forces_mean)


def test_members_trained_in_float32_stack_exactly_in_float64(tmp_path):
    """A float32 model keeps its Bessel frequencies and coupling matrices at float32 precision; the stack uses theirs."""
    path = Committee.from_architecture(tiny_architecture(), 4, dtype="float32").save(tmp_path / "f32.pt")
    assert_stacked_matches_loop(Committee.load(path, dtype="float64", device="cpu"), structures())
