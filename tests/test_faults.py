"""Faults in a running campaign, with real rlaunch workers on the embedded database.

Each test breaks a campaign at a known point (a worker SIGKILLed inside a step,
a QMC job that returns garbage, a job directory that refuses writes), recovers
the way a user would (``lpad detect_lostruns --rerun`` or ``mfal campaign
resume``), and checks what must survive: the campaign completes, every label
ever finished is in the store exactly once, and no QMC job that had finished is
computed again (every QMC computation is logged by the surrogate's calculator,
:func:`tests.fault_worker.recording_leps`).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mfal.campaign import add_campaign
from mfal.config import load_config
from mfal.db import EmbeddedServer
from tests.campaign_helpers import (
    BIN,
    REPO,
    assert_campaign_complete,
    environment,
    mfal,
    store_and_launchpad,
    tiny_h3_document,
    write_config,
)
from tests.fault_worker import RECORDING_LEPS, can_refuse_writes, qmc_runs, refuse_writes

TIMEOUT_S = 300


def fault_campaign(tmp_path, name, committee_file) -> Path:
    """One cycle of two labels whose QMC jobs are logged to ``tmp_path/qmc_runs.log``."""
    calculator = {"log": str(tmp_path / "qmc_runs.log"), "poison": str(tmp_path / "poison")}
    document = tiny_h3_document(
        name, committee_file,
        qmc={"calculator": RECORDING_LEPS, "calculator_kwargs": calculator},
        neb={"max_steps": 30},
        convergence={"max_cycles": 1},
        fireworks={"qmc_work_dir": str(tmp_path / "qmc_jobs")},
    )
    return write_config(tmp_path, document)


def start_worker(tmp_path, launchpad_file, label, **faults) -> subprocess.Popen:
    """``rlaunch rapidfire`` (the fault-injecting one) in its own directory; output to ``label.log``."""
    directory = tmp_path / label
    directory.mkdir(exist_ok=True)
    env = {**environment(tmp_path), "MFAL_FAULT_DIR": str(tmp_path), **faults}
    with open(tmp_path / f"{label}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.fault_worker", "-l", str(launchpad_file), "rapidfire"],
                                cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, worker: subprocess.Popen, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.poll() is None, f"the worker exited ({worker.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def add(store, launchpad, config: Path) -> None:
    """``mfal campaign add``, in this process (the subprocess path is tested elsewhere)."""
    add_campaign(launchpad, store, load_config(config))


def assert_labels_exactly_once(store, log: Path) -> None:
    """Every QMC job was computed once and its label stored once."""
    runs = qmc_runs(log)
    assert len(runs) == len(set(runs)), f"a QMC job ran twice: {runs}"
    stored = [doc["structure_hash"] for doc in store.labels.find({}, {"structure_hash": 1})]
    assert sorted(stored) == sorted(runs)


def kill_inside(tmp_path, launchpad_file, step: str) -> None:
    """Run a worker until it is inside ``step``, then SIGKILL it there."""
    worker = start_worker(tmp_path, launchpad_file, f"killed-in-{step}", MFAL_FAULT_BLOCK=step)
    wait_for((tmp_path / f"blocked-{step}").exists, worker, f"the worker to reach the {step} step")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(1.2)  # the killed launch is now older than the 1 s expiration used to find it


def running_steps(launchpad, name) -> list[str]:
    running = launchpad.fireworks.find({"spec.mfal_campaign": name, "state": "RUNNING"})
    return [fw["spec"]["mfal_step"] for fw in running]


@pytest.mark.slow
def test_workers_killed_inside_each_step_type_lose_and_repeat_nothing(committee_file, launchpad_file, tmp_path):
    """SIGKILL inside explore, then label, then refit; recover with resume, lpad, resume --run."""
    name = "killed"
    store, launchpad = store_and_launchpad(launchpad_file)
    add(store, launchpad, fault_campaign(tmp_path, name, committee_file))
    log = tmp_path / "qmc_runs.log"

    kill_inside(tmp_path, launchpad_file, "explore")
    assert running_steps(launchpad, name) == ["explore"]
    assert store.get_neb_path(name, 0) is not None  # the NEB was stored before the kill: it is reused
    result = mfal(tmp_path, "campaign", "resume", name, "--expiration", "1", "-l", str(launchpad_file))
    assert result.returncode == 0, result.stderr
    assert "rerun 1 lost firework(s) (no ping for 1 s): explore c0 x1" in result.stdout

    kill_inside(tmp_path, launchpad_file, "label")
    assert running_steps(launchpad, name) == ["label"]
    (first_job,) = qmc_runs(log)  # the QMC job had finished when its worker died; its label was not stored
    assert store.labels.count_documents({}) == 0
    result = subprocess.run([str(BIN / "lpad"), "-l", str(launchpad_file), "detect_lostruns", "--time", "1",
                             "--rerun"], capture_output=True, text=True, env=environment(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr

    kill_inside(tmp_path, launchpad_file, "refit")
    assert running_steps(launchpad, name) == ["refit"]
    finished = {doc["structure_hash"]: doc["_id"] for doc in store.labels.find()}
    assert first_job in finished and len(finished) == 2
    result = mfal(tmp_path, "campaign", "resume", name, "--expiration", "1", "--run", "-l", str(launchpad_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rerun 1 lost firework(s) (no ping for 1 s): refit c0 x1" in result.stdout
    assert "final barrier:" in result.stdout

    assert_campaign_complete(store, launchpad, name)
    assert {h: store.labels.find_one({"structure_hash": h})["_id"] for h in finished} == finished
    assert_labels_exactly_once(store, log)
    assert len(store.get_cycles(name)) == 2


@pytest.mark.slow
def test_database_restart_inside_a_step_delays_the_worker_and_loses_nothing(committee_file, tmp_path):
    """The server stops while a worker is inside a label step and comes back on the same port and storage."""
    server = EmbeddedServer(state_dir=tmp_path / "db_state", storage_path=tmp_path / "db_storage")
    port = server.start().port
    launchpad_file = tmp_path / "my_launchpad.yaml"
    launchpad_file.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": port, "name": "restarted",
                                              "mongoclient_kwargs": {"serverSelectionTimeoutMS": 1000}}))
    try:
        store, launchpad = store_and_launchpad(launchpad_file)
        add(store, launchpad, fault_campaign(tmp_path, "restarted", committee_file))
        worker = start_worker(tmp_path, launchpad_file, "worker", MFAL_FAULT_BLOCK="label")
        wait_for((tmp_path / "blocked-label").exists, worker, "the worker to reach a label step")
        server.stop()
        (tmp_path / "release-label").touch()
        log = tmp_path / "worker.log"
        wait_for(lambda: "retrying in 2.0 s" in log.read_text(), worker, "the worker to retry", timeout=60)
        assert server.start(port=port).port == port
        assert worker.wait(timeout=TIMEOUT_S) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert "mfal: database unreachable while looking up a structure (attempt 1 failed: " in text
        assert "mfal: database reachable again; looking up a structure succeeded at attempt " in text
        assert "Traceback" not in text
        assert_campaign_complete(store, launchpad, "restarted")
        assert_labels_exactly_once(store, tmp_path / "qmc_runs.log")
    finally:
        server.stop()


def fizzle_reasons(launchpad, name) -> dict[str, str]:
    """Last line of the traceback of each FIZZLED firework's latest launch, by step."""
    reasons = {}
    for fw in launchpad.fireworks.find({"spec.mfal_campaign": name, "state": "FIZZLED"}):
        launch = launchpad.launches.find_one({"fw_id": fw["fw_id"]}, sort=[("launch_id", -1)])
        trace = launch["action"]["stored_data"]["_exception"]["_stacktrace"].strip().splitlines()[-1]
        reasons[f"{fw['spec']['mfal_step']} {fw['spec']['mfal_structure'][:8]}"] = trace
    return reasons


