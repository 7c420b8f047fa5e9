"""Campaigns through the real FireWorks path: mfal campaign add/run and rlaunch subprocesses."""

import subprocess
import time

import pytest
import yaml

from tests.campaign_helpers import (
    BIN,
    assert_campaign_complete,
    environment,
    mfal,
    store_and_launchpad,
    tiny_h3_document,
    write_config,
)


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


@pytest.mark.slow
def test_run_with_two_workers_leaves_other_campaigns_alone(committee_file, launchpad_file, tmp_path):
    other = write_config(tmp_path, tiny_h3_document("fw-other", committee_file))
    assert mfal(tmp_path, "campaign", "add", str(other), "-l", str(launchpad_file)).returncode == 0
    config = write_config(tmp_path, tiny_h3_document("fw-two", committee_file, acquisition={"batch_size": 2}))
    result = mfal(tmp_path, "campaign", "run", str(config), "-l", str(launchpad_file), "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    store, launchpad = store_and_launchpad(launchpad_file)
    assert_campaign_complete(store, launchpad, "fw-two")
    untouched = list(launchpad.fireworks.find({"spec.mfal_campaign": "fw-other"}, {"state": 1, "launches": 1}))
    assert untouched and all(not fw["launches"] for fw in untouched)
    assert store.get_campaign("fw-other")["state"] not in ("CONVERGED", "STOPPED")


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


def test_local_workers_share_the_cores_unless_the_user_set_the_threads():
    from mfal.runner import worker_environment

    shared = worker_environment({"PATH": "/bin"}, workers=2, cores=8)
    assert shared["PATH"] == "/bin"
    assert [shared[name] for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")] == ["4"] * 3
    assert worker_environment({}, workers=4, cores=2)["OMP_NUM_THREADS"] == "1"
    assert worker_environment({"OMP_NUM_THREADS": "3"}, workers=2, cores=8) == {"OMP_NUM_THREADS": "3"}
