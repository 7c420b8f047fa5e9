"""Make the H + H2 low-fidelity dataset: PySCF UKS-PBE energies and analytic forces.

The plan is deterministic (same configurations in the same order every run):

* collinear H3 on a grid of both bond lengths 0.5-4 Å (r1 <= r2; the mirror
  images are the same configuration for an O(3)- and permutation-invariant model),
* bent H3 at four angles on a coarser grid of both bond lengths,
* the straight-line exchange path and rattled copies of its images.

Each finished configuration is appended to the extxyz at once; a restart skips
every ``config_id`` already in the file. At the end the DFT reference barrier
is written next to the dataset (``<output>.json``): the collinear saddle lies on
the symmetric line r1 = r2, where it is the energy minimum, so a 1-D
minimisation of E(r, r) gives it; the barrier is measured from the path's
initial endpoint (H2 at 0.741 Å + H at 3.5 Å), exactly as a committee NEB
between the same endpoints measures it. Run (2-5 s per configuration with
cc-pVTZ on one core):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/make_h3_dataset.py data/h3/h3_pbe.extxyz
"""

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from mfal.hashing import settings_hash
from mfal.systems import H3_SADDLE_BOND, H3_SPIN, h3_chain, h3_endpoints, h3_path
from mfal.systems.dataset import append_frame, done_ids, labelled_frame
from mfal.systems.pyscf_calculator import PySCFCalculator

COLLINEAR_BONDS = [0.5, 0.6, 0.68, 0.74, 0.8, 0.87, 0.93, 1.0, 1.1, 1.2, 1.35, 1.5, 1.7, 2.0, 2.4, 2.9, 3.4, 4.0]
BENT_BONDS = [0.6, 0.74, 0.9, 1.1, 1.4, 1.8, 2.5, 3.5]
BENT_ANGLES = [75.0, 105.0, 135.0, 160.0]
PATH_INTERMEDIATE = 15
RATTLE_STDEVS = [0.03, 0.06, 0.1]


def plan(seed: int = 0):
    """Yield ``(config_id, atoms, kind)`` for every configuration of the dataset."""
    for r1, r2 in itertools.combinations_with_replacement(COLLINEAR_BONDS, 2):
        yield f"collinear_{r1:.2f}_{r2:.2f}", h3_chain(r1, r2), "collinear"
    for angle in BENT_ANGLES:
        for r1, r2 in itertools.combinations_with_replacement(BENT_BONDS, 2):
            yield f"bent{angle:.0f}_{r1:.2f}_{r2:.2f}", h3_chain(r1, r2, angle), "bent"
    images = h3_path(PATH_INTERMEDIATE)
    for k, image in enumerate(images):
        yield f"path_{k:02d}", image, "path"
    rng = np.random.default_rng(seed)
    for stdev in RATTLE_STDEVS:
        for k, image in enumerate(images):
            rattled = image.copy()
            rattled.positions += rng.normal(scale=stdev, size=rattled.positions.shape)
            yield f"rattled{stdev:.2f}_{k:02d}", rattled, "rattled_path"


def reference_barrier(calc) -> dict:
    """PBE saddle (r1 = r2 minimising E) and barrier above the initial path endpoint, in Å and eV."""
    def energy(atoms):
        atoms.calc = calc
        return atoms.get_potential_energy()

    initial, _ = h3_endpoints()
    result = minimize_scalar(
        lambda r: energy(h3_chain(r, r)),
        bracket=(0.85, H3_SADDLE_BOND, 1.05),
        method="brent",
        options={"xtol": 1e-4},
    )
    e_initial = energy(initial)
    return {
        "saddle_bond": round(float(result.x), 5),
        "saddle_energy": float(result.fun),
        "initial_energy": e_initial,
        "barrier": float(result.fun - e_initial),
        "initial_bonds": [round(initial.get_distance(0, 1), 6), round(initial.get_distance(1, 2), 6)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="extxyz file to create or extend")
    parser.add_argument("--basis", default="cc-pVTZ", help="Gaussian basis set (default cc-pVTZ)")
    args = parser.parse_args()

    calc = PySCFCalculator(basis=args.basis, spin=H3_SPIN)
    settings = calc.settings()
    finished = done_ids(args.output)
    configs = list(plan())
    print(f"{len(configs)} configurations planned, {len(finished)} already done", flush=True)
    for config_id, atoms, kind in configs:
        if config_id in finished:
            continue
        start = time.perf_counter()
        atoms.calc = calc
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        append_frame(args.output, labelled_frame(atoms, energy, forces, config_id, settings, kind=kind))
        print(f"{config_id}: E = {energy:.6f} eV ({time.perf_counter() - start:.1f} s)", flush=True)
    metadata_path = Path(args.output).with_suffix(".json")
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    if metadata.get("settings_hash") != settings_hash(settings):
        barrier = reference_barrier(calc)
        metadata = {
            "system": "h3",
            "settings": settings,
            "settings_hash": settings_hash(settings),
            "n_configurations": len(configs),
            "reference_barrier": barrier,
            "reference_barrier_method": "collinear saddle by 1-D minimisation of E(r, r); "
            "barrier above the initial endpoint of mfal.systems.h3_path()",
        }
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"reference barrier {metadata['reference_barrier']['barrier']:.4f} eV "
          f"at r = {metadata['reference_barrier']['saddle_bond']:.4f} Å", flush=True)


if __name__ == "__main__":
    main()
