"""A campaign's steps in a plain loop on the store (no FireWorks): provenance and idempotence."""

import pytest

from mfal import steps
from mfal.config import config_from_dict
from mfal.errors import ConfigError, StoreError
from tests.campaign_helpers import tiny_h3_committee, tiny_h3_document


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory):
    return tiny_h3_committee(tmp_path_factory.mktemp("committee") / "h3.pt")


def run_loop(campaign, max_cycles=5):
    for cycle in range(max_cycles):
        steps.explore(campaign, cycle)
        if steps.converge(campaign, cycle)["finished"]:
            return cycle
        for structure_hash in steps.select(campaign, cycle):
            steps.label(campaign, structure_hash)
        steps.refit(campaign, cycle)
    raise AssertionError("the campaign did not stop within its max_cycles")


@pytest.mark.slow
def test_loop_records_every_cycle_label_and_model(store, committee_file, monkeypatch, tmp_path):
    monkeypatch.setenv("MFAL_HOME", str(tmp_path))
    config = config_from_dict(tiny_h3_document("steps-h3", committee_file))
    campaign = steps.register(store, config)
    last = run_loop(campaign)

    record = store.get_campaign("steps-h3")
    assert record["state"] in ("CONVERGED", "STOPPED") and record["final"]["cycle"] == last
    rows = store.history("steps-h3")
    assert [row["cycle"] for row in rows] == list(range(last + 1))
    assert all(row["barrier"] is not None for row in rows)
    selected = [h for cycle in store.get_cycles("steps-h3") for h in cycle.get("selected") or []]
    assert store.labels.count_documents({}) == len(set(selected)) == rows[-1]["n_labels"] > 0
    for label in store.labels.find():
        assert store.has_structure(label["structure_hash"]) and label["fidelity"] == "surrogate"
    for cycle in range(1, last + 1):
        model, _ = store.get_model(campaign.model_key(cycle))
        assert model["parent"] == campaign.model_key(0)
        assert len(model["label_ids"]) == len(set(selected[: 2 * cycle]))

    # Every step again: nothing is recomputed or duplicated.
    counts = {name: store.db[name].count_documents({}) for name in store.db.list_collection_names()}
    for cycle in range(last + 1):
        assert steps.explore(campaign, cycle)["reused"]
        if cycle < last:
            for structure_hash in steps.select(campaign, cycle):
                steps.label(campaign, structure_hash)
            steps.refit(campaign, cycle)
    assert counts == {name: store.db[name].count_documents({}) for name in store.db.list_collection_names()}


def test_register_checks_everything_before_writing(store, committee_file):
    document = tiny_h3_document("bad-qmcpack", committee_file,
                                qmc={"backend": "qmcpack", "pseudo_dir": "/nonexistent"})
    document["qmc"] = {"backend": "qmcpack", "pseudo_dir": "/nonexistent"}
    with pytest.raises(Exception, match="nonexistent"):
        steps.register(store, config_from_dict(document))
    with pytest.raises(StoreError):
        store.get_campaign("bad-qmcpack")
    assert store.models.count_documents({}) == 0


def test_register_rejects_a_committee_without_the_reaction_elements(store, tmp_path):
    from mfal.potentials import Committee, default_architecture

    path = tmp_path / "oxygen.pt"
    Committee.from_architecture(default_architecture([8], [-430.0], 2.0, channels=4), 4).save(path)
    with pytest.raises(Exception, match="H"):
        steps.register(store, config_from_dict(tiny_h3_document("wrong-elements", path)))
    assert store.campaigns.count_documents({}) == 0


def test_unknown_shipped_committee_lists_the_shipped_ones(store, committee_file):
    document = tiny_h3_document("unshipped", committee_file)
    document["committee"] = {"shipped": "nonexistent"}
    with pytest.raises(ConfigError, match="no such shipped committee; shipped: "):
        steps.register(store, config_from_dict(document))


def test_an_unset_variable_in_a_path_is_named_before_anything_is_stored(store, committee_file, monkeypatch):
    monkeypatch.delenv("MFAL_UNSET_MODEL", raising=False)
    document = tiny_h3_document("unset-variable", committee_file)
    document["qmc"] = {"backend": "surrogate", "model_file": "${MFAL_UNSET_MODEL}", "calculator": "ase.calculators.emt:EMT"}
    config = config_from_dict(document)
    with pytest.raises(ConfigError, match=r"qmc.model_file = .*MFAL_UNSET_MODEL is not set"):
        steps.register(store, config)
    assert store.campaigns.count_documents({}) == 0
    monkeypatch.setenv("MFAL_UNSET_MODEL", str(committee_file))
    steps.register(store, config_from_dict(document))
    assert store.campaigns.count_documents({}) == 1


def test_same_config_registers_once(store, committee_file):
    config = config_from_dict(tiny_h3_document("twice", committee_file))
    steps.register(store, config)
    steps.register(store, config)
    assert store.campaigns.count_documents({}) == 1 and store.models.count_documents({}) == 1
    changed = config_from_dict(tiny_h3_document("twice", committee_file, acquisition={"batch_size": 3}))
    with pytest.raises(StoreError, match="different config"):
        steps.register(store, changed)


def test_files_system_with_inconsistent_endpoints(store, committee_file, tmp_path):
    from ase.build import molecule
    from ase.io import write

    write(tmp_path / "a.xyz", molecule("H2"))
    write(tmp_path / "b.xyz", molecule("H2O"))
    document = tiny_h3_document("files", committee_file)
    document["system"] = {"kind": "files", "initial": str(tmp_path / "a.xyz"), "final": str(tmp_path / "b.xyz")}
    with pytest.raises(ConfigError, match="atom count"):
        steps.register(store, config_from_dict(document))
    (tmp_path / "empty.xyz").write_text("")
    document["system"]["final"] = str(tmp_path / "empty.xyz")
    with pytest.raises(ConfigError, match="is empty"):
        steps.register(store, config_from_dict(document))
    assert store.campaigns.count_documents({}) == 0


def test_labels_made_by_another_campaign_are_used_not_recomputed(store, committee_file, monkeypatch, tmp_path):
    monkeypatch.setenv("MFAL_HOME", str(tmp_path))
    first = steps.register(store, config_from_dict(tiny_h3_document("steps-first", committee_file)))
    steps.explore(first, 0)
    first_picks = steps.select(first, 0)
    for structure_hash in first_picks:
        steps.label(first, structure_hash)

    second = steps.register(store, config_from_dict(tiny_h3_document("steps-second", committee_file)))
    steps.explore(second, 0)
    picks = steps.select(second, 0)
    # The same committee and settings give the same path: the first campaign's labels are free.
    assert picks[: len(first_picks)] == sorted(first_picks, key=picks.index)
    assert len(picks) == len(first_picks) + second.config.acquisition.batch_size
    for structure_hash in picks:
        steps.label(second, structure_hash)
    assert store.labels.count_documents({}) == len(set(picks))
    steps.refit(second, 0)
    model, _ = store.get_model(second.model_key(1))
    assert len(model["label_ids"]) == len(picks)
