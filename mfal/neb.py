"""Climbing-image NEB on the committee mean, one batched committee call per force evaluation.

ASE's NEB asks each moving image for its forces in turn. Here every image
carries a thin view calculator onto one shared :class:`PathEvaluator`: the
first image asked after the optimizer moved the band triggers a single
committee call over *all* moving images (one graph; the members stacked into
one model, see :mod:`mfal.potentials.stacked`, that gives every member's
energy and the mean's forces); the other images read their share of that call.

The result reports, besides the relaxed path, the committee mean and spread of
every image's energy and the barrier's spread: each member's barrier taken on
the mean path (saddle image minus initial state), so the spread says how much
the members disagree about this path's barrier.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import covalent_radii
from ase.mep import NEB
from ase.mep.neb import idpp_interpolate, interpolate
from ase.optimize import BFGS, FIRE
from mace.data import get_neighborhood

from mfal.potentials.committee import Committee, CommitteePrediction
from mfal.potentials.errors import CollapsedPathError, PathCompositionError, PotentialError

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS}
"""Optimizers the NEB may use, by name."""

NEB_METHOD = "improvedtangent"

COLLAPSE_FRACTION = 0.5
"""Two atoms closer than this fraction of their covalent bond length (sum of ASE's covalent radii) stop the NEB."""


class NEBSettingsError(PotentialError):
    """An NEB option is outside its allowed range."""


@dataclass
class NEBResult:
    """A relaxed climbing-image NEB path and its committee statistics (eV, Å).

    ``images`` includes both endpoints. ``member_energies`` is (N members,
    images) on the final path; ``energies``/``energy_spread`` are their mean and
    standard deviation. ``saddle_index`` is the highest image of the mean
    (``climbing_index`` is the image ASE's NEB let climb, None without
    climbing); ``barrier`` = mean energy there minus the initial
    state, and ``barrier_spread`` the standard deviation of the members'
    barriers on this same path (``member_barriers``). ``force_calls`` counts
    batched committee calls made by the band optimisation (each covers all
    moving images and all members); ``endpoint_force_calls`` those spent on
    the endpoints (relaxation, if any, plus one call for both at the start).
    """

    images: list[Atoms]
    member_energies: np.ndarray
    converged: bool
    force_calls: int
    steps: int
    fmax: float
    endpoint_force_calls: int = 0
    max_force: float = float("nan")
    climbing_index: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def energies(self) -> np.ndarray:
        return self.member_energies.mean(axis=0)

    @property
    def energy_spread(self) -> np.ndarray:
        return self.member_energies.std(axis=0)

    @property
    def saddle_index(self) -> int:
        return int(np.argmax(self.energies))

    @property
    def barrier(self) -> float:
        return float(self.energies[self.saddle_index] - self.energies[0])

    @property
    def member_barriers(self) -> np.ndarray:
        return self.member_energies[:, self.saddle_index] - self.member_energies[:, 0]

    @property
    def barrier_spread(self) -> float:
        return float(self.member_barriers.std())

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers of the result (for the provenance store and logs)."""
        return {
            "barrier": self.barrier,
            "barrier_spread": self.barrier_spread,
            "member_barriers": self.member_barriers.tolist(),
            "saddle_index": self.saddle_index,
            "climbing_index": self.climbing_index,
            "energies": self.energies.tolist(),
            "energy_spread": self.energy_spread.tolist(),
            "converged": self.converged,
            "force_calls": self.force_calls,
            "endpoint_force_calls": self.endpoint_force_calls,
            "steps": self.steps,
            "fmax": self.fmax,
            "max_force": self.max_force,
            "settings": dict(self.settings),
        }


class PathEvaluator:
    """Evaluates all moving images of a band in one committee call and hands out the pieces.

    ``images`` is the band's moving images (live objects the NEB moves). The
    cache is keyed on all their positions, so any image asking after the band
    moved triggers exactly one new batched call.
    """

    def __init__(self, committee: Committee, images: Sequence[Atoms], names: Sequence[str] | None = None) -> None:
        self.committee = committee
        self.images = list(images)
        self.names = list(names) if names is not None else [f"NEB image {k}" for k in range(1, len(images) + 1)]
        self.calls = 0
        self._key: np.ndarray | None = None
        self._prediction: CommitteePrediction | None = None

    def _current_key(self) -> np.ndarray:
        return np.concatenate([image.positions for image in self.images])

    def prediction(self) -> CommitteePrediction:
        """The committee prediction for the images at their current positions.

        Raises :class:`CollapsedPathError` as soon as an image has collapsed, rather than
        letting the optimizer run on through the hole.
        """
        key = self._current_key()
        if self._key is None or not np.array_equal(key, self._key):
            self._prediction = self.committee.evaluate(self.images, member_forces=False)
            check_no_collapse(self.images, self._prediction, self.names)
            self._key = key.copy()
            self.calls += 1
        return self._prediction

    def calculators(self) -> list["ImageView"]:
        """One view calculator per moving image (ASE's NEB wants distinct calculator objects)."""
        return [ImageView(self, index) for index in range(len(self.images))]


class ImageView(Calculator):
    """ASE calculator for one moving image, answered from its :class:`PathEvaluator`."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, evaluator: PathEvaluator, index: int) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.index = index

    def check_state(self, atoms, tol=1e-15) -> list[str]:
        """What changed since the last call: in a band only positions move (:func:`check_path` fixed the rest).

        ASE's own check compares every array of the atoms with a tolerance on
        each of the NEB's energy and force requests, 6 % of a MoS2 NEB's time.
        """
        if self.atoms is None or not np.array_equal(atoms.positions, self.atoms.positions):
            return ["positions"]
        return []

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        image = self.evaluator.images[self.index]
        if not np.array_equal(image.positions, self.atoms.positions):
            raise RuntimeError("an ImageView was asked about atoms that are not its own image")
        prediction = self.evaluator.prediction()
        energy = float(prediction.energy_mean[self.index])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": prediction.structure_forces_mean(self.index),
        }


def check_path(images: Sequence[Atoms]) -> None:
    """Raise :class:`PathCompositionError` unless all images hold the same atoms (in order), cell and pbc."""
    first = images[0]
    for index, image in enumerate(images[1:], start=1):
        if list(image.numbers) != list(first.numbers):
            raise PathCompositionError(
                f"image {index} ({image.get_chemical_formula()}) does not hold the same atoms in the same order "
                f"as image 0 ({first.get_chemical_formula()}); all images of a path must"
            )
        if list(image.pbc) != list(first.pbc) or not np.allclose(image.cell, first.cell):
            raise PathCompositionError(f"image {index} has a different cell or pbc from image 0")


def check_no_collapse(images: Sequence[Atoms], prediction: CommitteePrediction, names: Sequence[str]) -> None:
    """Raise :class:`CollapsedPathError` if two atoms of an image are closer than
    :data:`COLLAPSE_FRACTION` of their covalent bond length.

    No training set holds such contacts, and a committee whose energy has a hole
    there pulls the band into it: one MoS2 committee without pair repulsion
    brought two S atoms to 0.08 Å at -10^6 eV. ``names`` says what each image is
    (``"NEB image 3"``, ``"the initial endpoint"``) for the message.
    """
    for offset, (atoms, name) in enumerate(zip(images, names)):
        radii = covalent_radii[atoms.numbers]
        (first, second), shifts = get_neighborhood(
            positions=atoms.positions, cutoff=float(2 * COLLAPSE_FRACTION * radii.max()),
            pbc=tuple(bool(p) for p in atoms.pbc), cell=np.array(atoms.cell),
        )[:2]
        distance = np.linalg.norm(atoms.positions[second] - atoms.positions[first] + shifts, axis=1)
        excess = distance - COLLAPSE_FRACTION * (radii[first] + radii[second])
        if len(excess) == 0 or excess.min() >= 0:
            continue
        k = int(np.argmin(excess))
        i, j = sorted((int(first[k]), int(second[k])))
        symbols = atoms.get_chemical_symbols()
        bond = radii[i] + radii[j]
        raise CollapsedPathError(
            f"{name}: atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are "
            f"{distance[k]:.2f} Å apart, under {COLLAPSE_FRACTION:g} of their covalent bond length ({bond:.2f} Å); "
            f"the committee puts the image at {prediction.energy_mean[offset]:.6g} eV. Its energy has a hole "
            "at short distances: train it with pair repulsion (pair_repulsion / --pair-repulsion) or on "
            "structures with such contacts"
        )


def relax_endpoints(
    committee: Committee,
    initial: Atoms,
    final: Atoms,
    *,
    fmax: float = 0.01,
    max_steps: int = 500,
    optimizer: str = "BFGS",
) -> tuple[Atoms, Atoms, int]:
    """Relax copies of both endpoints on the committee mean; returns them and the force calls used.

    The returned endpoints carry a single-point calculator with their final
    committee-mean energy and forces, and ``info['committee_energies']``.
    """
    check_path([initial, final])
    optimizer_class = _optimizer_class(optimizer)
    relaxed, calls = [], 0
    for endpoint, which in ((initial, "initial"), (final, "final")):
        atoms = endpoint.copy()
        evaluator = PathEvaluator(committee, [atoms], names=[f"the {which} endpoint"])
        atoms.calc = evaluator.calculators()[0]
        with optimizer_class(atoms, logfile=None) as opt:
            opt.run(fmax=fmax, steps=max_steps)
        calls += evaluator.calls
        relaxed.append(_frozen(atoms, evaluator.prediction(), 0))
    return relaxed[0], relaxed[1], calls


def idpp_path(initial: Atoms, final: Atoms, n_intermediate: int) -> list[Atoms]:
    """``[initial, n_intermediate images, final]`` by image-dependent pair potential interpolation.

    Starts from the straight line (minimum image convention for periodic
    cells) and relaxes it on ASE's IDPP surface, which keeps atoms from passing
    through each other.
    """
    if n_intermediate < 1:
        raise NEBSettingsError(f"n_intermediate must be >= 1, got {n_intermediate}")
    check_path([initial, final])
    images = [initial.copy()] + [initial.copy() for _ in range(n_intermediate)] + [final.copy()]
    mic = bool(initial.pbc.any())
    interpolate(images, mic=mic, apply_constraint=False)
    with warnings.catch_warnings():
        # ASE builds the IDPP band with its default NEB method and warns that the
        # default changed; the method does not matter for an interpolation.
        warnings.filterwarnings("ignore", message="The default method has changed", category=UserWarning)
        idpp_interpolate(images, traj=None, log=None, mic=mic)
    for image in images:
        image.calc = None
    return images


def run_neb(
    committee: Committee,
    images: Sequence[Atoms],
    *,
    fmax: float = 0.05,
    max_steps: int = 1000,
    optimizer: str = "FIRE",
    climb: bool = True,
    pre_relax_fmax: float = 0.5,
    spring_constant: float = 0.1,
) -> NEBResult:
    """Climbing-image NEB on the committee mean from a given path (endpoints held fixed).

    First the band relaxes without climbing to ``pre_relax_fmax`` (eV/Å), then
    the highest image climbs until every image's NEB force is below ``fmax``;
    ``max_steps`` bounds the optimizer steps of both stages together. Endpoints
    are evaluated once, together, in one committee call. Copies of ``images`` are moved, not the inputs.
    """
    if len(images) < 3:
        raise NEBSettingsError(f"an NEB path needs both endpoints and at least one moving image, got {len(images)} images")
    check_path(images)
    optimizer_class = _optimizer_class(optimizer)
    if not fmax > 0 or not pre_relax_fmax > 0:
        raise NEBSettingsError(f"fmax and pre_relax_fmax must be positive eV/Å, got {fmax} and {pre_relax_fmax}")
    if max_steps < 1:
        raise NEBSettingsError(f"max_steps must be >= 1, got {max_steps}")
    band = [image.copy() for image in images]
    ends = committee.evaluate([band[0], band[-1]])
    band[0], band[-1] = _frozen(band[0], ends, 0), _frozen(band[-1], ends, 1)
    evaluator = PathEvaluator(committee, band[1:-1])
    for image, view in zip(band[1:-1], evaluator.calculators()):
        image.calc = view

    neb = NEB(band, k=spring_constant, climb=False, method=NEB_METHOD)
    steps = 0
    converged = False
    if climb:
        with optimizer_class(neb, logfile=None) as opt:
            opt.run(fmax=max(pre_relax_fmax, fmax), steps=max_steps)
            steps += opt.nsteps
        neb.climb = True
    with optimizer_class(neb, logfile=None) as opt:
        converged = bool(opt.run(fmax=fmax, steps=max(max_steps - steps, 0)))
        steps += opt.nsteps
    max_force = float(np.sqrt((neb.get_forces() ** 2).sum(axis=1).max()))

    moving = evaluator.prediction()
    member_energies = np.column_stack([ends.energies[:, 0], moving.energies, ends.energies[:, 1]])
    path = [band[0]] + [_frozen(image, moving, k) for k, image in enumerate(band[1:-1])] + [band[-1]]
    return NEBResult(
        images=path,
        member_energies=member_energies,
        converged=converged,
        force_calls=evaluator.calls,
        steps=steps,
        fmax=fmax,
        endpoint_force_calls=1,
        max_force=max_force,
        climbing_index=int(neb.imax) if climb else None,
        settings={
            "method": NEB_METHOD,
            "optimizer": optimizer,
            "climb": climb,
            "pre_relax_fmax": pre_relax_fmax,
            "spring_constant": spring_constant,
            "max_steps": max_steps,
            "n_images": len(images),
        },
    )


def neb_from_endpoints(
    committee: Committee,
    initial: Atoms,
    final: Atoms,
    *,
    n_intermediate: int = 5,
    relax: bool = True,
    endpoint_fmax: float = 0.01,
    endpoint_max_steps: int = 500,
    endpoint_optimizer: str = "BFGS",
    **neb_options: Any,
) -> NEBResult:
    """Relax the endpoints on the committee mean, interpolate by IDPP, run :func:`run_neb`.

    ``n_intermediate`` counts the moving images only (the path holds
    ``n_intermediate + 2``); ``neb_options`` are :func:`run_neb`'s keywords
    (fmax, max_steps, optimizer, ...).
    """
    check_path([initial, final])
    calls = 0
    if relax:
        initial, final, calls = relax_endpoints(
            committee,
            initial,
            final,
            fmax=endpoint_fmax,
            max_steps=endpoint_max_steps,
            optimizer=endpoint_optimizer,
        )
    images = idpp_path(initial, final, n_intermediate)
    images[0], images[-1] = initial, final
    result = run_neb(committee, images, **neb_options)
    result.endpoint_force_calls += calls
    result.settings.update(
        {"relax_endpoints": relax, "endpoint_fmax": endpoint_fmax, "interpolation": "idpp"}
    )
    return result


def _optimizer_class(name: str):
    if name not in OPTIMIZERS:
        raise NEBSettingsError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name]


def _frozen(atoms: Atoms, prediction: CommitteePrediction, index: int) -> Atoms:
    """A copy of ``atoms`` whose single-point calculator holds structure ``index`` of ``prediction``.

    Besides the mean energy/forces, ``info`` keeps the per-member energies and
    the spread so a path can be handed on (to acquisition, to the store)
    without evaluating it again.
    """
    frozen = atoms.copy()
    energies = prediction.energies[:, index]
    frozen.calc = SinglePointCalculator(
        frozen,
        energy=float(energies.mean()),
        free_energy=float(energies.mean()),
        forces=prediction.structure_forces_mean(index),
    )
    frozen.info["committee_energies"] = energies.tolist()
    frozen.info["committee_energy_spread"] = float(energies.std())
    return frozen
