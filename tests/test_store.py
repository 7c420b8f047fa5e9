"""The provenance store on a real MongoDB-protocol server."""

import io
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
from ase.build import molecule

from mfal.errors import StoreError
from mfal.hashing import settings_hash, structure_hash


def make_label(structure_key, energy=-10.0, error=0.01, settings=None):
    return {
        "structure_hash": structure_key,
        "settings": settings or {"method": "dmc", "timestep": 0.005},
        "energy": energy,
        "error": error,
        "fidelity": "qmc",
        "method": "dmc",
    }


def test_structure_round_trip_keeps_identity(store):
    atoms = molecule("CH4")
    atoms.rattle(0.01, seed=3)
    key = store.put_structure(atoms, origin="test")
    assert store.put_structure(atoms.copy()) == key
    assert store.structures.count_documents({}) == 1
    back = store.get_structure(key)
    assert structure_hash(back) == key
    np.testing.assert_allclose(back.get_positions(), atoms.get_positions(), atol=0)


def test_same_label_written_twice_is_one_record_and_never_overwritten(store):
    key = store.put_structure(molecule("H2O"))
    first = store.put_label(make_label(key, energy=-17.0))
    second = store.put_label(make_label(key, energy=-99.0))
    assert first == second
    assert store.labels.count_documents({}) == 1
    label = store.get_labels([str(first)])[0]
    assert label["energy"] == -17.0
    assert label["settings_hash"] == settings_hash({"method": "dmc", "timestep": 0.005})
    assert label["units"] == "eV"


def test_other_settings_are_another_label(store):
    key = store.put_structure(molecule("H2O"))
    store.put_label(make_label(key))
    store.put_label(make_label(key, settings={"method": "dmc", "timestep": 0.0025}))
    assert store.labels.count_documents({}) == 2


def test_unique_key_violation_is_refused_by_the_server(store):
    from pymongo.errors import DuplicateKeyError

    key = store.put_structure(molecule("H2O"))
    store.put_label(make_label(key))
    duplicate = store.labels.find_one({}, {"_id": 0})
    with pytest.raises(DuplicateKeyError):
        store.labels.insert_one(duplicate)


def test_missing_error_bar_is_zero_and_says_so(store):
    key = store.put_structure(molecule("H2O"))
    label = store.get_labels([store.put_label(make_label(key, error=None))])[0]
    assert label["error"] == 0.0 and "no error bar" in label["error_note"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"energy": float("nan")}, "finite"),
        ({"error": -0.1}, ">= 0"),
        ({"error": float("inf")}, "finite"),
        ({"structure_hash": "0" * 64}, "not in the store"),
        ({"energy": "abc"}, "must be a number"),
    ],
)
def test_bad_labels_are_rejected_and_nothing_is_written(store, change, message):
    key = store.put_structure(molecule("H2O"))
    with pytest.raises(StoreError, match=message):
        store.put_label({**make_label(key), **change})
    assert store.labels.count_documents({}) == 0


def test_model_round_trip_through_gridfs_with_weights_only(store):
    state = {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3), "b": torch.ones(3)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    store.put_model("base", payload, {"kind": "toy"}, metrics={"rmse": 1.0})
    assert store.put_model("base", payload, {"kind": "toy"}) == "base"
    record, back = store.get_model("base")
    loaded = torch.load(io.BytesIO(back), weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])
    assert record["architecture"] == {"kind": "toy"} and record["metrics"] == {"rmse": 1.0}
    with pytest.raises(StoreError, match="different weights"):
        store.put_model("base", payload + b"x", {"kind": "toy"})
    with pytest.raises(StoreError, match="parent model"):
        store.put_model("child", payload, {"kind": "toy"}, parent="nonexistent")
    store.put_model("child", payload, {"kind": "toy"}, parent="base", label_ids=["a", "b"])
    assert store.get_model("child")[0]["parent"] == "base"


def test_history_on_hand_made_cycles(store):
    store.put_campaign("c1", {"system": "h3"})
    start = datetime(2026, 1, 1, 12, 0, 0)
    store.put_cycle("c1", 0, state="COMPLETED", barrier=0.16, barrier_spread=0.02, label_ids=["a", "b"],
                    started_at=start, finished_at=start + timedelta(seconds=90))
    store.put_cycle("c1", 1, state="COMPLETED", barrier=0.40, barrier_spread=0.01, label_ids=["b", "c", "d"],
                    started_at=start, finished_at=start + timedelta(seconds=30))
    store.put_cycle("c1", 2, state="RUNNING")
    rows = store.history("c1")
    assert [r["cycle"] for r in rows] == [0, 1, 2]
    assert [r["n_labels"] for r in rows] == [2, 4, 4]
    assert rows[0]["wall_time_s"] == 90.0 and rows[1]["barrier"] == 0.40
    assert rows[2]["barrier"] is None and rows[2]["state"] == "RUNNING"


def test_campaign_identity(store):
    assert store.put_campaign("c1", {"a": 1}) is True
    assert store.put_campaign("c1", {"a": 1}) is False
    with pytest.raises(StoreError, match="different config"):
        store.put_campaign("c1", {"a": 2})
    with pytest.raises(StoreError, match="unknown campaign 'nope'; known campaigns: c1"):
        store.history("nope")


def test_force_response_round_trip_is_exact_and_written_once(store):
    rng = np.random.default_rng(2)
    forces, design = rng.normal(size=6), rng.normal(size=(6, 4))
    store.put_force_response("member:structure", forces, design)
    store.put_force_response("member:structure", forces + 1.0, design)  # a second write changes nothing
    found = store.get_force_responses(["member:structure", "member:other"])
    assert list(found) == ["member:structure"]
    np.testing.assert_array_equal(found["member:structure"][0], forces)
    np.testing.assert_array_equal(found["member:structure"][1], design)
    with pytest.raises(StoreError, match="do not match"):
        store.put_force_response("member:bad", forces[:5], design)


def test_truncated_force_response_is_an_error_not_a_wrong_design(store):
    store.put_force_response("member:cut", np.zeros(6), np.zeros((6, 4)))
    store.force_responses.update_one({"_id": "member:cut"}, {"$set": {"columns": 5}})
    with pytest.raises(StoreError, match="truncated"):
        store.get_force_responses(["member:cut"])
