"""A small MoS2 surrogate campaign end to end: ``mfal campaign run`` with real ``rlaunch`` workers on the
embedded database reaches the surrogate's own barrier, and MongoDB holds its whole history."""

import json

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces

from mfal import steps
from mfal.config import config_from_dict
from mfal.systems import mos2_vacancy_endpoints
from tests.campaign_helpers import (
    MoS2BondModel,
    assert_campaign_complete,
    mfal,
    store_and_launchpad,
    tiny_mos2_committees,
    tiny_mos2_document,
    write_config,
)

TOLERANCE = 0.05
"""eV: how close the campaign's final barrier must come to the truth's own NEB barrier."""


def test_bond_model_forces_are_its_gradient_and_the_endpoints_its_minima():
    initial, final = mos2_vacancy_endpoints()
    for endpoint in (initial, final):
        endpoint.calc = MoS2BondModel()
        assert np.abs(endpoint.get_forces()).max() < 1e-9
    rattled = initial.copy()
    rattled.positions += np.random.default_rng(0).normal(0.0, 0.1, rattled.positions.shape)
    rattled.calc = MoS2BondModel()
    assert rattled.get_potential_energy() > initial.get_potential_energy()
    np.testing.assert_allclose(rattled.get_forces(), calculate_numerical_forces(rattled, eps=1e-5), atol=1e-6)


@pytest.fixture(scope="module")
def mos2_committees(tmp_path_factory):
    """(base committee file, truth committee file), trained once for the module."""
    return tiny_mos2_committees(tmp_path_factory.mktemp("mos2"))


def truth_barrier(store, document: dict, truth_file) -> float:
    """The truth's own barrier: the campaign's explore step run on the truth committee itself."""
    config = config_from_dict({**document, "name": f"{document['name']}-truth",
                               "committee": {**document["committee"], "files": [str(truth_file)]}})
    return steps.explore(steps.register(store, config), 0)["barrier"]


@pytest.mark.slow
def test_mos2_surrogate_campaign_reaches_the_truth_barrier(mos2_committees, launchpad_file, tmp_path):
    base_file, truth_file = mos2_committees
    name = "mos2-fw"
    document = tiny_mos2_document(name, base_file, truth_file)
    result = mfal(tmp_path, "campaign", "run", str(write_config(tmp_path, document)), "-l", str(launchpad_file),
                  timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    store, launchpad = store_and_launchpad(launchpad_file)
    record = assert_campaign_complete(store, launchpad, name)
    final = record["final"]
    assert record["state"] == "CONVERGED", final["reason"]
    assert f"final barrier: {final['barrier']:.3f}" in result.stdout

    truth = truth_barrier(store, document, truth_file)
    assert abs(final["base_barrier"] - truth) > 2 * TOLERANCE, "the base committee already has the truth's barrier"
    assert abs(final["barrier"] - truth) < TOLERANCE, (final, truth)

    # Every cycle: explored with its own committee; every cycle before the last selected, labelled and refitted.
    base_key = f"{name}/base"
    cycles = store.get_cycles(name)
    assert [c["cycle"] for c in cycles] == list(range(final["cycle"] + 1))
    assert all(c["state"] == "COMPLETED" and c["barrier"] is not None for c in cycles)
    assert cycles[0]["model_key"] == base_key and cycles[-1]["barrier"] == final["barrier"]
    for before, after in zip(cycles, cycles[1:]):
        assert len(before["selected"]) == document["acquisition"]["batch_size"]
        assert after["model_key"] == before["refit_model"]

    # Every label: a surrogate value of the truth, with its structure in the store.
    labels = list(store.labels.find({"campaign": name}))
    assert len(labels) == final["n_labels"] == sum(len(c.get("selected") or []) for c in cycles)
    for label in labels:
        assert store.has_structure(label["structure_hash"])
        assert label["fidelity"] == "surrogate" and label["diagnostics"]["reference"] == str(truth_file)

    # Every model: the base has no parent; each refit's parent is the base, on every label up to its cycle.
    base_record, _ = store.get_model(base_key)
    assert base_record["parent"] is None
    label_ids = set()
    for cycle in cycles[:-1]:
        label_ids.update(str(store.find_label(h, labels[0]["settings_hash"])["_id"]) for h in cycle["selected"])
        model, _ = store.get_model(cycle["refit_model"])
        assert model["parent"] == base_key and set(model["label_ids"]) == label_ids

    history = mfal(tmp_path, "history", name, "--json", "-l", str(launchpad_file))
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert [row["barrier"] for row in rows] == [c["barrier"] for c in cycles]
    assert rows[-1]["n_labels"] == final["n_labels"]
