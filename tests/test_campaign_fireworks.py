"""Campaigns through the real FireWorks path: mfal campaign add/run and rlaunch subprocesses."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.campaign_helpers import tiny_h3_committee, tiny_h3_document, write_config

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory):
    return tiny_h3_committee(tmp_path_factory.mktemp("committee") / "h3.pt")


def environment(tmp_path):
    return {**os.environ, "MFAL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def mfal(tmp_path, *args, timeout=900):
    return subprocess.run([str(BIN / "mfal"), *args], capture_output=True, text=True, cwd=tmp_path,
                          env=environment(tmp_path), timeout=timeout)


def store_and_launchpad(launchpad_file):
    from mfal.connection import target_from_launchpad_file
    from mfal.store import Store

    target = target_from_launchpad_file(launchpad_file, source="test")
    return Store.from_target(target), target.launchpad()


def assert_campaign_complete(store, launchpad, name):
    record = store.get_campaign(name)
    assert record["state"] in ("CONVERGED", "STOPPED"), record["state"]
    fireworks = list(launchpad.fireworks.find({"spec.mfal_campaign": name}))
    assert fireworks and all(fw["state"] == "COMPLETED" for fw in fireworks)
    for fw in fireworks:
        assert len(fw["launches"]) == 1, f"firework {fw['name']} ran {len(fw['launches'])} times"
    selected = [h for cycle in store.get_cycles(name) for h in cycle.get("selected") or []]
    assert len(selected) == len(set(selected)) > 0
    assert store.labels.count_documents({}) == len(selected)
    labels = {fw["spec"]["mfal_structure"] for fw in fireworks if fw["spec"]["mfal_step"] == "label"}
    assert labels == set(selected)
    return record


@pytest.mark.slow
def test_campaign_run_drives_rlaunch_to_the_end(committee_file, launchpad_file, tmp_path):
    config = write_config(tmp_path, tiny_h3_document("fw-run", committee_file))
    result = mfal(tmp_path, "campaign", "run", str(config), "-l", str(launchpad_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final barrier:" in result.stdout
    store, launchpad = store_and_launchpad(launchpad_file)
    record = assert_campaign_complete(store, launchpad, "fw-run")
    assert f"{record['final']['barrier']:.3f}" in result.stdout
    history = mfal(tmp_path, "history", "fw-run", "--json", "-l", str(launchpad_file))
    assert len(yaml.safe_load(history.stdout)) == record["final"]["cycle"] + 1
    again = mfal(tmp_path, "campaign", "run", str(config), "-l", str(launchpad_file))
    assert again.returncode == 0 and "final barrier:" in again.stdout
    assert store.labels.count_documents({}) == len(
        [h for cycle in store.get_cycles("fw-run") for h in cycle.get("selected") or []])


@pytest.mark.slow
def test_two_workers_share_a_campaign_without_duplicates(committee_file, launchpad_file, tmp_path):
    config = write_config(tmp_path, tiny_h3_document("fw-parallel", committee_file, acquisition={"batch_size": 2}))
    added = mfal(tmp_path, "campaign", "add", str(config), "-l", str(launchpad_file))
    assert added.returncode == 0, added.stderr
    store, launchpad = store_and_launchpad(launchpad_file)
    workers = []
    for index in range(2):
        directory = tmp_path / f"worker{index}"
        directory.mkdir()
        workers.append(subprocess.Popen(
            [str(BIN / "rlaunch"), "-l", str(launchpad_file), "rapidfire", "--nlaunches", "infinite", "--sleep", "1"],
            cwd=directory, env=environment(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 900
        while store.get_campaign("fw-parallel")["state"] not in ("CONVERGED", "STOPPED"):
            assert time.monotonic() < deadline, "campaign did not finish"
            assert all(worker.poll() is None for worker in workers), "a worker died"
            time.sleep(1)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=60)
    assert_campaign_complete(store, launchpad, "fw-parallel")
    hosts = {tuple(fw["launches"]) for fw in launchpad.fireworks.find({"spec.mfal_campaign": "fw-parallel"})}
    assert len(hosts) > 1


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"system": {"kind": "h4"}}, "system"),
        ({"committee": {"files": ["/nonexistent/c.pt"]}}, "/nonexistent/c.pt does not exist"),
        ({"qmc": {"backend": "qmcpack", "pseudo_dir": "/nonexistent/pseudo"}}, "/nonexistent/pseudo"),
        ({"acquisition": {"batch_size": "many"}}, "acquisition.batch_size"),
    ],
)
def test_config_errors_add_nothing(committee_file, launchpad_file, tmp_path, change, fragment):
    document = tiny_h3_document("bad", committee_file)
    document.update(change)
    result = mfal(tmp_path, "campaign", "add", str(write_config(tmp_path, document)), "-l", str(launchpad_file),
                  timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mfal: error: ") and fragment in result.stderr
    store, launchpad = store_and_launchpad(launchpad_file)
    assert launchpad.fireworks.count_documents({}) == 0 and store.campaigns.count_documents({}) == 0
