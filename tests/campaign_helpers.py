"""Small campaigns for the tests: a tiny H committee and the LEPS surface as the 'QMC' truth.

Also how the tests run the ``mfal`` command and FireWorks workers as subprocesses,
and what every finished campaign must satisfy.
"""

import os
import subprocess
import sys
from pathlib import Path

import yaml

LEPS = "mfal.potentials.analytic:LEPSCalculator"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def tiny_h3_committee(path: Path) -> Path:
    """Four small freshly initialised MACE members for hydrogen, saved as one committee file."""
    from mfal.potentials import Committee, default_architecture

    architecture = default_architecture([1], [-13.6], 2.0, channels=4, num_interactions=1, radial_MLP=(8,))
    Committee.from_architecture(architecture, 4).save(path)
    return path


def tiny_h3_document(name: str, committee_file: Path, **overrides) -> dict:
    """A campaign config document: H3, 3 images, LEPS surrogate labels, two refit cycles at most."""
    document = {
        "name": name,
        "system": {"kind": "h3"},
        "committee": {"files": [str(committee_file)], "max_anchors": 0},
        "neb": {"n_images": 3, "fmax": 0.1, "max_steps": 60},
        "acquisition": {"batch_size": 2},
        "qmc": {"backend": "surrogate", "calculator": LEPS, "noise_sigma_eV": 0.005},
        "refit": {"force_weight": 0.1},
        "convergence": {"max_cycles": 2, "max_labels": 4, "tol_energy": 1e-6, "n_consecutive": 1},
        "fireworks": {"qmc_category": None},
    }
    for key, value in overrides.items():
        document[key] = {**document.get(key, {}), **value} if isinstance(value, dict) else value
    return document


def write_config(directory: Path, document: dict) -> Path:
    path = directory / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def environment(tmp_path):
    """Subprocess environment: a private MFAL_HOME under ``tmp_path``, this checkout importable."""
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
    """Finished, every firework completed by one launch, every selected structure labelled once."""
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