def states_by_step(launchpad, name) -> dict[str, set[str]]:
    states = {}
    for fw in launchpad.fireworks.find({"spec.mfal_campaign": name}):
        states.setdefault(f"{fw['spec']['mfal_step']} c{fw['spec']['mfal_cycle']}", set()).add(fw["state"])
    return states


@pytest.mark.slow
def test_garbage_qmc_output_and_unwritable_job_directories_fizzle_the_labels_only(
        committee_file, launchpad_file, tmp_path):
    """NaN energies, then truncated outputs, then job directories that refuse writes; resume after each fix."""
    if not can_refuse_writes(tmp_path):
        pytest.skip("running as root without 'chattr +i': no directory here refuses writes")
    name = "garbage"
    store, launchpad = store_and_launchpad(launchpad_file)
    add(store, launchpad, fault_campaign(tmp_path, name, committee_file))
    faults = [("poison", {}, "reference energy is not finite: nan"),
              ("garbage", {"MFAL_FAULT_TRUNCATE": "1"}, "(truncated or damaged)"),
              ("unwritable", {}, "cannot write the job directory (")]
    jobs = []
    for index, (cause, worker_faults, reason) in enumerate(faults):
        (tmp_path / cause).touch()
        if cause == "unwritable":
            jobs = sorted((tmp_path / "qmc_jobs").glob("*/*"))
            before = {path: path.read_bytes() for job in jobs for path in job.iterdir()}
            refuse_writes(jobs, True)
        try:
            if index:
                result = mfal(tmp_path, "campaign", "resume", name, "-l", str(launchpad_file))
                assert "rerun 2 fizzled firework(s): label c0 x2" in result.stdout, result.stderr
            worker = start_worker(tmp_path, launchpad_file, f"worker-{cause}", **worker_faults)
            assert worker.wait(timeout=TIMEOUT_S) == 0
            reasons = fizzle_reasons(launchpad, name)
            assert len(reasons) == 2 and all(trace.startswith("mfal.qmc.base.QmcJobFailed: QMC job ")
                                              and reason in trace for trace in reasons.values()), reasons
        finally:
            if cause == "unwritable":
                refuse_writes(jobs, False)
        if cause == "unwritable":
            assert {path: path.read_bytes() for job in jobs for path in job.iterdir()} == before
        assert store.labels.count_documents({}) == 0
        assert states_by_step(launchpad, name) == {"explore c0": {"COMPLETED"}, "converge c0": {"COMPLETED"},
                                                   "select c0": {"COMPLETED"}, "label c0": {"FIZZLED"},
                                                   "refit c0": {"WAITING"}, "explore c1": {"WAITING"},
                                                   "converge c1": {"WAITING"}}
        assert store.get_campaign(name)["state"] == "RUNNING"
        (tmp_path / cause).unlink()

    result = mfal(tmp_path, "campaign", "resume", name, "--run", "-l", str(launchpad_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rerun 2 fizzled firework(s): label c0 x2" in result.stdout and "final barrier:" in result.stdout
    assert_campaign_complete(store, launchpad, name)
    runs = qmc_runs(tmp_path / "qmc_runs.log")
    assert sorted(set(runs)) == sorted(doc["structure_hash"] for doc in store.labels.find())
    # NaN, truncated, computed but not writable (the directory took no new file), then the good run
    assert all(runs.count(structure) == 4 for structure in runs)


@pytest.mark.slow
def test_four_workers_on_twenty_labels_lose_and_repeat_nothing(committee_file, launchpad_file, tmp_path):
    """Load: scripts/bench_workers.py runs 4 rlaunch workers on 20 labels per cycle and checks integrity.

    Each QMC job lasts 0.5 s: with jobs of milliseconds one worker can take all
    20 before the others wake from their 2 s poll, and nothing runs in parallel.
    """
    slow_jobs = {"calculator": RECORDING_LEPS,
                 "calculator_kwargs": {"log": str(tmp_path / "qmc_runs.log"), "seconds": 0.5}}
    document = tiny_h3_document("load", committee_file, neb={"n_images": 20, "max_steps": 10}, qmc=slow_jobs,
                                acquisition={"batch_size": 20}, refit={"calibrate": False},
                                convergence={"max_cycles": 1, "max_labels": 20})
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_workers.py"), str(write_config(
        tmp_path, document)), "-l", str(launchpad_file), "--workers", "4", "--json"], capture_output=True, text=True,
        env=environment(tmp_path), cwd=tmp_path, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert not any(report["integrity"].values()), report["integrity"]
    rates = report["throughput"]
    assert rates["labels"] == 20 and rates["most_labels_running_at_once"] > 1, report
    store, launchpad = store_and_launchpad(launchpad_file)
    assert_campaign_complete(store, launchpad, "load")
    assert_labels_exactly_once(store, tmp_path / "qmc_runs.log")
    print(f"4 workers, 20 labels: {rates['labels_per_s']} labels/s over the label phase, "
          f"{rates['fireworks_per_s']} fireworks/s over the campaign")


