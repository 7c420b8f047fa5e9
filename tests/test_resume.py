"""``mfal campaign resume`` on hand-made LaunchPad states (no worker needed)."""

import subprocess
import time

import pytest
from fireworks import Firework, FWAction, FWorker, ScriptTask, Workflow

from mfal.config import config_from_dict
from mfal.resume import ResumeError, resume_campaign
from tests.campaign_helpers import BIN, environment, mfal, store_and_launchpad, tiny_h3_document
from tests.fault_worker import can_refuse_writes, refuse_writes
from tests.test_cli import assert_one_line_error


def add_workflow(launchpad, campaign: str, steps: list[str]) -> list[int]:
    """Independent do-nothing fireworks tagged like a campaign's; their ids in order."""
    fireworks = [Firework(ScriptTask.from_str("true"), name=f"{campaign} {step}", fw_id=-1 - i,
                          spec={"mfal_campaign": campaign, "mfal_step": step, "mfal_cycle": 0})
                 for i, step in enumerate(steps)]
    ids = launchpad.add_wf(Workflow(fireworks, metadata={"mfal_campaign": campaign}))
    return [ids[-1 - i] for i in range(len(steps))]


def launch(launchpad, fw_id: int, tmp_path, state: str | None) -> None:
    """Check a firework out as a worker would; then complete it, fizzle it, or leave it running."""
    _, launch_id = launchpad.checkout_fw(FWorker(), str(tmp_path), fw_id=fw_id)
    if state is not None:
        launchpad.complete_launch(launch_id, FWAction(), state)


def test_reruns_lost_and_fizzled_fireworks_and_never_completed_ones(store, launchpad_file, tmp_path):
    store, launchpad = store_and_launchpad(launchpad_file)
    store.put_campaign("demo", {"system": "h3"})
    explore, label, refit = add_workflow(launchpad, "demo", ["explore", "label", "refit"])
    other, = add_workflow(launchpad, "other", ["label"])
    launch(launchpad, explore, tmp_path, "COMPLETED")
    launch(launchpad, label, tmp_path, None)
    launch(launchpad, refit, tmp_path, "FIZZLED")
    launch(launchpad, other, tmp_path, "FIZZLED")

    patient = resume_campaign(launchpad, store, "demo", expiration_s=3600)
    assert [fw["fw_id"] for fw in patient.fizzled] == [refit] and not patient.lost
    assert [fw["fw_id"] for fw in patient.running] == [label]
    assert "not lost yet" in patient.lines(3600)[-1]
    time.sleep(1.1)
    report = resume_campaign(launchpad, store, "demo", expiration_s=1)
    assert [fw["fw_id"] for fw in report.lost] == [label] and not report.fizzled
    assert report.lines(1) == ["rerun 1 lost firework(s) (no ping for 1 s): label c0 x1"]
    states = {fw_id: launchpad.get_fw_by_id(fw_id).state for fw_id in (explore, label, refit, other)}
    assert states == {explore: "COMPLETED", label: "READY", refit: "READY", other: "FIZZLED"}
    assert resume_campaign(launchpad, store, "demo", 1).lines(1) == ["nothing to rerun: no lost or fizzled fireworks"]


def test_campaign_without_workflow(store, launchpad_file):
    store, launchpad = store_and_launchpad(launchpad_file)
    store.put_campaign("orphan", {"system": "h3"})
    with pytest.raises(ResumeError, match="'orphan' is in the store but has no workflow"):
        resume_campaign(launchpad, store, "orphan")


def test_unknown_campaign_lists_the_known_ones(launchpad_file, tmp_path):
    store, _ = store_and_launchpad(launchpad_file)
    store.put_campaign("alpha", {"system": "h3"})
    store.put_campaign("beta", {"system": "h3"})
    result = mfal(tmp_path, "campaign", "resume", "gamma", "-l", str(launchpad_file), timeout=120)
    assert_one_line_error(result, "unknown campaign 'gamma'", "known campaigns: alpha, beta")


def test_launch_directory_that_refuses_writes_is_a_clear_error(committee_file, launchpad_file, tmp_path):
    if not can_refuse_writes(tmp_path):
        pytest.skip("running as root without 'chattr +i': no directory here refuses writes")
    store, launchpad = store_and_launchpad(launchpad_file)
    config = config_from_dict(tiny_h3_document("stuck", committee_file))
    store.put_campaign("stuck", config.to_document(), state="RUNNING")
    add_workflow(launchpad, "stuck", ["explore"])
    launches = tmp_path / "home" / "launches"
    launches.mkdir(parents=True)
    refuse_writes([launches], True)
    try:
        result = mfal(tmp_path, "campaign", "resume", "stuck", "--run", "-l", str(launchpad_file), timeout=120)
        plain = subprocess.run([str(BIN / "rlaunch"), "-l", str(launchpad_file), "rapidfire"], cwd=launches,
                               capture_output=True, text=True, env=environment(tmp_path), timeout=120)
    finally:
        refuse_writes([launches], False)
    assert_one_line_error(result, f"cannot write the launch directory {launches / 'stuck'} (")
    assert plain.returncode != 0 and "launcher_" in plain.stderr  # FireWorks cannot make its launcher folder
    assert launchpad.fireworks.find_one({"spec.mfal_campaign": "stuck"})["state"] == "READY"
