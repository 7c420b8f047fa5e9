"""Benchmark: one force evaluation of the shipped MoS2 committee's 5 moving NEB images,
the members one at a time (``evaluate``) against the stacked members (``evaluate(member_forces=False)``).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_stacked.py --dtype float64 --threads 2

Prints the medians of alternating rounds and their ratio, after checking that
both give the same member energies and mean forces.
"""

import argparse
import statistics
import time
from pathlib import Path

import mace.modules  # noqa: F401  (mace before e3nn, see mfal.potentials)
import numpy as np
import torch
from ase.io import read

from mfal.potentials import Committee

DATA = Path(__file__).resolve().parents[1] / "data" / "mos2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = read(DATA / "committee_neb.extxyz", ":")[1:-1]
    committee = Committee.load(DATA / "committee.pt", dtype=args.dtype, device="cpu")
    loop, stacked = committee.evaluate(images), committee.evaluate(images, member_forces=False)  # warm-up, builds the stack
    energy_gap = np.abs(loop.energies - stacked.energies).max()
    force_gap = np.abs(loop.forces_mean - stacked.forces_mean).max()
    times_loop, times_stacked = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        committee.evaluate(images)
        middle = time.perf_counter()
        committee.evaluate(images, member_forces=False)
        times_loop.append(middle - start)
        times_stacked.append(time.perf_counter() - middle)
    a, b = statistics.median(times_loop), statistics.median(times_stacked)
    print(f"{args.dtype}, {args.threads} threads, {len(images)} images x {len(images[0])} atoms, {len(committee)} members: "
          f"members one at a time {1000 * a:.1f} ms, stacked (member energies, mean forces) {1000 * b:.1f} ms, "
          f"ratio {a / b:.2f}; largest differences {energy_gap:.1e} eV, {force_gap:.1e} eV/Å")


if __name__ == "__main__":
    main()