def test_qmc_job_with_a_huge_error_bar_stores_no_label(store, committee_file, tmp_path):
    """A real (tiny) pyqmc DMC whose error bar is far above the campaign's limit: a failed job, nothing stored."""
    from mfal import steps
    from mfal.config import config_from_dict
    from mfal.qmc import QmcJobFailed
    from mfal.systems import h3_endpoints

    qmc = {"backend": "pyqmc", "walkers": 20, "seed": 5, "mean_field": {"basis": "sto-3g"},
           "optimisation": {"iterations": 0},
           "dmc": {"timestep": 0.02, "steps_per_block": 5, "blocks": 12, "vmc_warmup_blocks": 1,
                   "equilibration_time": 0.2},
           "analysis": {"equilibration_blocks": 0, "min_blocks": 5, "max_error_eV": 1e-4}}
    document = tiny_h3_document("huge-error", committee_file, fireworks={"qmc_work_dir": str(tmp_path / "jobs")})
    document["qmc"] = qmc
    campaign = steps.Campaign(store, config_from_dict(document))
    structure = store.put_structure(h3_endpoints(3.5)[0])
    with pytest.raises(QmcJobFailed, match=r"error bar \d+\.\d+ eV of .* is above the limit 0.0001 eV; run more"):
        steps.label(campaign, structure)
    assert store.labels.count_documents({}) == 0


