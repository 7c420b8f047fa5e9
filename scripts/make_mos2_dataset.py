"""Make the MoS2 S-vacancy low-fidelity dataset: GPAW PBE (LCAO dzp) energies and forces.

Runs under Debian's system Python with MPI on both cores, at low priority:

    cd /work/main && PYTHONPATH=. OMP_NUM_THREADS=1 nohup nice -n 10 \\
        mpirun --allow-run-as-root --oversubscribe -np 2 /usr/bin/python3 \\
        scripts/make_mos2_dataset.py data/mos2/mos2_pbe.extxyz >> /tmp/mos2_dataset.log 2>&1 &

The same command resumes an interrupted run. Stages, in order (each a
deterministic list of configurations with unique ``config_id``):

1. ``relax_NNN``: BFGS relaxation of the initial state of the 3x3 vacancy hop;
   every step is a frame. On restart the relaxation continues from the last
   stored frame (one optimizer step with its stored forces, fresh Hessian).
2. ``final``: the relaxed final state, made from the relaxed initial one by the
   lattice translation that maps the two (a check of the equivalence: equal energy).
3. ``path_NN``: straight-line images between the relaxed endpoints.
4. rounds of ``rattled``, ``strained`` and ``pristine`` configurations, interleaved
   so that a dataset cut off at any point is still balanced.
5. ``bridge_iNN_zMM``: the straight line's middle images with the hopping S atom
   lifted out of its layer by 0.4 and 0.8 Å. The straight line squeezes it to
   1.8 Å from the two Mo atoms it passes (bonds are 2.4 Å); the hop's real path
   runs over them, where a committee trained without these frames has no data.
6. ``desorption_iNN_zMM``: the hopping S atom lifted 1.2-4 Å away from the slab,
   at its site and at the line's middle. A committee that has never seen an S
   atom leave the slab makes it free (a first one sent it 4.2 Å out at -0.07 eV;
   GPAW: +6.75 eV) and its NEB takes that route.
7. ``contact_iNN_dMM``: the hopping S atom pushed in-plane towards the S atom
   beside its route (one of the two the straight line passes; the other is its
   mirror image) until they are 2.4, 2.0 and 1.7 Å apart (3.2 Å in the layer), at
   its site and at the line's middle. Committees trained without them paired the
   two into an S2 at 1.55 Å, 1.6 eV below the initial state.
8. ``midhop_rNN_iKK``: more rattled straight-line images (0.06-0.1 Å) of the
   hop's squeezed middle, images 2-6, where the S atom passes 1.8 Å from two Mo
   atoms. A committee trained on stages 1-7 had its largest held-out force errors
   there: three rattled image-6 frames at 92-122 meV/Å and a committee-path image
   at 103, against 45 meV/Å over the other 15. A committee trained on these
   frames still missed them by 103 meV/Å, of which the labels' grid noise there
   (``--noise-frames``: 30-40 meV/Å) is a small part: the error in this region
   is the model's, not the data's.

Each finished configuration is appended to the extxyz at once (rank 0 writes).
About two minutes per single point on 2 otherwise idle cores.

The DFT reference barrier: with ``--reference-path PATH`` (an extxyz path, e.g.
the committee's converged NEB ``data/mos2/committee_neb.extxyz`` written by
``train_base.py``) the script labels only those images (``refpath_<hash>_NN``)
into ``<output>_reference_path.extxyz``, at the dataset's settings (checked) and
never into the training set itself, whose committee they measure; this too
resumes. It writes ``reference_barrier`` (highest image energy minus the first
image's) into the dataset's metadata file ``<output>.json``.

The labels' grid noise: ``--label-noise N`` labels N dataset frames again
(spread evenly over it, energy-only frames left out), each moved rigidly by half
the grid spacing along x, into ``<output>_translated.extxyz``, and writes the
RMS change of their forces into the metadata file (``label_noise``). A rigid
translation changes nothing physical, only where the atoms sit on GPAW's
real-space grid: the change is noise in the labels that no potential can fit,
and a floor under any committee's force error measured against them. This too resumes.

Where a committee's NEB path strays from the data (e.g. the hopping atom leaving
the slab because nothing taught the committee what that costs), ``--add-path
PATH`` labels the path's moving images into the dataset itself
(``cpath_<hash>_NN``, kind ``committee_path``), copying the labels of any image
``--reference-path`` already computed; the committee is then trained again.
"""

