"""Train a system's shipped base committee on its DFT dataset and measure it.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/train_base.py h3
    OMP_NUM_THREADS=2 .venv/bin/python scripts/train_base.py mos2
    .venv/bin/python scripts/train_base.py h3 --jobs 2   # two members at a time, one core each

Reads ``data/<system>/<system>_pbe.extxyz`` and writes to ``data/<system>/``:

* ``committee.pt``: the committee (``Committee.load``), what campaigns load as ``shipped: <system>``;
* ``heldout.extxyz``: the held-out test split the metrics are measured on;
* ``splits.json``: the ``config_id`` of every test and validation frame. When the
  system's folder already holds one, those splits are kept and frames added to
  the dataset since go to training (``--new-split`` draws new ones): what is held
  out stays held out while the dataset grows (:func:`mfal.systems.dataset.kept_split`);
* ``committee_neb.extxyz``: the committee's converged climbing-image NEB path;
* ``metrics.json``: energy RMSE (meV/atom) and force RMSE (meV/Å) on the
  held-out split, and again on its structures within the training set's range of
  interatomic distances (:func:`within_training_range`), the committee NEB barrier beside the DFT reference barrier (from
  ``<system>_pbe.json`` when it holds one), the labels' own force noise (its
  ``label_noise``, when measured), the training settings and the time
  one member takes for a 26-atom cell on one core.

``--warm-start COMMITTEE`` trains each member on from a committee's member
instead of fresh weights (``train_committee(initial=...)``): after ``--add-path``
has labelled a region the committee's NEB wandered into, a round of
fine-tuning replaces a full training. With ``--widen`` the warm-start members'
channels are doubled first, without changing what they compute
(:mod:`mfal.potentials.widen`), so a committee can grow its capacity without
starting from scratch.

``--dtype float32`` trains in single precision: 1.6-2x fewer seconds per epoch
on a CPU for the MoS2 members. The committee file is loaded back in float64,
as campaigns load it, for every metric and the NEB.

Finished members are checkpointed under ``$MFAL_HOME/train_checkpoints/<system>``,
and unfinished ones save their progress there every two minutes: rerunning after an
interruption trains only the members still missing, each from where it stopped.

Barriers are measured from the path's first image. H3: the fixed endpoints of
:func:`mfal.systems.h3_path`. MoS2: the dataset's relaxed initial state and its
translation-equivalent final state, both relaxed again on the committee.

A MoS2 barrier is compared with DFT on the committee's own path only: the
dataset's ``reference_barrier`` counts when its ``path_tag`` is this path's.
After training, label the path and fill the reference in without training again:

    make_mos2_dataset.py data/mos2/mos2_pbe.extxyz --reference-path data/mos2/committee_neb.extxyz  # GPAW, MPI
    .venv/bin/python scripts/train_base.py mos2 --update-reference
"""

import argparse
import hashlib
import json
import time
from pathlib import Path

import mace.modules  # noqa: F401  (mace before e3nn, see mfal.potentials)
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from e3nn import o3

from mfal.neb import NEBResult, neb_from_endpoints
from mfal.paths import mfal_home
from mfal.potentials import Committee
from mfal.potentials.train import (
    FORCES_WEIGHT_KEY, TrainingSettings, attach_labels, error_metrics, split_indices, train_committee,
)
from mfal.potentials.widen import widened_committee
from mfal.systems import h3_path, mos2_vacancy_endpoints, vacancy_final_by_translation
from mfal.systems.dataset import kept_split, path_tag, read_dataset, split_ids
from mfal.systems.errors import SystemSpecError
from mfal.systems.mos2 import MOS2_ENERGY_ONLY_FORCE

DATA = Path(__file__).resolve().parents[1] / "data"
N_INTERMEDIATE = 7

