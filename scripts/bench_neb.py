"""Benchmark: climbing-image NEB with mfal's batched committee against one MACECalculator per image.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_neb.py            # both systems
    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_neb.py --system h3 --device cuda

The same band (same relaxed endpoints, same IDPP images, same spring constant,
optimizer, pre-relaxation and fmax) is optimised twice:

A. ``mfal.neb.run_neb``: every force evaluation is one committee call over all
   moving images (one graph; the members stacked into one model, one forward
   pass for all members' energies and one backward pass for the mean forces,
   see ``mfal.potentials.stacked``);
B. what a user would write without mfal: ASE ``NEB`` with one
   ``mace.calculators.MACECalculator(model_paths=[...the same members...])`` per
   image, each image evaluated on its own.

Prints wall time of each (the median of ``--rounds`` alternating runs), the
ratio B/A, the force evaluations (A: batched committee calls; B: per-image
calculator calls) and both barriers, which must agree within 1e-4 eV. With
``--max-steps`` below what convergence needs, both runs stop after the same
number of optimizer steps (converged False) and the ratio is that of equal work.

Committees: the shipped ``data/<system>/committee.pt`` when present; otherwise
one trained here on the spot (H3: LEPS surface; MoS2: freshly initialised
members of the shipped architecture, whose surface is arbitrary but smooth,
which is enough to time the two ways of evaluating it). The output says which.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mace.modules  # noqa: F401  (mace before e3nn, see mfal.potentials)
import numpy as np
import torch
from ase.mep import NEB
from mace.calculators import MACECalculator

from mfal.neb import NEB_METHOD, OPTIMIZERS, idpp_path, relax_endpoints, run_neb
from mfal.potentials import Committee, default_architecture
from mfal.potentials.analytic import leps_h3_dataset
from mfal.potentials.train import TrainingSettings, train_committee
from mfal.systems.h3 import h3_endpoints
from mfal.systems.mos2 import mos2_vacancy_endpoints, vacancy_final_by_translation

DATA = Path(__file__).resolve().parents[1] / "data"
N_INTERMEDIATE = 5
"""Moving images: 7 images in all with the endpoints."""


class CountingMACECalculator(MACECalculator):
    """MACECalculator that counts its evaluations (one per image per force call)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        CountingMACECalculator.calls += 1
        super().calculate(*args, **kwargs)


def committee_for(system: str, members: int, dtype: str, device: str) -> tuple[Committee, str]:
    """The shipped committee, or one made here (and a line saying which)."""
    shipped = DATA / system / "committee.pt"
    if shipped.is_file():
        committee = Committee.load(shipped, dtype=dtype, device=device)
        return committee, f"shipped committee {shipped.relative_to(DATA.parent)} ({len(committee)} members)"
    if system == "h3":
        data = leps_h3_dataset(60, seed=0)
        committee, metrics = train_committee(
            data,
            members,
            settings=TrainingSettings(max_epochs=60, patience=20, batch_size=8, learning_rate=1e-2, dtype=dtype, device=device),
        )
        rmse = metrics["test"]["energy_rmse_mev_per_atom"]
        return committee, (
            f"{members} members trained here on 60 LEPS-labelled H3 structures for at most 60 epochs "
            f"(test energy RMSE {rmse:.1f} meV/atom); no shipped data/h3/committee.pt"
        )
    architecture = default_architecture([16, 42], [-1.0, -2.0], avg_num_neighbors=10.0, atomic_inter_scale=3.0,
                                        pair_repulsion=True)
    committee = Committee.from_architecture(architecture, members, dtype=dtype, device=device)
    return committee, f"{members} freshly initialised members of the shipped architecture; no shipped data/mos2/committee.pt"


def starting_band(system: str, committee: Committee, fmax: float, max_steps: int) -> list:
    """Relaxed endpoints (committee mean) and the IDPP band between them."""
    if system == "h3":
        initial, final = h3_endpoints()
        initial, final, _ = relax_endpoints(committee, initial, final, fmax=fmax, max_steps=max_steps)
    else:
        initial = mos2_vacancy_endpoints()[0]
        initial, _, _ = relax_endpoints(committee, initial, initial, fmax=fmax, max_steps=max_steps)
        final = vacancy_final_by_translation(initial)
        final.calc = None
    return idpp_path(initial, final, N_INTERMEDIATE)


def run_a(committee: Committee, band: list, options: dict) -> tuple[float, float, int, bool]:
    # warm-up of the call the NEB makes (it builds the stacked members), outside the timing as B's model loading is
    committee.evaluate([_displaced(image) for image in band[1:-1]], member_forces=False)
    start = time.perf_counter()
    result = run_neb(committee, band, **options)
    elapsed = time.perf_counter() - start
    return elapsed, result.barrier, result.force_calls, result.converged