import argparse
import json
import time
import zlib
from pathlib import Path

import numpy as np
from ase.optimize import BFGS
from ase.io import read
from gpaw.mpi import world

from mfal.systems import interpolate_path, mos2_monolayer, mos2_vacancy_endpoints, vacancy_final_by_translation
from mfal.hashing import settings_hash, structure_hash
from mfal.systems.dataset import append_frame, labelled_frame, path_tag, read_dataset
from mfal.systems.gpaw_reference import gpaw_calculator, label_settings
from mfal.systems.mos2 import MOS2_ENERGY_ONLY_FORCE

SIZE = (3, 3)
RELAX_FMAX = 0.05
RELAX_MAX_STEPS = 40
PATH_INTERMEDIATE = 7
ROUNDS = 12
RATTLE_STDEVS = [0.02, 0.04, 0.06, 0.08, 0.1]
STRAINS = [(0.01, 0.01), (-0.01, -0.01), (0.02, 0.02), (-0.02, -0.02), (0.015, 0.0), (0.0, -0.015)]
BRIDGE_IMAGES = (3, 4, 5)
BRIDGE_LIFTS = (0.4, 0.8)
"""Å: how far the hopping S atom is lifted out of its layer at the straight line's middle images."""
DESORPTION_IMAGES = (0, 4)
DESORPTION_LIFTS = (1.2, 1.6, 2.4, 3.2, 4.0)
"""Å: the hopping S atom lifted away from the slab, at its site and at the line's middle."""
CONTACT_IMAGES = (0, 4)
CONTACT_DISTANCES = (2.4, 2.0, 1.7)
"""Å: S-S distances the hopping S atom is pushed to, towards the S atom beside its route."""
MIDHOP_IMAGES = (2, 3, 4, 5, 6)
MIDHOP_RATTLES = (0.06, 0.08, 0.1)
"""Å: one round of the squeezed middle images per rattle amplitude."""
PATH_RATTLES = (0.04, 0.06, 0.08)
"""Å: amplitudes ``--path-rattles`` cycles through, image by image."""