SYSTEM_OPTIONS = {
    "h3": {
        "settings": dict(max_epochs=1000, patience=200, batch_size=16, learning_rate=5e-3, energy_weight=100.0,
                         forces_weight=10.0),
        "architecture": dict(r_max=5.0, channels=32, max_L=1, num_interactions=2),
        "neb_fmax": 0.01,
        "max_force": None,
    },
    "mos2": {
        "settings": dict(max_epochs=400, patience=50, batch_size=4, learning_rate=1e-2, energy_weight=100.0,
                         forces_weight=10.0),
        "architecture": dict(r_max=5.0, channels=32, max_L=1, num_interactions=2, pair_repulsion=True),
        "neb_fmax": 0.03,
        "max_force": MOS2_ENERGY_ONLY_FORCE,
    },
}
"""Training settings, architecture and NEB threshold per system. Energy weight 100 against force
weight 10: at weight 1 the force term outweighed the per-atom energy term about 30:1 and the H3
committee's barrier came out 0.065 eV below PBE's.

MoS2 members have 32 channels (30.6 ms for the 26-atom cell on one core; 16 channels: 19.5 ms).
At 16 channels they fit the training energies to 5.7-6.8 meV/atom only: a round of training on
from the shipped 16-channel committee, with its own path's GPAW saddle (2.205 eV) in the data,
still put that saddle at 1.97-2.10 eV, as the round before had put its predecessor's (2.36 eV,
also in its data) at 1.94-2.15 eV.

These are the settings of a first committee. The shipped MoS2 committee was trained on from one
(``data/README.md``) with energy weight 3000 against force weight 30: every committee put the
saddle-like frames too low, those in its own data included, and raising the energy weight from 100
to 300, 1000 and 3000 (30 epochs each, warm-started) moved one such GPAW saddle from 0.114 eV low to
0.082, 0.067 and 0.045 eV low, with held-out force errors of 63.8, 63.6, 63.9 and 64.1 meV/Å.

``max_force`` (eV/Å): frames with a larger force component train on their energy alone. In
MoS2 these are rattled straight-line midpoints of the hop with S 1.57-1.77 Å from Mo (bonds
are 2.4 Å) and S atoms pressed together, 5 eV and more above the initial state, far above the
barrier: with their forces, one of them (52 eV/Å) outweighed the rest of the validation loss,
so early stopping kept a member of epoch 32 with 183 meV/Å on the held-out set. Left out
altogether, they no longer told the committee that these regions lie high, and its NEB
paired two S atoms at 1.55 Å (GPAW: about +10 eV) 1.6 eV below the initial state."""


def energy_only_where_extreme(frames: list, max_force: float | None) -> tuple[list, list[str]]:
    """The frames, those with a force component above ``max_force`` (eV/Å) as energy-only labels; and their ids.

    Their energy still says how high such a structure lies, which is what keeps
    a committee's NEB out of it; their forces would dominate the loss.
    """
    if max_force is None:
        return frames, []
    marked, extreme = [], []
    for frame in frames:
        if np.abs(frame.get_forces()).max() > max_force:
            results = frame.calc.results
            frame = frame.copy()
            frame.calc = SinglePointCalculator(frame, **results)
            frame.info[FORCES_WEIGHT_KEY] = 0.0
            extreme.append(str(frame.info["config_id"]))
        marked.append(frame)
    return marked, extreme


def architecture_summary(record: dict) -> dict:
    """The trained committee's architecture in the terms of ``SYSTEM_OPTIONS`` (a warm start keeps its initial one)."""
    hidden = o3.Irreps(record["hidden_irreps"])
    return {"r_max": record["r_max"], "channels": hidden[0].mul, "max_L": hidden.lmax,
            "num_interactions": record["num_interactions"], "pair_repulsion": record["pair_repulsion"]}


def neb_endpoints(system: str, frames) -> tuple:
    """The endpoints the shipped barrier is measured between (see the module docstring)."""
    if system == "h3":
        images = h3_path(0)
        return images[0], images[-1]
    relax = sorted((f for f in frames if f.info.get("kind") == "relax"), key=lambda f: int(f.info["step"]))
    if not relax:
        raise SystemSpecError("the MoS2 dataset holds no relaxation frames; run make_mos2_dataset.py first")
    initial = mos2_vacancy_endpoints()[0]
    initial.positions = relax[-1].positions
    return initial, vacancy_final_by_translation(initial)


def committee_neb(committee: Committee, system: str, frames, fmax: float) -> NEBResult:
    """mfal's climbing-image NEB on the committee mean, as a campaign runs it (IDPP path, batched images).

    MoS2's endpoints are relaxed on the committee first; H3's are fixed by definition.
    """
    initial, final = neb_endpoints(system, frames)
    return neb_from_endpoints(committee, initial, final, n_intermediate=N_INTERMEDIATE, relax=system == "mos2",
                              endpoint_fmax=fmax, fmax=fmax, max_steps=1000)


def dft_reference(metadata: dict, path_file: Path) -> float | None:
    """The dataset's DFT reference barrier (``<system>_pbe.json``) if it was measured on the path in
    ``path_file``, or on no particular path (H3's saddle search); None if on another committee's path."""
    record = metadata.get("reference_barrier")
    if record is None:
        return None
    if "path_tag" in record and record["path_tag"] != path_tag(read(path_file, index=":", format="extxyz")):
        return None
    return record["barrier"]