@pytest.mark.slow
@pytest.mark.parametrize("wait_ms, survives", [(500, False), (60000, True)])
def test_idle_worker_outlives_a_restart_when_its_launchpad_file_says_to_wait(wait_ms, survives, tmp_path):
    """FireWorks' own polling has no retry: the worker's serverSelectionTimeoutMS decides whether it lives."""
    from fireworks import Firework, LaunchPad, ScriptTask

    server = EmbeddedServer(state_dir=tmp_path / "db_state", storage_path=tmp_path / "db_storage")
    port = server.start().port
    launchpad_file = tmp_path / "my_launchpad.yaml"
    launchpad_file.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": port, "name": "idle",
                                              "mongoclient_kwargs": {"serverSelectionTimeoutMS": wait_ms}}))
    launchpad = LaunchPad(host="127.0.0.1", port=port, name="idle")
    launchpad.reset("", require_password=False)
    (tmp_path / "worker").mkdir()
    worker = subprocess.Popen([str(BIN / "rlaunch"), "-l", str(launchpad_file), "rapidfire", "--nlaunches",
                               "infinite", "--sleep", "1"], cwd=tmp_path / "worker", env=environment(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        server.stop()
        time.sleep(3)
        server.start(port=port)
        (fw_id,) = launchpad.add_wf(Firework(ScriptTask.from_str("true"))).values()
        deadline = time.monotonic() + 60
        while launchpad.get_fw_by_id(fw_id).state != "COMPLETED" and worker.poll() is None:
            assert time.monotonic() < deadline, "the firework was not run"
            time.sleep(0.5)
        assert (worker.poll() is None) == survives
        assert launchpad.get_fw_by_id(fw_id).state == ("COMPLETED" if survives else "READY")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.stop()


def test_explore_rerun_after_a_death_between_its_two_writes_records_the_cycle(store, committee_file, tmp_path,
                                                                              monkeypatch):
    """The NEB path was stored, the cycle record not: the rerun reuses the path and fills the cycle in."""
    from mfal import steps
    from mfal.config import config_from_dict

    class WorkerDied(Exception):
        pass

    def die(*args, **kwargs):
        raise WorkerDied

    monkeypatch.setenv("MFAL_HOME", str(tmp_path))
    campaign = steps.register(store, config_from_dict(tiny_h3_document("window", committee_file,
                                                                       neb={"max_steps": 10})))
    with monkeypatch.context() as patch:
        patch.setattr(store, "put_cycle", die)
        with pytest.raises(WorkerDied):
            steps.explore(campaign, 0)
    assert store.get_neb_path("window", 0) is not None and store.get_cycle("window", 0) is None
    assert steps.explore(campaign, 0)["reused"]
    assert store.history("window")[0]["barrier"] == store.get_neb_path("window", 0)["barrier"]
    assert steps.converge(campaign, 0)["cycle"] == 0