def run_b(model_files: list[str], band: list, options: dict, dtype: str, device: str) -> tuple[float, float, int, bool]:
    """ASE NEB, one MACECalculator (the whole committee) per image, same two stages as run_neb."""
    images = [image.copy() for image in band]
    for image in images:
        image.calc = CountingMACECalculator(model_paths=model_files, device=device, default_dtype=dtype)
        image.calc.get_potential_energy(_displaced(image))  # warm-up of every model copy, outside the timing
    CountingMACECalculator.calls = 0
    optimizer = OPTIMIZERS[options["optimizer"]]
    start = time.perf_counter()
    neb = NEB(images, k=options["spring_constant"], climb=False, method=NEB_METHOD)
    steps = 0
    with optimizer(neb, logfile=None) as opt:
        opt.run(fmax=max(options["pre_relax_fmax"], options["fmax"]), steps=options["max_steps"])
        steps += opt.nsteps
    neb.climb = True
    with optimizer(neb, logfile=None) as opt:
        converged = bool(opt.run(fmax=options["fmax"], steps=options["max_steps"] - steps))
    elapsed = time.perf_counter() - start
    energies = np.array([image.get_potential_energy() for image in images])
    return elapsed, float(energies.max() - energies[0]), CountingMACECalculator.calls, converged


def per_call_times(committee: Committee, model_files: list[str], band: list, dtype: str, repeats: int) -> tuple[float, float]:
    """Median seconds of one force evaluation of all moving images: (A batched committee, B calculator per image).

    A and B alternate, so a machine whose load drifts affects both alike.
    """
    moving = band[1:-1]
    calculators = [MACECalculator(model_paths=model_files, device=str(committee.device), default_dtype=dtype) for _ in moving]
    times_a, times_b = [], []
    for repeat in range(repeats + 1):
        shifted = [image.copy() for image in moving]
        for image in shifted:
            image.positions += 1e-4 * (repeat + 1)
        start = time.perf_counter()
        committee.evaluate(shifted, member_forces=False)  # as the NEB's PathEvaluator calls it
        middle = time.perf_counter()
        for image, calculator in zip(shifted, calculators):
            image.calc = calculator
            image.get_forces()
        end = time.perf_counter()
        if repeat > 0:  # the first round warms up every model copy
            times_a.append(middle - start)
            times_b.append(end - middle)
    return float(np.median(times_a)), float(np.median(times_b))


def _displaced(atoms):
    """A copy moved by 1 mÅ, so a warm-up call leaves no cached result behind."""
    copy = atoms.copy()
    copy.positions += 1e-3
    return copy


def bench(system: str, args: argparse.Namespace) -> None:
    committee, origin = committee_for(system, args.members, args.dtype, args.device)
    options = dict(fmax=args.fmax, max_steps=args.max_steps, optimizer=args.optimizer, pre_relax_fmax=args.pre_relax_fmax,
                   spring_constant=0.1)
    band = starting_band(system, committee, fmax=args.fmax / 2, max_steps=args.endpoint_steps)
    print(f"== {system}: {len(band)} images x {len(band[0])} atoms, {len(committee)} members, "
          f"{args.dtype}, {committee.device}, {torch.get_num_threads()} threads", flush=True)
    print(f"   committee: {origin}")
    print(f"   settings: {args.optimizer}, fmax {args.fmax} eV/Å (pre-relaxation to {args.pre_relax_fmax}), "
          f"at most {args.max_steps} steps, method {NEB_METHOD}", flush=True)
    times_a, times_b = [], []
    with tempfile.TemporaryDirectory() as scratch:
        files = [str(path) for path in committee.export_mace_models(scratch)]
        for _ in range(args.rounds):  # A and B alternate, so a drift in the machine's speed affects both alike
            time_a, barrier_a, calls_a, converged_a = run_a(committee, band, options)
            time_b, barrier_b, calls_b, converged_b = run_b(files, band, options, args.dtype, str(committee.device))
            times_a.append(time_a)
            times_b.append(time_b)
            print(f"   round {len(times_a)}: A {time_a:.2f} s, B {time_b:.2f} s, B/A {time_b / time_a:.2f}", flush=True)
        call_a, call_b = per_call_times(committee, files, band, args.dtype, args.repeats)
    time_a, time_b = float(np.median(times_a)), float(np.median(times_b))
    print(f"   A mfal batched committee : {time_a:8.2f} s (median), {calls_a} batched committee calls, "
          f"barrier {barrier_a:.6f} eV, converged {converged_a}")
    print(f"   B MACECalculator / image : {time_b:8.2f} s (median), {calls_b} per-image calculator calls, "
          f"barrier {barrier_b:.6f} eV, converged {converged_b}")
    agree = abs(barrier_a - barrier_b) <= 1e-4
    print(f"   B/A wall-time ratio {time_b / time_a:.2f}; barriers differ by {abs(barrier_a - barrier_b):.2e} eV "
          f"({'within' if agree else 'OUTSIDE'} 1e-4 eV)")
    print(f"   one force evaluation of the {len(band) - 2} moving images, median of {args.repeats} alternating rounds: "
          f"A {1000 * call_a:.0f} ms, B {1000 * call_b:.0f} ms, B/A {call_b / call_a:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=["mos2", "h3", "both"], default="both")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--pre-relax-fmax", type=float, default=0.5)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--endpoint-steps", type=int, default=200, help="cap on endpoint relaxation steps (untimed)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="FIRE")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="alternating NEB runs of A and B (medians reported)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the per-call timing")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for system in (["mos2", "h3"] if args.system == "both" else [args.system]):
        bench(system, args)


if __name__ == "__main__":
    main()
