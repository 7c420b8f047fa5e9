"""Widening a committee: twice the channels, the same energies and forces, and new channels that can learn."""

import numpy as np
import pytest
import torch

from mfal.potentials import Committee, PotentialError
from mfal.potentials.graphs import run_model
from mfal.potentials.widen import widened_committee
from tests.test_committee import structures, tiny_architecture

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def committee():
    return Committee.from_architecture({**tiny_architecture(), "pair_repulsion": True}, 4, seeds=[1, 2, 3, 4])


def test_widened_committee_has_twice_the_channels_and_computes_the_same(committee, tmp_path):
    wide = widened_committee(committee, seed=10)
    assert wide.architecture["hidden_irreps"] == "8x0e+8x1o"
    assert wide.architecture["MLP_irreps"] == "8x0e"
    before, after = committee.evaluate(structures()), wide.evaluate(structures())
    np.testing.assert_allclose(after.energies, before.energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(after.forces, before.forces, rtol=0, atol=1e-10)
    reloaded = Committee.load(wide.save(tmp_path / "wide.pt"))  # an ordinary committee of the wider architecture
    np.testing.assert_array_equal(reloaded.evaluate(structures()).energies, after.energies)


def test_the_new_channels_receive_gradients(committee):
    """Their readout weights start at zero but their features do not, so training moves them."""
    wide = widened_committee(committee, seed=10)
    member = wide.models[0]
    member.requires_grad_(True)
    output = run_model(member, wide.batch(structures()), training=True)
    (output["energy"].sum() + (output["forces"] ** 2).sum()).backward()
    readout = member.readouts[0].linear.weight
    new_channels = readout.grad.reshape(-1)[readout.numel() // 2:]
    assert np.all(readout.detach().reshape(-1)[readout.numel() // 2:].numpy() == 0)
    assert new_channels.abs().sum() > 1e-6


def test_an_unstackable_committee_is_not_widened():
    record = {**tiny_architecture(), "interaction_cls": "RealAgnosticInteractionBlock",
              "interaction_cls_first": "RealAgnosticInteractionBlock"}
    with pytest.raises(PotentialError, match="widened"):
        widened_committee(Committee.from_architecture(record, 4, seeds=[1, 2, 3, 4]))