class Labeller:
    """Computes and appends labels, reusing one GPAW calculator while the cell and atoms stay the same
    (GPAW then starts each SCF from the previous density)."""

    def __init__(self, output: Path, txt: Path, settings_of: Path | None = None, reuse: Path | None = None):
        """Labels go to ``output``; ``settings_of`` is another file whose method settings they must share;
        a structure already labelled in ``reuse`` at the same settings is copied from there, not recomputed."""
        self.output = output
        self.txt = txt
        self.frames = {str(f.info["config_id"]): f for f in read_dataset(output)}
        others = read_dataset(settings_of) if settings_of is not None else []
        self.settings_hashes = {f.info["settings_hash"] for f in [*self.frames.values(), *others]}
        self.reusable = {(structure_hash(f), f.info["settings_hash"]): f
                         for f in (read_dataset(reuse) if reuse is not None else [])}
        self.calc = None
        self.calc_key = None

    def label(self, config_id: str, atoms, **info):
        if config_id in self.frames:
            return self.frames[config_id]
        settings = label_settings(atoms)
        digest = settings_hash(settings)
        if self.settings_hashes - {digest}:
            raise SystemExit(
                f"{config_id} would be labelled with settings {settings} (hash {digest[:12]}), "
                f"but {self.output} holds frames of hash(es) {sorted(h[:12] for h in self.settings_hashes)}: "
                "one dataset must have one set of method settings"
            )
        known = self.reusable.get((structure_hash(atoms), digest))
        if known is not None:
            energy, forces, seconds = known.get_potential_energy(), known.get_forces(), float(known.info["seconds"])
        else:
            energy, forces, seconds = self._single_point(atoms)
        frame = labelled_frame(atoms, energy, forces, config_id, settings, seconds=round(seconds, 1), **info)
        if world.rank == 0:
            append_frame(self.output, frame)
            print(f"{config_id}: E = {energy:.5f} eV, fmax = {np.abs(forces).max():.3f} eV/Å ({seconds:.0f} s)",
                  flush=True)
        world.barrier()
        self.frames[config_id] = frame
        self.settings_hashes.add(frame.info["settings_hash"])
        return frame

    def _single_point(self, atoms) -> tuple[float, np.ndarray, float]:
        key = (tuple(atoms.numbers), tuple(np.round(atoms.cell.array, 6).ravel()))
        if key != self.calc_key:
            self.calc = gpaw_calculator(atoms, txt=str(self.txt))
            self.calc_key = key
        atoms = atoms.copy()
        atoms.calc = self.calc
        start = time.perf_counter()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        return energy, forces, time.perf_counter() - start


def _relax_finished(frame) -> bool:
    fmax = np.linalg.norm(frame.get_forces(), axis=1).max()
    return fmax < RELAX_FMAX or int(frame.info["step"]) + 1 >= RELAX_MAX_STEPS


def relax_initial(labeller: Labeller):
    """Stage 1: BFGS relaxation of the initial state; returns its last (relaxed) frame."""
    initial, _ = mos2_vacancy_endpoints(SIZE)
    atoms = initial.copy()
    optimizer = BFGS(atoms, maxstep=0.1, logfile=None)
    done = sorted(k for k in labeller.frames if k.startswith("relax_"))
    step = 0
    if done:
        last = labeller.frames[done[-1]]
        if _relax_finished(last):
            return last
        atoms.positions = last.positions
        optimizer.step(last.get_forces())
        step = int(last.info["step"]) + 1
    while True:
        frame = labeller.label(f"relax_{step:03d}", atoms, kind="relax", step=step)
        if _relax_finished(frame):
            return frame
        optimizer.step(frame.get_forces())
        step += 1


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _rattled(atoms, stdev: float, *key):
    rattled = atoms.copy()
    rattled.positions += _rng(*key).normal(scale=stdev, size=rattled.positions.shape)
    return rattled


def _strained(atoms, strain: tuple[float, float]):
    strained = atoms.copy()
    cell = strained.cell.array.copy()
    cell[0] *= 1 + strain[0]
    cell[1] *= 1 + strain[1]
    strained.set_cell(cell, scale_atoms=True)
    return strained