def update_reference(system: str, out: Path) -> None:
    """Fill the DFT reference barrier of ``out``'s committee path into its ``metrics.json``."""
    metadata = json.loads((DATA / system / f"{system}_pbe.json").read_text())
    reference = dft_reference(metadata, out / "committee_neb.extxyz")
    if reference is None:
        raise SystemSpecError(
            f"{DATA / system / f'{system}_pbe.json'} holds no reference barrier on {out / 'committee_neb.extxyz'}; "
            f"label that path first (make_{system}_dataset.py --reference-path)")
    metrics = json.loads((out / "metrics.json").read_text())
    neb = metrics["neb"]
    neb.update(reference_barrier_ev=reference, barrier_error_ev=round(neb["barrier_ev"] - reference, 5))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{system}: NEB barrier {neb['barrier_ev']:.3f} eV, DFT {reference:.3f} eV on the same path "
          f"(error {neb['barrier_error_ev']:+.3f} eV)")


def shortest_distance(atoms) -> float:
    """The structure's shortest interatomic distance (Å, minimum image)."""
    distances = atoms.get_all_distances(mic=True)
    np.fill_diagonal(distances, np.inf)
    return float(distances.min())


def within_training_range(heldout: list, train: list) -> tuple[list, list]:
    """Split held-out structures into those no more compressed than the most compressed training
    structure, and the rest (by shortest interatomic distance).

    A committee is not expected to be accurate beyond its training data, and one
    such structure can outweigh all others: in MoS2, before ``max_force`` made its
    label energy-only, a rattled straight-line midpoint of the hop with S and Mo 1.57 Å apart
    (the training set stopped at 1.70 Å) carried forces of 52 eV/Å.
    """
    floor = min(shortest_distance(atoms) for atoms in train)
    beyond = [shortest_distance(atoms) < floor for atoms in heldout]
    inside = [atoms for atoms, out in zip(heldout, beyond) if not out]
    outside = [atoms for atoms, out in zip(heldout, beyond) if out]
    return inside, outside


