"""FireWorks against the embedded server: the real LaunchPad and the real rlaunch command."""

import shutil
import subprocess
import sys
from pathlib import Path

from mfal.connection import target_from_launchpad_file


def test_rlaunch_runs_a_two_firework_workflow(launchpad_file, tmp_path):
    from fireworks import Firework, ScriptTask, Workflow

    launchpad = target_from_launchpad_file(launchpad_file, source="test").launchpad()
    launchpad.reset("", require_password=False)

    first = Firework(ScriptTask.from_str("echo first > first.txt"), name="first", fw_id=1)
    second = Firework(ScriptTask.from_str("echo second > second.txt"), name="second", parents=[first], fw_id=2)
    launchpad.add_wf(Workflow([first, second], name="two-step"))

    rlaunch = shutil.which("rlaunch", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [rlaunch, "-l", str(launchpad_file), "rapidfire"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    states = {fw["name"]: fw["state"] for fw in launchpad.fireworks.find({}, {"name": 1, "state": 1})}
    assert states == {"first": "COMPLETED", "second": "COMPLETED"}
    assert len(list(tmp_path.glob("launcher_*/first.txt"))) == 1
    assert len(list(tmp_path.glob("launcher_*/second.txt"))) == 1