def later_stages(relaxed_initial):
    """Stages 2-8 as ``(config_id, atoms, info)``, all derived from the relaxed initial state."""
    initial = mos2_vacancy_endpoints(SIZE)[0]
    initial.positions = relaxed_initial.positions
    final = vacancy_final_by_translation(initial, SIZE)
    path = [initial] + _straight_line(initial, final) + [final]
    yield "final", final, dict(kind="endpoint")
    for k, image in enumerate(path[1:-1], start=1):
        yield f"path_{k:02d}", image, dict(kind="path", image=k)
    pristine = mos2_monolayer(SIZE)
    for round_ in range(ROUNDS):
        for k, image in enumerate(path):
            stdev = RATTLE_STDEVS[(round_ + k) % len(RATTLE_STDEVS)]
            yield (f"rattled_r{round_:02d}_i{k:02d}", _rattled(image, stdev, round_, k),
                   dict(kind="rattled", image=k, rattle=stdev))
        strain = STRAINS[round_ % len(STRAINS)]
        k = (0, len(path) // 2, len(path) - 1)[round_ % 3]
        yield (f"strained_r{round_:02d}_i{k:02d}", _strained(_rattled(path[k], 0.02, "strain", round_), strain),
               dict(kind="strained", image=k, strain_a=strain[0], strain_b=strain[1]))
        if round_ == 0:
            yield "pristine_ideal", pristine, dict(kind="pristine")
        elif round_ % 2:
            stdev = RATTLE_STDEVS[round_ % len(RATTLE_STDEVS)]
            yield (f"pristine_rattled_r{round_:02d}", _rattled(pristine, stdev, "pristine", round_),
                   dict(kind="pristine", rattle=stdev))
        else:
            strain = STRAINS[(round_ // 2) % len(STRAINS)]
            yield (f"pristine_strained_r{round_:02d}", _strained(_rattled(pristine, 0.02, "pristine", round_), strain),
                   dict(kind="pristine", strain_a=strain[0], strain_b=strain[1]))
    for kind, images, lifts in (("bridge", BRIDGE_IMAGES, BRIDGE_LIFTS),
                                ("desorption", DESORPTION_IMAGES, DESORPTION_LIFTS)):
        for k in images:
            for lift in lifts:
                yield (f"{kind}_i{k:02d}_z{round(10 * lift):02d}", _lifted(path[k], lift),
                       dict(kind=kind, image=k, lift=lift))
    beside = _s_beside_route(path)
    for k in CONTACT_IMAGES:
        for distance in CONTACT_DISTANCES:
            yield (f"contact_i{k:02d}_d{round(10 * distance):02d}", _pushed_towards(path[k], beside, distance),
                   dict(kind="contact", image=k, partner=beside, distance=distance))
    for round_, stdev in enumerate(MIDHOP_RATTLES):
        for k in MIDHOP_IMAGES:
            yield (f"midhop_r{round_:02d}_i{k:02d}", _rattled(path[k], stdev, "midhop", round_, k),
                   dict(kind="rattled", image=k, rattle=stdev))


def _s_beside_route(path) -> int:
    """The S atom of the hopping atom's layer nearest the straight line's middle (one of the two it passes)."""
    middle = path[len(path) // 2]
    mover = middle.info["moving_index"]
    distances = middle.get_distances(mover, range(len(middle)), mic=True)
    same_layer = (middle.numbers == 16) & (np.abs(middle.positions[:, 2] - middle.positions[mover, 2]) < 0.5)
    same_layer[mover] = False
    candidates = np.flatnonzero(same_layer)
    return int(candidates[np.argmin(distances[candidates])])


def _pushed_towards(image, partner: int, distance: float):
    """A copy of a path image with the hopping S atom moved straight towards ``partner`` until ``distance`` Å apart."""
    mover = image.info["moving_index"]
    gap = image.get_distance(mover, partner, mic=True, vector=True)
    pushed = image.copy()
    pushed.positions[mover] += gap * (1 - distance / np.linalg.norm(gap))
    return pushed


def _lifted(image, lift: float):
    """A copy of a path image with the hopping S atom moved ``lift`` Å out of its layer, away from the Mo."""
    mover = image.info["moving_index"]
    outward = np.sign(image.positions[mover, 2] - image.positions[image.numbers == 42, 2].mean())
    lifted = image.copy()
    lifted.positions[mover, 2] += outward * lift
    return lifted


def _straight_line(initial, final):
    return interpolate_path(initial, final, PATH_INTERMEDIATE)[1:-1]


def reference_labels_file(output: Path) -> Path:
    """Where ``--reference-path`` puts its single points, beside the dataset."""
    return output.with_name(f"{output.stem}_reference_path.extxyz")


def add_path(labeller: Labeller, path_file: Path, rattles: int = 0) -> None:
    """Label the moving images of the path in ``path_file`` into the dataset (``cpath_<tag>_NN``), then
    ``rattles`` rattled copies of each (``cpath_<tag>_NN_rRR``, amplitudes cycling through ``PATH_RATTLES``):
    the path's neighbourhood, where the next committee's NEB will search."""
    images = read(path_file, index=":", format="extxyz")
    tag = path_tag(images)
    moving = list(enumerate(images[1:-1], start=1))
    for k, image in moving:
        image.calc = None
        labeller.label(f"cpath_{tag}_{k:02d}", image, kind="committee_path", image=k)
    for round_ in range(rattles):
        for k, image in moving:
            stdev = PATH_RATTLES[(round_ + k) % len(PATH_RATTLES)]
            labeller.label(f"cpath_{tag}_{k:02d}_r{round_:02d}", _rattled(image, stdev, "cpath", tag, round_, k),
                           kind="committee_path", image=k, rattle=stdev)


def update_metadata(metadata_file: Path, message: str, **fields) -> None:
    """Merge ``fields`` into the dataset's metadata file and print ``message``; rank 0 writes, every rank waits."""
    if world.rank == 0:
        metadata = json.loads(metadata_file.read_text()) if metadata_file.exists() else {}
        metadata.update(fields)
        metadata_file.write_text(json.dumps(metadata, indent=2) + "\n")
        print(message, flush=True)
    world.barrier()


def reference_barrier(labeller: Labeller, path_file: Path, metadata_file: Path) -> dict:
    """Label every image of the path in ``path_file`` and record the DFT barrier along it."""
    images = read(path_file, index=":", format="extxyz")
    tag = path_tag(images)
    energies = []
    for k, image in enumerate(images):
        image.calc = None
        frame = labeller.label(f"refpath_{tag}_{k:02d}", image, kind="reference_path", image=k)
        energies.append(frame.get_potential_energy())
    energies = np.array(energies) - energies[0]
    record = {
        "barrier": float(energies.max()),
        "energies_ev": energies.round(5).tolist(),
        "path_file": path_file.name,
        "path_tag": tag,
        "labels_file": labeller.output.name,
        "method": "GPAW single points on the images of the given path; highest minus first",
    }
    update_metadata(
        metadata_file, f"DFT reference barrier along {path_file}: {record['barrier']:.4f} eV",
        system="mos2_vacancy",
        settings=label_settings(images[0]),
        settings_hash=settings_hash(label_settings(images[0])),
        reference_barrier=record,
    )
    return record


def translated_labels_file(output: Path) -> Path:
    """Where ``--label-noise`` puts its single points of translated frames, beside the dataset."""
    return output.with_name(f"{output.stem}_translated.extxyz")


def label_noise(labeller: Labeller, dataset: Path, n_frames: int, metadata_file: Path,
                config_ids: list[str] | None = None) -> dict:
    """Label ``n_frames`` dataset frames again, moved by half a grid spacing, and record how much the forces change.

    A rigid translation changes no physical quantity, but it moves the atoms
    relative to GPAW's real-space grid; the change in the forces is the
    labels' grid ("egg-box") error, which no potential can fit. The frames
    are spread evenly over the dataset, leaving out energy-only ones, or are
    the frames named by ``config_ids`` (e.g. those a committee fits worst).
    """
    frames = [f for f in read_dataset(dataset) if np.abs(f.get_forces()).max() <= MOS2_ENERGY_ONLY_FORCE]
    if config_ids:
        by_id = {str(f.info["config_id"]): f for f in frames}
        unknown = [config_id for config_id in config_ids if config_id not in by_id]
        if unknown:
            raise SystemExit(f"{dataset} holds no force-labelled frame {', '.join(unknown)}")
        chosen = [by_id[config_id] for config_id in config_ids]
    else:
        chosen = [frames[int(k)] for k in np.linspace(0, len(frames) - 1, n_frames).round()]
    rows, squared = [], []
    for frame in chosen:
        shift = np.array([0.5 * frame.info["h"], 0.0, 0.0])
        moved = frame.copy()
        moved.calc, moved.info = None, {}
        moved.positions += shift
        labelled = labeller.label(f"shifted_{frame.info['config_id']}", moved, kind="translated",
                                  source=frame.info["config_id"], shift_x=shift[0])
        difference = labelled.get_forces() - frame.get_forces()
        squared.append(difference.ravel() ** 2)
        rows.append({"config_id": frame.info["config_id"], "kind": frame.info["kind"],
                     "force_rms_change_mev_per_a": round(1000 * float(np.sqrt(np.mean(difference**2))), 1),
                     "energy_change_mev": round(1000 * (labelled.get_potential_energy() - frame.get_potential_energy()), 2)})
    change = float(np.sqrt(np.mean(np.concatenate(squared))))
    record = {
        "force_rms_change_mev_per_a": round(1000 * change, 1),
        "per_label_noise_mev_per_a": round(1000 * change / np.sqrt(2), 1),
        "frames": rows,
        "labels_file": labeller.output.name,
        "method": "each frame moved rigidly by half the grid spacing h along x and labelled again at the same "
                  "settings; per-label noise = RMS change / sqrt(2) (two independent grid placements)",
    }
    update_metadata(
        metadata_file, f"forces change by {record['force_rms_change_mev_per_a']} meV/Å RMS under translation: "
                       f"about {record['per_label_noise_mev_per_a']} meV/Å of grid noise per label",
        label_noise=record,
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="extxyz file to create or extend")
    parser.add_argument("--txt", type=Path, default=Path("/tmp/mos2_gpaw.txt"), help="GPAW log file")
    parser.add_argument("--reference-path", type=Path, default=None,
                        help="label only this extxyz path (into <output>_reference_path.extxyz) and write its "
                             "DFT barrier to <output>.json")
    parser.add_argument("--add-path", type=Path, default=None,
                        help="label only the moving images of this extxyz path into the dataset (a committee's "
                             "NEB path where it strayed from the data), reusing --reference-path labels")
    parser.add_argument("--path-rattles", type=int, default=0, metavar="R",
                        help="with --add-path: also label R rattled copies of each of its moving images")
    parser.add_argument("--label-noise", type=int, default=None, metavar="N",
                        help="label N dataset frames again, translated by half a grid spacing (into "
                             "<output>_translated.extxyz), and write the forces' grid noise to <output>.json")
    parser.add_argument("--noise-frames", nargs="+", default=None, metavar="CONFIG_ID",
                        help="with --label-noise N: these N frames instead of N spread over the dataset")
    args = parser.parse_args()
    if args.noise_frames is not None and len(args.noise_frames) != args.label_noise:
        parser.error("--noise-frames names the --label-noise N frames: give N config ids")
    if args.label_noise is not None:
        label_noise(Labeller(translated_labels_file(args.output), args.txt, settings_of=args.output),
                    args.output, args.label_noise, args.output.with_suffix(".json"), args.noise_frames)
        return
    if args.reference_path is not None:
        reference_barrier(Labeller(reference_labels_file(args.output), args.txt, settings_of=args.output),
                          args.reference_path, args.output.with_suffix(".json"))
        return
    if args.add_path is not None:
        add_path(Labeller(args.output, args.txt, reuse=reference_labels_file(args.output)), args.add_path,
                 args.path_rattles)
        return
    labeller = Labeller(args.output, args.txt)
    if world.rank == 0:
        print(f"{len(labeller.frames)} configurations already in {args.output}", flush=True)
    relaxed = relax_initial(labeller)
    for config_id, atoms, info in later_stages(relaxed):
        labeller.label(config_id, atoms, **info)
    if world.rank == 0:
        print(f"done: {len(labeller.frames)} configurations", flush=True)


if __name__ == "__main__":
    main()
