"""Anchor force responses kept per (base member, structure): reused across refits, never stale."""

from copy import deepcopy

import numpy as np
import pytest
import torch

from mfal.potentials import Committee
from mfal.potentials.refit import EnergyLabel, refit_committee
from mfal.potentials.refit_linear import force_response
from mfal.potentials.refit_responses import AnchorResponses, MemoryResponseCache, member_fingerprint
from mfal.potentials.refit_settings import RefitSettings
from mfal.potentials.refit_store import refit_from_store
from tests.refit_helpers import cluster, tiny_committee_on_one_thread

SETTINGS = RefitSettings(calibrate=False, anchor_batch_size=4)


@pytest.fixture(scope="module")
def committee():
    yield from tiny_committee_on_one_thread(2)


@pytest.fixture(scope="module")
def structures():
    rng = np.random.default_rng(11)
    return [cluster(rng, "H2O2" if i % 3 else "H2O") for i in range(16)]


def labels_for(committee, structures, shift=25.0):
    energies = committee.evaluate(structures).energy_mean + shift
    return [EnergyLabel(atoms, float(e), 0.02, label_id=str(i)) for i, (atoms, e) in enumerate(zip(structures, energies))]


def test_each_anchor_from_a_batch_equals_its_response_alone(committee, structures):
    anchors = structures[:7]  # two sizes of molecule in one batch, cut into a batch of 4 and one of 3
    responses = AnchorResponses(committee, anchors, batch_size=4)
    batched = responses.for_member(1)
    alone = [force_response(committee.models[1], committee.batch([atoms])) for atoms in anchors]
    np.testing.assert_allclose(batched.forces, np.concatenate([r.forces for r in alone]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched.design, np.concatenate([r.design for r in alone]), rtol=0, atol=1e-12)
    assert responses.computed == 7 and responses.reused == 0


def test_a_cached_refit_equals_a_fresh_one_and_computes_only_new_anchors(committee, structures):
    labels, anchors = labels_for(committee, structures[:5]), structures[5:13]
    fresh = refit_committee(committee, labels, anchors, SETTINGS)
    cache = MemoryResponseCache()
    refit_committee(committee, labels[:3], anchors, SETTINGS, response_cache=cache)
    moved = anchors + [structures[13], anchors[0]]  # one new image, one anchor given twice
    again = refit_committee(committee, labels, moved, SETTINGS, response_cache=cache)
    assert again.metrics["anchor_responses"] == {"computed": 2, "reused": 2 * 8}
    reference = refit_committee(committee, labels, moved, SETTINGS)
    probe = structures[14:]
    for one, other in ((again, reference), (fresh, refit_committee(committee, labels, anchors, SETTINGS,
                                                                    response_cache=cache))):
        np.testing.assert_allclose(one.committee.evaluate(probe).energies, other.committee.evaluate(probe).energies,
                                   rtol=0, atol=1e-10)


def test_a_member_with_other_weights_does_not_reuse_responses(committee, structures):
    changed = deepcopy(committee.models[0])
    with torch.no_grad():
        changed.readouts[0].linear.weight.add_(1e-9)
    other = Committee([changed, committee.models[1]], committee.architectures, min_members=2, device="cpu")
    assert member_fingerprint(other, 0) != member_fingerprint(committee, 0)
    assert member_fingerprint(other, 1) == member_fingerprint(committee, 1)
    cache = MemoryResponseCache()
    AnchorResponses(committee, structures[:3], 4, cache).for_member(0)
    responses = AnchorResponses(other, structures[:3], 4, cache)
    responses.for_member(0)
    assert (responses.computed, responses.reused) == (3, 0)


def test_refits_from_the_store_share_the_base_members_responses(store, committee, structures):
    base = committee.to_store(store, "base-dft")
    ids = []
    for atoms, label in zip(structures[:4], labels_for(committee, structures[:4])):
        ids.append(store.put_label({"structure_hash": store.put_structure(atoms), "settings": {"method": "dmc"},
                                    "energy": label.energy, "error": label.error, "fidelity": "qmc", "method": "dmc"}))
    anchors = structures[4:10]
    first = refit_from_store(store, base, ids[:2], anchors, SETTINGS, min_members=2)
    second = refit_from_store(store, base, ids, anchors + [structures[10]], SETTINGS, min_members=2)
    assert first.result.metrics["anchor_responses"] == {"computed": 2 * 6, "reused": 0}
    assert second.result.metrics["anchor_responses"] == {"computed": 2, "reused": 2 * 6}
    assert store.force_responses.count_documents({}) == 2 * 7
    record, _ = store.get_model(second.key)
    assert record["metrics"]["anchor_responses"]["reused"] == 12
