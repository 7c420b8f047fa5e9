"""workflows/*.yaml are the shipped configs' campaigns in the form `lpad add` reads."""

import subprocess
from datetime import datetime
import sys
from pathlib import Path

import pytest
import yaml

from mfal.campaign import workflow_file_document
from mfal.config import config_from_dict, read_config_document

REPO = Path(__file__).resolve().parents[1]
CAMPAIGNS = ("h3_pyqmc", "mos2_surrogate", "mos2_qmcpack")


@pytest.mark.parametrize("name", CAMPAIGNS)
def test_workflow_file_matches_its_config(name):
    source = REPO / "configs" / f"{name}.yaml"
    document = read_config_document(source)
    config = config_from_dict(document, base_dir=source.parent, source=str(source))
    expected = workflow_file_document(config, document)
    actual = yaml.safe_load((REPO / "workflows" / f"{name}.yaml").read_text())
    assert actual == expected, f"workflows/{name}.yaml is stale: run scripts/write_workflows.py"


def test_lpad_add_reads_a_workflow_file(launchpad_file, database_name, mongo_client):
    lpad = str(Path(sys.executable).parent / "lpad")
    today = datetime.now().strftime("%Y-%m-%d")  # lpad reset's confirmation password
    reset = subprocess.run([lpad, "-l", str(launchpad_file), "reset", "--password", today], capture_output=True,
                           text=True, timeout=120)
    assert reset.returncode == 0, reset.stderr
    result = subprocess.run([lpad, "-l", str(launchpad_file), "add", str(REPO / "workflows" / "h3_pyqmc.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fireworks = {fw["name"]: fw for fw in mongo_client[database_name].fireworks.find()}
    assert set(fireworks) == {"h3-pyqmc c0 explore", "h3-pyqmc c0 converge"}
    assert fireworks["h3-pyqmc c0 explore"]["state"] == "READY"
    assert fireworks["h3-pyqmc c0 converge"]["state"] == "WAITING"
