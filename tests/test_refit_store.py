"""Readout refit from store records: provenance of the new model, and bad input rejected before any write."""

import math

import numpy as np
import pytest
from ase import Atoms

from mfal.errors import StoreError
from mfal.potentials import Committee
from mfal.potentials.refit import RefitInputError
from mfal.potentials.refit_settings import RefitSettings
from mfal.potentials.refit_store import REFIT_KIND, refit_from_store
from tests.refit_helpers import cluster, tiny_committee_on_one_thread

QMC_SETTINGS = {"method": "dmc", "timestep": 0.01}
SIGMA = 0.02


@pytest.fixture(scope="module")
def committee():
    yield from tiny_committee_on_one_thread(2)


@pytest.fixture(scope="module")
def structures():
    rng = np.random.default_rng(5)
    return [cluster(rng) for _ in range(10)]


def put_label(store, atoms, energy, error=SIGMA):
    structure = store.put_structure(atoms)
    return store.put_label(
        {
            "structure_hash": structure,
            "settings": QMC_SETTINGS,
            "energy": energy,
            "error": error,
            "fidelity": "qmc",
            "method": "dmc",
        }
    )


def raw_label(store, atoms, energy, error):
    """A label document written around the store's own checks (an old or foreign writer)."""
    structure = store.put_structure(atoms)
    return store.labels.insert_one(
        {"structure_hash": structure, "settings": QMC_SETTINGS, "energy": energy, "error": error}
    ).inserted_id


def n_models(store):
    return store.models.count_documents({}), store.db["mfal_model_files.files"].count_documents({})


def test_refit_writes_a_new_model_record_with_provenance(store, committee, structures):
    base = committee.to_store(store, "base-dft")
    labels, anchors = structures[:6], structures[6:]
    energies = committee.evaluate(labels).energy_mean + 30.0
    ids = [put_label(store, atoms, float(e)) for atoms, e in zip(labels, energies)]

    stored = refit_from_store(store, base, ids, anchors, RefitSettings(calibrate=False), min_members=2)
    record, _ = store.get_model(stored.key)
    assert record["parent"] == "base-dft" and record["kind"] == REFIT_KIND
    assert record["label_ids"] == [str(i) for i in ids]
    assert record["force_rms_tolerance"] == 0.05 and record["force_weight"] is None
    assert len(record["anchor_hashes"]) == len(anchors)
    metrics = record["metrics"]
    assert metrics["n_labels"] == 6 and metrics["chi2_per_label"] >= 0
    assert len(metrics["force_rms"]) == len(metrics["force_max"]) == 2
    assert max(metrics["force_rms"]) <= 0.05 and metrics["wall_time_s"] > 0
    assert all(math.isfinite(v) for v in metrics["force_max"])

    reloaded = Committee.from_store(store, stored.key, min_members=2, device="cpu")
    assert reloaded.evaluate(labels).energies == pytest.approx(stored.result.committee.evaluate(labels).energies)

    again = refit_from_store(store, base, ids, anchors, RefitSettings(calibrate=False), min_members=2)
    assert again.key == stored.key
    assert n_models(store) == (2, 2)


def test_label_whose_structure_is_gone_is_rejected_before_any_write(store, committee, structures):
    base = committee.to_store(store, "base-dft")
    label = put_label(store, structures[0], -4000.0)
    store.structures.delete_one({"_id": store.get_labels([label])[0]["structure_hash"]})
    before = n_models(store)
    with pytest.raises(RefitInputError, match="not in the store"):
        refit_from_store(store, base, [label], structures[6:], min_members=2)
    assert n_models(store) == before


@pytest.mark.parametrize(
    "error, message", [(float("nan"), "error bar must be a finite number"), (-0.5, "error bar must be >= 0")]
)
def test_labels_with_bad_error_bars_are_rejected_before_any_write(store, committee, structures, error, message):
    base = committee.to_store(store, "base-dft")
    good = put_label(store, structures[0], -4000.0)
    bad = raw_label(store, structures[1], -4000.0, error)
    before = n_models(store)
    with pytest.raises(RefitInputError, match=message):
        refit_from_store(store, base, [good, bad], structures[6:], min_members=2)
    assert n_models(store) == before


def test_label_with_an_element_the_model_lacks_is_rejected_before_any_write(store, committee, structures):
    base = committee.to_store(store, "base-dft")
    ammonia = Atoms("NH3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    label = put_label(store, ammonia, -1500.0)
    before = n_models(store)
    with pytest.raises(RefitInputError, match=r"holds elements \['N'\]"):
        refit_from_store(store, base, [label], structures[6:], min_members=2)
    assert n_models(store) == before


def test_unknown_label_ids_and_refit_parents_are_rejected(store, committee, structures):
    base = committee.to_store(store, "base-dft")
    with pytest.raises(StoreError, match="unknown label id"):
        refit_from_store(store, base, ["0123456789abcdef01234567"], structures[6:], min_members=2)
    committee.to_store(store, "refit-old", parent=base, kind=REFIT_KIND)
    label = put_label(store, structures[0], -4000.0)
    with pytest.raises(RefitInputError, match="refit from the DFT-trained base"):
        refit_from_store(store, "refit-old", [label], structures[6:], min_members=2)
    assert n_models(store) == (2, 2)
