"""Benchmark of the readout refit: a 4-member MoS2 committee, 30 high-fidelity energies, 100 anchors.

Then the next cycle's refit: 3 more labels, and 9 of the anchors replaced by new
ones (a new NEB path), with the first refit's force responses kept
(:mod:`mfal.potentials.refit_responses`), as a campaign's store keeps them. It
prints that refit's wall time and the ratio of the first refit's to it (the
baseline: every anchor's response computed, as every cycle did before responses
were kept), and checks that the kept responses give the same refit as computing
them again.

Structures: the 26-atom 3x3 S-vacancy cell of :mod:`mfal.systems.mos2`; the
labels are the 7 images of the straight-line vacancy-hop path and rattled copies
of them, the anchors further rattled copies (standing in for DFT training
structures and NEB images). The committee is ``data/mos2/committee.pt`` when
present, else a freshly initialised committee of the default small architecture
(16 channels, L = 1, 2 interactions, 5 Å). High-fidelity energies are synthetic:
committee-mean energy + a constant offset + a barrier-shaped correction along
the hop + Gaussian noise of the stated error bar.

Usage: ``python scripts/bench_refit.py [--threads 2] [--device cpu] [--labels 30] [--anchors 100]``

OpenMP threads wait passively unless ``OMP_WAIT_POLICY`` says otherwise: on a
machine whose cores are shared, spinning threads made a 2-thread run several
times slower than a 1-thread one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP starts

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mfal.potentials import Committee, atoms_to_batch, default_architecture  # noqa: E402
from mfal.potentials.architecture import DEFAULT_R_MAX  # noqa: E402
from mfal.potentials.refit import EnergyLabel, refit_committee  # noqa: E402
from mfal.potentials.refit_responses import MemoryResponseCache  # noqa: E402
from mfal.potentials.refit_settings import RefitSettings  # noqa: E402
from mfal.systems.mos2 import mos2_vacancy_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED_COMMITTEE = REPO / "data" / "mos2" / "committee.pt"
PLACEHOLDER_E0 = {16: -4.1, 42: -10.8}
"""Isolated-atom energies (eV) for a fresh model; the refit's cost and fit do not depend on them."""
NEW_IMAGES = 9
"""Anchors replaced in the next cycle: a new 9-image NEB path (each cycle's committee relaxes its endpoints again)."""


def rattled(structures, count, amplitude, rng):
    return [_rattle(structures[k % len(structures)], amplitude, rng) for k in range(count)]


def _rattle(atoms, amplitude, rng):
    copy = atoms.copy()
    copy.positions += rng.normal(0.0, amplitude, copy.positions.shape)
    return copy


def committee_for(structures, device):
    if SHIPPED_COMMITTEE.is_file():
        return Committee.load(SHIPPED_COMMITTEE, device=device), f"shipped committee {SHIPPED_COMMITTEE}"
    zs = sorted(PLACEHOLDER_E0)
    batch = atoms_to_batch(structures, zs, DEFAULT_R_MAX)
    neighbours = batch.edge_index.shape[1] / batch.num_nodes
    architecture = default_architecture(zs, [PLACEHOLDER_E0[z] for z in zs], neighbours)
    return Committee.from_architecture(architecture, 4, device=device), "freshly initialised default small architecture"


def hop_fraction(atoms, initial, final):
    """0 at the initial state, 1 at the final state, from the moving S atom's position."""
    index = initial.info["moving_index"]
    step = final.positions[index] - initial.positions[index]
    return float(np.dot(atoms.positions[index] - initial.positions[index], step) / np.dot(step, step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--labels", type=int, default=30)
    parser.add_argument("--anchors", type=int, default=100)
    parser.add_argument("--error", type=float, default=0.02, help="label error bar, eV")
    parser.add_argument("--tolerance", type=float, default=0.05, help="delta, eV/Å")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(2026)

    path = mos2_vacancy_path(5)
    initial, final = path[0], path[-1]
    label_structures = path + rattled(path, args.labels - len(path), 0.03, rng)
    anchors = rattled(path, args.anchors, 0.05, rng)
    committee, source = committee_for(path, args.device)

    base = committee.evaluate(label_structures)
    bump = np.array([0.5 * np.sin(np.pi * np.clip(hop_fraction(a, initial, final), 0, 1)) for a in label_structures])
    energies = base.energy_mean - 120.0 + bump + rng.normal(0.0, args.error, len(label_structures))
    labels = [EnergyLabel(atoms, float(e), args.error, label_id=str(i)) for i, (atoms, e) in enumerate(zip(label_structures, energies))]

    settings = RefitSettings(force_rms_tolerance=args.tolerance)
    cache = MemoryResponseCache()
    started = time.perf_counter()
    result = refit_committee(committee, labels, anchors, settings, response_cache=cache)
    total = time.perf_counter() - started

    new_images = rattled(path[1:-1], NEW_IMAGES, 0.05, rng)
    next_anchors = anchors[: len(anchors) - NEW_IMAGES] + new_images
    next_labels = labels + [EnergyLabel(atoms, label.energy, args.error, label_id=f"next-{i}")
                            for i, (atoms, label) in enumerate(zip(rattled(path, 3, 0.03, rng), labels[:3]))]
    started = time.perf_counter()
    next_cycle = refit_committee(committee, next_labels, next_anchors, settings, response_cache=cache)
    next_total = time.perf_counter() - started
    recomputed = refit_committee(committee, next_labels, next_anchors, settings)
    probe = label_structures[:7]
    same = float(np.abs(next_cycle.committee.evaluate(probe).energies - recomputed.committee.evaluate(probe).energies).max())
    metrics = result.metrics
    summary = {
        "committee": source,
        "device": str(committee.device),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "members": len(committee),
        "labels": len(labels),
        "anchors": len(anchors),
        "anchor_atoms": metrics["n_anchor_atoms"],
        "wall_time_total_s": round(total, 2),
        "wall_time_per_member_s": [round(t, 2) for t in metrics["member_wall_time_s"]],
        "cpu_time_per_member_s": [round(t, 2) for t in metrics["member_cpu_time_s"]],
        "load_average_1min": os.getloadavg()[0],
        "chi2_per_label_committee_mean": metrics["chi2_per_label"],
        "chi2_per_label_members": metrics["member_chi2_per_label"],
        "force_rms_eV_per_A": metrics["force_rms"],
        "force_max_eV_per_A": metrics["force_max"],
        "lambda": metrics["force_weight"],
        "calibration": metrics["calibration"],
        "next_cycle": {
            "labels": len(next_labels),
            "new_anchors": NEW_IMAGES,
            "anchor_responses": next_cycle.metrics["anchor_responses"],
            "wall_time_total_s": round(next_total, 2),
            "ratio_first_refit_to_this": round(total / next_total, 2),
            "max_energy_difference_to_recomputed_responses_eV": same,
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
