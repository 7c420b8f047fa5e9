"""Small campaigns for the tests: a tiny H committee and the LEPS surface as the 'QMC' truth."""

from pathlib import Path

import yaml

LEPS = "mfal.potentials.analytic:LEPSCalculator"


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