def member_time_ms(committee: Committee, repeats: int = 20) -> float:
    """Wall time (ms) of one member's energy + forces for the 26-atom MoS2 vacancy cell, on one thread.

    The median over ``repeats`` calls: a mean of 20 calls read 25 to 45 ms for the same
    committee, depending on what else the machine was finishing.
    Only meaningful for a committee that knows Mo and S; ``nan`` otherwise.
    """
    cell = mos2_vacancy_endpoints()[0]
    if not set(cell.numbers) <= set(committee.atomic_numbers):
        return float("nan")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        committee.evaluate([cell])
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            committee.evaluate([cell])
            seconds.append(time.perf_counter() - start)
        return 1000 * float(np.median(seconds)) / len(committee)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=sorted(SYSTEM_OPTIONS))
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1, help="members trained at once, one process each (default 1)")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the system's default")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the system's default")
    parser.add_argument("--energy-weight", type=float, default=None, help="override the system's default")
    parser.add_argument("--forces-weight", type=float, default=None, help="override the system's default")
    parser.add_argument("--warm-start", type=Path, default=None, metavar="COMMITTEE",
                        help="start each member from this committee file's member of the same index "
                             "(its architecture kept), e.g. after --add-path labelled a stray NEB path")
    parser.add_argument("--widen", action="store_true",
                        help="double the warm-start committee's channels first, keeping what it computes "
                             "(mfal.potentials.widen), to train on with more capacity")
    parser.add_argument("--no-bootstrap", dest="bootstrap", action="store_false",
                        help="train every member on the whole training split, not on its own bootstrap resample "
                             "(members then differ by their initial weights and batch order only; with "
                             "--warm-start, by the members they start from)")
    parser.add_argument("--new-split", action="store_true",
                        help="draw new random test and validation splits instead of keeping data/<system>/splits.json's")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default data/<system>)")
    parser.add_argument("--device", default="cpu", help="torch device of the training: cpu (default), cuda or auto")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                        help="precision of the training (float32: half the time per epoch on a CPU); "
                             "the metrics and the NEB are measured in float64, as campaigns load the committee")
    parser.add_argument("--update-reference", action="store_true",
                        help="train nothing: copy the DFT reference barrier on the committee's own NEB path "
                             "(labelled since by make_<system>_dataset.py --reference-path) into its metrics.json")
    args = parser.parse_args()
    if args.update_reference:
        update_reference(args.system, args.out or DATA / args.system)
        return
    if args.widen and args.warm_start is None:
        parser.error("--widen widens the --warm-start committee; name one")

    options = SYSTEM_OPTIONS[args.system]
    folder = DATA / args.system
    out = args.out or folder
    out.mkdir(parents=True, exist_ok=True)
    dataset = folder / f"{args.system}_pbe.extxyz"
    frames = read_dataset(dataset)
    if not frames:
        raise SystemSpecError(f"no dataset at {dataset}; make it with scripts/make_{args.system}_dataset.py")
    frames, energy_only = energy_only_where_extreme(frames, options["max_force"])
    kept = None if args.new_split else kept_split(frames, folder / "splits.json")
    overrides = dict(options["settings"], device=args.device, dtype=args.dtype, bootstrap=args.bootstrap)
    for name in ("max_epochs", "learning_rate", "energy_weight", "forces_weight"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    settings = TrainingSettings(**overrides)
    initial = None if args.warm_start is None else Committee.load(args.warm_start, device=args.device)
    if args.widen:
        initial = widened_committee(initial)

    start = time.perf_counter()
    committee, metrics = train_committee(
        frames, args.members, settings=settings, progress=True,
        architecture_options=options["architecture"] if initial is None else None, initial=initial,
        checkpoint_dir=mfal_home() / "train_checkpoints" / args.system, jobs=args.jobs, kept_split=kept,
    )
    # Members restored from checkpoints cost this run nothing; each member's own time is in its run.
    metrics["run_seconds"] = round(time.perf_counter() - start, 1)
    committee.save(out / "committee.pt")

    # Measured as campaigns load it (float64), whatever precision it trained in.
    committee = Committee.load(out / "committee.pt", device=args.device)
    labelled = attach_labels(frames, settings.energy_key, settings.forces_key)
    splits = split_indices(len(labelled), settings.valid_fraction, settings.test_fraction, settings.seed, kept)
    for split in ("test", "train"):
        metrics[split] = error_metrics(committee, [labelled[i] for i in splits[split]], settings.energy_key,
                                       settings.forces_key)
    heldout = out / "heldout.extxyz"
    heldout.unlink(missing_ok=True)
    write(heldout, [frames[i] for i in splits["test"]], format="extxyz")
    (out / "splits.json").write_text(json.dumps(split_ids(frames, splits), indent=1) + "\n")

    result = committee_neb(committee, args.system, frames, options["neb_fmax"])
    energies = result.energies
    # Atoms.copy() leaves the committee's single-point results behind: the file holds geometry only.
    write(out / "committee_neb.extxyz", [image.copy() for image in result.images], format="extxyz")
    inside, outside = within_training_range([labelled[i] for i in splits["test"]], [labelled[i] for i in splits["train"]])
    metrics["test_within_training_range"] = {
        **error_metrics(committee, inside, settings.energy_key, settings.forces_key),
        "left_out": [str(atoms.info.get("config_id", "")) for atoms in outside],
    }
    metadata_path = folder / f"{args.system}_pbe.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    reference = dft_reference(metadata, out / "committee_neb.extxyz")
    label_noise = metadata.get("label_noise", {}).get("per_label_noise_mev_per_a")
    barrier = result.barrier
    metrics.update(
        system=args.system,
        dataset={"file": dataset.name, "n_configurations": len(frames),
                 "energy_only": {"max_force_ev_per_a": options["max_force"], "config_ids": energy_only}},
        heldout_file=heldout.name,
        label_noise_mev_per_a=label_noise,
        warm_start=None if args.warm_start is None else {
            "file": args.warm_start.name, "sha256": hashlib.sha256(args.warm_start.read_bytes()).hexdigest(),
            "widened": args.widen},
        architecture=architecture_summary(committee.architecture),
        neb={
            "n_intermediate": N_INTERMEDIATE,
            "fmax": options["neb_fmax"],
            "energies_ev": (energies - energies[0]).round(5).tolist(),
            "barrier_ev": round(barrier, 5),
            "barrier_spread_ev": round(result.barrier_spread, 5),
            "converged": result.converged,
            "force_calls": result.force_calls,
            "reference_barrier_ev": reference,
            "barrier_error_ev": None if reference is None else round(barrier - reference, 5),
        },
        member_ms_26_atom_cell_one_core=round(member_time_ms(Committee.load(out / "committee.pt", device="cpu")), 2),
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    test, inside = metrics["test"], metrics["test_within_training_range"]
    print(
        f"{args.system}: test energy RMSE {test['energy_rmse_mev_per_atom']:.2f} meV/atom, "
        f"force RMSE {test['force_rmse_mev_per_a']:.1f} meV/Å ({inside['force_rmse_mev_per_a']:.1f} on the "
        f"{inside['n_structures']} within the training range"
        + ("" if label_noise is None else f"; the labels' own grid noise: {label_noise:.1f} meV/Å")
        + f"); NEB barrier {barrier:.3f} eV"
        + ("" if reference is None else f" (DFT {reference:.3f} eV)")
    )


if __name__ == "__main__":
    main()
