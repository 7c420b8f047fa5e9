"""Small campaigns for the tests: a tiny H committee and the LEPS surface as the 'QMC' truth,
and a tiny MoS2 committee whose 'QMC' truth is a readout-scaled copy of it.

Also how the tests run the ``mfal`` command and FireWorks workers as subprocesses,
and what every finished campaign must satisfy.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.morse import fcut, fcut_d
from ase.neighborlist import neighbor_list

from mfal.systems import MOS2_LATTICE, MOS2_THICKNESS

LEPS = "mfal.potentials.analytic:LEPSCalculator"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def tiny_h3_committee(path: Path) -> Path:
    """Four small freshly initialised MACE members for hydrogen, saved as one committee file.

    With ZBL repulsion: the random surface alone lets the NEB press two H atoms together,
    which the NEB refuses (:func:`mfal.neb.check_no_collapse`).
    """
    from mfal.potentials import Committee, default_architecture

    architecture = default_architecture([1], [-13.6], 2.0, channels=4, num_interactions=1, radial_MLP=(8,),
                                        pair_repulsion=True)
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
    return with_overrides(document, overrides)


def with_overrides(document: dict, overrides: dict) -> dict:
    """``document`` with each override merged into its section (a dict) or put in place (anything else)."""
    for key, value in overrides.items():
        document[key] = {**document.get(key, {}), **value} if isinstance(value, dict) else value
    return document


def write_config(directory: Path, document: dict) -> Path:
    path = directory / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


MOS2_BOND = float(np.hypot(MOS2_LATTICE / np.sqrt(3), MOS2_THICKNESS / 2))
"""Mo-S bond length (Å) of the ideal cell :func:`mfal.systems.mos2_vacancy_endpoints` builds."""


class MoS2BondModel(Calculator):
    """A cheap analytic MoS2 surface with a real barrier for the S-vacancy hop.

    Unlike atoms (Mo-S) bind by a Morse potential whose minimum is the ideal
    cell's bond, smoothly cut off between ``bond_cutoff`` (Å) so that only
    nearest neighbours bind; like atoms (S-S, Mo-Mo) repel as
    ``repulsion * (1 - r / contact)^2`` below ``contact``, which keeps a layer of
    pair bonds from collapsing. The ideal vacancy cells are minima (every bond
    at its optimum, every like pair beyond contact). A single Morse potential
    over all pairs (ASE's ``MorsePotential``) has no such minimum: the layer
    collapses along any NEB.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, depth=1.0, alpha=2.0, bond=MOS2_BOND, bond_cutoff=(2.9, 3.3), repulsion=30.0, contact=3.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.depth, self.alpha, self.bond, self.bond_cutoff = depth, alpha, bond, bond_cutoff
        self.repulsion, self.contact = repulsion, contact

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j, r, vector = neighbor_list("ijdD", self.atoms, max(self.bond_cutoff[1], self.contact))
        unlike = self.atoms.numbers[i] != self.atoms.numbers[j]
        decay = np.exp(-self.alpha * (r - self.bond))
        morse = self.depth * (decay**2 - 2 * decay)
        morse_slope = -2 * self.alpha * self.depth * (decay**2 - decay)
        cut, cut_slope = fcut(r, *self.bond_cutoff), fcut_d(r, *self.bond_cutoff)
        overlap = np.clip(1 - r / self.contact, 0, None)
        pair = np.where(unlike, morse * cut, self.repulsion * overlap**2)
        slope = np.where(unlike, morse_slope * cut + morse * cut_slope, -2 * self.repulsion * overlap / self.contact)
        pull = (slope / r)[:, None] * vector  # each pair appears as (i, j) and (j, i): half the energy, full force
        forces = np.column_stack([np.bincount(i, weights=pull[:, k], minlength=len(self.atoms)) for k in range(3)])
        energy = 0.5 * float(pair.sum())
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def mos2_bond_frames(n_rattled: int = 4, amplitude: float = 0.1, seed: int = 0) -> list:
    """Training structures of the 3x3 vacancy hop labelled by :class:`MoS2BondModel`.

    The 5 inner IDPP images (where a committee NEB starts) and the 7 images of
    the bond model's own converged NEB (where it should end), each with
    ``n_rattled`` copies whose atoms are displaced by N(0, ``amplitude`` Å).
    """
    from ase.mep import NEB
    from ase.optimize import FIRE

    from mfal.neb import idpp_path
    from mfal.potentials.train import ENERGY_KEY, FORCES_KEY
    from mfal.systems import mos2_vacancy_endpoints

    initial, final = mos2_vacancy_endpoints()
    start = idpp_path(initial, final, 5)
    band = [image.copy() for image in start]
    for image in band:
        image.calc = MoS2BondModel()
    with FIRE(NEB(band, k=0.1, climb=True, method="improvedtangent"), logfile=None) as optimizer:
        optimizer.run(fmax=0.05, steps=300)
    rng = np.random.default_rng(seed)
    frames = []
    for image in start[1:-1] + band:
        frames.append(image.copy())
        for _ in range(n_rattled):
            rattled = image.copy()
            rattled.positions += rng.normal(0.0, amplitude, rattled.positions.shape)
            frames.append(rattled)
    model = MoS2BondModel()
    for frame in frames:
        model.calculate(frame)
        frame.info[ENERGY_KEY] = model.results["energy"]
        frame.new_array(FORCES_KEY, model.results["forces"].copy())
    return frames


def readout_variants(committee, scales) -> "Committee":
    """A committee of copies of ``committee``'s first member, one per entry of ``scales``.

    Copy ``i`` has its readout output weights (the ones the readout refit trains)
    multiplied by ``scales[i]``, a number or one factor per weight. Every
    variant shares one network below the readout, so each member of one set of
    variants can become any other variant exactly through a readout refit.
    """
    import copy

    import torch

    from mfal.potentials import Committee
    from mfal.potentials.refit_linear import flat_parameters, output_parameters

    models = []
    for scale in scales:
        model = copy.deepcopy(committee.models[0])
        parameters = output_parameters(model)
        factors = np.broadcast_to(np.asarray(scale, dtype=float), flat_parameters(parameters).shape)
        with torch.no_grad():
            start = 0
            for parameter in parameters.values():
                chunk = factors[start : start + parameter.numel()].reshape(parameter.shape)
                parameter.mul_(torch.tensor(chunk, dtype=parameter.dtype, device=parameter.device))
                start += parameter.numel()
        models.append(model)
    return Committee(models, [committee.architectures[0]] * len(models), dtype=committee.dtype,
                     device=committee.device, min_members=1)


def tiny_mos2_committees(directory: Path, truth_scale: float = 1.3, seed: int = 0) -> tuple[Path, Path]:
    """A four-member base committee for the MoS2 vacancy hop and the surrogate 'QMC' truth for it.

    One tiny MACE network is trained on :func:`mos2_bond_frames` (about 25 s on
    one core). The base committee's members are copies of it with their readout
    output weights perturbed by 10 % each; the truth is the network with its
    readout output weights scaled by ``truth_scale`` (four equal members, so
    that it also loads as a campaign's committee). Its barrier differs clearly
    from the base's, yet every base member can reach it exactly through a
    readout refit. Returns (base committee file, truth committee file).
    """
    from mfal.potentials.refit_linear import flat_parameters, output_parameters
    from mfal.potentials.train import TrainingSettings, train_committee

    settings = TrainingSettings(max_epochs=60, patience=60, batch_size=8, learning_rate=1e-2, valid_fraction=0.15,
                                test_fraction=0.15, bootstrap=False, seed=seed)
    network, _ = train_committee(mos2_bond_frames(seed=seed), 1, min_members=1, settings=settings,
                                 architecture_options=dict(r_max=4.0, channels=4, num_interactions=1,
                                                           radial_MLP=(8,)))
    rng = np.random.default_rng(seed)
    n_weights = flat_parameters(output_parameters(network.models[0])).size
    base = readout_variants(network, [1 + 0.1 * rng.standard_normal(n_weights) for _ in range(4)])
    truth = readout_variants(network, [truth_scale] * 4)
    return base.save(directory / "mos2_base.pt"), truth.save(directory / "mos2_truth.pt")


def tiny_mos2_document(name: str, committee_file: Path, truth_file: Path, **overrides) -> dict:
    """A campaign config document: the 3x3 MoS2 vacancy hop with fixed endpoints, 3 images, 2 labels a cycle,
    the readout-scaled committee ``truth_file`` as surrogate labels."""
    document = {
        "name": name,
        "system": {"kind": "mos2", "size": [3, 3]},
        "committee": {"files": [str(committee_file)], "max_anchors": 0},
        "neb": {"n_images": 3, "fmax": 0.1, "max_steps": 150, "relax_endpoints": False},
        "acquisition": {"batch_size": 2},
        "qmc": {"backend": "surrogate", "model_file": str(truth_file), "noise_sigma_eV": 0.005},
        "refit": {"force_weight": 100.0, "bootstrap": False},
        "convergence": {"max_cycles": 4, "max_labels": 8, "tol_energy": 0.03, "n_consecutive": 1},
        "fireworks": {"qmc_category": None},
    }
    return with_overrides(document, overrides)


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
